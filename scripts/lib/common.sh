# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Shared by scripts/ops/ and scripts/setup/ (sourced, never run): the server stack's settings,
# read the way `visionops server start` reads them (src/visionops/server/settings.py): the
# VISIONOPS_* variables, then ./.env for those not set (variables already set win, as with
# python-dotenv in the CLI), then the same defaults.

VISIONOPS_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# The calling script's (or file $1's) header comment: line 2 up to `set -euo pipefail`, no #s.
print_help() {
    sed -n '2,/^set -euo/p' "${1:-${BASH_SOURCE[1]}}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# For scripts that take no arguments: --help prints the header, anything else is an error.
only_help_argument() {
    case ${1:-} in
    -h | --help)
        print_help "${BASH_SOURCE[1]}"
        exit 0
        ;;
    "") ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
}

die() {
    echo "error: $*" >&2
    exit 1
}

note() {
    echo "$*" >&2
}

# Export KEY=VALUE lines of a dotenv file (quotes stripped, comments skipped) without
# overriding variables that are already set. Nothing in it is evaluated by the shell.
load_dotenv() {
    local file=${1:-.env} line key value
    [[ -f $file ]] || return 0
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line#"${line%%[![:space:]]*}"}
        [[ -z $line || $line == \#* ]] && continue
        line=${line#export }
        [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        if [[ $value =~ ^\"(.*)\"[[:space:]]*$ || $value =~ ^\'(.*)\'[[:space:]]*$ ]]; then
            value=${BASH_REMATCH[1]}
        else
            value=${value%%[[:space:]]#*}
            value=${value%"${value##*[![:space:]]}"}
        fi
        [[ -n ${!key+set} ]] || export "$key=$value"
    done <"$file"
}

# Sets POSTGRES_URI, TRACKING_DB, AUTH_DB, STATE_DIR, SERVER_URL from the environment and .env.
load_settings() {
    load_dotenv .env
    POSTGRES_URI=${VISIONOPS_POSTGRES_URI:-postgresql://postgres@127.0.0.1:5432}
    POSTGRES_URI=${POSTGRES_URI%/}
    # A password in the URI goes to libpq as PGPASSWORD instead, so that it never shows on the
    # command line of psql, pg_dump or pg_restore (where `ps` would show it).
    if [[ $POSTGRES_URI =~ ^(postgres(ql)?://[^:/@]+):([^@/]*)@(.*)$ ]]; then
        local password=${BASH_REMATCH[3]}
        POSTGRES_URI=${BASH_REMATCH[1]}@${BASH_REMATCH[4]}
        if [[ -z ${PGPASSWORD:-} ]]; then
            PGPASSWORD=$(printf '%b' "${password//%/\\x}")
            export PGPASSWORD
        fi
    fi
    TRACKING_DB=${VISIONOPS_TRACKING_DB:-mlflow}
    AUTH_DB=${VISIONOPS_AUTH_DB:-mlflow_auth}
    STATE_DIR=${VISIONOPS_SERVER_STATE_DIR:-.visionops/server}
    local host=${VISIONOPS_SERVER_HOST:-127.0.0.1}
    # A server bound to every address is reached on loopback from this machine.
    [[ $host == 0.0.0.0 || $host == "::" ]] && host=127.0.0.1
    SERVER_URL=http://$host:${VISIONOPS_SERVER_PORT:-5000}
}

# The URI of database $1 on the configured PostgreSQL server (as ServerSettings.database_uri).
database_uri() {
    printf '%s/%s' "$POSTGRES_URI" "$1"
}

# The URI with its password (if any) replaced by ***, for messages.
redacted_uri() {
    # shellcheck disable=SC2001  # a regex substitution, not a literal one
    sed -E 's#(://[^:/@]+):[^@/]*@#\1:***@#' <<<"$1"
}

# The project's virtualenv Python (VISIONOPS_PYTHON, else .venv/bin/python, else python3).
project_python() {
    if [[ -n ${VISIONOPS_PYTHON:-} ]]; then
        echo "$VISIONOPS_PYTHON"
    elif [[ -x $VISIONOPS_REPO_ROOT/.venv/bin/python ]]; then
        echo "$VISIONOPS_REPO_ROOT/.venv/bin/python"
    else
        command -v python3 || command -v python || echo python3
    fi
}

# The visionops command of the project's virtualenv, else the one on PATH.
visionops_command() {
    local python
    python=$(project_python)
    if [[ -x $(dirname "$python")/visionops ]]; then
        echo "$(dirname "$python")/visionops"
    else
        command -v visionops || die "visionops is not installed: run 'make install'"
    fi
}

require_commands() {
    local name
    for name in "$@"; do
        command -v "$name" >/dev/null ||
            die "$name is not on PATH (install the PostgreSQL client tools, e.g. apt-get install postgresql-client)"
    done
}

# Run one SQL statement on database $1 and print its unaligned, tuples-only output; on failure
# exit with psql's first error line.
psql_value() {
    local uri output
    uri=$(database_uri "$1")
    if ! output=$(psql -qAtX -v ON_ERROR_STOP=1 -d "$uri" -c "$2" 2>&1); then
        die "PostgreSQL database $1 at $(redacted_uri "$POSTGRES_URI"): $(head -n 1 <<<"$output")"
    fi
    printf '%s\n' "$output"
}

# One JSON object {"schema.table": rows} for every table of the current database, taken in the
# caller's transaction (so a backup's counts describe exactly what its dump holds).
ROW_COUNTS_SQL="SELECT coalesce(json_object_agg(table_schema || '.' || table_name, \
(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, \
table_name), false, true, '')))[1]::text::bigint ORDER BY table_schema, table_name), '{}') \
FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
AND table_schema NOT IN ('pg_catalog', 'information_schema');"

# The server clients talk to: MLFLOW_TRACKING_URI when it is an http(s) URL, else the configured
# server (the Makefile's sqlite:// default for the quickstart is not a server).
client_url() {
    case ${MLFLOW_TRACKING_URI:-} in
    http://* | https://*) echo "${MLFLOW_TRACKING_URI%/}" ;;
    *) echo "$SERVER_URL" ;;
    esac
}

# Sets API_USER and API_PASSWORD: MLflow's client credentials when set, else the server admin's
# (VISIONOPS_ADMIN_USERNAME with VISIONOPS_ADMIN_PASSWORD or VISIONOPS_ADMIN_PASSWORD_FILE).
resolve_credentials() {
    if [[ -n ${MLFLOW_TRACKING_USERNAME:-} ]]; then
        API_USER=$MLFLOW_TRACKING_USERNAME
        API_PASSWORD=${MLFLOW_TRACKING_PASSWORD:-}
        return
    fi
    API_USER=${VISIONOPS_ADMIN_USERNAME:-admin}
    API_PASSWORD=${VISIONOPS_ADMIN_PASSWORD:-}
    if [[ -z $API_PASSWORD && -n ${VISIONOPS_ADMIN_PASSWORD_FILE:-} ]]; then
        API_PASSWORD=$(<"$VISIONOPS_ADMIN_PASSWORD_FILE") ||
            die "cannot read VISIONOPS_ADMIN_PASSWORD_FILE=$VISIONOPS_ADMIN_PASSWORD_FILE"
        API_PASSWORD=${API_PASSWORD%"${API_PASSWORD##*[![:space:]]}"}
    fi
    [[ -n $API_PASSWORD ]] ||
        die "no credentials: set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or VISIONOPS_ADMIN_PASSWORD"
}

# api METHOD PATH [JSON]: call $API_URL as $API_USER (anonymous when API_USER is empty).
# Sets API_STATUS (000 when the server cannot be reached) and API_BODY. The credentials go to
# curl on stdin, never on its command line where `ps` would show them.
api() {
    local method=$1 path=$2 data=${3:-} body_file config=""
    local args=(-sS -X "$method" --max-time 30 -w '%{http_code}' -K -)
    body_file=$(mktemp)
    args+=(-o "$body_file")
    [[ -z $data ]] || args+=(-H 'Content-Type: application/json' --data "$data")
    if [[ -n ${API_USER:-} ]]; then
        local credentials=$API_USER:$API_PASSWORD
        credentials=${credentials//\\/\\\\}
        config="user = \"${credentials//\"/\\\"}\""
    fi
    API_STATUS=$(curl "${args[@]}" "$API_URL$path" <<<"$config" 2>/dev/null) || API_STATUS=000
    API_BODY=$(<"$body_file")
    rm -f "$body_file"
}

# json_field JSON KEY.PATH: print one value of a JSON document (empty when absent).
json_field() {
    "$(project_python)" -c '
import json, sys
value = json.loads(sys.argv[1] or "{}")
for key in sys.argv[2].split("."):
    value = value.get(key) if isinstance(value, dict) else None
print("" if value is None else value if isinstance(value, str) else json.dumps(value))
' "$1" "$2"
}

# $1 escaped for a URL's query string.
urlencode() {
    "$(project_python)" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"
}

# $1 as a JSON string literal.
json_string() {
    "$(project_python)" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"
}
