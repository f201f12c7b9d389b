#!/usr/bin/env bash
# Restore a backup made by backup-mlflow.sh into the configured tracking and auth databases.
#
#   scripts/ops/restore-mlflow.sh BACKUP_DIR          # refuses if the databases exist
#   scripts/ops/restore-mlflow.sh BACKUP_DIR --yes    # drops them first (WITH (FORCE))
#
# 1. checks each dump against the sha256 in BACKUP_DIR/manifest.json (a damaged or edited
#    backup is refused before anything is touched);
# 2. refuses to replace existing databases unless --yes; with --yes, refuses while a server
#    still answers at the configured address (stop it first: visionops server stop);
# 3. creates the databases and pg_restores both dumps, each in one transaction; if anything
#    fails, the databases this run created are dropped again, so it is safe to re-run;
# 4. compares every table's row count and the alembic revisions with the manifest and fails on
#    any difference;
# 5. prints what to do next (restart the server; `mlflow db upgrade` if MLflow is newer than
#    the one that made the backup).
#
# The target databases are the current settings' (VISIONOPS_POSTGRES_URI, VISIONOPS_TRACKING_DB,
# VISIONOPS_AUTH_DB, from the environment or ./.env), so a backup can be restored under other
# names or on another server. Restored objects belong to the connecting PostgreSQL user.
# Artifacts are not restored: they live in S3 (see the manifest's "artifacts" section).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

usage() {
    print_help
}

backup=""
replace=false
while (($#)); do
    case $1 in
    -y | --yes) replace=true ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
        [[ -z $backup ]] || die "one backup folder at a time (got '$backup' and '$1')"
        backup=${1%/}
        ;;
    esac
    shift
done
[[ -n $backup ]] || die "which backup? usage: restore-mlflow.sh BACKUP_DIR [--yes]"
[[ -d $backup ]] || die "$backup is not a folder"

load_settings
require_commands pg_restore psql sha256sum
PYTHON=$(project_python)
MANIFEST_TOOL=$VISIONOPS_REPO_ROOT/scripts/ops/manifest.py
manifest=$backup/manifest.json

# Role -> dump file, source database and target database.
declare -A dump_file source_db target_db=([tracking]=$TRACKING_DB [auth]=$AUTH_DB)
listing=$("$PYTHON" "$MANIFEST_TOOL" dumps "$manifest") || exit 1
while IFS=$'\t' read -r role name file sha256; do
    dump_file[$role]=$backup/$file
    source_db[$role]=$name
    [[ -f $backup/$file ]] || die "$backup/$file is missing"
    actual=$(sha256sum "$backup/$file" | cut -d' ' -f1)
    [[ $actual == "$sha256" ]] ||
        die "checksum mismatch for $backup/$file: the manifest says $sha256, the file has $actual; this backup is damaged, restore another one"
done <<<"$listing"
note "checksums match the manifest"
[[ $TRACKING_DB != "$AUTH_DB" ]] || die "the tracking and auth databases must differ"

# Run SQL from stdin on the maintenance database with DB set to database $1 (quoted by psql).
on_server() {
    local database=$1 output
    if ! output=$(psql -qAtX -v ON_ERROR_STOP=1 -v db="$database" -d "$(database_uri postgres)" 2>&1); then
        die "PostgreSQL at $(redacted_uri "$POSTGRES_URI"): $(head -n 1 <<<"$output")"
    fi
    printf '%s' "$output"
}

existing=()
for role in tracking auth; do
    exists=$(on_server "${target_db[$role]}" <<<"SELECT count(*) FROM pg_database WHERE datname = :'db';")
    [[ $exists == 1 ]] && existing+=("${target_db[$role]}")
done
if ((${#existing[@]})); then
    $replace || die "database(s) ${existing[*]} already exist at $(redacted_uri "$POSTGRES_URI"); pass --yes to drop and replace them (stop the server first)"
    if curl -fsS -o /dev/null --max-time 3 "$SERVER_URL/health" 2>/dev/null; then
        die "a tracking server answers at $SERVER_URL: stop it before replacing its databases (visionops server stop)"
    fi
fi

created=()
drop_created() {
    local database
    for database in "${created[@]}"; do
        on_server "$database" <<<'DROP DATABASE IF EXISTS :"db" WITH (FORCE);' >/dev/null || true
    done
    ((${#created[@]} == 0)) || note "dropped the partly restored database(s) ${created[*]}; fix the problem and run this again"
}
trap drop_created EXIT

for role in tracking auth; do
    database=${target_db[$role]}
    if $replace; then
        on_server "$database" <<<'DROP DATABASE IF EXISTS :"db" WITH (FORCE);' >/dev/null
    fi
    on_server "$database" <<<'CREATE DATABASE :"db";' >/dev/null
    created+=("$database")
    note "restoring $role: ${source_db[$role]} (backup) -> $database ..."
    pg_restore --no-owner --no-acl --exit-on-error --single-transaction \
        --dbname="$(database_uri "$database")" "${dump_file[$role]}" ||
        die "pg_restore of ${dump_file[$role]} into $database failed"
done

for role in tracking auth; do
    database=${target_db[$role]}
    counts=$(psql_value "$database" "$ROW_COUNTS_SQL")
    "$PYTHON" "$MANIFEST_TOOL" compare "$manifest" "$role" "$counts" || exit 1
done
revision=$(psql_value "$TRACKING_DB" "SELECT string_agg(version_num, ',') FROM alembic_version")
expected=$("$PYTHON" "$MANIFEST_TOOL" get "$manifest" databases.tracking.alembic_revision)
[[ $revision == "$expected" ]] ||
    die "restored tracking database is at alembic revision $revision, the backup says $expected"
created=()
trap - EXIT

backup_mlflow=$("$PYTHON" "$MANIFEST_TOOL" get "$manifest" mlflow_version)
installed_mlflow=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("mlflow"))' \
    2>/dev/null || echo unknown)
echo "restored $backup into $TRACKING_DB and $AUTH_DB at $(redacted_uri "$POSTGRES_URI")"
echo "next:"
if [[ $installed_mlflow != unknown && $backup_mlflow != "$installed_mlflow" &&
    $(printf '%s\n%s\n' "$backup_mlflow" "$installed_mlflow" | sort -V | tail -n 1) == "$installed_mlflow" ]]; then
    echo "  - the backup was made with MLflow $backup_mlflow, this machine has $installed_mlflow:"
    echo "    mlflow db upgrade \"\$VISIONOPS_POSTGRES_URI/$TRACKING_DB\"   (the auth database upgrades itself at start)"
fi
echo "  - start the server: visionops server start --detach   (or make server)"
echo "  - artifacts are not in this backup; if the bucket was lost, copy them back:"
echo "    $("$PYTHON" "$MANIFEST_TOOL" get "$manifest" artifacts.restore_command |
    sed "s#BACKUP_DIR#$backup#")"
