{{- define "mlflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mlflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: visionops
{{- end }}

{{- define "mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mlflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: the existing ServiceAccount to run as (serviceAccount.create is false)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with the keys of .Values.secretKeys: the chart's own or an existing one. */}}
{{- define "mlflow.secretName" -}}
{{- if .Values.database.createSecret }}
{{- include "mlflow.fullname" . }}
{{- else }}
{{- required "database.existingSecret: the Secret with the database URI and passwords (or set database.createSecret)" .Values.database.existingSecret }}
{{- end }}
{{- end }}

{{- define "mlflow.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "mlflow.postgresqlHost" -}}
{{- printf "%s-postgresql" (include "mlflow.fullname" .) }}
{{- end }}

{{- define "mlflow.minioHost" -}}
{{- printf "%s-minio" (include "mlflow.fullname" .) }}
{{- end }}

{{- define "mlflow.artifactsDestination" -}}
{{- $bucket := required "artifacts.bucket: the S3 bucket of the artifacts" .Values.artifacts.bucket }}
{{- if .Values.artifacts.prefix }}
{{- printf "s3://%s/%s" $bucket (trimAll "/" .Values.artifacts.prefix) }}
{{- else }}
{{- printf "s3://%s" $bucket }}
{{- end }}
{{- end }}

{{/*
The Host headers MLflow accepts: the ingress host, the Service's in-cluster names with and
without a port, localhost for `kubectl port-forward`, and .Values.allowedHosts.
*/}}
{{- define "mlflow.allowedHosts" -}}
{{- $svc := include "mlflow.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*" }}
{{- range $name := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- $hosts = append $hosts $name }}
{{- $hosts = append $hosts (printf "%s:*" $name) }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.ingress.host }}
{{- $hosts = append $hosts .Values.ingress.host }}
{{- end }}
{{- concat $hosts .Values.allowedHosts | uniq | join "," }}
{{- end }}

{{/*
checkov reads skips from the workload's own annotations as "CHECK_ID=reason" (no "=" in the
reason); each says why the check does not fit.
*/}}
{{- define "mlflow.checkovImageSkip" -}}
{{- if not .Values.image.digest -}}
checkov.io/skip-image-digest: "CKV_K8S_43=pinned by its release tag (the project version); set image.digest to pin the image by content"
{{- end -}}
{{- end }}
