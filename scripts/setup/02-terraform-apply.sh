#!/usr/bin/env bash
# Build or update the EKS stack with Terraform, point kubectl at the cluster and install its
# add-ons (step 2 of the cluster setup, docs/deploy.md).
#
#   scripts/setup/02-terraform-apply.sh              # plan, ask, apply, kubeconfig, add-ons
#   scripts/setup/02-terraform-apply.sh --yes        # apply without asking (CI)
#   scripts/setup/02-terraform-apply.sh --dry-run    # print the commands, run none
#
# 1. terraform -chdir=TF_DIR init, then plan -out=visionops.tfplan; with no changes nothing is
#    applied (so re-running changes nothing);
# 2. asks before applying the saved plan (a terminal is needed unless --yes), runs terraform
#    apply visionops.tfplan and removes the plan file, which may hold secret values (and, while
#    it exists, is git-ignored as *.tfplan);
# 3. aws eks update-kubeconfig for the cluster named by the `cluster_name` output, in the
#    region of the `region` output (else CLUSTER_NAME and AWS_REGION);
# 4. the cluster add-ons, with helm repo add --force-update and helm upgrade --install at the
#    chart versions pinned in scripts/lib/common.sh: the AWS Load Balancer Controller and the
#    cluster autoscaler in kube-system with their IRSA roles (the *_role_arn outputs), the KubeRay
#    operator in kuberay-system, the NVIDIA device plugin on the GPU nodes. Also when the plan
#    had no changes, so a re-run repairs an add-on someone removed and otherwise changes nothing.
# Settings (environment): TF_DIR (default deploy/terraform/aws-eks), TF_VAR_FILE (a .tfvars
# file for the plan; TF_DIR/terraform.tfvars is read anyway), AWS_REGION, CLUSTER_NAME; the
# Terraform variables themselves as TF_VAR_* or in the .tfvars file, secrets never on the
# command line. In a dry run only `terraform output -json` (a read) runs.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

assume_yes=false
while (($#)); do
    case $1 in
    --dry-run) DRY_RUN=true ;;
    -y | --yes) assume_yes=true ;;
    -h | --help)
        print_help
        exit 0
        ;;
    *) usage_error "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

load_cluster_settings
$DRY_RUN || require_tools terraform aws helm
[[ -d $TF_DIR ]] || $DRY_RUN || die "TF_DIR=$TF_DIR is not a folder"
terraform=(terraform "-chdir=$TF_DIR")

run "${terraform[@]}" init -input=false

plan=("${terraform[@]}" plan -input=false -out=visionops.tfplan -detailed-exitcode)
if [[ -n ${TF_VAR_FILE:-} ]]; then
    [[ -f $TF_VAR_FILE ]] || die "TF_VAR_FILE=$TF_VAR_FILE does not exist"
    # -chdir makes relative paths relative to TF_DIR.
    plan+=("-var-file=$(realpath "$TF_VAR_FILE")")
fi
# -detailed-exitcode: 0 no changes, 2 changes planned, 1 an error. A dry run shows the apply.
plan_status=0
run "${plan[@]}" || plan_status=$?
! $DRY_RUN || plan_status=2
case $plan_status in
0) $DRY_RUN || echo "no changes: the stack matches the configuration" ;;
2)
    if ! $assume_yes && ! $DRY_RUN; then
        [[ -t 0 ]] || die "the plan above has changes; pass --yes to apply it without a terminal"
        read -r -p "Apply the plan above? [y/N] " answer
        [[ $answer == [yY]* ]] || die "not applied; the plan is in $TF_DIR/visionops.tfplan"
    fi
    run "${terraform[@]}" apply -input=false visionops.tfplan
    run rm -f "$TF_DIR/visionops.tfplan"
    ;;
*) die "terraform plan failed (exit status $plan_status)" ;;
esac

load_terraform_outputs
cluster=${TF_OUTPUT[cluster_name]:-$CLUSTER_NAME}
region=${TF_OUTPUT[region]:-$AWS_REGION}
run aws eks update-kubeconfig --name "$cluster" --region "$region" --alias "$cluster"
install_cluster_addons "$cluster" "$region"
$DRY_RUN || echo "kubectl now talks to $cluster and its add-ons run; next: 03-install-mlflow.sh"
