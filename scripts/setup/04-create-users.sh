#!/usr/bin/env bash
# Create the team's users and grants on the cluster's MLflow (step 4 of the cluster setup,
# docs/deploy.md): scripts/setup/create-users.sh pointed at https://MLFLOW_HOST.
#
#   MLFLOW_HOST=mlflow.example.com scripts/setup/04-create-users.sh                 # team.example
#   MLFLOW_HOST=mlflow.example.com scripts/setup/04-create-users.sh --file team.txt
#   scripts/setup/04-create-users.sh --dry-run
#
# The team file, VISIONOPS_TEAM_USERS/VISIONOPS_TEAM_GRANTS and --passwords-dir are as for
# create-users.sh, which creates the users with `visionops admin create-user` (existing ones
# are skipped) and the grants with `visionops admin grant` (a grant replaces the earlier one), so
# re-running is safe. It runs as the MLflow admin: VISIONOPS_ADMIN_USERNAME (admin) with the
# password of VISIONOPS_ADMIN_PASSWORD_FILE, by default CLUSTER_SECRETS_DIR/admin.password as
# written by 03-install-mlflow.sh (or MLFLOW_TRACKING_USERNAME/PASSWORD when set). The server is
# MLFLOW_URL, else https://MLFLOW_HOST. --dry-run prints the command and runs nothing: what it
# creates depends on who already exists on the server.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

forwarded=()
while (($#)); do
    case $1 in
    --dry-run) DRY_RUN=true ;;
    --file | --passwords-dir)
        (($# >= 2)) || usage_error "$1 needs a value"
        forwarded+=("$1" "$2")
        shift
        ;;
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
run env "MLFLOW_TRACKING_URI=$url" "$VISIONOPS_REPO_ROOT/scripts/setup/create-users.sh" "${forwarded[@]}"
$DRY_RUN || echo "next: scripts/setup/05-test-connection.sh"
