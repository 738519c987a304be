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
does not change (tests/unit/deploy checks them against the settings model). "health": with gRPC
TLS, the plaintext port that serves only the health service, for the kubelet's gRPC probes
(they cannot speak TLS); the chart sets it. */}}
{{- define "trellis.ports" -}}
ingest: {grpc: 50051, metrics: 9101, health: 50061}
mastery: {grpc: 50052, metrics: 9102, health: 50062}
recommender: {grpc: 50053, metrics: 9103, health: 50063}
reporting: {grpc: 50054, metrics: 9104, health: 50064}
{{- end }}

{{- define "trellis.grpcPort" -}}
{{- index (include "trellis.ports" .root | fromYaml) .component "grpc" | int }}
{{- end }}

{{- define "trellis.metricsPort" -}}
{{- index (include "trellis.ports" .root | fromYaml) .component "metrics" | int }}
{{- end }}

{{- define "trellis.healthPort" -}}
{{- index (include "trellis.ports" .root | fromYaml) .component "health" | int }}
{{- end }}

{{/* The port the readiness probe asks: the gRPC port, or with gRPC TLS the health port. */}}
{{- define "trellis.probePort" -}}
{{- if .root.Values.grpcTls.enabled }}
{{- include "trellis.healthPort" . }}
{{- else }}
{{- include "trellis.grpcPort" . }}
{{- end }}
{{- end }}

{{/* Paths inside the pods: volumes are mounted where the settings (configmap.yaml) point. */}}
{{- define "trellis.secretsDir" -}}/var/run/secrets/trellis{{- end }}
{{- define "trellis.grpcTlsDir" -}}/var/run/secrets/trellis-grpc-tls{{- end }}
{{- define "trellis.kafkaSecretsDir" -}}/var/run/secrets/trellis-kafka{{- end }}
{{- define "trellis.masteryDataDir" -}}/var/lib/trellis/mastery{{- end }}
{{- define "trellis.chdbDir" -}}/var/lib/trellis/chdb{{- end }}

{{- define "trellis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Strimzi names the bootstrap Service of cluster <c> <c>-kafka-bootstrap; its examples put the
plain listener on 9092 and the TLS one on 9093. */}}
{{- define "trellis.bootstrapServers" -}}
{{- $strimzi := .Values.kafka.strimzi }}
{{- $port := ternary 9093 9092 (include "trellis.kafkaUsesTls" . | eq "true") }}
{{- default (printf "%s-kafka-bootstrap.%s.svc:%d" $strimzi.cluster $strimzi.namespace $port) .Values.kafka.bootstrapServers }}
{{- end }}

{{- define "trellis.kafkaUsesTls" -}}
{{- has .Values.kafka.security.protocol (list "SSL" "SASL_SSL") }}
{{- end }}

{{- define "trellis.kafkaUsesSasl" -}}
{{- has .Values.kafka.security.protocol (list "SASL_PLAINTEXT" "SASL_SSL") }}
{{- end }}

{{/* The Kafka security settings, from kafka.security (files on the projected volume kafka-secrets). */}}
{{- define "trellis.kafkaSecuritySettings" -}}
{{- $sec := .Values.kafka.security }}
{{- $dir := include "trellis.kafkaSecretsDir" . }}
{{- if ne $sec.protocol "PLAINTEXT" }}
TRELLIS_KAFKA__SECURITY_PROTOCOL: {{ $sec.protocol }}
{{- end }}
{{- if and (include "trellis.kafkaUsesTls" . | eq "true") $sec.caSecret.name }}
TRELLIS_KAFKA__SSL_CA_FILE: {{ printf "%s/ca.crt" $dir }}
{{- end }}
{{- if and (include "trellis.kafkaUsesTls" . | eq "true") $sec.clientCertSecret.name }}
TRELLIS_KAFKA__SSL_CERT_FILE: {{ printf "%s/user.crt" $dir }}
TRELLIS_KAFKA__SSL_KEY_FILE: {{ printf "%s/user.key" $dir }}
{{- end }}
{{- if include "trellis.kafkaUsesSasl" . | eq "true" }}
TRELLIS_KAFKA__SASL_MECHANISM: {{ $sec.sasl.mechanism }}
TRELLIS_KAFKA__SASL_USERNAME: {{ $sec.sasl.username | quote }}
TRELLIS_KAFKA__SASL_PASSWORD_FILE: {{ printf "%s/sasl-password" $dir }}
{{- end }}
{{- end }}

{{/* The gRPC TLS settings, from grpcTls (files on the volume grpc-tls). */}}
{{- define "trellis.grpcTlsSettings" -}}
{{- if .Values.grpcTls.enabled }}
{{- $dir := include "trellis.grpcTlsDir" . }}
TRELLIS_GRPC_TLS__ENABLED: "true"
TRELLIS_GRPC_TLS__CERT_FILE: {{ printf "%s/tls.crt" $dir }}
TRELLIS_GRPC_TLS__KEY_FILE: {{ printf "%s/tls.key" $dir }}
TRELLIS_GRPC_TLS__CA_FILE: {{ printf "%s/ca.crt" $dir }}
{{- if .Values.grpcTls.requireClientCert }}
TRELLIS_GRPC_TLS__REQUIRE_CLIENT_CERT: "true"
TRELLIS_GRPC_TLS__CLIENT_CA_FILE: {{ printf "%s/ca.crt" $dir }}
# Each service presents its own certificate to the others (it carries client auth too).
TRELLIS_GRPC_TLS__CLIENT_CERT_FILE: {{ printf "%s/tls.crt" $dir }}
TRELLIS_GRPC_TLS__CLIENT_KEY_FILE: {{ printf "%s/tls.key" $dir }}
TRELLIS_AUTH__CERTIFICATES_FILE: {{ printf "%s/certificates.json" (include "trellis.secretsDir" .) }}
{{- end }}
{{- range $service := list "ingest" "mastery" "recommender" "reporting" }}
TRELLIS_SERVICES__{{ upper $service }}__HEALTH_PORT: {{ include "trellis.healthPort" (dict "root" $ "component" $service) | quote }}
{{- end }}
{{- end }}
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
- TRELLIS_GRPC_TLS__
- TRELLIS_KAFKA__SECURITY_PROTOCOL
- TRELLIS_KAFKA__SSL_
- TRELLIS_KAFKA__SASL_
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
{{- $sec := .Values.kafka.security }}
{{- if not (has $sec.protocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) }}
{{- fail (printf "kafka.security.protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not %s" $sec.protocol) }}
{{- end }}
{{- if and (include "trellis.kafkaUsesSasl" . | eq "true") (not (and $sec.sasl.username $sec.sasl.passwordSecret.name)) }}
{{- fail (printf "kafka.security.protocol %s needs kafka.security.sasl.username and sasl.passwordSecret.name" $sec.protocol) }}
{{- end }}
{{- if and .Values.grpcTls.enabled (not .Values.grpcTls.secretName) }}
{{- fail "grpcTls.enabled needs grpcTls.secretName: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- if and .Values.grpcTls.requireClientCert (not .Values.grpcTls.enabled) }}
{{- fail "grpcTls.requireClientCert needs grpcTls.enabled" }}
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
  {{- if $root.Values.grpcTls.enabled }}
  - name: health
    containerPort: {{ include "trellis.healthPort" . }}
  {{- end }}
readinessProbe:
  grpc:
    port: {{ include "trellis.probePort" . }}
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

{{/* Mounts of every container: the Secrets read-only (Trellis's own; with gRPC TLS its
certificate; with Kafka security the Kafka cluster's CA, the client certificate and the SASL
password), and a writable /tmp. */}}
{{- define "trellis.commonMounts" -}}
- name: secrets
  mountPath: {{ include "trellis.secretsDir" . }}
  readOnly: true
{{- if .Values.grpcTls.enabled }}
- name: grpc-tls
  mountPath: {{ include "trellis.grpcTlsDir" . }}
  readOnly: true
{{- end }}
{{- if include "trellis.kafkaSecretSources" . | trim }}
- name: kafka-secrets
  mountPath: {{ include "trellis.kafkaSecretsDir" . }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "trellis.commonVolumes" -}}
- name: secrets
  secret:
    secretName: {{ .Values.secrets.name }}
{{- if .Values.grpcTls.enabled }}
- name: grpc-tls
  secret:
    secretName: {{ .Values.grpcTls.secretName }}
{{- end }}
{{- with include "trellis.kafkaSecretSources" . | trim }}
- name: kafka-secrets
  projected:
    sources:
      {{- . | nindent 6 }}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end }}

{{/* The keys of the Kafka Secrets that the settings name, each at its file's path. */}}
{{- define "trellis.kafkaSecretSources" -}}
{{- $sec := .Values.kafka.security }}
{{- if include "trellis.kafkaUsesTls" . | eq "true" }}
{{- with $sec.caSecret }}
{{- if .name }}
- secret:
    name: {{ .name }}
    items:
      - {key: {{ .key }}, path: ca.crt}
{{- end }}
{{- end }}
{{- with $sec.clientCertSecret }}
{{- if .name }}
- secret:
    name: {{ .name }}
    items:
      - {key: {{ .certKey }}, path: user.crt}
      - {key: {{ .keyKey }}, path: user.key}
{{- end }}
{{- end }}
{{- end }}
{{- if include "trellis.kafkaUsesSasl" . | eq "true" }}
- secret:
    name: {{ $sec.sasl.passwordSecret.name }}
    items:
      - {key: {{ $sec.sasl.passwordSecret.key }}, path: sasl-password}
{{- end }}
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
    # Clients, through the ingress or mesh in front (TLS ends there, or at the service itself with
    # grpcTls.enabled: docs/security.md).
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
