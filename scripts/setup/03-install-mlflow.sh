#!/usr/bin/env bash
# Install or upgrade the MLflow server on the EKS cluster (step 3 of the cluster setup,
# docs/deploy.md): deploy/helm/mlflow with RDS, the S3 bucket and the IRSA role that
# 02-terraform-apply.sh created.
#
#   MLFLOW_HOST=mlflow.example.com MLFLOW_CERTIFICATE_ARN=arn:aws:acm:... \
#       scripts/setup/03-install-mlflow.sh [--dry-run]
#
# 1. reads `terraform output -json` of TF_DIR (role ARN, bucket, database host and user, the
#    Secrets Manager secret of the database password);
# 2. the namespace NAMESPACE, and the Secret MLFLOW_SECRET with the keys the chart reads:
#      admin-password     VISIONOPS_ADMIN_PASSWORD_FILE, else CLUSTER_SECRETS_DIR/admin.password
#                         (generated there, mode 0600, on the first run: give it to 04 and 05)
#      flask-secret-key   CLUSTER_SECRETS_DIR/flask-secret-key (generated likewise)
#      database-password  VISIONOPS_DB_PASSWORD_FILE, else read from Secrets Manager (the RDS
#                         master secret, db_master_secret_arn)
#      backend-store-uri  postgresql:///DB (libpq takes host, user and password from the pod)
#    built by `kubectl create secret --from-file` and sent by server-side apply, so no password
#    is ever on a command line, in this script's output or in an annotation;
# 3. a Job that creates the auth database (VISIONOPS_AUTH_DB, default mlflow_auth) on RDS when
#    it is missing: RDS is reachable only from the nodes;
# 4. helm upgrade --install MLFLOW_RELEASE MLFLOW_CHART -f MLFLOW_VALUES --set ... --wait.
# The pods carry an HMAC of the credentials, so they restart exactly when a credential changed:
# after RDS rotates the database password, re-run this script. Re-running otherwise changes
# nothing. MLflow reads the admin password only while its auth database has no users: change
# it later through MLflow, not here.
# Settings (environment): MLFLOW_HOST and MLFLOW_CERTIFICATE_ARN (required), MLFLOW_IMAGE (the
# visionops/server image in your registry, REPOSITORY[:TAG] or REPOSITORY@sha256:...), NAMESPACE
# (visionops), MLFLOW_RELEASE (mlflow), MLFLOW_CHART, MLFLOW_VALUES
# (deploy/helm/mlflow/values-production.yaml), MLFLOW_SECRET (visionops-mlflow),
# MLFLOW_SERVICE_ACCOUNT (mlflow: the name the IRSA role trusts), CLUSTER_SECRETS_DIR
# (.visionops/cluster), TF_DIR. --dry-run reads and generates no secret, prints the commands,
# and runs only `terraform output -json` and `helm template` (the chart rendered with the same
# values, as a check).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

dry_run_or_help_arguments "$@"
load_cluster_settings
MLFLOW_SERVICE_ACCOUNT=${MLFLOW_SERVICE_ACCOUNT:-mlflow}
AUTH_DB=${VISIONOPS_AUTH_DB:-mlflow_auth}
AUTH_DB_JOB=$MLFLOW_RELEASE-create-auth-database
# The chart's in-cluster PostgreSQL image: psql for the auth database Job.
PSQL_IMAGE=${PSQL_IMAGE:-postgres:16.9}
PYTHON=$(project_python)

$DRY_RUN || require_tools terraform aws kubectl helm
[[ -n $MLFLOW_HOST ]] || $DRY_RUN || die "set MLFLOW_HOST, the DNS name clients will use for MLflow"
[[ -n ${MLFLOW_CERTIFICATE_ARN:-} ]] || $DRY_RUN ||
    die "set MLFLOW_CERTIFICATE_ARN, the ACM certificate of $MLFLOW_HOST"
[[ -f $MLFLOW_VALUES ]] || die "MLFLOW_VALUES=$MLFLOW_VALUES does not exist"
[[ $AUTH_DB =~ ^[a-z_][a-z0-9_]*$ ]] || die "VISIONOPS_AUTH_DB=$AUTH_DB is not a plain database name"

load_terraform_outputs
region=$(tf_output region)
db_host=$(tf_output rds_address)
db_port=$(tf_output rds_endpoint)
db_port=${db_port##*:}
[[ $db_port =~ ^[0-9]+$ ]] || db_port=5432
db_user=$(tf_output db_master_username)
db_name=$(tf_output db_name)
destination=$(tf_output mlflow_artifacts_destination)
destination=${destination#s3://}
bucket=${destination%%/*}
prefix=""
[[ $destination != */* ]] || prefix=${destination#*/}

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

# new_secret_file FILE: a random secret in FILE (mode 0600), unless FILE exists: kept for re-runs.
new_secret_file() {
    [[ -f $1 ]] && return 0
    printf '+ %s\n' "(umask 077 && head -c 24 /dev/urandom | base64 >$(shell_quote "$1"))" >&"$TRACE_FD"
    $DRY_RUN && return 0
    [[ -d $(dirname "$1") ]] || (umask 077 && mkdir -p "$(dirname "$1")")
    (umask 077 && head -c 24 /dev/urandom | base64 >"$1")
}

# copy_secret FILE NAME: FILE's text without its final line break as workdir/NAME.
copy_secret() {
    $DRY_RUN && return 0
    [[ -s $1 ]] || die "the secret file $1 is missing or empty"
    (umask 077 && printf '%s' "$(<"$1")" >"$workdir/$2")
}

admin_file=${VISIONOPS_ADMIN_PASSWORD_FILE:-$CLUSTER_SECRETS_DIR/admin.password}
[[ -n ${VISIONOPS_ADMIN_PASSWORD_FILE:-} ]] || new_secret_file "$admin_file"
new_secret_file "$CLUSTER_SECRETS_DIR/flask-secret-key"
copy_secret "$admin_file" admin-password
copy_secret "$CLUSTER_SECRETS_DIR/flask-secret-key" flask-secret-key
if ! $DRY_RUN && (($(wc -m <"$workdir/admin-password") < 12)); then
    die "the admin password in $admin_file has fewer than 12 characters (MLflow refuses it)"
fi
if [[ -n ${VISIONOPS_DB_PASSWORD_FILE:-} ]]; then
    copy_secret "$VISIONOPS_DB_PASSWORD_FILE" database-password
else
    # The RDS-managed secret is JSON {"username": ..., "password": ...}; it stays in this
    # process and the private workdir.
    master_secret=$(run aws secretsmanager get-secret-value --region "$region" \
        --secret-id "$(tf_output db_master_secret_arn)" --query SecretString --output text)
    if ! $DRY_RUN; then
        (umask 077 && "$PYTHON" -c 'import json, sys; sys.stdout.write(json.load(sys.stdin)["password"])' \
            <<<"$master_secret" >"$workdir/database-password") ||
            die "the secret $(tf_output db_master_secret_arn) holds no password"
    fi
    unset master_secret
fi
$DRY_RUN || (umask 077 && printf 'postgresql:///%s' "$db_name" >"$workdir/backend-store-uri")

# Keyed with the Flask secret key, so the annotation tells nothing about the passwords.
credentials_hmac=HMAC_OF_THE_CREDENTIALS
$DRY_RUN || credentials_hmac=$("$PYTHON" -c '
import hashlib, hmac, pathlib, sys
folder = pathlib.Path(sys.argv[1])
message = b"\0".join((folder / name).read_bytes() for name in sys.argv[2:])
print(hmac.new((folder / "flask-secret-key").read_bytes(), message, hashlib.sha256).hexdigest())
' "$workdir" admin-password database-password backend-store-uri)

apply_manifest kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml
apply_manifest kubectl create secret generic "$MLFLOW_SECRET" --namespace "$NAMESPACE" \
    "--from-file=admin-password=$workdir/admin-password" \
    "--from-file=flask-secret-key=$workdir/flask-secret-key" \
    "--from-file=database-password=$workdir/database-password" \
    "--from-file=backend-store-uri=$workdir/backend-store-uri" \
    --dry-run=client -o yaml

# The Job manifest: nothing secret in it (the password comes from the Secret).
auth_database_job() {
    cat <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $AUTH_DB_JOB
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: mlflow
    app.kubernetes.io/instance: $MLFLOW_RELEASE
    app.kubernetes.io/component: create-auth-database
    app.kubernetes.io/part-of: visionops
spec:
  backoffLimit: 3
  ttlSecondsAfterFinished: 3600
  template:
    metadata:
      labels:
        app.kubernetes.io/name: mlflow
        app.kubernetes.io/instance: $MLFLOW_RELEASE
        app.kubernetes.io/component: create-auth-database
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: psql
          image: $PSQL_IMAGE
          imagePullPolicy: IfNotPresent
          command: [sh, -c]
          args:
            - |
              set -eu
              found=\$(psql -v ON_ERROR_STOP=1 -tAc "SELECT count(*) FROM pg_database WHERE datname = '\$AUTH_DB'")
              if [ "\$found" = 0 ]; then
                psql -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"\$AUTH_DB\""
                echo "created the database \$AUTH_DB"
              else
                echo "the database \$AUTH_DB exists"
              fi
          env:
            - name: AUTH_DB
              value: "$AUTH_DB"
            - name: PGHOST
              value: "$db_host"
            - name: PGPORT
              value: "$db_port"
            - name: PGUSER
              value: "$db_user"
            - name: PGDATABASE
              value: "$db_name"
            - name: PGSSLMODE
              value: require
            - name: PGPASSWORD
              valueFrom:
                secretKeyRef:
                  name: $MLFLOW_SECRET
                  key: database-password
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              cpu: 500m
              memory: 128Mi
          securityContext:
            allowPrivilegeEscalation: false
            privileged: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities:
              drop: [ALL]
EOF
}

# A Job's template cannot change in place, and one that failed is not retried by an apply:
# each run starts it afresh (the SQL creates the database only when it is missing).
run kubectl delete job "$AUTH_DB_JOB" --namespace "$NAMESPACE" --ignore-not-found --wait
printf '+ %s <<'\''EOF'\''\n%s\nEOF\n' "$(shell_quote "${KUBECTL_APPLY[@]}")" "$(auth_database_job)" >&"$TRACE_FD"
$DRY_RUN || auth_database_job | "${KUBECTL_APPLY[@]}"
run kubectl wait "job/$AUTH_DB_JOB" --namespace "$NAMESPACE" --for=condition=complete --timeout=300s

chart_values=(
    --set-string "serviceAccount.name=$MLFLOW_SERVICE_ACCOUNT"
    --set-string "serviceAccount.roleArn=$(tf_output mlflow_role_arn)"
    --set-string "database.existingSecret=$MLFLOW_SECRET"
    --set-string "database.host=$db_host"
    --set "database.port=$db_port"
    --set-string "database.user=$db_user"
    --set-string "database.name=$db_name"
    --set-string "database.authName=$AUTH_DB"
    --set-string "artifacts.bucket=$bucket"
    --set-string "artifacts.prefix=$prefix"
    --set-string "artifacts.region=$region"
    --set ingress.enabled=true
    --set-string "ingress.host=${MLFLOW_HOST:-MLFLOW_HOST}"
    --set-string "ingress.certificateArn=${MLFLOW_CERTIFICATE_ARN:-MLFLOW_CERTIFICATE_ARN}"
    --set-string "podAnnotations.visionops\.io/credentials-hmac=$credentials_hmac"
)
if [[ -n ${MLFLOW_IMAGE:-} ]]; then
    if [[ $MLFLOW_IMAGE == *@* ]]; then
        chart_values+=(--set-string "image.repository=${MLFLOW_IMAGE%@*}"
            --set-string "image.digest=${MLFLOW_IMAGE#*@}")
    elif [[ ${MLFLOW_IMAGE##*/} == *:* ]]; then
        chart_values+=(--set-string "image.repository=${MLFLOW_IMAGE%:*}"
            --set-string "image.tag=${MLFLOW_IMAGE##*:}")
    else
        chart_values+=(--set-string "image.repository=$MLFLOW_IMAGE")
    fi
fi
release=("$MLFLOW_RELEASE" "$MLFLOW_CHART" --namespace "$NAMESPACE" --values "$MLFLOW_VALUES"
    "${chart_values[@]}")
! $DRY_RUN || probe helm template "${release[@]}" >/dev/null
run helm upgrade --install "${release[@]}" --wait --timeout 10m

$DRY_RUN && exit 0
echo "MLflow is installed for https://$MLFLOW_HOST; point that DNS name at the ALB (06-verify-all.sh"
echo "prints its address). The admin ('${VISIONOPS_ADMIN_USERNAME:-admin}') password is in $admin_file."
echo "next: scripts/setup/04-create-users.sh"
