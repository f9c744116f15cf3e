{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "a2c.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart> unless the release name already contains the chart name.
Truncated to 63 characters because some Kubernetes name fields are limited to that.
*/}}
{{- define "a2c.fullname" -}}
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

{{- define "a2c.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; pass (dict "ctx" $ "component" "controller"). */}}
{{- define "a2c.labels" -}}
helm.sh/chart: {{ include "a2c.chart" .ctx }}
{{ include "a2c.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: a2c
{{- end }}

{{/* Selector labels (immutable on Deployments): name + instance + component only. */}}
{{- define "a2c.selectorLabels" -}}
app.kubernetes.io/name: {{ include "a2c.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* <fullname>-<suffix> within 63 characters, the suffix kept whole: (dict "ctx" $ "suffix" "x"). */}}
{{- define "a2c.suffixedName" -}}
{{- $room := sub 62 (len .suffix) | int }}
{{- printf "%s-%s" (include "a2c.fullname" .ctx | trunc $room | trimSuffix "-") .suffix }}
{{- end }}

{{- define "a2c.controller.fullname" -}}
{{- include "a2c.suffixedName" (dict "ctx" . "suffix" "controller") }}
{{- end }}

{{- define "a2c.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "a2c.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference; the tag defaults to the chart's appVersion (never "latest"). */}}
{{- define "a2c.image" -}}
{{- if eq (toString .Values.image.tag) "latest" }}
{{- fail "image.tag: \"latest\" is refused; pin a version (the default is the chart's appVersion)" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* The default A2CJob's name (its pods are <job>-trainer-<i> and <job>-player-<j>). */}}
{{- define "a2c.jobName" -}}
{{- default (include "a2c.fullname" .) .Values.job.name | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
Labels the controller puts on the pods of every A2CJob (the chart's NetworkPolicies, PDBs and
PodMonitor select on them): app.kubernetes.io/part-of=a2c plus component trainer|player.
*/}}
{{- define "a2c.jobPodLabels" -}}
app.kubernetes.io/part-of: a2c
app.kubernetes.io/component: {{ . }}
{{- end }}

{{/* gRPC addresses of the default job's trainers (headless Service <job>-trainer). */}}
{{- define "a2c.trainerAddresses" -}}
{{- $job := include "a2c.jobName" . }}
{{- $service := default (printf "%s-trainer" $job) .Values.tests.trainerService }}
{{- $out := list }}
{{- range $i := until (int .Values.job.trainers.replicas) }}
{{- $out = append $out (printf "%s-trainer-%d.%s.%s.svc:%d" $job $i $service $.Release.Namespace (int $.Values.tests.grpcPort)) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* Restrictive security contexts shared by the chart's own pods. */}}
{{- define "a2c.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "a2c.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
