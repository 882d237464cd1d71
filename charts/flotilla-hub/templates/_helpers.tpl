{{- define "flotilla-hub.labels" -}}
app.kubernetes.io/name: flotilla-hub
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "flotilla-hub.selector" -}}
app.kubernetes.io/name: flotilla-manager
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
