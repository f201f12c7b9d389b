#!/usr/bin/env bash
# Check that a client reaches the cluster's MLflow, logs in and can train against it (step 5 of
# the cluster setup, docs/deploy.md).
#
#   MLFLOW_HOST=mlflow.example.com scripts/setup/05-test-connection.sh               # as the admin
#   MLFLOW_TRACKING_USERNAME=alice MLFLOW_TRACKING_PASSWORD=... \
#       MLFLOW_HOST=mlflow.example.com scripts/setup/05-test-connection.sh --no-train
#   scripts/setup/05-test-connection.sh --dry-run
#
# 1. scripts/setup/test-connection.sh against MLFLOW_URL, else https://MLFLOW_HOST: /health
#    answers, an anonymous call gets 401, the login works;
# 2. unless --no-train, `visionops train --recipe debug` (a few seconds on generated data) logs
#    a run into the experiment VISIONOPS_VERIFY_EXPERIMENT (default visionops-verify), so
#    runs, metrics and the artifact store behind the server all work.
# As MLFLOW_TRACKING_USERNAME/PASSWORD when set, else the MLflow admin (VISIONOPS_ADMIN_USERNAME
# with VISIONOPS_ADMIN_PASSWORD_FILE, by default CLUSTER_SECRETS_DIR/admin.password from
# 03-install-mlflow.sh). The credentials reach the commands through the environment only.
# Each run with training adds one small run; --dry-run prints the commands and runs none.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

train=true
while (($#)); do
    case $1 in
    --dry-run) DRY_RUN=true ;;
    --no-train) train=false ;;
    -h | --help)
        print_help
        exit 0
        ;;
    *) usage_error "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

load_cluster_settings
url=$(cluster_mlflow_url)
use_cluster_admin_password
run env "MLFLOW_TRACKING_URI=$url" "$VISIONOPS_REPO_ROOT/scripts/setup/test-connection.sh"
$train || exit 0

if ! $DRY_RUN; then
    resolve_credentials
    export MLFLOW_TRACKING_USERNAME=$API_USER MLFLOW_TRACKING_PASSWORD=$API_PASSWORD
fi
VISIONOPS=$(visionops_command)
experiment=${VISIONOPS_VERIFY_EXPERIMENT:-visionops-verify}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
if ! output=$(run env "MLFLOW_TRACKING_URI=$url" "$VISIONOPS" train --recipe debug --json \
    --experiment "$experiment" --run-name cluster-connection --output-dir "$workdir/outputs" \
    2>"$workdir/train.log"); then
    tail -n 20 "$workdir/train.log" >&2
    die "the debug training against $url failed (its output is above)"
fi
$DRY_RUN && exit 0
run_id=$(json_field "$(tail -n 1 <<<"$output")" run_id)
[[ -n $run_id ]] || die "the training printed no run id: $(tail -n 1 <<<"$output")"
echo "OK    trained: run $run_id in experiment '$experiment' on $url"
echo "next: scripts/setup/06-verify-all.sh"
