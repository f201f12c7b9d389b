#!/usr/bin/env bash
# Start the native stack (step 2 of the setup): PostgreSQL if it runs on this machine and is
# down, then the tracking server in the background unless it already runs.
#
#   scripts/setup/start-stack.sh                          # settings from the environment or ./.env
#   scripts/setup/start-stack.sh --local-s3-port 9000     # extra options for `visionops server start`
#
# PostgreSQL is started with `pg_ctlcluster --skip-systemctl-redirect VERSION CLUSTER start`
# (Debian/Ubuntu's postgresql-common; the cluster listening on the URI's port, else the newest
# version's `main`), which needs root or the postgres user. A PostgreSQL on another host is only
# checked, never started. The server is `visionops server start --detach`: it creates the
# databases and the bucket when missing and returns once /health answers; its log is
# scripts/ops/logs-mlflow.sh. Safe to re-run: what already runs is left alone.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

case ${1:-} in
-h | --help)
    print_help
    exit 0
    ;;
esac

load_settings
require_commands pg_isready
VISIONOPS=$(visionops_command)
maintenance_uri=$(database_uri postgres)
postgres=$(redacted_uri "$POSTGRES_URI")

[[ $POSTGRES_URI =~ ^postgres(ql)?://([^@/]*@)?(\[[^]]*\]|[^:/?]*)(:([0-9]+))? ]] ||
    die "VISIONOPS_POSTGRES_URI=$postgres is not a postgresql://[user@]host[:port] URI"
pg_host=${BASH_REMATCH[3]}
pg_port=${BASH_REMATCH[5]:-5432}

start_local_postgres() {
    command -v pg_ctlcluster >/dev/null ||
        die "PostgreSQL is down at $postgres and pg_ctlcluster is not available: start it with your service manager"
    local version="" cluster=main
    if command -v pg_lsclusters >/dev/null; then
        read -r version cluster < <(pg_lsclusters --no-header | awk -v port="$pg_port" '$3 == port {print $1, $2; exit}') || true
    fi
    if [[ -z $version ]]; then
        # shellcheck disable=SC2012  # version folders are plain numbers
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
        cluster=main
    fi
    [[ -n $version ]] || die "no PostgreSQL cluster under /etc/postgresql to start"
    echo "starting PostgreSQL $version/$cluster ..."
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start ||
        die "pg_ctlcluster could not start PostgreSQL $version/$cluster (run as root or postgres)"
    local attempt
    for attempt in $(seq 30); do
        pg_isready -q -t 1 -d "$maintenance_uri" && return 0
        sleep 1
    done
    die "PostgreSQL $version/$cluster started but does not answer at $postgres after ${attempt} s"
}

if pg_isready -q -t 3 -d "$maintenance_uri"; then
    echo "PostgreSQL: already running at $postgres"
else
    case $pg_host in
    "" | 127.0.0.1 | localhost | "[::1]" | /*) start_local_postgres ;;
    *) die "PostgreSQL does not answer at $postgres; it runs on $pg_host, start it there" ;;
    esac
    echo "PostgreSQL: running at $postgres"
fi

if "$VISIONOPS" server status >/dev/null 2>&1; then
    echo "tracking server: already running ($("$VISIONOPS" server status))"
    exit 0
fi
if curl -fsS -o /dev/null --max-time 3 "$SERVER_URL/health" 2>/dev/null; then
    echo "tracking server: something already answers at $SERVER_URL (started elsewhere); leaving it"
    exit 0
fi
"$VISIONOPS" server start --detach "$@"
echo "tracking server: started; log: scripts/ops/logs-mlflow.sh"
