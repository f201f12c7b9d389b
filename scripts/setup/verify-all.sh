#!/usr/bin/env bash
# Verify the whole stack end to end (step 5 of the setup, `make setup-verify`).
#
#   scripts/setup/verify-all.sh
#
# 1. scripts/setup/check-prerequisites.sh   (tools, libraries, PostgreSQL, admin password)
# 2. scripts/setup/test-connection.sh       (health, basic-auth on, login)
# 3. `visionops train --recipe debug` against the server (a few seconds on synthetic data, in the
#    experiment VISIONOPS_VERIFY_EXPERIMENT, default visionops-verify);
# 4. the run is on the server, FINISHED, with its metrics, and its artifacts can be listed
#    through the server (so the artifact store behind it works too).
# Server and credentials as for test-connection.sh; settings from the environment or ./.env.
# Each run adds one small run to the verify experiment; otherwise safe to re-run.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

only_help_argument "$@"

setup_dir=$(dirname "${BASH_SOURCE[0]}")
echo "== prerequisites"
"$setup_dir/check-prerequisites.sh"
echo "== connection"
"$setup_dir/test-connection.sh"

load_settings
API_URL=$(client_url)
resolve_credentials
VISIONOPS=$(visionops_command)
experiment=${VISIONOPS_VERIFY_EXPERIMENT:-visionops-verify}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

echo "== training (visionops train --recipe debug) on $API_URL as '$API_USER'"
if ! MLFLOW_TRACKING_URI=$API_URL MLFLOW_TRACKING_USERNAME=$API_USER \
    MLFLOW_TRACKING_PASSWORD=$API_PASSWORD \
    "$VISIONOPS" train --recipe debug --json --experiment "$experiment" \
    --run-name verify-all --output-dir "$workdir/outputs" >"$workdir/train.log" 2>&1; then
    tail -n 20 "$workdir/train.log" >&2
    die "the debug training failed (its output is above)"
fi
run_id=$(json_field "$(tail -n 1 "$workdir/train.log")" run_id)
[[ -n $run_id ]] || die "the training printed no run id: $(tail -n 1 "$workdir/train.log")"
echo "OK    trained: run $run_id"

api GET "/api/2.0/mlflow/runs/get?run_id=$run_id"
[[ $API_STATUS == 200 ]] || die "run $run_id is not on $API_URL: HTTP $API_STATUS: $API_BODY"
status=$(json_field "$API_BODY" run.info.status)
[[ $status == FINISHED ]] || die "run $run_id is $status on the server, not FINISHED"
metrics=$("$(project_python)" -c 'import json, sys; print(len(json.loads(sys.argv[1])["run"]["data"].get("metrics", [])))' "$API_BODY")
((metrics > 0)) || die "run $run_id has no metrics on the server"
echo "OK    on the server: run $run_id is FINISHED with $metrics metric(s)"

api GET "/api/2.0/mlflow/artifacts/list?run_id=$run_id"
[[ $API_STATUS == 200 ]] || die "listing the artifacts of run $run_id: HTTP $API_STATUS: $API_BODY"
artifacts=$("$(project_python)" -c 'import json, sys; print(" ".join(f["path"] for f in json.loads(sys.argv[1]).get("files", [])))' "$API_BODY")
[[ -n $artifacts ]] || die "run $run_id has no artifacts on the server: is the artifact store reachable from it?"
echo "OK    artifacts: $artifacts"
echo "the stack works: $API_URL/#/experiments (experiment '$experiment')"
