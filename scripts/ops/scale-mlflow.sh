#!/usr/bin/env bash
# Scale the cluster's MLflow server: its HPA's bounds, or the Deployment's replicas.
#
#   scripts/ops/scale-mlflow.sh                       # show the Deployment and the HPA
#   scripts/ops/scale-mlflow.sh --min 3 --max 8       # the HPA keeps 3 to 8 replicas
#   scripts/ops/scale-mlflow.sh --min 4 --max 4       # pin 4 replicas
#   scripts/ops/scale-mlflow.sh --replicas 0          # stop the server (e.g. for restore-mlflow.sh)
#   scripts/ops/scale-mlflow.sh --replicas 2          # start it again
#   scripts/ops/scale-mlflow.sh --dry-run --min 3     # print the commands, run none
#
# --min/--max patch the HPA (kubectl patch hpa); either alone changes only that bound, and the
# API server refuses a minimum above the maximum. --replicas sets the Deployment's count (kubectl
# scale); while the HPA is there it moves the count back within its bounds, except from 0: an
# HPA leaves a Deployment scaled to zero alone, so --replicas 0 stops the server until
# --replicas N. Then it waits for the rollout and shows the result. These changes last until
# the next `helm upgrade` (03-install-mlflow.sh), which applies the chart's values again: for
# lasting bounds set autoscaling.minReplicas/maxReplicas in deploy/helm/mlflow/values-production.yaml.
# Settings (environment): NAMESPACE (visionops), MLFLOW_RELEASE (mlflow), MLFLOW_DEPLOYMENT (the
# release name: the chart's Deployment and HPA). Setting the same numbers again changes nothing.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

min="" max="" replicas=""
while (($#)); do
    case $1 in
    --dry-run) DRY_RUN=true ;;
    --min | --max | --replicas)
        (($# >= 2)) || usage_error "$1 needs a number"
        [[ $2 =~ ^[0-9]+$ ]] || usage_error "$1 takes a whole number, not '$2'"
        case $1 in
        --min) min=$2 ;;
        --max) max=$2 ;;
        --replicas) replicas=$2 ;;
        esac
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
[[ -z $min ]] || ((min >= 1)) || usage_error "--min must be at least 1 (an HPA cannot scale to zero; use --replicas 0)"
[[ -z $max ]] || ((max >= 1)) || usage_error "--max must be at least 1"
[[ -z $min || -z $max ]] || ((min <= max)) || usage_error "--min $min is above --max $max"

load_cluster_settings
$DRY_RUN || require_tools kubectl
deployment=deployment/$MLFLOW_DEPLOYMENT
namespace=(--namespace "$NAMESPACE")

if [[ -n $min || -n $max ]]; then
    bounds=${min:+\"minReplicas\": $min}
    [[ -z $max ]] || bounds+=${bounds:+, }"\"maxReplicas\": $max"
    patch="{\"spec\": {$bounds}}"
    run kubectl patch "hpa/$MLFLOW_DEPLOYMENT" "${namespace[@]}" --type=merge --patch "$patch"
fi
[[ -z $replicas ]] || run kubectl scale "$deployment" "${namespace[@]}" "--replicas=$replicas"
if [[ -n $min || -n $max || -n $replicas ]]; then
    run kubectl rollout status "$deployment" "${namespace[@]}" --timeout=300s
fi
run kubectl get deployment,hpa "${namespace[@]}" --selector "app.kubernetes.io/instance=$MLFLOW_RELEASE"
