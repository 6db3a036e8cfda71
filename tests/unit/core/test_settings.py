import json

import pytest

from streamml.settings import CONFIG_FILE_ENV, ServiceSettings, SettingsError, load_settings, settings_help

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


def service_settings_classes() -> list[type[ServiceSettings]]:
    from services.ingest.settings import IngestSettings
    from services.monitor.service import MonitorSettings
    from services.prep.service import PrepSettings
    from services.serve.service import ServeSettings
    from services.trainer.service import TrainerSettings
    from services.validator.service import ValidatorSettings

    return [IngestSettings, PrepSettings, TrainerSettings, ValidatorSettings, MonitorSettings, ServeSettings]


REQUIRED_VALUES = {"STREAMML_SERVE_MODEL": "fraud"}


@pytest.mark.parametrize("settings_cls", service_settings_classes(), ids=lambda cls: cls.__name__)
def test_help_names_every_setting_as_a_variable_the_service_reads(settings_cls, monkeypatch):
    """Each listed variable, set to the default --help shows, loads to that default."""
    listed = settings_help(settings_cls)
    assert len({setting.variable for setting in listed}) == len(listed)
    for setting in listed:
        if setting.default == "required":
            monkeypatch.setenv(setting.variable, REQUIRED_VALUES[setting.variable])
    with_defaults = load_settings(settings_cls)
    for setting in listed:
        assert setting.meaning, f"{setting.variable} has no description for --help"
        if setting.default not in ("unset", "required"):
            monkeypatch.setenv(setting.variable, "" if setting.default == "empty" else setting.default)
    assert load_settings(settings_cls) == with_defaults
    secrets = [setting for setting in listed if "secret" in setting.meaning]
    assert {s.variable for s in secrets} >= {"STREAMML_KAFKA_SASL_PASSWORD", "STREAMML_S3_SECRET_ACCESS_KEY"}


def test_help_shows_choices_and_group_defaults():
    from services.monitor.service import MonitorSettings

    by_variable = {setting.variable: setting for setting in settings_help(MonitorSettings)}
    assert "one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" in by_variable["STREAMML_KAFKA_SECURITY_PROTOCOL"].meaning
    assert by_variable["STREAMML_MONITOR_MODELS"].default == "[]"
    assert json.loads(by_variable["STREAMML_MONITOR_WINDOWS"].default)["size"] == 10_000
