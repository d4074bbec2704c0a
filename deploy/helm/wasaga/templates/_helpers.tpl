{{- define "wasaga.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wasaga.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The hosts (not the migrations job's pods). */}}
{{- define "wasaga.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: host
{{- end -}}

{{- define "wasaga.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Refuses values that cannot work, when the chart renders. */}}
{{- define "wasaga.validate" -}}
{{- if not (has .Values.database.kind (list "sqlite" "postgres")) -}}
{{- fail (printf "database.kind must be sqlite or postgres, not %q" .Values.database.kind) -}}
{{- end -}}
{{- if and (eq .Values.database.kind "sqlite") (ne (int .Values.replicas) 1) -}}
{{- fail "database.kind sqlite runs exactly 1 replica (the database file is locked by one host); use postgres for more" -}}
{{- end -}}
{{- if and (eq .Values.database.kind "postgres") (not .Values.database.existingSecret) -}}
{{- fail "database.kind postgres needs database.existingSecret: a Secret holding the URL" -}}
{{- end -}}
{{- if not .Values.auth.existingSecret -}}
{{- fail "auth.existingSecret is required: a host listening off loopback needs a token" -}}
{{- end -}}
{{- end -}}

{{/* The environment every wasaga container of the release gets. */}}
{{- define "wasaga.env" -}}
- name: WASAGA_DATA_DIR
  value: /var/lib/wasaga
{{- if eq .Values.database.kind "postgres" }}
- name: WASAGA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
{{- end }}
{{- end -}}

{{- define "wasaga.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
