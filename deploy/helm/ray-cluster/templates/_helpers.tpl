{{- define "ray-cluster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The RayCluster's name, also the prefix of the head Service KubeRay creates. KubeRay refuses a
RayCluster name over 53 characters, hence the cut.
*/}}
{{- define "ray-cluster.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 53 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ray-cluster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ray-cluster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ray-cluster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ray-cluster.labels" -}}
helm.sh/chart: {{ include "ray-cluster.chart" . }}
{{ include "ray-cluster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: visionops
{{- end }}

{{- define "ray-cluster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ray-cluster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ray-cluster.claimName" -}}
{{- default (printf "%s-shared" (include "ray-cluster.fullname" .)) .Values.sharedStorage.existingClaim }}
{{- end }}

{{- define "ray-cluster.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}
{{- end }}

{{- define "ray-cluster.gpuImage" -}}
{{- if .Values.image.gpuDigest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.gpuDigest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository .Values.image.gpuTag }}
{{- end }}
{{- end }}

{{/*
checkov's skips, as annotations of the pod templates (checkov reads "CHECK_ID=reason" from a
workload's annotations; the test scans each template as a Pod). Called with a dict: root, kind
(head, worker or submitter), digest (whether the image is pinned by digest).
*/}}
{{- define "ray-cluster.checkovSkips" -}}
{{- $values := .root.Values }}
{{- if ne $values.image.pullPolicy "Always" }}
checkov.io/skip-pull-policy: "CKV_K8S_15=release tags are never moved; Always would fetch the image manifest at every autoscaled pod start"
{{- end }}
{{- if not .digest }}
checkov.io/skip-image-digest: "CKV_K8S_43=pinned by its release tag (the project version); set image.digest and image.gpuDigest to pin by content"
{{- end }}
{{- if eq .kind "submitter" }}
checkov.io/skip-probes: "CKV_K8S_8=a run-to-completion submitter (ray job submit, then ray job logs) has nothing to probe"
checkov.io/skip-readiness: "CKV_K8S_9=a run-to-completion submitter serves nothing"
{{- else }}
checkov.io/skip-probes: "CKV_K8S_8=KubeRay gives every Ray container its own liveness probe"
checkov.io/skip-readiness: "CKV_K8S_9=KubeRay gives every Ray container its own readiness probe"
{{- if $values.tracking.existingSecret }}
checkov.io/skip-secret-env: "CKV_K8S_35=MLflow reads the tracking credentials from environment variables and a trial sees its node's environment; Ray's runtime env must not carry them"
{{- end }}
{{- end }}
{{- if eq .kind "head" }}
checkov.io/skip-token: "CKV_K8S_38=the autoscaler sidecar of the head scales the worker groups through the Kubernetes API"
{{- end }}
{{- end }}

{{/* The environment of every Ray container: the tracking server and the values' extras. */}}
{{- define "ray-cluster.env" -}}
- name: MLFLOW_TRACKING_URI
  value: {{ .Values.tracking.uri | quote }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Credentials reach the Ray processes through their pods' environment: a trial sees what
`ray start` ran with on its node, while Ray's runtime env (shown by the dashboard) carries
nothing secret.
*/}}
{{- define "ray-cluster.envFrom" -}}
{{- with .Values.tracking.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{/* The writable folders of the read-only root file system (also the autoscaler's). */}}
{{- define "ray-cluster.writableMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ .Values.image.home }}
{{- end }}

{{- define "ray-cluster.volumeMounts" -}}
volumeMounts:
  - name: dshm
    mountPath: /dev/shm
  {{- include "ray-cluster.writableMounts" . | nindent 2 }}
{{- if .Values.sharedStorage.enabled }}
  - name: shared
    mountPath: {{ .Values.sharedStorage.mountPath }}
{{- end }}
{{- end }}

{{/* Called with a dict: root (the chart context), shmSize (the group's). */}}
{{- define "ray-cluster.volumes" -}}
volumes:
  - name: dshm
    emptyDir:
      medium: Memory
      sizeLimit: {{ .shmSize }}
  - name: tmp
    emptyDir: {}
  - name: home
    emptyDir: {}
{{- if .root.Values.sharedStorage.enabled }}
  - name: shared
    persistentVolumeClaim:
      claimName: {{ include "ray-cluster.claimName" .root }}
{{- end }}
{{- end }}

{{/* What every Ray pod's spec shares. Called with a dict: root, shmSize. */}}
{{- define "ray-cluster.podCommon" -}}
serviceAccountName: {{ include "ray-cluster.serviceAccountName" .root }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{ include "ray-cluster.volumes" . | trim }}
{{- end }}

{{- define "ray-cluster.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
One workerGroupSpecs entry. Called with a dict: root (the chart context), group (the group's
values), image. The replica bounds are checked here, before KubeRay would refuse them.
*/}}
{{- define "ray-cluster.workerGroup" -}}
{{- $root := .root }}
{{- $group := .group }}
{{- if or (lt (int $group.replicas) (int $group.minReplicas)) (gt (int $group.replicas) (int $group.maxReplicas)) }}
{{- fail (printf "worker group %s: replicas %v is outside [minReplicas %v, maxReplicas %v]" $group.groupName $group.replicas $group.minReplicas $group.maxReplicas) }}
{{- end }}
- groupName: {{ $group.groupName }}
  replicas: {{ $group.replicas }}
  minReplicas: {{ $group.minReplicas }}
  maxReplicas: {{ $group.maxReplicas }}
  rayStartParams:
    {{- toYaml $group.rayStartParams | nindent 4 }}
  template:
    metadata:
      labels:
        {{- include "ray-cluster.labels" $root | nindent 8 }}
        app.kubernetes.io/component: worker-{{ $group.groupName }}
      annotations:
        {{- include "ray-cluster.checkovSkips" (dict "root" $root "kind" "worker" "digest" .digest) | trim | nindent 8 }}
    spec:
      {{- include "ray-cluster.podCommon" (dict "root" $root "shmSize" $group.shmSize) | nindent 6 }}
      # Workers never talk to the Kubernetes API (IRSA's token is a projected volume of its own).
      automountServiceAccountToken: false
      {{- with include "ray-cluster.scheduling" $group | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      containers:
        - name: ray-worker
          image: {{ .image }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          env:
            {{- include "ray-cluster.env" $root | nindent 12 }}
          {{- with include "ray-cluster.envFrom" $root | trim }}
          {{- . | nindent 10 }}
          {{- end }}
          resources:
            {{- toYaml $group.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          {{- include "ray-cluster.volumeMounts" $root | nindent 10 }}
{{- end }}
