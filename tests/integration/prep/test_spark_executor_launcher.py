"""Executor pods of a k8s:// master run prep's image through deploy/docker/spark-executor.sh.

No Kubernetes here, so the test plays Kubernetes' part: a prep driver on a
real standalone master that has no workers, and the launcher started with the
SPARK_* variables Spark gives an executor pod. It is the only executor there
is, so every task of the real prep job below runs in it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pyspark
import pytest

from services.prep.synthetic import raw_transactions, write_raw
from streamml.stack.ports import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
LAUNCHER = REPO / "deploy" / "docker" / "spark-executor.sh"
SPEC = REPO / "examples" / "datasets" / "transactions.yaml"
JARS = Path(pyspark.__file__).parent / "jars"
# Every JVM here lives for one small job: the master and the executor get the options that
# tests/conftest.py gives every driver to spare the CPU, the executor as a pod gets its extra Java options.
SHORT_LIVED_JVM = os.environ.get("SPARK_SUBMIT_OPTS", "")

# The prep process as a driver: a cluster master, its pod's address, and executor sizing as extra settings.
DRIVER = """
import json, sys, time
from pathlib import Path
from services.prep.job import prepare_with_spark
from services.prep.spark import spark_session
from streamml.specs import load_dataset_spec

master, state, spec, raw, out, handshake, SHORT_LIVED_JVM = sys.argv[1:]
spark = spark_session(master, Path(state), None, driver_memory="512m", driver_host="127.0.0.1",
                      extra_conf={"spark.executor.memory": "512m", "spark.executor.cores": "1",
                                  "spark.executor.extraJavaOptions": SHORT_LIVED_JVM})
conf = spark.sparkContext.getConf()
Path(handshake).write_text(json.dumps({
    "app_id": spark.sparkContext.applicationId,
    "driver_url": f"spark://CoarseGrainedScheduler@127.0.0.1:{conf.get('spark.driver.port')}",
    "java_options": conf.get("spark.executor.extraJavaOptions", ""),
    "driver_port": conf.get("spark.driver.port"),
}))
deadline = time.monotonic() + 300
while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() < 2:  # the driver counts itself
    assert time.monotonic() < deadline, "no executor registered"
    time.sleep(0.5)
result = prepare_with_spark(spark, load_dataset_spec(Path(spec)), sorted(str(p) for p in Path(raw).iterdir()), out)
print(json.dumps({"rows": result.rows, "hashes": result.content_sha256}))
spark.stop()
"""


def wait_for(predicate, what: str, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def standalone_master(tmp_path):
    port, ui_port = free_ports(2)
    log = tmp_path / "master.log"
    master = subprocess.Popen(
        ["java", "-Xmx256m", *SHORT_LIVED_JVM.split(), "-cp", f"{JARS}/*", "org.apache.spark.deploy.master.Master",
         "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)],
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "Starting Spark master at" in log.read_text(), "the master did not start", log)
        yield f"spark://127.0.0.1:{port}"
    finally:
        stop(master)


def test_the_launcher_runs_prep_jobs_as_a_spark_executor(standalone_master, tmp_path):
    raw = tmp_path / "raw"
    write_raw(raw_transactions(3000, seed=5), raw, files=2)
    handshake, driver_log, executor_log = tmp_path / "driver.json", tmp_path / "driver.log", tmp_path / "executor.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPARK_LOCAL_IP": "127.0.0.1"}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, standalone_master, str(tmp_path / "state"), str(SPEC), str(raw),
         str(tmp_path / "out"), str(handshake), SHORT_LIVED_JVM],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=driver_log.open("w"), text=True, start_new_session=True,
    )
    executor = None
    try:
        wait_for(handshake.exists, "the driver did not start", driver_log)
        started = json.loads(handshake.read_text())
        # What Spark's Kubernetes backend gives an executor pod (BasicExecutorFeatureStep).
        options = [*shlex.split(started["java_options"]), f"-Dspark.driver.port={started['driver_port']}"]
        executor_env = {
            **env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
            "SPARK_DRIVER_URL": started["driver_url"], "SPARK_EXECUTOR_ID": "1", "SPARK_EXECUTOR_CORES": "1",
            "SPARK_EXECUTOR_MEMORY": "512m", "SPARK_APPLICATION_ID": started["app_id"],
            "SPARK_EXECUTOR_POD_IP": "127.0.0.1", "SPARK_EXECUTOR_POD_NAME": "streamml-prep-exec-1",
            "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_LOCAL_DIRS": str(tmp_path / "executor"),
            **{f"SPARK_JAVA_OPT_{i}": option for i, option in enumerate(options)},
        }
        executor = subprocess.Popen(["bash", str(LAUNCHER), "executor"], env=executor_env,
                                    stdout=executor_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        out, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, driver_log.read_text()[-3000:]
        built = json.loads(out.strip().splitlines()[-1])
        assert sum(built["rows"].values()) > 0 and set(built["hashes"]) == set(built["rows"])
        assert "Finished task" in executor_log.read_text()
        executor.wait(60)  # an executor ends with its driver
    finally:
        stop(driver)
        if executor is not None:
            stop(executor)


def test_the_launcher_refuses_to_run_as_anything_but_an_executor():
    result = subprocess.run(["bash", str(LAUNCHER)], capture_output=True, text=True)
    assert result.returncode == 64
    assert "usage:" in result.stderr and "executor" in result.stderr
