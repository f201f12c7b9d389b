#!/usr/bin/env bash
# Show the tracking server's log: the output of `mlflow server` started by
# `visionops server start --detach`, in ${VISIONOPS_SERVER_STATE_DIR:-.visionops/server}/server.log.
#
#   scripts/ops/logs-mlflow.sh            # the last 100 lines
#   scripts/ops/logs-mlflow.sh -n 500     # the last 500 lines
#   scripts/ops/logs-mlflow.sh -f         # follow it (Ctrl-C to stop); survives log rotation
#
# A server in the foreground (`make server`) writes to its terminal instead, and under
# docker-compose use `docker compose logs mlflow`. Settings come from the environment or ./.env.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

usage() {
    print_help
}

follow=false
lines=100
while (($#)); do
    case $1 in
    -f | --follow) follow=true ;;
    -n | --lines)
        (($# >= 2)) || die "$1 needs a number of lines"
        lines=$2
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ $lines =~ ^[0-9]+$ ]] || die "-n takes a number of lines, not '$lines'"

load_settings
log=$STATE_DIR/server.log
if [[ ! -f $log ]]; then
    die "no server log at $log: no server was started with 'visionops server start --detach' with this state folder (VISIONOPS_SERVER_STATE_DIR=$STATE_DIR); a foreground server (make server) logs to its terminal"
fi
if $follow; then
    exec tail -n "$lines" -F "$log"
fi
tail -n "$lines" "$log"
