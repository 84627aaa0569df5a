{{/* The connect service's name: <release>-connect (cobi-dashboard-connect). */}}
{{- define "sluice.fullname" -}}
{{- printf "%s-connect" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: connect
{{- end -}}

{{- define "sluice.labels" -}}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Settings the chart refuses, with a message naming the value to set. */}}
{{- define "sluice.validate" -}}
{{- $c := .Values.connect -}}
{{- if and (gt (int $c.replicaCount) 1) (not $c.database.existingSecret) -}}
{{- fail (printf "connect.replicaCount is %d, but more than one replica needs a shared database: set connect.database.existingSecret to a Secret holding the PostgreSQL URL under connect.database.secretKey (DATABASE_URL), or keep connect.replicaCount at 1" (int $c.replicaCount)) -}}
{{- end -}}
{{- if gt (len (compact (list (ternary "x" "" (not (empty $c.services.registry))) $c.services.registryYaml $c.services.existingConfigMap))) 1 -}}
{{- fail "set one of connect.services.registry, connect.services.registryYaml and connect.services.existingConfigMap" -}}
{{- end -}}
{{- if and .Values.gateway.connect.enabled (not .Values.gateway.connect.parentRefs) -}}
{{- fail "gateway.connect.enabled needs gateway.connect.parentRefs (the Gateway the HTTPRoute attaches to)" -}}
{{- end -}}
{{- if and .Values.ingress.connect.enabled (not .Values.ingress.connect.host) -}}
{{- fail "ingress.connect.enabled needs ingress.connect.host" -}}
{{- end -}}
{{- end -}}
