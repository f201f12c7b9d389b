{{- define "serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "serve.fullname" -}}
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

{{- define "serve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: visionops
{{- end }}

{{- define "serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "serve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "serve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: the existing ServiceAccount to run as (serviceAccount.create is false)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "serve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
checkov reads skips from the workload's own annotations as "CHECK_ID=reason" (no "=" in the
reason); each says why the check does not fit.
*/}}
{{- define "serve.checkovImageSkip" -}}
{{- if not .Values.image.digest -}}
checkov.io/skip-image-digest: "CKV_K8S_43=pinned by its release tag (the project version); set image.digest to pin the image by content"
{{- end -}}
{{- end }}

{{- define "serve.modelUri" -}}
{{- if .Values.model.uri }}
{{- .Values.model.uri }}
{{- else }}
{{- printf "models:/%s@%s" (required "model.name: the registered model to serve" .Values.model.name) (required "model.alias: the alias to follow (or set model.uri)" .Values.model.alias) }}
{{- end }}
{{- end }}
