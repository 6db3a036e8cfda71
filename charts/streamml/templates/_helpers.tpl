{{/* Names, labels and the facts every template shares. */}}

{{- define "streamml.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one service's objects: <fullname>-<service>. Call with (dict "root" $ "service" "prep"). */}}
{{- define "streamml.componentName" -}}
{{- printf "%s-%s" (include "streamml.fullname" .root | trunc 52 | trimSuffix "-") .service -}}
{{- end -}}

{{- define "streamml.selectorLabels" -}}
app.kubernetes.io/name: {{ default .root.Chart.Name .root.Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .service }}
app.kubernetes.io/component: {{ .service }}
{{- end }}
{{- end -}}

{{- define "streamml.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "streamml.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: streamml
{{- end -}}

{{- define "streamml.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamml.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* A component's values: services.<service>, or the console's (dict ... "component" .Values.console). */}}
{{- define "streamml.image" -}}
{{- $svc := default (index .root.Values.services .service) .component -}}
{{- $image := .root.Values.image -}}
{{- $repository := default (printf "%s/%s-%s" $image.registry $image.repository .service) $svc.image.repository -}}
{{- $tag := default (default .root.Chart.AppVersion $image.tag) $svc.image.tag -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The service names in a fixed order, enabled ones only, as a JSON list. */}}
{{- define "streamml.enabledServices" -}}
{{- $enabled := list -}}
{{- range $name := list "ingest" "prep" "trainer" "validator" "monitor" -}}
{{- if (index $.Values.services $name).enabled -}}
{{- $enabled = append $enabled $name -}}
{{- end -}}
{{- end -}}
{{- toJson $enabled -}}
{{- end -}}

{{/* files/topics.yaml, parsed. */}}
{{- define "streamml.topicsFile" -}}
{{- .Files.Get "files/topics.yaml" | fromYaml | toJson -}}
{{- end -}}

{{/*
Unprefixed input topics of one service (files/consumers.yaml with its
{dataset} and {model} placeholders expanded), as a JSON list.
*/}}
{{- define "streamml.inputTopics" -}}
{{- $consumer := index (.root.Files.Get "files/consumers.yaml" | fromYaml) .service -}}
{{- $topics := list -}}
{{- range $consumer.topics -}}
{{- $topics = append $topics . -}}
{{- end -}}
{{- range $template := $consumer.per_dataset -}}
{{- range $.root.Values.datasets -}}
{{- $topics = append $topics (replace "{dataset}" .name $template) -}}
{{- end -}}
{{- end -}}
{{- range $template := $consumer.per_model -}}
{{- range $.root.Values.models -}}
{{- $topics = append $topics (replace "{model}" . $template) -}}
{{- end -}}
{{- end -}}
{{- toJson $topics -}}
{{- end -}}

{{/*
Every topic the release needs, unprefixed, with partitions, replicas and
config resolved the way `streamml topics apply` resolves them: topics.yaml
entries over its defaults, then the per-dataset and per-model topics with the
defaults. A JSON object keyed by topic name.
*/}}
{{- define "streamml.topics" -}}
{{- $file := include "streamml.topicsFile" . | fromJson -}}
{{- $defaults := $file.defaults -}}
{{- $override := int .Values.topics.replicationFactor -}}
{{- $names := list -}}
{{- $declared := dict -}}
{{- range $file.topics -}}
{{- $names = append $names .name -}}
{{- $_ := set $declared .name . -}}
{{- end -}}
{{- range .Values.datasets -}}
{{- $names = append $names (printf "ingest.%s" .name) -}}
{{- end -}}
{{- range .Values.models -}}
{{- $names = concat $names (list (printf "predictions.%s" .) (printf "feedback.%s" .)) -}}
{{- end -}}
{{- $resolved := dict -}}
{{- range $name := $names -}}
{{- $spec := default (dict) (get $declared $name) -}}
{{- $replicas := int (default $defaults.replication_factor $spec.replication_factor) -}}
{{- if gt $override 0 -}}
{{- $replicas = $override -}}
{{- end -}}
{{- $config := merge (deepCopy (default (dict) $spec.config)) (deepCopy (default (dict) $defaults.config)) -}}
{{- $_ := set $resolved $name (dict "partitions" (int (default $defaults.partitions $spec.partitions)) "replicas" $replicas "config" $config) -}}
{{- end -}}
{{- toJson $resolved -}}
{{- end -}}

{{/*
The spec files each service reads, as JSON: service -> the ConfigMap holding
them (a name suffix), where it is mounted, and the variable that points the
service there.
*/}}
{{- define "streamml.specFiles" -}}
{{- $datasets := dict "configMap" "datasets" "path" "/etc/streamml/datasets" -}}
{{- toJson (dict
  "ingest" (merge (dict "env" "STREAMML_INGEST_SPECS_DIR") $datasets)
  "prep" (merge (dict "env" "STREAMML_PREP_SPECS_DIR") $datasets)
  "trainer" (dict "configMap" "models" "path" "/etc/streamml/models" "env" "STREAMML_TRAINER_MODELS_DIR")
  "validator" (dict "configMap" "policies" "path" "/etc/streamml/policies" "env" "STREAMML_VALIDATOR_POLICIES_DIR")
) -}}
{{- end -}}

{{/* The ConfigMap-held settings of one service: shared ones, then its own. */}}
{{- define "streamml.settings" -}}
{{- $root := .root -}}
{{- $svc := default (index $root.Values.services .service) .component -}}
{{- $kafka := $root.Values.kafka -}}
{{- $store := $root.Values.objectStore -}}
{{- $settings := dict
  "STREAMML_KAFKA_BOOTSTRAP" $kafka.bootstrap
  "STREAMML_KAFKA_SECURITY_PROTOCOL" $kafka.securityProtocol
  "STREAMML_HTTP_HOST" "0.0.0.0"
  "STREAMML_HTTP_PORT" (toString $root.Values.httpPort)
  "STREAMML_STATE_DIR" "/var/lib/streamml"
  "STREAMML_LOG" $root.Values.log
  "STREAMML_S3_REGION" $store.region
-}}
{{- if $kafka.topicPrefix }}{{ $_ := set $settings "STREAMML_KAFKA_TOPIC_PREFIX" $kafka.topicPrefix }}{{ end -}}
{{- if $kafka.sasl.mechanism }}{{ $_ := set $settings "STREAMML_KAFKA_SASL_MECHANISM" $kafka.sasl.mechanism }}{{ end -}}
{{- if $kafka.sasl.username }}{{ $_ := set $settings "STREAMML_KAFKA_SASL_USERNAME" $kafka.sasl.username }}{{ end -}}
{{- if $kafka.tls.caSecret }}{{ $_ := set $settings "STREAMML_KAFKA_SSL_CA_LOCATION" (printf "/etc/streamml/kafka-ca/%s" $kafka.tls.caKey) }}{{ end -}}
{{- if not $store.bucketClaim.enabled -}}
{{- $_ := set $settings "STREAMML_S3_BUCKET" $store.bucket -}}
{{- if $store.endpoint }}{{ $_ := set $settings "STREAMML_S3_ENDPOINT" $store.endpoint }}{{ end -}}
{{- else -}}
{{- /* The claim's bucket exists already and its user may not create buckets. */ -}}
{{- $_ := set $settings "STREAMML_S3_CREATE_BUCKET" "false" -}}
{{- end -}}
{{- if $kafka.groupPrefix }}{{ $_ := set $settings "STREAMML_KAFKA_GROUP_PREFIX" $kafka.groupPrefix }}{{ end -}}
{{- with (get (include "streamml.specFiles" $root | fromJson) .service) }}{{ $_ := set $settings .env .path }}{{ end -}}
{{- if and (eq .service "trainer") $root.Values.modelCode }}{{ $_ := set $settings "STREAMML_TRAINER_CODE_DIR" "/etc/streamml/code" }}{{ end -}}
{{- if eq .service "monitor" }}{{ $_ := set $settings "STREAMML_MONITOR_MODELS" (toJson $root.Values.models) }}{{ end -}}
{{- if eq .service "prep" -}}
{{- $_ := set $settings "STREAMML_PREP_SPARK_MASTER" $svc.spark.master -}}
{{- $sparkConf := include "streamml.sparkConf" $root -}}
{{- if ne $sparkConf "{}" }}{{ $_ := set $settings "STREAMML_PREP_SPARK_CONF" $sparkConf }}{{ end -}}
{{- end -}}
{{- if and $svc.files $svc.filesEnv }}{{ $_ := set $settings $svc.filesEnv "/etc/streamml/files" }}{{ end -}}
{{- range $key, $value := $root.Values.config }}{{ $_ := set $settings $key (toString $value) }}{{ end -}}
{{- range $key, $value := $svc.config }}{{ $_ := set $settings $key (toString $value) }}{{ end -}}
{{- toJson $settings -}}
{{- end -}}

{{/* Release-wide checks that no single template owns. */}}
{{- define "streamml.validate" -}}
{{- $kafka := .Values.kafka -}}
{{- if and (hasPrefix "SASL_" $kafka.securityProtocol) (not $kafka.sasl.mechanism) -}}
{{- fail (printf "kafka.sasl.mechanism is empty but kafka.securityProtocol is %s: set PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" $kafka.securityProtocol) -}}
{{- end -}}
{{- if and $kafka.sasl.mechanism (not (hasPrefix "SASL_" $kafka.securityProtocol)) -}}
{{- fail (printf "kafka.sasl.mechanism is %s but kafka.securityProtocol is %s: use SASL_SSL or SASL_PLAINTEXT, or clear the mechanism" $kafka.sasl.mechanism $kafka.securityProtocol) -}}
{{- end -}}
{{- if and $kafka.sasl.mechanism (or (not $kafka.sasl.username) (not $kafka.sasl.existingSecret)) -}}
{{- fail "kafka.sasl.username and kafka.sasl.existingSecret (the Secret with the password) are both required with SASL" -}}
{{- end -}}
{{- if and (not .Values.objectStore.bucketClaim.enabled) (not .Values.objectStore.existingSecret) -}}
{{- fail "objectStore.existingSecret is empty: name the Secret with the S3 credentials, or set objectStore.bucketClaim.enabled=true to provision a bucket" -}}
{{- end -}}
{{- range $where, $config := dict "config" .Values.config "services.prep.config" .Values.services.prep.config -}}
{{- range $name := list "STREAMML_PREP_SPARK_MASTER" "STREAMML_PREP_SPARK_CONF" -}}
{{- if hasKey $config $name -}}
{{- fail (printf "%s.%s: use services.prep.spark.master and services.prep.spark.conf instead, so that the chart adds what the master needs (executor pods, RBAC, driver address)" $where $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $enabled := include "streamml.enabledServices" . | fromJsonArray -}}
{{- if and (or (has "ingest" $enabled) (has "prep" $enabled)) (not .Values.datasets) -}}
{{- fail "datasets is empty: ingest and prep need at least one dataset spec (like examples/datasets/transactions.yaml); add one, or disable both services" -}}
{{- end -}}
{{- if and (has "trainer" $enabled) (not .Values.modelSpecs) -}}
{{- fail "modelSpecs is empty: the trainer needs at least one model spec (like examples/models/transactions.yaml); add one, or set services.trainer.enabled=false" -}}
{{- end -}}
{{- if and (has "validator" $enabled) (not .Values.policies) -}}
{{- fail "policies is empty: the validator needs a promotion policy per model (like examples/policies/transactions.yaml); add one, or set services.validator.enabled=false" -}}
{{- end -}}
{{- range $list := list (list "datasets" "name" "dataset names") (list "modelSpecs" "name" "model names") (list "policies" "model" "policies (one per model)") -}}
{{- $seen := dict -}}
{{- range (index $.Values (index $list 0)) -}}
{{- $name := index . (index $list 1) -}}
{{- if hasKey $seen $name -}}
{{- fail (printf "%s: %q is declared twice; %s must be unique" (index $list 0) $name (index $list 2)) -}}
{{- end -}}
{{- $_ := set $seen $name true -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The env entries every pod needs for its credentials: the Kafka SASL password
from its Secret, and the object store's from its Secret or from the bucket
claim (endpoint and bucket too, written by the provisioner).
*/}}
{{- define "streamml.credentialsEnv" -}}
{{- $kafka := .Values.kafka -}}
{{- $store := .Values.objectStore -}}
{{- if $kafka.sasl.mechanism }}
- name: STREAMML_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $kafka.sasl.existingSecret }}
      key: {{ $kafka.sasl.passwordKey }}
{{- end }}
{{- if $store.bucketClaim.enabled }}
{{- $claim := printf "%s-bucket" (include "streamml.fullname" .) }}
# Written by the bucket provisioner once the claim is bound.
- name: BUCKET_HOST
  valueFrom: {configMapKeyRef: {name: {{ $claim }}, key: BUCKET_HOST}}
- name: BUCKET_PORT
  valueFrom: {configMapKeyRef: {name: {{ $claim }}, key: BUCKET_PORT}}
- name: BUCKET_NAME
  valueFrom: {configMapKeyRef: {name: {{ $claim }}, key: BUCKET_NAME}}
- name: STREAMML_S3_ENDPOINT
  value: {{ printf "%s://$(BUCKET_HOST):$(BUCKET_PORT)" $store.bucketClaim.endpointScheme | quote }}
- name: STREAMML_S3_BUCKET
  value: "$(BUCKET_NAME)"
- name: STREAMML_S3_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ $claim }}, key: AWS_ACCESS_KEY_ID}}
- name: STREAMML_S3_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $claim }}, key: AWS_SECRET_ACCESS_KEY}}
{{- else }}
- name: STREAMML_S3_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ $store.existingSecret }}, key: {{ $store.accessKeyIdKey }}}}
- name: STREAMML_S3_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $store.existingSecret }}, key: {{ $store.secretAccessKeyKey }}}}
{{- end }}
{{- end -}}

{{/*
Where prep's Spark jobs run (services.prep.spark.master): "local" (inside the
prep pod), "kubernetes" (k8s://: executor pods in the release's namespace, the
prep pod their driver) or "standalone" (spark://: an existing cluster).
*/}}
{{- define "streamml.sparkMode" -}}
{{- $master := .Values.services.prep.spark.master -}}
{{- if hasPrefix "k8s://" $master -}}kubernetes
{{- else if hasPrefix "spark://" $master -}}standalone
{{- else -}}local
{{- end -}}
{{- end -}}

{{/* Where the executor pod template is mounted in the prep pod. */}}
{{- define "streamml.sparkTemplateDir" -}}/etc/streamml/spark{{- end -}}

{{/*
prep's Spark settings (STREAMML_PREP_SPARK_CONF), as JSON: for executor pods
the namespace, image, pod template, executor size and fixed driver ports (the
NetworkPolicy opens those), then services.prep.spark.conf over them.
*/}}
{{- define "streamml.sparkConf" -}}
{{- $spark := .Values.services.prep.spark -}}
{{- $mode := include "streamml.sparkMode" . -}}
{{- $conf := dict -}}
{{- if ne $mode "local" -}}
{{- $_ := set $conf "spark.driver.port" (toString $spark.driverPort) -}}
{{- $_ := set $conf "spark.blockManager.port" (toString $spark.blockManagerPort) -}}
{{- end -}}
{{- if eq $mode "kubernetes" -}}
{{- $executor := $spark.executor -}}
{{- $_ := set $conf "spark.kubernetes.namespace" .Release.Namespace -}}
{{- $_ := set $conf "spark.kubernetes.container.image" (include "streamml.image" (dict "root" . "service" "prep")) -}}
{{- $_ := set $conf "spark.kubernetes.container.image.pullPolicy" .Values.image.pullPolicy -}}
{{- with .Values.imagePullSecrets -}}
{{- $names := list -}}
{{- range . }}{{ $names = append $names .name }}{{ end -}}
{{- $_ := set $conf "spark.kubernetes.container.image.pullSecrets" (join "," $names) -}}
{{- end -}}
{{- $_ := set $conf "spark.kubernetes.executor.podTemplateFile" (printf "%s/executor-pod.yaml" (include "streamml.sparkTemplateDir" .)) -}}
{{- $_ := set $conf "spark.kubernetes.executor.podTemplateContainerName" "executor" -}}
{{- $_ := set $conf "spark.executor.instances" (toString $executor.instances) -}}
{{- $_ := set $conf "spark.executor.cores" (toString $executor.cores) -}}
{{- $_ := set $conf "spark.executor.memory" $executor.memory -}}
{{- $_ := set $conf "spark.executor.memoryOverhead" $executor.memoryOverhead -}}
{{- /* Two tasks per executor core in each shuffle stage keeps every core busy. */ -}}
{{- $_ := set $conf "spark.sql.shuffle.partitions" (toString (mul 2 $executor.instances $executor.cores)) -}}
{{- end -}}
{{- range $key, $value := $spark.conf }}{{ $_ := set $conf $key (toString $value) }}{{ end -}}
{{- toJson $conf -}}
{{- end -}}

{{/*
The object store's keys as the AWS variables, from the Secret (or bucket
claim) prep reads them from, for Spark executor pods.
*/}}
{{- define "streamml.awsCredentialsEnv" -}}
{{- $store := .Values.objectStore -}}
{{- $secret := $store.bucketClaim.enabled | ternary (printf "%s-bucket" (include "streamml.fullname" .)) $store.existingSecret -}}
{{- $idKey := $store.bucketClaim.enabled | ternary "AWS_ACCESS_KEY_ID" $store.accessKeyIdKey -}}
{{- $secretKey := $store.bucketClaim.enabled | ternary "AWS_SECRET_ACCESS_KEY" $store.secretAccessKeyKey -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ $idKey }}}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ $secretKey }}}}
{{- end -}}
