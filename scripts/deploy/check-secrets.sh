#!/usr/bin/env bash
# Report each secret file a deployment config names that is missing or empty (make secrets-check).
#
#   scripts/deploy/check-secrets.sh              # both stacks below
#   scripts/deploy/check-secrets.sh monitoring   # Alertmanager run from deploy/monitoring/
#   scripts/deploy/check-secrets.sh compose      # deploy/compose (its monitoring profile too)
#   scripts/deploy/check-secrets.sh CONFIG...    # other copies of these configs
#
# `amtool check-config`, `docker compose config` and Alertmanager's start never open these
# files: Alertmanager reads secrets/alerts_token and secrets/slack_webhook_url when it sends a
# notification, so a missing one shows only then, as a failed notification in its log. A
# config's secret files are the values of its `*_file:` keys (Alertmanager's credentials_file,
# api_url_file, ...) and of its `file:` keys (the secrets of a Compose file), relative to the
# config's folder, as both tools read them. Prints one line per missing or empty file and exits
# 1 if there is any; else one line per config.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

case ${1:-} in
-h | --help)
    print_help
    exit 0
    ;;
-*) die "unknown option '$1' (see --help)" ;;
esac

(($# > 0)) || set -- monitoring compose
failed=0
for config in "$@"; do
    case $config in
    monitoring) config=$VISIONOPS_REPO_ROOT/deploy/monitoring/alertmanager.yml ;;
    compose) config=$VISIONOPS_REPO_ROOT/deploy/compose/docker-compose.yml ;;
    esac
    [[ -f $config ]] || die "no config file '$config': name monitoring, compose or a config file"
    folder=$(dirname "$config")
    mapfile -t files < <(sed -nE 's/^[[:space:]-]*([a-z_]+_)?file:[[:space:]]*["'\'']?([^"'\''[:space:]#]+).*/\2/p' "$config")
    absent=0
    for file in "${files[@]}"; do
        path=$file
        [[ $path == /* ]] || path=$folder/${file#./}
        if [[ ! -e $path ]]; then
            echo "$config: missing secret file $path" >&2
            absent=$((absent + 1))
        elif [[ ! -s $path ]]; then
            echo "$config: empty secret file $path" >&2
            absent=$((absent + 1))
        fi
    done
    ((absent > 0)) || echo "$config: all ${#files[@]} secret files present"
    failed=$((failed + absent))
done
if ((failed > 0)); then
    die "$failed secret file(s) missing or empty: create them as docs/monitoring.md and deploy/compose/README.md show"
fi
