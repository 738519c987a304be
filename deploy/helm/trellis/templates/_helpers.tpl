{{/*
Names, labels and the pieces every service shares. Helpers that concern one service take
(dict "root" $ "component" "<service>").
*/}}

{{/* The chart's name: "trellis" unless nameOverride. */}}
{{- define "trellis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: the release name, with the chart's name unless the
release name contains it (release "trellis": trellis-ingest, trellis-mastery, ...). */}}
{{- define "trellis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "trellis.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A service's resource name: <fullname>-<component>. */}}
{{- define "trellis.componentName" -}}
{{- printf "%s-%s" (include "trellis.fullname" .root) .component }}
{{- end }}

{{/* Every pod of this release (the default deny selects them). */}}
{{- define "trellis.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "trellis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "trellis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "trellis.releaseSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trellis
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* One service's pods. */}}
{{- define "trellis.selectorLabels" -}}
{{ include "trellis.releaseSelectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "trellis.componentLabels" -}}
{{ include "trellis.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Where each service listens: the defaults of settings.py (ServicesSettings), which the chart
does not change (tests/unit/deploy checks them against the settings model). */}}
{{- define "trellis.ports" -}}
ingest: {grpc: 50051, metrics: 9101}
mastery: {grpc: 50052, metrics: 9102}
recommender: {grpc: 50053, metrics: 9103}
reporting: {grpc: 50054, metrics: 9104}
{{- end }}

{{- define "trellis.grpcPort" -}}
{{- index (include "trellis.ports" .root | fromYaml) .component "grpc" | int }}
{{- end }}

{{- define "trellis.metricsPort" -}}
{{- index (include "trellis.ports" .root | fromYaml) .component "metrics" | int }}
{{- end }}

{{/* Paths inside the pods: volumes are mounted where the settings (configmap.yaml) point. */}}
{{- define "trellis.secretsDir" -}}/var/run/secrets/trellis{{- end }}
{{- define "trellis.masteryDataDir" -}}/var/lib/trellis/mastery{{- end }}
{{- define "trellis.chdbDir" -}}/var/lib/trellis/chdb{{- end }}

{{- define "trellis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Strimzi names the bootstrap Service of cluster <c> <c>-kafka-bootstrap. */}}
{{- define "trellis.bootstrapServers" -}}
{{- $strimzi := .Values.kafka.strimzi }}
{{- default (printf "%s-kafka-bootstrap.%s.svc:9092" $strimzi.cluster $strimzi.namespace) .Values.kafka.bootstrapServers }}
{{- end }}

{{/* A settings value as an environment variable: whole numbers without an exponent (YAML numbers
arrive as floats: 7776000000 would print as 7.776e+09), maps and lists as JSON (pydantic reads
complex fields as JSON). */}}
{{- define "trellis.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else if or (kindIs "map" .) (kindIs "slice" .) }}
{{- toJson . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/* Settings the chart derives from its values: `settings` may not set them (prefixes). */}}
{{- define "trellis.derivedSettings" -}}
- TRELLIS_KAFKA__BOOTSTRAP_SERVERS
- TRELLIS_KAFKA__TOPICS__
- TRELLIS_SERVICES__
- TRELLIS_RECOMMENDER__MASTERY_ADDRESS
- TRELLIS_RECOMMENDER__MASTERY_TOKEN
- TRELLIS_MASTERY__DATA_DIR
- TRELLIS_MASTERY__CONSUMER_GROUP
- TRELLIS_CLICKHOUSE__URL
- TRELLIS_CLICKHOUSE__CHDB_PATH
- TRELLIS_AUTH__
- TRELLIS_PSEUDONYM__
{{- end }}

{{/* What a cluster would accept but Trellis would run wrongly with. */}}
{{- define "trellis.validate" -}}
{{- $topics := .Values.kafka.topics }}
{{- if gt (int .Values.mastery.replicas) (int $topics.partitions) }}
{{- fail (printf "mastery.replicas (%d) exceeds kafka.topics.partitions (%d): a worker beyond the activity topic's partitions owns nothing" (int .Values.mastery.replicas) (int $topics.partitions)) }}
{{- end }}
{{- if and (not .Values.clickhouse.urlSecret.name) (ne (int .Values.reporting.replicas) 1) }}
{{- fail "reporting.replicas must be 1 with embedded chDB (one process owns the store): set clickhouse.urlSecret.name to a ClickHouse server's URL Secret to scale reporting" }}
{{- end }}
{{- $rf := int $topics.replicationFactor }}
{{- $isr := int $topics.minInsyncReplicas }}
{{- if or (lt $isr 1) (and (gt $rf 1) (ge $isr $rf)) (and (eq $rf 1) (ne $isr 1)) }}
{{- fail (printf "kafka.topics.minInsyncReplicas (%d) must be below replicationFactor (%d), or 1 with one replica" $isr $rf) }}
{{- end }}
{{- $derived := include "trellis.derivedSettings" . | fromYamlArray }}
{{- range $name, $_ := .Values.settings }}
{{- if not (hasPrefix "TRELLIS_" $name) }}
{{- fail (printf "settings.%s: every setting is an environment variable TRELLIS_..." $name) }}
{{- end }}
{{- range $derived }}
{{- if hasPrefix . $name }}
{{- fail (printf "settings.%s: the chart derives it from its values (values.yaml)" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod template metadata: labels, Prometheus scraping, and the settings' checksum, so that a
change of settings rolls every pod that reads them. */}}
{{- define "trellis.podMetadata" -}}
labels:
  {{- include "trellis.componentLabels" . | nindent 2 }}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ include "trellis.metricsPort" . | quote }}
  prometheus.io/path: /metrics
  checksum/settings: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- end }}

{{/* Pod spec fields of every service: its own ServiceAccount without an API token, the image's
unprivileged uid (deploy/Dockerfile), RuntimeDefault seccomp. */}}
{{- define "trellis.podSpec" -}}
serviceAccountName: {{ include "trellis.componentName" . }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* Container fields of every service (its name, command, env and mounts are its own).
Readiness is the gRPC health protocol, which each service turns SERVING only when its
dependencies are ready. Liveness is a TCP check of the gRPC port, not the health status: that
follows the dependencies, and a slow Kafka or ClickHouse must not restart healthy pods.
Extra key: "liveDelay", seconds before the first liveness check. */}}
{{- define "trellis.container" -}}
{{- $root := .root -}}
image: {{ include "trellis.image" $root }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
envFrom:
  - configMapRef:
      name: {{ include "trellis.fullname" $root }}-settings
ports:
  - name: grpc
    containerPort: {{ include "trellis.grpcPort" . }}
  - name: metrics
    containerPort: {{ include "trellis.metricsPort" . }}
readinessProbe:
  grpc:
    port: {{ include "trellis.grpcPort" . }}
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  tcpSocket:
    port: grpc
  initialDelaySeconds: {{ .liveDelay | default 10 }}
  periodSeconds: 10
  failureThreshold: 6
resources:
  {{- toYaml (index $root.Values .component "resources") | nindent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end }}

{{/* Mounts of every container: the Secret read-only, and a writable /tmp. */}}
{{- define "trellis.commonMounts" -}}
- name: secrets
  mountPath: {{ include "trellis.secretsDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "trellis.commonVolumes" -}}
- name: secrets
  secret:
    secretName: {{ .Values.secrets.name }}
- name: tmp
  emptyDir: {}
{{- end }}

{{/* The resources around each service's workload: its ServiceAccount, the Service clients call,
a PodDisruptionBudget, and a NetworkPolicy admitting its gRPC port (from the pods of the
components listed in "grpcFrom", or from anywhere without it) and its metrics port from the
monitoring namespace. */}}
{{- define "trellis.serviceResources" -}}
{{- $root := .root -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "trellis.componentName" . }}
  labels:
    {{- include "trellis.componentLabels" . | nindent 4 }}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "trellis.componentName" . }}
  labels:
    {{- include "trellis.componentLabels" . | nindent 4 }}
spec:
  selector:
    {{- include "trellis.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ include "trellis.grpcPort" . }}
      targetPort: grpc
      appProtocol: grpc
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "trellis.componentName" . }}
  labels:
    {{- include "trellis.componentLabels" . | nindent 4 }}
spec:
  # At most one pod down in a drain (a budget of 0 would block node drains for one-replica services).
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "trellis.selectorLabels" . | nindent 6 }}
{{- if $root.Values.networkPolicies.create }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "trellis.componentName" . }}
  labels:
    {{- include "trellis.componentLabels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "trellis.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
  ingress:
    {{- if .grpcFrom }}
    - from:
        {{- range .grpcFrom }}
        - podSelector:
            matchLabels:
              {{- include "trellis.selectorLabels" (dict "root" $root "component" .) | nindent 14 }}
        {{- end }}
      ports:
        - port: grpc
    {{- else }}
    # Clients, through the ingress or mesh in front (TLS ends there: the services speak plaintext gRPC).
    - ports:
        - port: grpc
    {{- end }}
    - from:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: {{ $root.Values.monitoring.namespace }}
      ports:
        - port: metrics
{{- end }}
{{- end }}
