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

# --- The cluster scripts (scripts/setup/0[1-6]-*.sh, scripts/ops/scale-mlflow.sh) -------------
# Every command they run is printed first, as `+ ` and the command shell-quoted, on the
# script's stdout (also from inside $(...)). `run` is for commands that change something: with
# --dry-run (DRY_RUN=true) they are printed and not run. `probe` is for the few reads whose
# answer the next commands need (terraform output) and local checks (helm template): printed
# and run in both modes.

DRY_RUN=false

# For wrong arguments: the error line and exit status 2, as argparse does.
usage_error() {
    echo "error: $*" >&2
    exit 2
}

# For scripts whose only options are --dry-run and --help.
dry_run_or_help_arguments() {
    while (($#)); do
        case $1 in
        --dry-run) DRY_RUN=true ;;
        -h | --help)
            print_help "${BASH_SOURCE[1]}"
            exit 0
            ;;
        *) usage_error "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
}

# The words $@ on one line, quoted so that a POSIX shell reads them back unchanged (as
# Python's shlex.join does).
shell_quote() {
    local word quoted=() IFS=' '
    for word in "$@"; do
        if [[ -n $word && $word != *[!A-Za-z0-9_@%+=:,./-]* ]]; then
            quoted+=("$word")
        else
            quoted+=("'${word//\'/\'\\\'\'}'")
        fi
    done
    printf '%s\n' "${quoted[*]}"
}

# trace WORD...: print `+ WORDS` (a command about to run, or that --dry-run would run).
trace() {
    printf '+ %s\n' "$(shell_quote "$@")" >&"${TRACE_FD:-2}"
}

# run COMMAND...: print it, then run it unless this is a dry run.
run() {
    trace "$@"
    $DRY_RUN || "$@"
}

# probe COMMAND...: print it and run it, also in a dry run; for commands that change nothing.
probe() {
    trace "$@"
    "$@"
}

# apply_manifest COMMAND...: COMMAND renders manifests locally (kubectl create ...
# --dry-run=client -o yaml) and `kubectl apply --server-side` sends them. Server-side apply keeps
# no last-applied-configuration annotation, so a Secret's data is not copied into one; the
# setup owns what it applies, also where someone changed it by hand (--force-conflicts).
KUBECTL_APPLY=(kubectl apply --server-side --force-conflicts --field-manager=visionops-setup -f -)
apply_manifest() {
    printf '+ %s | %s\n' "$(shell_quote "$@")" "$(shell_quote "${KUBECTL_APPLY[@]}")" >&"${TRACE_FD:-2}"
    $DRY_RUN || "$@" | "${KUBECTL_APPLY[@]}"
}

# require_tools NAME...: fail unless each command is on PATH.
require_tools() {
    local name missing=()
    for name in "$@"; do
        command -v "$name" >/dev/null || missing+=("$name")
    done
    ((${#missing[@]} == 0)) || die "not on PATH: ${missing[*]} (docs/deploy.md lists how to install them)"
}

# The cluster's settings, from the environment; none is secret. Also keeps the script's stdout
# as TRACE_FD, so that commands traced inside $(...) are printed in order with the others.
load_cluster_settings() {
    exec {TRACE_FD}>&1
    AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
    CLUSTER_NAME=${CLUSTER_NAME:-visionops}
    NAMESPACE=${NAMESPACE:-visionops}
    TF_DIR=${TF_DIR:-$VISIONOPS_REPO_ROOT/deploy/terraform/aws-eks}
    MLFLOW_RELEASE=${MLFLOW_RELEASE:-mlflow}
    MLFLOW_CHART=${MLFLOW_CHART:-$VISIONOPS_REPO_ROOT/deploy/helm/mlflow}
    MLFLOW_VALUES=${MLFLOW_VALUES:-$MLFLOW_CHART/values-production.yaml}
    MLFLOW_SECRET=${MLFLOW_SECRET:-visionops-mlflow}
    # The Deployment, HPA and Ingress: the chart names them after the release.
    MLFLOW_DEPLOYMENT=${MLFLOW_DEPLOYMENT:-$MLFLOW_RELEASE}
    CLUSTER_SECRETS_DIR=${CLUSTER_SECRETS_DIR:-.visionops/cluster}
    MLFLOW_HOST=${MLFLOW_HOST:-}
    export AWS_REGION
}

# Without other credentials, the clients of the cluster's MLflow log in as its admin with the
# password 03-install-mlflow.sh generated (resolve_credentials reads the file).
use_cluster_admin_password() {
    if [[ -z ${MLFLOW_TRACKING_USERNAME:-} && -z ${VISIONOPS_ADMIN_PASSWORD:-} ]]; then
        export VISIONOPS_ADMIN_PASSWORD_FILE=${VISIONOPS_ADMIN_PASSWORD_FILE:-$CLUSTER_SECRETS_DIR/admin.password}
        [[ -f $VISIONOPS_ADMIN_PASSWORD_FILE ]] || $DRY_RUN ||
            die "no admin password in $VISIONOPS_ADMIN_PASSWORD_FILE: run 03-install-mlflow.sh first, or set VISIONOPS_ADMIN_PASSWORD_FILE"
    fi
}

# The URL clients use for the cluster's MLflow: MLFLOW_URL, else https://MLFLOW_HOST.
cluster_mlflow_url() {
    if [[ -n ${MLFLOW_URL:-} ]]; then
        echo "${MLFLOW_URL%/}"
    elif [[ -n $MLFLOW_HOST ]]; then
        echo "https://$MLFLOW_HOST"
    elif $DRY_RUN; then
        echo "https://MLFLOW_HOST"
    else
        die "set MLFLOW_HOST (the DNS name of the MLflow ingress) or MLFLOW_URL"
    fi
}

# Reads `terraform output -json` of TF_DIR into TF_OUTPUT (name -> value; lists and maps as
# JSON). Before the first apply there are none: a dry run goes on with placeholders.
declare -A TF_OUTPUT=()
load_terraform_outputs() {
    local json name value
    if ! json=$(probe terraform "-chdir=$TF_DIR" output -json); then
        $DRY_RUN || die "terraform output failed in $TF_DIR: run scripts/setup/02-terraform-apply.sh first"
        json='{}'
    fi
    while IFS=$'\t' read -r name value; do
        if [[ -n $name ]]; then TF_OUTPUT[$name]=$value; fi
    done < <("$(project_python)" -c '
import json, sys
for name, output in sorted(json.loads(sys.argv[1] or "{}").items()):
    value = output.get("value")
    text = value if isinstance(value, str) and "\n" not in value else json.dumps(value)
    print(name, text, sep="\t")
' "$json")
}

# tf_output NAME: one Terraform output; a placeholder in a dry run before the first apply.
tf_output() {
    if [[ -n ${TF_OUTPUT[$1]:-} ]]; then
        echo "${TF_OUTPUT[$1]}"
    elif $DRY_RUN; then
        echo "TERRAFORM_OUTPUT_$1"
    else
        die "terraform in $TF_DIR has no output '$1': is the stack applied (02-terraform-apply.sh)?"
    fi
}

# report_check STATUS NAME DETAIL: one line of a checklist (OK or FAIL); FAILs are counted in
# CHECK_FAILURES.
CHECK_FAILURES=0
report_check() {
    printf '%-4s  %-11s %s\n' "$1" "$2" "$3"
    [[ $1 == OK ]] || CHECK_FAILURES=$((CHECK_FAILURES + 1))
}

# check_step NAME WANT COMMAND...: run COMMAND (printed); OK with its last output line when it
# exits 0 and that line matches the pattern WANT ('*': anything, '?*': not empty); else FAIL.
# A dry run only prints COMMAND.
check_step() {
    local name=$1 want=$2 output="" last
    shift 2
    trace "$@"
    $DRY_RUN && return 0
    # shellcheck disable=SC2053  # WANT is a pattern
    if output=$("$@" 2>&1) && last=$(tail -n 1 <<<"$output") && [[ $last == $want ]]; then
        report_check OK "$name" "$last"
    else
        report_check FAIL "$name" "$(tail -n 1 <<<"$output") (wanted: $want)"
    fi
}

# --- Cluster add-ons: 02-terraform-apply.sh installs them, 06-verify-all.sh checks them -------
# What the stack relies on beyond the EKS-managed add-ons (aws_eks_addon in deploy/terraform):
# the AWS Load Balancer Controller gives the MLflow Ingress its ALB, the cluster autoscaler grows
# the GPU node group from zero, the KubeRay operator runs the ray-cluster chart's RayCluster and
# RayJob, and the NVIDIA device plugin advertises nvidia.com/gpu on the GPU nodes.
#
# Chart versions, pinned here only: the newest releases published by August 2026, checked
# against the chart repositories' indexes and release notes. eks-charts 3.5.0 runs controller
# v3.5.0, whose documented IAM policy iam.tf carries; autoscaler chart 9.59.0 runs
# cluster-autoscaler v1.35.0, whose minor must match the cluster's (kubernetes_version 1.35), so
# the two move together; kuberay-helm 1.7.0 is KubeRay v1.7.0; k8s-device-plugin 0.20.0.
# `helm upgrade --install` moves a cluster to these versions and changes nothing once it runs
# them. Helm installs a chart's CRDs only on the first install: a bump that changes CRDs (the
# controller's, KubeRay's) needs the new chart's CRDs applied first.
LB_CONTROLLER_CHART_VERSION=3.5.0
CLUSTER_AUTOSCALER_CHART_VERSION=9.59.0
KUBERAY_OPERATOR_CHART_VERSION=1.7.0
NVIDIA_DEVICE_PLUGIN_CHART_VERSION=0.20.0
# Local repository names and their URLs, in install order.
ADDON_HELM_REPOS=(
    eks https://aws.github.io/eks-charts
    autoscaler https://kubernetes.github.io/autoscaler
    kuberay https://ray-project.github.io/kuberay-helm/
    nvdp https://nvidia.github.io/k8s-device-plugin
)
# Each chart names its workload after the release. The two service account names are the ones
# the IRSA roles trust (iam.tf, local.irsa).
ADDON_NAMESPACE=kube-system
KUBERAY_NAMESPACE=kuberay-system
LB_CONTROLLER_RELEASE="aws-load-balancer-controller"
CLUSTER_AUTOSCALER_RELEASE="cluster-autoscaler"
KUBERAY_OPERATOR_RELEASE="kuberay-operator"
NVIDIA_DEVICE_PLUGIN_RELEASE="nvidia-device-plugin"
# The GPU node group's label and taint (main.tf, aws_eks_node_group.gpu).
GPU_NODE_LABEL=visionops.io/gpu
GPU_NODE_TAINT=nvidia.com/gpu

# install_cluster_addons CLUSTER REGION: adds the chart repositories and installs or upgrades the
# four add-ons (printed; not run in a dry run), each waited for so that 03's Ingress and the
# RayCluster find their controllers running. The IRSA role ARNs and the VPC come from the
# Terraform outputs (load_terraform_outputs first); nothing secret is on these command lines.
install_cluster_addons() {
    local cluster=$1 region=$2 lb_role autoscaler_role vpc i
    lb_role=$(tf_output load_balancer_controller_role_arn)
    autoscaler_role=$(tf_output cluster_autoscaler_role_arn)
    vpc=$(tf_output vpc_id)
    local wait_flags=(--wait --timeout 10m)
    for ((i = 0; i < ${#ADDON_HELM_REPOS[@]}; i += 2)); do
        run helm repo add "${ADDON_HELM_REPOS[i]}" "${ADDON_HELM_REPOS[i + 1]}" --force-update
    done

    # Region and VPC given, so the controller need not ask the instance metadata, which the
    # nodes' hop limit of 1 keeps from pods.
    run helm upgrade --install "$LB_CONTROLLER_RELEASE" eks/aws-load-balancer-controller \
        --version "$LB_CONTROLLER_CHART_VERSION" --namespace "$ADDON_NAMESPACE" \
        --set "clusterName=$cluster" --set "region=$region" --set "vpcId=$vpc" \
        --set "serviceAccount.name=$LB_CONTROLLER_RELEASE" \
        --set "serviceAccount.annotations.eks\.amazonaws\.com/role-arn=$lb_role" "${wait_flags[@]}"

    # Auto-discovery of the groups tagged k8s.io/cluster-autoscaler/enabled and .../CLUSTER.
    run helm upgrade --install "$CLUSTER_AUTOSCALER_RELEASE" autoscaler/cluster-autoscaler \
        --version "$CLUSTER_AUTOSCALER_CHART_VERSION" --namespace "$ADDON_NAMESPACE" \
        --set "autoDiscovery.clusterName=$cluster" --set "awsRegion=$region" \
        --set "fullnameOverride=$CLUSTER_AUTOSCALER_RELEASE" \
        --set "rbac.serviceAccount.name=$CLUSTER_AUTOSCALER_RELEASE" \
        --set "rbac.serviceAccount.annotations.eks\.amazonaws\.com/role-arn=$autoscaler_role" \
        "${wait_flags[@]}"

    # Watches every namespace, so the ray-cluster chart may go into any of them.
    run helm upgrade --install "$KUBERAY_OPERATOR_RELEASE" kuberay/kuberay-operator \
        --version "$KUBERAY_OPERATOR_CHART_VERSION" --namespace "$KUBERAY_NAMESPACE" \
        --create-namespace "${wait_flags[@]}"

    # Only on the GPU nodes, past their taint. affinity=null drops the chart's default node
    # affinity, which wants Node Feature Discovery labels these nodes do not carry.
    run helm upgrade --install "$NVIDIA_DEVICE_PLUGIN_RELEASE" nvdp/nvidia-device-plugin \
        --version "$NVIDIA_DEVICE_PLUGIN_CHART_VERSION" --namespace "$ADDON_NAMESPACE" \
        --set-string "nodeSelector.${GPU_NODE_LABEL//./\\.}=true" \
        --set "tolerations[0].key=$GPU_NODE_TAINT" --set "tolerations[0].operator=Exists" \
        --set "tolerations[0].effect=NoSchedule" --set affinity=null "${wait_flags[@]}"
}
