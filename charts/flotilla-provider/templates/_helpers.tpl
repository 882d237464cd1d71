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

{{/*
The hubs this cluster serves, as a JSON list: hub, or every entry of hubs.
With hubs, every cluster-wide name of a hub's identity carries its id; a
cluster serving several hubs serves them all in Pull mode, so that its
agent decides every placement on its capacity.
*/}}
{{- define "flotilla-provider.hubs" -}}
{{- $out := list }}
{{- if not .Values.hubs }}
{{- $out = append $out (dict "id" (required "hub.id is required" .Values.hub.id) "joinSecret" .Values.hub.joinSecret
    "ledgerPublicKey" .Values.hub.ledgerPublicKey "providerName" .Values.provider.name
    "mode" (.Values.provider.mode | default "Push") "sa" .Values.federation.serviceAccountName
    "suffix" "" "witness" "flotilla-ledger-witness") }}
{{- else }}
{{- $ids := list }}
{{- range $i, $h := .Values.hubs }}
{{- $id := required (printf "hubs[%d].id is required" $i) $h.id }}
{{- if not (regexMatch "^[a-z0-9]{1,20}$" $id) }}{{ fail (printf "hubs[%d].id %q: 1-20 lowercase letters and digits" $i $id) }}{{ end }}
{{- if has $id $ids }}{{ fail (printf "hubs: %s is listed twice" $id) }}{{ end }}
{{- $ids = append $ids $id }}
{{- $mode := $h.mode | default ($.Values.provider.mode | default "Push") }}
{{- if and (gt (len $.Values.hubs) 1) (ne $mode "Pull") }}{{ fail (printf "hubs: %s is in %s mode; a cluster serving several hubs serves them all in Pull mode, so that no two hubs can oversell its capacity" $id $mode) }}{{ end }}
{{- $out = append $out (dict "id" $id "joinSecret" ($h.joinSecret | default (printf "flotilla-hub-join-%s" $id))
    "ledgerPublicKey" ($h.ledgerPublicKey | default "") "providerName" ($h.providerName | default $.Values.provider.name)
    "mode" $mode "sa" (printf "%s-%s" $.Values.federation.serviceAccountName $id)
    "suffix" (printf "-%s" $id) "witness" (printf "flotilla-ledger-witness-%s" $id)) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}
