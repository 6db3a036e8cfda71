"""The one long-lived SparkSession of a prep process.

A session takes seconds to start and its first job pays JIT warm-up, so a
prep process starts one when its first Spark build comes (``SparkOnDemand``)
and reuses it for every dataset version after::

    spark = spark_session("local[*]", Path(".streamml"), settings.s3, Path("vendor/jars"))

pip's pyspark has no ``s3a://`` filesystem; the S3A jars come from
``scripts/install_spark_jars.sh``. Without S3 settings the session reads and
writes local paths only and needs no jars.

The S3 keys are set on the running session's Hadoop configuration, never in
the Spark settings, which the JVM is launched with on its command line.

Off ``local``, the prep process is the driver of a cluster: ``spark://`` (a
standalone master) or ``k8s://`` (executor pods; the Helm chart renders the
settings this needs). ``extra`` Spark settings (STREAMML_PREP_SPARK_CONF) size
the executors; ``check_master`` and ``check_extra_conf`` refuse, at start,
what the session could not run with.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pyspark.sql import SparkSession

from services.prep.s3a_signing import HADOOP_SIGNERS, Signer, choose_signer
from streamml.settings import S3Settings

S3A_JARS = ("hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar")
INSTALL_COMMAND = "scripts/install_spark_jars.sh"
log = logging.getLogger("streamml.prep")


MASTER = re.compile(
    r"^(local(\[(\*|[1-9][0-9]*)(,[1-9][0-9]*)?\])?"  # local, local[N], local[*], local[N,retries]
    r"|spark://[^\s/:,]+:[0-9]+(,[^\s/:,]+:[0-9]+)*"  # a standalone master, or several with ZooKeeper
    r"|k8s://(https?://)?[^\s/:]+(:[0-9]+)?)$"  # the Kubernetes API server
)
MASTERS = "local[N], local[*], spark://host:port or k8s://https://host[:port]"
# Spark settings that other streamml settings own, so STREAMML_PREP_SPARK_CONF may not set them.
OWNED_ELSEWHERE = {
    "spark.master": "STREAMML_PREP_SPARK_MASTER",
    "spark.driver.memory": "STREAMML_PREP_DRIVER_MEMORY",
    "spark.driver.host": "STREAMML_PREP_SPARK_DRIVER_HOST",
    "spark.kubernetes.driver.pod.name": "STREAMML_PREP_SPARK_DRIVER_POD",
    "spark.jars": "STREAMML_PREP_JARS_DIR",
    "spark.hadoop.fs.s3a.access.key": "STREAMML_S3_ACCESS_KEY_ID",
    "spark.hadoop.fs.s3a.secret.key": "STREAMML_S3_SECRET_ACCESS_KEY",
}
# Without it Spark cannot start an executor pod; with a k8s:// master it is required at start.
K8S_IMAGE = "spark.kubernetes.container.image"


def check_master(master: str) -> str:
    """The master, or ValueError naming the forms prep can run on."""
    if not MASTER.match(master):
        raise ValueError(f"{master!r} is not a Spark master: use {MASTERS}")
    return master


def check_extra_conf(conf: Mapping[str, str]) -> dict[str, str]:
    """Extra Spark settings, or ValueError naming the first bad key and where its value belongs."""
    for key in conf:
        if not key.startswith("spark."):
            raise ValueError(f"{key!r} is not a Spark setting: keys start with 'spark.' "
                             "(Hadoop settings as spark.hadoop.<key>)")
        if key in OWNED_ELSEWHERE:
            raise ValueError(f"{key!r} is set by {OWNED_ELSEWHERE[key]}: set that instead")
    return dict(conf)


def check_cluster_conf(master: str, conf: Mapping[str, str]) -> None:
    """ValueError when a k8s:// master lacks the executor image."""
    if master.startswith("k8s://") and K8S_IMAGE not in conf:
        raise ValueError(f"a k8s:// master needs {K8S_IMAGE} in STREAMML_PREP_SPARK_CONF: "
                         "the image executor pods run (prep's own image)")


class SparkJarsMissing(RuntimeError):
    """The S3A connector jars are not in the jars folder."""


def s3a_jars(jars_dir: Path) -> list[Path]:
    """Paths of the S3A jars, or SparkJarsMissing naming the folder and the fix."""
    jars = [jars_dir / name for name in S3A_JARS]
    missing = [jar.name for jar in jars if not jar.is_file()]
    if missing:
        raise SparkJarsMissing(
            f"S3A jars missing from {jars_dir}: {', '.join(missing)}; "
            f"install them with: {INSTALL_COMMAND} {jars_dir}"
        )
    return jars


def spark_conf(
    master: str, state_dir: Path, s3: S3Settings | None, jars: list[Path], shuffle_partitions: int,
    signer: Literal["v4", "v2"] = "v4", *,
    extra: Mapping[str, str] | None = None, driver_host: str | None = None, driver_pod: str | None = None,
) -> dict[str, str]:
    """Every Spark/Hadoop setting of the prep session but the S3 keys, as one inspectable mapping.

    ``driver_host`` is the address executors reach the driver at (a pod's IP);
    ``driver_pod`` names the driver's pod, which then owns the executor pods
    (Kubernetes deletes them with it); ``extra`` settings come last and win.
    """
    state_dir = state_dir.resolve()
    tmp = state_dir / "spark"
    conf = {
        "spark.master": master,
        "spark.app.name": "streamml-prep",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(tmp / "local"),
        "spark.sql.warehouse.dir": str(tmp / "warehouse"),
        "spark.hadoop.hadoop.tmp.dir": str(tmp / "hadoop"),
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        # Cast failures must become nulls (counted as type violations), not job failures.
        "spark.sql.ansi.enabled": "false",
        # INT96, Spark's default, is a legacy encoding other readers mis-type.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if master.startswith("local"):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    elif driver_host is not None:
        conf["spark.driver.host"] = driver_host
    if master.startswith("k8s://") and driver_pod is not None:
        conf["spark.kubernetes.driver.pod.name"] = driver_pod
    if jars:
        conf["spark.jars"] = ",".join(str(jar.resolve()) for jar in jars)
    if s3 is not None:
        conf.update(s3a_conf(s3, tmp / "s3a", signer))
    conf.update(extra or {})
    return conf


def s3a_conf(s3: S3Settings, buffer_dir: Path, signer: Literal["v4", "v2"]) -> dict[str, str]:
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.buffer.dir": str(buffer_dir),
        "spark.hadoop.fs.s3a.attempts.maximum": str(s3.max_attempts),
        "spark.hadoop.fs.s3a.connection.establish.timeout": str(int(s3.connect_timeout_s * 1000)),
    }
    if s3.endpoint is not None:
        conf["spark.hadoop.fs.s3a.endpoint"] = s3.endpoint
        # Ceph and most S3-compatible stores serve buckets by path, not by DNS name.
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(s3.endpoint.startswith("https://")).lower()
    # See s3a_signing.py for why one gateway needs the old signer.
    conf["spark.hadoop.fs.s3a.signing-algorithm"] = HADOOP_SIGNERS[signer]
    if s3.access_key_id is not None and s3.secret_access_key is not None:
        # The keys set on the session first; then AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, which
        # Kubernetes executor pods get from the same Secret, for a Hadoop configuration built there.
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider,"
            "com.amazonaws.auth.EnvironmentVariableCredentialsProvider"
        )
    return conf


def s3a_credentials(s3: S3Settings) -> dict[str, str]:
    """The S3A keys, set on the running session's Hadoop configuration rather
    than passed as --conf, which would put the secret on the JVM's command line."""
    if s3.access_key_id is None or s3.secret_access_key is None:
        return {}
    return {"fs.s3a.access.key": s3.access_key_id.get_secret_value(),
            "fs.s3a.secret.key": s3.secret_access_key.get_secret_value()}


# What the AWS SDK and Hadoop say when the store is away or overloaded, as opposed to a bad request.
STORE_LOST = ("java.net.ConnectException", "java.net.SocketTimeoutException", "java.net.SocketException",
              "java.net.NoRouteToHostException", "org.apache.http.NoHttpResponseException",
              "org.apache.http.conn.ConnectTimeoutException", "AWSClientIOException", "Unable to execute HTTP request",
              "Status Code: 500", "Status Code: 502", "Status Code: 503", "Status Code: 504", "SlowDown",
              "Connection reset", "Connection refused",
              # pyarrow's S3 filesystem (the DuckDB engine's reads and writes of the store):
              "AWS Error NETWORK_CONNECTION", "AWS Error SLOW_DOWN", "AWS Error SERVICE_UNAVAILABLE",
              "AWS Error INTERNAL_FAILURE")


def lost_the_store(error: BaseException) -> bool:
    """True when a prep job (either engine) failed because the object store was away, not because of its data."""
    return any(marker in str(error) for marker in STORE_LOST)


def error_summary(error: BaseException) -> str:
    """The first line of a (possibly Java) error, without its stack trace."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith("at ")), type(error).__name__)[:500]


def spark_session(
    master: str = "local[*]",
    state_dir: Path = Path(".streamml"),
    s3: S3Settings | None = None,
    jars_dir: Path = Path("vendor/jars"),
    *,
    driver_memory: str = "2g",
    shuffle_partitions: int = 4,
    signer: Signer = "auto",
    extra_conf: Mapping[str, str] | None = None,
    driver_host: str | None = None,
    driver_pod: str | None = None,
) -> SparkSession:
    """Start (or return the running) session; the first call's settings hold for the process.

    ``s3`` configures ``s3a://`` for its endpoint and keys and requires the S3A
    jars in ``jars_dir``; ``None`` gives a session for local paths only.
    ``signer`` is how S3A signs requests (see ``s3a_signing.py``).
    """
    jars = s3a_jars(jars_dir) if s3 is not None else []
    # The JVM launcher reads these from the environment; workers must run this
    # interpreter (with this virtualenv), not whatever python is first on PATH.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    if master.startswith("local"):
        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    chosen = choose_signer(signer, s3) if s3 is not None else "v4"
    conf = spark_conf(master, state_dir, s3, jars, shuffle_partitions, chosen,
                      extra=extra_conf, driver_host=driver_host, driver_pod=driver_pod)
    conf["spark.driver.memory"] = driver_memory
    for key in ("spark.local.dir", "spark.hadoop.hadoop.tmp.dir"):
        Path(conf[key]).mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    if s3 is not None:
        hadoop = session.sparkContext._jsc.hadoopConfiguration()
        for key, value in s3a_credentials(s3).items():
            hadoop.set(key, value)
    return session


class SparkOnDemand:
    """The prep process's one session, started by the first build that needs Spark, so a prep whose
    builds all run on DuckDB never pays Spark's start."""

    def __init__(self, start: Callable[[], SparkSession]) -> None:
        self._start = start
        self._session: SparkSession | None = None

    def __call__(self) -> SparkSession:
        if self._session is None:
            log.info("starting the Spark session: the first build that needs Spark")
            self._session = self._start()
        return self._session

    def stop(self) -> None:
        if self._session is not None:
            self._session.stop()
            self._session = None
