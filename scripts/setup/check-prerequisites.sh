#!/usr/bin/env bash
# Check that this machine can run the team tracking server natively (step 1 of the setup).
#
#   scripts/setup/check-prerequisites.sh
#
# Prints OK or FAIL for each check and exits 1 if any fails:
#   python      the project's virtualenv (.venv, or VISIONOPS_PYTHON) imports visionops
#   mlflow      MLflow with the auth extra (Flask-WTF) that `--app-name basic-auth` needs
#   psycopg     the PostgreSQL driver of the tracking and auth stores
#   boto3       the S3 client of the artifact store
#   commands    pg_isready, psql, pg_dump, pg_restore (PostgreSQL client tools) and curl
#   postgres    PostgreSQL answers at VISIONOPS_POSTGRES_URI and accepts the login
#   admin       an admin password is set (VISIONOPS_ADMIN_PASSWORD or _FILE), is not MLflow's
#               default and has at least 12 characters: the rule `visionops server start` applies
# Settings come from the environment or ./.env. Changes nothing: safe to re-run.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

only_help_argument "$@"

load_settings
PYTHON=$(project_python)
failures=0

report() {
    local status=$1 name=$2 detail=$3
    printf '%-4s  %-9s %s\n' "$status" "$name" "$detail"
    [[ $status == OK ]] || failures=$((failures + 1))
}

# check NAME PYTHON_CODE: run the code with the project's Python; its last output line is the
# detail printed next to OK or FAIL.
check_python() {
    local name=$1 code=$2 output
    if output=$("$PYTHON" -c "$code" 2>&1); then
        report OK "$name" "$(tail -n 1 <<<"$output")"
    else
        report FAIL "$name" "$(tail -n 1 <<<"$output")"
    fi
}

if [[ -x $PYTHON ]] || command -v "$PYTHON" >/dev/null; then
    check_python python "import sys, visionops; print(f'{sys.executable} (Python {sys.version.split()[0]}), visionops importable')"
else
    report FAIL python "no Python at $PYTHON: run 'make install'"
fi
check_python mlflow "
import importlib.metadata as m, importlib.util
assert importlib.util.find_spec('mlflow.server.auth'), 'mlflow.server.auth is missing'
import flask_wtf
print(f\"mlflow {m.version('mlflow')} with the auth extra (Flask-WTF {m.version('flask-wtf')})\")"
check_python psycopg "import psycopg; print(f'psycopg {psycopg.__version__}')"
check_python boto3 "import boto3; print(f'boto3 {boto3.__version__}')"

missing=()
for command in pg_isready psql pg_dump pg_restore curl; do
    command -v "$command" >/dev/null || missing+=("$command")
done
if ((${#missing[@]})); then
    report FAIL commands "not on PATH: ${missing[*]} (apt-get install postgresql-client curl)"
else
    report OK commands "pg_isready, psql, pg_dump, pg_restore, curl ($(pg_dump --version))"
fi

postgres=$(redacted_uri "$POSTGRES_URI")
if ! command -v psql >/dev/null; then
    report FAIL postgres "cannot check $postgres without psql"
elif ! pg_isready -q -t 5 -d "$(database_uri postgres)"; then
    report FAIL postgres "nothing answers at $postgres (start it: scripts/setup/start-stack.sh)"
elif output=$(psql -qAtX -d "$(database_uri postgres)" -c 'SHOW server_version' 2>&1); then
    report OK postgres "$postgres answers (PostgreSQL $output)"
else
    report FAIL postgres "$postgres refuses the login: $(head -n 1 <<<"$output")"
fi

check_python admin "
from visionops.server.settings import ServerConfigError, ServerSettings
try:
    settings = ServerSettings.from_env()
    settings.checked_admin_password()
except ServerConfigError as error:
    raise SystemExit(str(error))
print(f'a password is set for {settings.admin_username!r}')"

if ((failures)); then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
