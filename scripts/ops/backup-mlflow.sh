#!/usr/bin/env bash
# Back up the team tracking server's two PostgreSQL databases: runs and the model registry
# (VISIONOPS_TRACKING_DB) and users and permissions (VISIONOPS_AUTH_DB).
#
#   scripts/ops/backup-mlflow.sh                  # into backups/<UTC timestamp>/
#   scripts/ops/backup-mlflow.sh --output DIR     # into DIR (must not exist yet)
#
# Writes tracking.dump and auth.dump (pg_dump custom format, restore with restore-mlflow.sh)
# and manifest.json: time, source host/port, database names, pg_dump, PostgreSQL and MLflow
# versions, each database's alembic revision, the row count of every table and the sha256 of
# each dump. Each dump and its row counts come from one snapshot, so a backup of a live server
# is consistent and its counts describe exactly what the dump holds.
#
# NOT INCLUDED: artifacts (models, checkpoints, figures) live in the artifact store, S3 or
# MinIO. Copy them separately, e.g.
#   aws s3 sync s3://mlflow-artifacts backups/<stamp>/artifacts [--endpoint-url $MLFLOW_S3_ENDPOINT_URL]
# (the manifest's "artifacts" section has the exact command for this server: the store and
# S3 endpoint `visionops server start` recorded in STATE_DIR/server.json, else the settings').
#
# Settings: the same variables as `visionops server start` (VISIONOPS_POSTGRES_URI,
# VISIONOPS_TRACKING_DB, VISIONOPS_AUTH_DB, ...), from the environment or ./.env.
# Needs pg_dump, psql, sha256sum and python3. A failed backup leaves nothing behind: the files
# are written into DIR.partial-* and renamed to DIR at the end.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

usage() {
    print_help
}

output=""
while (($#)); do
    case $1 in
    -o | --output)
        (($# >= 2)) || die "$1 needs a folder"
        output=$2
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

load_settings
require_commands pg_dump psql sha256sum
PYTHON=$(project_python)
MANIFEST_TOOL=$VISIONOPS_REPO_ROOT/scripts/ops/manifest.py

stamp=$(date -u +%Y%m%dT%H%M%SZ)
output=${output:-backups/$stamp}
output=${output%/}
[[ -e $output ]] && die "$output already exists; choose another --output"
mkdir -p "$(dirname "$output")"
partial=$(mktemp -d "$output.partial-XXXXXX")
trap 'rm -rf "$partial"' EXIT

# Fail early, with PostgreSQL's own message, when a database is missing or unreachable.
server_version=$(psql_value "$TRACKING_DB" "SHOW server_version")
psql_value "$AUTH_DB" "SELECT 1" >/dev/null

# dump ROLE DATABASE VERSION_TABLE: pg_dump DATABASE into $partial/ROLE.dump inside a snapshot
# exported by a psql session that also counts the rows and reads the alembic revision in it.
# Sets REVISION and COUNTS.
dump() {
    local role=$1 database=$2 version_table=$3 uri snapshot exists session_pid
    uri=$(database_uri "$database")
    coproc SESSION { psql -qAtX -v ON_ERROR_STOP=1 -d "$uri" 2>&1; }
    # shellcheck disable=SC2153  # set by coproc
    session_pid=$SESSION_PID
    local to_session=${SESSION[1]} from_session=${SESSION[0]}
    echo "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();" \
        >&"$to_session"
    read -r snapshot <&"$from_session" || true
    [[ $snapshot =~ ^[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?$ ]] ||
        die "cannot open a snapshot of $database: $snapshot"
    echo "SELECT to_regclass('public.$version_table') IS NOT NULL;" >&"$to_session"
    read -r exists <&"$from_session" || true
    [[ $exists == t ]] || die "$database has no $version_table table: is it an MLflow database?"
    note "dumping $database ..."
    pg_dump --format=custom --snapshot="$snapshot" --file="$partial/$role.dump" --dbname="$uri" ||
        die "pg_dump of $database failed"
    echo "SELECT string_agg(version_num, ',') FROM public.$version_table;" >&"$to_session"
    read -r REVISION <&"$from_session" || true
    echo "$ROW_COUNTS_SQL" >&"$to_session"
    read -r COUNTS <&"$from_session" || true
    [[ $COUNTS == \{* ]] || die "cannot count the rows of $database: $COUNTS"
    echo "COMMIT;" >&"$to_session"
    exec {to_session}>&-
    wait "$session_pid" || die "the psql session on $database failed"
}

dump tracking "$TRACKING_DB" alembic_version
tracking_revision=$REVISION tracking_counts=$COUNTS
dump auth "$AUTH_DB" alembic_version_auth
auth_revision=$REVISION auth_counts=$COUNTS

mlflow_version=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("mlflow"))' \
    2>/dev/null || echo "unknown (no mlflow where the backup ran)")
# The store the server really uses: `visionops server start` records it (with the S3 endpoint,
# e.g. its --local-s3-port) in the state folder; the settings only say what a start would use.
s3_endpoint=${MLFLOW_S3_ENDPOINT_URL:-}
server_record=$STATE_DIR/server.json
if [[ -f $server_record ]]; then
    artifacts=$("$PYTHON" "$MANIFEST_TOOL" record "$server_record" artifacts_destination)
    s3_endpoint=$("$PYTHON" "$MANIFEST_TOOL" record "$server_record" s3_endpoint)
elif [[ -n ${VISIONOPS_ARTIFACTS_DESTINATION:-} ]]; then
    artifacts=$VISIONOPS_ARTIFACTS_DESTINATION
elif [[ -n ${MLFLOW_S3_ENDPOINT_URL:-} ]]; then
    artifacts=s3://mlflow-artifacts
else
    artifacts=$STATE_DIR/artifacts
    [[ $artifacts == /* ]] || artifacts=$PWD/$artifacts
fi

"$PYTHON" "$MANIFEST_TOOL" write "$partial/manifest.json" \
    --created-at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --postgres-uri "$POSTGRES_URI" \
    --server-version "$server_version" \
    --pg-dump-version "$(pg_dump --version)" \
    --mlflow-version "$mlflow_version" \
    --artifacts-destination "$artifacts" \
    --s3-endpoint "$s3_endpoint" \
    --database tracking "$TRACKING_DB" tracking.dump \
    "$(sha256sum "$partial/tracking.dump" | cut -d' ' -f1)" "$tracking_revision" "$tracking_counts" \
    --database auth "$AUTH_DB" auth.dump \
    "$(sha256sum "$partial/auth.dump" | cut -d' ' -f1)" "$auth_revision" "$auth_counts"

[[ ! -e $output ]] || die "$output appeared while the backup ran; the backup was not kept"
mv "$partial" "$output"
trap - EXIT
echo "backup written to $output"
"$PYTHON" "$MANIFEST_TOOL" summary "$output/manifest.json" | sed 's/^/  /'
echo "  not included: artifacts in $artifacts; copy them with:"
echo "    $("$PYTHON" "$MANIFEST_TOOL" get "$output/manifest.json" artifacts.backup_command |
    sed "s#BACKUP_DIR#$output#")"
