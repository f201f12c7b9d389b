#!/usr/bin/env bash
# Check this machine and the AWS account before the EKS stack is built (step 1 of the cluster
# setup, docs/deploy.md).
#
#   scripts/setup/01-setup-aws.sh              # OK or FAIL for each check, exit 1 if any fails
#   scripts/setup/01-setup-aws.sh --dry-run    # print the commands, run none
#
# Checks:
#   tools        aws, terraform, kubectl and helm are on PATH (their versions are printed)
#   identity     `aws sts get-caller-identity` answers: who and which account will pay; with
#                AWS_ACCOUNT_ID set, the credentials must be for that account
#   region       AWS_REGION has at least 3 availability zones (the VPC spans 3)
#   certificate  with MLFLOW_CERTIFICATE_ARN set, the ACM certificate for the ingress is ISSUED
#   sources      TF_DIR (deploy/terraform/aws-eks) and MLFLOW_CHART (deploy/helm/mlflow) exist
# Settings (environment): AWS_REGION (default us-east-1), AWS_ACCOUNT_ID, MLFLOW_CERTIFICATE_ARN,
# TF_DIR, MLFLOW_CHART; AWS credentials as the aws CLI reads them (AWS_PROFILE, ...).
# Reads only: safe to re-run.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

dry_run_or_help_arguments "$@"
load_cluster_settings

# The version commands, one per tool; a missing tool is reported, not run.
declare -A version_command=(
    [aws]="aws --version"
    [terraform]="terraform version"
    [kubectl]="kubectl version --client"
    [helm]="helm version --short"
)
for tool in aws terraform kubectl helm; do
    read -r -a command <<<"${version_command[$tool]}"
    if $DRY_RUN || command -v "$tool" >/dev/null; then
        version=$(run "${command[@]}" 2>&1) || true
        $DRY_RUN || report_check OK tools "$(head -n 1 <<<"$version")"
    else
        report_check FAIL tools "$tool is not on PATH (docs/deploy.md: the tools)"
    fi
done

# Without the aws CLI the AWS checks cannot run; it is reported missing above.
if $DRY_RUN || command -v aws >/dev/null; then
    if ! identity=$(run aws sts get-caller-identity --output json 2>&1); then
        report_check FAIL identity "no usable AWS credentials: $(tail -n 1 <<<"$identity")"
    elif ! $DRY_RUN; then
        account=$(json_field "$identity" Account)
        if [[ -n ${AWS_ACCOUNT_ID:-} && $account != "$AWS_ACCOUNT_ID" ]]; then
            report_check FAIL identity "the credentials are for account $account, AWS_ACCOUNT_ID is $AWS_ACCOUNT_ID"
        else
            report_check OK identity "$(json_field "$identity" Arn) in account $account"
        fi
    fi

    if ! zones=$(run aws ec2 describe-availability-zones --region "$AWS_REGION" \
        --filters Name=state,Values=available --query 'AvailabilityZones[].ZoneName' \
        --output text 2>&1); then
        report_check FAIL region "$AWS_REGION: $(tail -n 1 <<<"$zones")"
    elif ! $DRY_RUN; then
        read -r -a zone_list <<<"$zones"
        if ((${#zone_list[@]} >= 3)); then
            report_check OK region "$AWS_REGION: ${#zone_list[@]} availability zones"
        else
            report_check FAIL region "$AWS_REGION has ${#zone_list[@]} available zone(s); the VPC needs 3"
        fi
    fi

    if [[ -n ${MLFLOW_CERTIFICATE_ARN:-} ]]; then
        check_step certificate ISSUED aws acm describe-certificate --region "$AWS_REGION" \
            --certificate-arn "$MLFLOW_CERTIFICATE_ARN" --query Certificate.Status --output text
    elif ! $DRY_RUN; then
        report_check OK certificate "MLFLOW_CERTIFICATE_ARN is not set yet (03-install-mlflow.sh needs it)"
    fi
fi

if ! $DRY_RUN; then
    if compgen -G "$TF_DIR/*.tf" >/dev/null; then
        report_check OK sources "Terraform in $TF_DIR"
    else
        report_check FAIL sources "no *.tf files in TF_DIR=$TF_DIR"
    fi
    if [[ -f $MLFLOW_CHART/Chart.yaml ]]; then
        report_check OK sources "the MLflow chart in $MLFLOW_CHART"
    else
        report_check FAIL sources "no Chart.yaml in MLFLOW_CHART=$MLFLOW_CHART"
    fi
fi

if $DRY_RUN; then
    echo "dry run: nothing was run"
elif ((CHECK_FAILURES)); then
    echo "$CHECK_FAILURES check(s) failed"
    exit 1
else
    echo "all checks passed; next: scripts/setup/02-terraform-apply.sh"
fi
