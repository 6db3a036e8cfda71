#!/usr/bin/env bash
# A Spark executor in the prep image, for a k8s:// master: the command of the
# executor pods (charts/streamml, the executor pod template). Spark appends
# the argument "executor" and describes the executor in SPARK_* variables, as
# for Spark's own images, whose entrypoint.sh this does the executor part of.
set -euo pipefail
if [[ ${1:-} != executor ]]; then
  echo "usage: $0 executor   (run by Spark in an executor pod, with its SPARK_* variables)" >&2
  exit 64
fi
spark_home=$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
# SPARK_JAVA_OPT_0, _1, ...: the executor's Java options, in their order.
java_opts=()
while IFS= read -r option; do
  java_opts+=("$option")
done < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
# The S3A jars lie in vendor/jars under the image's working folder, as for prep.
classpath="${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}$spark_home/jars/*:/app/vendor/jars/*"
exec java "${java_opts[@]}" -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" -cp "$classpath" \
  org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
  --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \
  --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \
  --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" --podName "$SPARK_EXECUTOR_POD_NAME"
