import pytest

from streamml.settings import CONFIG_FILE_ENV, ServiceSettings, SettingsError, load_settings

pytestmark = pytest.mark.unit


def test_environment_overrides_yaml_file_and_defaults(tmp_path, monkeypatch):
    config = tmp_path / "streamml.yaml"
    config.write_text("kafka:\n  bootstrap: file-host:9092\n  topic_prefix: prod.\ns3:\n  bucket: models\n")
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    monkeypatch.setenv("STREAMML_KAFKA_BOOTSTRAP", "env-host:9093")
    settings = load_settings(ServiceSettings)
    assert settings.kafka.bootstrap == "env-host:9093"
    assert settings.kafka.topic("data.landed") == "prod.data.landed"
    assert settings.s3.bucket == "models"
    assert settings.http.port == 8080


def test_every_bad_value_is_named_by_its_variable(monkeypatch):
    monkeypatch.setenv("STREAMML_KAFKA_BOOTSTRAP", "no-port")
    monkeypatch.setenv("STREAMML_S3_ENDPOINT", "ceph:7480")
    monkeypatch.setenv("STREAMML_HTTP_PORT", "70000")
    with pytest.raises(SettingsError) as caught:
        load_settings(ServiceSettings)
    text = str(caught.value)
    assert len(caught.value.lines) == 3
    assert "STREAMML_KAFKA_BOOTSTRAP='no-port'" in text
    assert "STREAMML_S3_ENDPOINT='ceph:7480'" in text and "http://" in text
    assert "STREAMML_HTTP_PORT='70000'" in text


def test_secrets_never_appear_in_errors_or_repr(monkeypatch):
    monkeypatch.setenv("STREAMML_KAFKA_SASL_PASSWORD", "s3cr3t-value")
    monkeypatch.setenv("STREAMML_KAFKA_SASL_MECHANISM", "SCRAM-SHA-999")
    with pytest.raises(SettingsError) as caught:
        load_settings(ServiceSettings)
    assert "STREAMML_KAFKA_SASL_MECHANISM" in str(caught.value)
    monkeypatch.setenv("STREAMML_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    settings = load_settings(ServiceSettings)
    assert "s3cr3t-value" not in repr(settings)
    assert settings.kafka.client_config()["sasl.password"] == "s3cr3t-value"


def test_unknown_variable_in_a_group_is_rejected(monkeypatch):
    monkeypatch.setenv("STREAMML_KAFKA_BOOTSTRAPS", "host:1")
    with pytest.raises(SettingsError, match="unknown setting STREAMML_KAFKA_BOOTSTRAPS"):
        load_settings(ServiceSettings)


def test_missing_or_broken_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "absent.yaml"))
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(ServiceSettings)
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [unclosed\n")
    monkeypatch.setenv(CONFIG_FILE_ENV, str(broken))
    with pytest.raises(SettingsError, match="STREAMML_CONFIG_FILE"):
        load_settings(ServiceSettings)


def test_settings_are_frozen():
    settings = ServiceSettings()
    with pytest.raises(Exception):
        settings.kafka.bootstrap = "other:1"  # type: ignore[misc]
