#!/usr/bin/env bash
# Create the team's users and grants on the tracking server (step 3 of the setup).
#
#   scripts/setup/create-users.sh                        # the example team, scripts/setup/team.example
#   scripts/setup/create-users.sh --file team.txt        # your team (same format)
#   VISIONOPS_TEAM_USERS="alice bob carol:admin" \
#   VISIONOPS_TEAM_GRANTS="alice:experiment:cifar10:EDIT bob:model:vision-classifier:READ" \
#       scripts/setup/create-users.sh                    # the team from variables instead
#
# Users that exist are skipped, experiments are created only when missing and a grant replaces
# the user's earlier grant on that resource, so re-running is safe. A new user's password is
# read from PASSWORDS_DIR/USER.password, or generated there (mode 0600) when the file does not
# exist: hand it to the user (PASSWORDS_DIR: --passwords-dir, default .visionops/team-passwords).
# Users are created with `visionops admin create-user`, grants with `visionops admin grant`,
# as MLFLOW_TRACKING_USERNAME/PASSWORD, else the server admin (VISIONOPS_ADMIN_USERNAME/PASSWORD),
# on MLFLOW_TRACKING_URI when it is an http(s) URL, else the configured server.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

usage() {
    print_help
}

team_file=""
passwords_dir=.visionops/team-passwords
while (($#)); do
    case $1 in
    --file)
        (($# >= 2)) || die "--file needs a file"
        team_file=$2
        shift
        ;;
    --passwords-dir)
        (($# >= 2)) || die "--passwords-dir needs a folder"
        passwords_dir=$2
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

load_settings
require_commands curl
API_URL=$(client_url)
resolve_credentials
VISIONOPS=$(visionops_command)
# visionops admin talks to MLFLOW_TRACKING_URI as MLFLOW_TRACKING_USERNAME/PASSWORD.
export MLFLOW_TRACKING_URI=$API_URL MLFLOW_TRACKING_USERNAME=$API_USER
export MLFLOW_TRACKING_PASSWORD=$API_PASSWORD

# The team as entries of the file format, from the variables or the file.
team_entries() {
    if [[ -z $team_file && (-n ${VISIONOPS_TEAM_USERS:-} || -n ${VISIONOPS_TEAM_GRANTS:-}) ]]; then
        local entry user resource name permission
        for entry in ${VISIONOPS_TEAM_USERS:-}; do
            echo "user ${entry%%:*}$([[ $entry == *:admin ]] && echo " admin")"
        done
        for entry in ${VISIONOPS_TEAM_GRANTS:-}; do
            IFS=: read -r user resource name permission <<<"$entry"
            [[ $resource == experiment ]] && echo "experiment $name"
            echo "grant $user $resource $name $permission"
        done
        return
    fi
    local file=${team_file:-${VISIONOPS_TEAM_FILE:-$VISIONOPS_REPO_ROOT/scripts/setup/team.example}}
    [[ -f $file ]] || die "team file $file not found"
    grep -v -E '^[[:space:]]*(#|$)' "$file" || true
}

api GET /health
[[ $API_STATUS == 200 ]] || die "no tracking server answers at $API_URL (scripts/setup/start-stack.sh)"

valid_name='^[A-Za-z0-9._@+-]+$'
created=0 skipped=0 granted=0
entries=$(team_entries)
while read -r -u 3 kind first second third fourth extra; do
    case $kind in
    "") ;;
    experiment)
        [[ -n $first && -z $second ]] || die "expected 'experiment NAME', got: $kind $first $second"
        api GET "/api/2.0/mlflow/experiments/get-by-name?experiment_name=$(urlencode "$first")"
        if [[ $API_STATUS == 200 ]]; then
            echo "experiment $first: exists"
        elif [[ $API_STATUS == 404 ]]; then
            api POST /api/2.0/mlflow/experiments/create "{\"name\": $(json_string "$first")}"
            [[ $API_STATUS == 200 ]] || die "creating experiment $first: HTTP $API_STATUS: $API_BODY"
            echo "experiment $first: created"
        else
            die "looking up experiment $first as '$API_USER': HTTP $API_STATUS: $API_BODY"
        fi
        ;;
    user)
        [[ $first =~ $valid_name ]] || die "'$first' is not a valid user name (letters, digits, . _ @ + -)"
        [[ -z $second || $second == admin ]] || die "expected 'user NAME [admin]', got: user $first $second"
        api GET "/api/2.0/mlflow/users/get?username=$first"
        if [[ $API_STATUS == 200 ]]; then
            echo "user $first: exists, skipped"
            skipped=$((skipped + 1))
            continue
        fi
        [[ $API_STATUS == 404 ]] || die "looking up user $first as '$API_USER': HTTP $API_STATUS: $API_BODY"
        password_file=$passwords_dir/$first.password
        if [[ ! -f $password_file ]]; then
            mkdir -p "$passwords_dir"
            chmod 700 "$passwords_dir"
            (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$password_file")
            echo "user $first: generated a password in $password_file"
        fi
        admin_flag=()
        [[ $second == admin ]] && admin_flag=(--admin)
        "$VISIONOPS" admin create-user --username "$first" --password-file "$password_file" "${admin_flag[@]}"
        created=$((created + 1))
        ;;
    grant)
        [[ ($second == experiment || $second == model) && -n $fourth && -z $extra ]] ||
            die "expected 'grant USER experiment|model NAME PERMISSION', got: grant $first $second $third $fourth $extra"
        "$VISIONOPS" admin grant --user "$first" "--$second" "$third" --permission "$fourth"
        granted=$((granted + 1))
        ;;
    *) die "unknown entry '$kind' (expected experiment, user or grant)" ;;
    esac
done 3<<<"$entries"
echo "done: $created user(s) created, $skipped already existed, $granted grant(s) applied"
