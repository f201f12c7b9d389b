#!/usr/bin/env bash
# Verify the EKS stack end to end (step 6 of the cluster setup, docs/deploy.md).
#
#   MLFLOW_HOST=mlflow.example.com scripts/setup/06-verify-all.sh    # OK or FAIL each, exit 1 if any fails
#   scripts/setup/06-verify-all.sh --dry-run                        # print the commands, run none
#
#   cluster    aws eks describe-cluster: the cluster is ACTIVE
#   database   aws rds describe-db-instances: the MLflow database is available
#   bucket     aws s3api get-bucket-versioning: the artifact bucket exists, versioning Enabled
#   lb-ctl     kubectl rollout status: the AWS Load Balancer Controller runs (kube-system)
#   autoscaler kubectl rollout status: the cluster autoscaler runs (kube-system)
#   kuberay    kubectl rollout status: the KubeRay operator runs (kuberay-system)
#   gpu-plugin kubectl get daemonset: the NVIDIA device plugin is installed (its pods run only
#              while there are GPU nodes)
#   rollout    kubectl rollout status: every MLflow replica runs the current version
#   release    helm status: the release is deployed
#   ingress    the Ingress has an ALB address (point MLFLOW_HOST's DNS record at it)
#   health     https://MLFLOW_HOST/health answers OK through the ALB and its certificate
# Names come from `terraform output -json` of TF_DIR (the only command a dry run runs);
# settings as for 03-install-mlflow.sh (NAMESPACE, MLFLOW_RELEASE, MLFLOW_HOST or MLFLOW_URL).
# Reads only: safe to re-run. 05-test-connection.sh checks the login and a training run.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

dry_run_or_help_arguments "$@"
load_cluster_settings
$DRY_RUN || require_tools terraform aws kubectl helm curl
url=$(cluster_mlflow_url)

load_terraform_outputs
region=$(tf_output region)
# The instance identifier is the first label of its address (ID.xxxx.REGION.rds.amazonaws.com).
db_address=$(tf_output rds_address)

check_step cluster ACTIVE aws eks describe-cluster --region "$region" \
    --name "$(tf_output cluster_name)" --query cluster.status --output text
check_step database available aws rds describe-db-instances --region "$region" \
    --db-instance-identifier "${db_address%%.*}" --query 'DBInstances[0].DBInstanceStatus' --output text
check_step bucket Enabled aws s3api get-bucket-versioning --region "$region" \
    --bucket "$(tf_output artifact_bucket_name)" --query Status --output text
# The add-ons 02-terraform-apply.sh installs (names in scripts/lib/common.sh).
rolled_out='*successfully rolled out*'
check_step lb-ctl "$rolled_out" kubectl rollout status "deployment/$LB_CONTROLLER_RELEASE" \
    --namespace "$ADDON_NAMESPACE" --timeout=120s
check_step autoscaler "$rolled_out" kubectl rollout status \
    "deployment/$CLUSTER_AUTOSCALER_RELEASE" --namespace "$ADDON_NAMESPACE" --timeout=120s
check_step kuberay "$rolled_out" kubectl rollout status "deployment/$KUBERAY_OPERATOR_RELEASE" \
    --namespace "$KUBERAY_NAMESPACE" --timeout=120s
check_step gpu-plugin "$NVIDIA_DEVICE_PLUGIN_RELEASE" kubectl get daemonset \
    "$NVIDIA_DEVICE_PLUGIN_RELEASE" --namespace "$ADDON_NAMESPACE" \
    --output 'jsonpath={.metadata.name}'

check_step rollout "$rolled_out" kubectl rollout status \
    "deployment/$MLFLOW_DEPLOYMENT" --namespace "$NAMESPACE" --timeout=300s

if status=$(run helm status "$MLFLOW_RELEASE" --namespace "$NAMESPACE" --output json 2>&1) && ! $DRY_RUN; then
    status=$(json_field "$status" info.status)
    if [[ $status == deployed ]]; then
        report_check OK release "$MLFLOW_RELEASE is deployed"
    else
        report_check FAIL release "$MLFLOW_RELEASE is ${status:-in an unknown state}, not deployed"
    fi
elif ! $DRY_RUN; then
    report_check FAIL release "$(tail -n 1 <<<"$status")"
fi

check_step ingress '?*' kubectl get ingress "$MLFLOW_DEPLOYMENT" --namespace "$NAMESPACE" \
    --output 'jsonpath={.status.loadBalancer.ingress[0].hostname}'
check_step health OK curl -fsS --max-time 15 "$url/health"

if $DRY_RUN; then
    echo "dry run: nothing was run"
elif ((CHECK_FAILURES)); then
    echo "$CHECK_FAILURES check(s) failed"
    exit 1
else
    echo "the stack works: $url (05-test-connection.sh checks logins and training)"
fi
