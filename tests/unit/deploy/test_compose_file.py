"""docker-compose.yml, checked structurally (no Docker here): every service
can be built or pulled and reports its health, the streamml services reach
Kafka and the S3 server with settings they accept, and the init, Prometheus
and Grafana wiring points at files that exist."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from deploy_support import REPO, SHARED_DOCKERFILE, dockerfile_of

from streamml.settings import ServiceSettings, load_settings

sys.path.insert(0, str(REPO / "deploy"))
try:
    from compose_env import credentials, ensure_env_file
finally:
    sys.path.remove(str(REPO / "deploy"))

pytestmark = pytest.mark.unit

SERVICES = ("ingest", "prep", "trainer", "validator", "monitor")
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
DEFAULTS = re.compile(r"\$\{(\w+):-([^}]*)\}")
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]*\}")
# What deploy/compose_env.py would have written to .env.
ENV_FILE = credentials()


def with_defaults(value: object) -> str:
    """A compose value as on a machine with the generated .env: ${VAR:-default} gives its default,
    ${VAR:?message} the generated value."""
    return REQUIRED.sub(lambda m: ENV_FILE[m.group(1)], DEFAULTS.sub(lambda m: m.group(2), str(value)))


def environment(service: str) -> dict[str, str]:
    return {k: with_defaults(v) for k, v in COMPOSE["services"][service].get("environment", {}).items()}


def bind_mounts(service: str) -> dict[str, str]:
    """Container path -> repository path of each bind mount."""
    mounts = {}
    for volume in COMPOSE["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_every_service_has_an_image_to_build_or_pull():
    for name, service in COMPOSE["services"].items():
        assert "image" in service or "build" in service, name
    for name in SERVICES:
        build = COMPOSE["services"][name]["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == dockerfile_of(name)
        assert (REPO / build["dockerfile"]).is_file()
        if build["dockerfile"] == SHARED_DOCKERFILE:
            assert build["args"] == {"SERVICE": name}, f"{name}: the shared Dockerfile needs SERVICE={name}"


def test_long_running_services_have_health_checks_and_one_shots_do_not_restart():
    for name, service in COMPOSE["services"].items():
        if service.get("restart") == "no":
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service["restart"] == "unless-stopped", name


def test_kafka_runs_in_kraft_mode():
    kafka = COMPOSE["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not [key for key in env if "ZOOKEEPER" in key]
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"


@pytest.mark.parametrize("service", SERVICES)
def test_streamml_services_reach_kafka_and_the_s3_server(service):
    env = environment(service)
    kafka_env = COMPOSE["services"]["kafka"]["environment"]
    advertised = dict(item.split("://") for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert env["STREAMML_KAFKA_BOOTSTRAP"] == advertised["PLAINTEXT"]
    s3 = environment("s3")
    assert env["STREAMML_S3_ENDPOINT"] == "http://s3:9000"
    assert env["STREAMML_S3_ACCESS_KEY_ID"] == s3["MINIO_ROOT_USER"]
    assert env["STREAMML_S3_SECRET_ACCESS_KEY"] == s3["MINIO_ROOT_PASSWORD"]
    bucket_init = COMPOSE["services"]["init-bucket"]["entrypoint"]
    assert bucket_init[-1] == f"s3/{env['STREAMML_S3_BUCKET']}"
    assert COMPOSE["services"][service]["depends_on"]["init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("service", [*SERVICES, "init"])
def test_streamml_environment_is_accepted_by_the_service_settings(service, monkeypatch):
    for name in [n for n in os.environ if n.startswith("STREAMML_")]:
        monkeypatch.delenv(name)
    for name, value in environment(service).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(ServiceSettings)
    assert settings.http.host == "0.0.0.0"
    assert settings.s3.endpoint == "http://s3:9000"


def test_init_creates_the_topics_every_service_consumes():
    init = COMPOSE["services"]["init"]
    command = init["entrypoint"]
    assert command[:3] == ["streamml", "topics", "apply"]
    options = dict(zip(command[3::2], command[4::2]))
    mounts = bind_mounts("init")
    assert mounts[options["--file"]] == "./topics.yaml"
    assert mounts[options["--specs"]] == bind_mounts("ingest")[environment("ingest")["STREAMML_INGEST_SPECS_DIR"]]
    assert [options["--model"]] == json.loads(environment("monitor")["STREAMML_MONITOR_MODELS"])
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_mounted_files_exist():
    # A missing file would be mounted as an empty folder; a missing folder is created empty.
    for name in COMPOSE["services"]:
        for source in bind_mounts(name).values():
            if Path(source).suffix:
                assert (REPO / source).is_file(), f"{name}: {source} does not exist"


def test_prometheus_scrapes_every_service_and_loads_the_alert_rules():
    mounts = bind_mounts("prometheus")
    config = yaml.safe_load((REPO / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    for service in SERVICES:
        assert f"{service}:{environment(service)['STREAMML_HTTP_PORT']}" in targets
    assert "kafka-exporter:9308" in targets
    (rule_file,) = config["rule_files"]
    assert mounts[rule_file] == "./deploy/prometheus/alerts.yaml"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards():
    mounts = bind_mounts("grafana")
    provisioning = REPO / mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "streamml.yaml").read_text())["providers"]
    dashboard_mounts = {target: src for target, src in mounts.items()
                        if target.startswith(provider["options"]["path"] + "/")}
    assert set(dashboard_mounts.values()) == {"./deploy/grafana/dashboards", "./dashboards"}
    for dashboard in (REPO / "deploy" / "grafana" / "dashboards").glob("*.json"):
        assert json.loads(dashboard.read_text())["panels"]


def test_no_credential_has_a_default_and_each_names_how_to_make_one():
    secrets = re.findall(r"\$\{(\w*(?:KEY|PASSWORD|SECRET)\w*)(:[-?][^}]*)?\}", COMPOSE_TEXT)
    assert {name for name, _ in secrets} == set(ENV_FILE)
    for name, rule in secrets:
        assert rule.startswith(":?") and "deploy/compose_env.py" in rule, name
    assert COMPOSE["services"]["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_every_published_port_listens_on_loopback_unless_told_otherwise():
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${STREAMML_PUBLISH_HOST:-127.0.0.1}:"), (name, port)


def test_the_env_file_is_written_once_readable_by_its_owner_only(tmp_path):
    path = tmp_path / ".env"
    assert ensure_env_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    values = dict(line.split("=", 1) for line in first.splitlines() if not line.startswith("#"))
    assert set(values) == set(ENV_FILE) and len(set(values.values())) == 3
    assert not ensure_env_file(path) and path.read_text() == first
