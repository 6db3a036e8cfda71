from pathlib import Path

import pytest

from services.prep.spark import S3A_JARS, SparkJarsMissing, s3a_credentials, s3a_jars, spark_conf
from streamml.settings import S3Settings

pytestmark = pytest.mark.unit


def s3(endpoint: str | None = "http://127.0.0.1:7480") -> S3Settings:
    return S3Settings(endpoint=endpoint, access_key_id="AK", secret_access_key="SK")


def test_missing_jars_name_the_folder_and_the_install_command(tmp_path):
    (tmp_path / S3A_JARS[0]).write_bytes(b"jar")
    with pytest.raises(SparkJarsMissing) as caught:
        s3a_jars(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and S3A_JARS[1] in message and S3A_JARS[0] not in message
    assert f"scripts/install_spark_jars.sh {tmp_path}" in message


def test_present_jars_are_returned(tmp_path):
    for name in S3A_JARS:
        (tmp_path / name).write_bytes(b"jar")
    assert [jar.name for jar in s3a_jars(tmp_path)] == list(S3A_JARS)


def test_s3a_points_at_the_endpoint_by_path_without_ssl_for_http(tmp_path):
    conf = spark_conf("local[2]", tmp_path, s3(), [tmp_path / "a.jar"], 4)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:7480"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("SimpleAWSCredentialsProvider")
    # The keys never go into the launch conf (it becomes the JVM's command line).
    assert not [value for value in conf.values() if "SK" == value]
    assert s3a_credentials(s3()) == {"fs.s3a.access.key": "AK", "fs.s3a.secret.key": "SK"}
    assert conf["spark.jars"] == str((tmp_path / "a.jar").resolve())


def test_https_endpoint_keeps_ssl_and_aws_uses_its_default_endpoint(tmp_path):
    assert spark_conf("local", tmp_path, s3("https://s3.example"), [], 4)[
        "spark.hadoop.fs.s3a.connection.ssl.enabled"
    ] == "true"
    aws = spark_conf("local", tmp_path, s3(None), [], 4)
    assert "spark.hadoop.fs.s3a.endpoint" not in aws and "spark.hadoop.fs.s3a.path.style.access" not in aws


def test_temporary_files_stay_in_the_state_folder(tmp_path):
    conf = spark_conf("local[2]", tmp_path, s3(), [], 3)
    for key in ("spark.local.dir", "spark.hadoop.hadoop.tmp.dir", "spark.hadoop.fs.s3a.buffer.dir"):
        assert Path(conf[key]).is_relative_to(tmp_path.resolve())
    assert conf["spark.sql.shuffle.partitions"] == "3"
    assert conf["spark.ui.enabled"] == "false"


def test_a_cluster_master_does_not_pin_the_driver_to_loopback(tmp_path):
    assert spark_conf("local[2]", tmp_path, None, [], 4)["spark.driver.host"] == "127.0.0.1"
    remote = spark_conf("spark://spark-master:7077", tmp_path, None, [], 4)
    assert "spark.driver.host" not in remote and "spark.hadoop.fs.s3a.endpoint" not in remote
