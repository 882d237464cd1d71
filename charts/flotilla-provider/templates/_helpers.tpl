{{/* Common labels. */}}
{{- define "flotilla-provider.labels" -}}
app.kubernetes.io/name: flotilla-provider
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The prefix of every namespace the hub may create here. */}}
{{- define "flotilla-provider.nsPrefix" -}}
flotilla-{{ required "hub.id is required" .Values.hub.id }}-
{{- end }}

{{/* The federation identity's user name. */}}
{{- define "flotilla-provider.federationUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ .Values.federation.serviceAccountName }}
{{- end }}
