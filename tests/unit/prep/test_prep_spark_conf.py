from pathlib import Path

import pytest

from services.prep.s3a_signing import choose_signer, streaming_signatures
from services.prep.service import PrepSettings
from services.prep.spark import (
    S3A_JARS,
    SparkJarsMissing,
    check_extra_conf,
    check_master,
    error_summary,
    lost_the_store,
    s3a_jars,
    s3a_credentials,
    spark_conf,
)
from streamml.settings import S3Settings, SettingsError, load_settings

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
    providers = conf["spark.hadoop.fs.s3a.aws.credentials.provider"].split(",")
    assert providers == ["org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
                         "com.amazonaws.auth.EnvironmentVariableCredentialsProvider"]
    assert conf["spark.jars"] == str((tmp_path / "a.jar").resolve())


def test_the_keys_stay_off_the_command_line_the_jvm_starts_with(tmp_path):
    conf = spark_conf("local[2]", tmp_path, s3(), [], 4)
    assert not [key for key, value in conf.items() if "key" in key.rsplit(".", 1)[-1] or value in ("AK", "SK")]
    assert s3a_credentials(s3()) == {"fs.s3a.access.key": "AK", "fs.s3a.secret.key": "SK"}


def test_s3a_signs_with_sigv4_unless_told_to_use_the_old_signer(tmp_path):
    assert spark_conf("local", tmp_path, s3(), [], 4)["spark.hadoop.fs.s3a.signing-algorithm"] == "AWSS3V4SignerType"
    old = spark_conf("local", tmp_path, s3(), [], 4, signer="v2")
    assert old["spark.hadoop.fs.s3a.signing-algorithm"] == "S3SignerType"
    assert choose_signer("v2", s3()) == "v2" and choose_signer("auto", s3(None)) == "v4"


def test_the_streaming_signer_matches_the_aws_example():
    """The example of AWS's "Transferring Payload in Multiple Chunks" (SigV4 streaming)."""
    headers = {"content-encoding": "aws-chunked", "content-length": "66824", "host": "s3.amazonaws.com",
               "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "x-amz-date": "20130524T000000Z",
               "x-amz-decoded-content-length": "66560", "x-amz-storage-class": "REDUCED_REDUNDANCY"}
    seed, chunks = streaming_signatures("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "PUT",
                                        "/examplebucket/chunkObject.txt", headers, [b"a" * 65536, b"a" * 1024, b""])
    assert seed == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    assert chunks == ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                      "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                      "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]


def test_a_spark_failure_is_told_apart_from_a_lost_store():
    refused = RuntimeError("An error occurred while calling o95.parquet.\n: org.apache.hadoop.fs.s3a.AWSClientIOException: "
                           "getFileStatus on s3a://b/x: com.amazonaws.SdkClientException: Unable to execute HTTP "
                           "request: Connect to 127.0.0.1:7480 failed: Connection refused\n\tat org.apache...")
    assert lost_the_store(refused)
    assert error_summary(refused) == "An error occurred while calling o95.parquet."
    assert not lost_the_store(RuntimeError("[UNRESOLVED_COLUMN] A column `amount` cannot be resolved"))


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


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[4,3]", "spark://spark-master:7077",
                                    "spark://a:7077,b:7077", "k8s://https://kubernetes.default.svc",
                                    "k8s://https://10.0.0.1:6443", "k8s://kubernetes.default.svc:443"])
def test_masters_prep_can_run_on(master):
    assert check_master(master) == master


@pytest.mark.parametrize("master", ["yarn", "local[0]", "local[two]", "spark://spark-master", "k8s://", "mesos://m:5050",
                                    "k8s://https://api/path", " local"])
def test_other_masters_are_refused_naming_the_forms(master):
    with pytest.raises(ValueError, match=r"is not a Spark master: use local\[N\], local\[\*\], spark://host:port"):
        check_master(master)


@pytest.mark.parametrize(("key", "where"), [("spark.master", "STREAMML_PREP_SPARK_MASTER"),
                                            ("spark.driver.memory", "STREAMML_PREP_DRIVER_MEMORY"),
                                            ("spark.hadoop.fs.s3a.secret.key", "STREAMML_S3_SECRET_ACCESS_KEY"),
                                            ("spark.jars", "STREAMML_PREP_JARS_DIR")])
def test_extra_conf_may_not_set_what_other_settings_own(key, where):
    with pytest.raises(ValueError, match=f"{key!r} is set by {where}"):
        check_extra_conf({key: "x"})


def test_extra_conf_keys_are_spark_settings():
    with pytest.raises(ValueError, match="'fs.s3a.endpoint' is not a Spark setting: .*spark.hadoop.<key>"):
        check_extra_conf({"fs.s3a.endpoint": "http://x"})


def test_extra_conf_wins_and_a_cluster_driver_gets_its_address_and_pod(tmp_path):
    extra = {"spark.executor.instances": "4", "spark.sql.shuffle.partitions": "16"}
    conf = spark_conf("k8s://https://kubernetes.default.svc", tmp_path, None, [], 4, extra=extra,
                      driver_host="10.244.1.17", driver_pod="streamml-prep-abc")
    assert conf["spark.executor.instances"] == "4" and conf["spark.sql.shuffle.partitions"] == "16"
    assert conf["spark.driver.host"] == "10.244.1.17" and "spark.driver.bindAddress" not in conf
    assert conf["spark.kubernetes.driver.pod.name"] == "streamml-prep-abc"
    standalone = spark_conf("spark://m:7077", tmp_path, None, [], 4, driver_host="10.0.0.5", driver_pod="p")
    assert standalone["spark.driver.host"] == "10.0.0.5" and "spark.kubernetes.driver.pod.name" not in standalone
    # In local mode the driver stays on the loopback address whatever the pod is.
    local = spark_conf("local[2]", tmp_path, None, [], 4, driver_host="10.0.0.5")
    assert local["spark.driver.host"] == local["spark.driver.bindAddress"] == "127.0.0.1"


def test_spark_settings_load_from_the_environment_as_spark_reads_them(monkeypatch):
    monkeypatch.setenv("STREAMML_PREP_SPARK_MASTER", "k8s://https://kubernetes.default.svc")
    monkeypatch.setenv("STREAMML_PREP_SPARK_CONF", '{"spark.kubernetes.container.image": "prep:1", '
                       '"spark.executor.instances": 4, "spark.dynamicAllocation.enabled": true}')
    monkeypatch.setenv("STREAMML_PREP_SPARK_DRIVER_HOST", "10.244.1.17")
    prep = load_settings(PrepSettings).prep
    assert prep.spark_conf == {"spark.kubernetes.container.image": "prep:1", "spark.executor.instances": "4",
                               "spark.dynamicAllocation.enabled": "true"}
    assert prep.spark_driver_host == "10.244.1.17"


@pytest.mark.parametrize(("env", "message"), [
    ({"STREAMML_PREP_SPARK_MASTER": "yarn"}, "invalid setting STREAMML_PREP_SPARK_MASTER='yarn': Value error, "
     "'yarn' is not a Spark master"),
    ({"STREAMML_PREP_SPARK_MASTER": "k8s://https://kubernetes.default.svc"},
     "invalid setting STREAMML_PREP_SPARK_CONF={}: Value error, a k8s:// master needs spark.kubernetes.container.image"),
    ({"STREAMML_PREP_SPARK_CONF": '{"spark.master": "local"}'}, "invalid setting STREAMML_PREP_SPARK_CONF="),
    ({"STREAMML_PREP_SPARK_CONF": '["spark.executor.instances"]'}, "invalid setting STREAMML_PREP_SPARK_CONF="),
])
def test_bad_spark_settings_stop_prep_naming_the_setting(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(PrepSettings)
    assert message in str(raised.value)
