"""The Helm chart, rendered for each value set: every object is valid for
Kubernetes and for the operators it targets, KEDA watches the lag the
services really create, topics match `streamml topics apply`, and the pods
are locked down the way OpenShift's restricted SCC requires."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_support import CHART, NAMESPACE, REPO, VALUE_SETS, Render, load_values_file, render

from streamml.settings import ServiceSettings, load_settings
from streamml.specs import load_dataset_specs, parse_dataset_spec
from streamml.topics import load_topics, resolve

pytestmark = pytest.mark.unit
CHART_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

SERVICES = ("ingest", "prep", "trainer", "validator", "monitor")
CONSUMERS = yaml.safe_load((REPO / "deploy" / "consumers.yaml").read_text())
CRD_SCHEMAS = {
    json.loads(path.read_text())["properties"]["kind"]["const"]: json.loads(path.read_text())
    for path in (Path(__file__).parent / "crds").glob("*.json")
}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema bundled.
KUBE_VERSIONS = ("1.27", kubernetes_validate.latest_version())
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def expected_input_topics(service: str, values: dict) -> list[str]:
    """Prefixed input topics of a service, straight from deploy/consumers.yaml."""
    consumer = CONSUMERS[service]
    names = list(consumer.get("topics", []))
    names += [t.replace("{dataset}", d["name"]) for t in consumer.get("per_dataset", []) for d in values["datasets"]]
    names += [t.replace("{model}", m) for t in consumer.get("per_model", []) for m in values["models"]]
    return [values["kafka"]["topicPrefix"] + name for name in names]


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def service_of(manifest: dict) -> str:
    return manifest["metadata"]["labels"]["app.kubernetes.io/component"]


# What the downward API would give a pod, for fieldRef variables.
POD_FIELDS = {"status.podIP": "10.244.1.17", "metadata.name": "streamml-prep-5d8f7c9b4-x2x7q"}


def pod_environment(release: Render, deployment: dict) -> dict[str, str]:
    """The variables the container would see, with stand-ins for Secret and
    bucket-claim values and Kubernetes' $(VAR) expansion applied."""
    env: dict[str, str] = {}
    for source in container(deployment)["envFrom"]:
        env.update(release.named("ConfigMap", source["configMapRef"]["name"])["data"])
    stand_ins = {"BUCKET_HOST": "rgw.storage.svc", "BUCKET_PORT": "80", "BUCKET_NAME": "streamml-claimed"}
    for item in container(deployment)["env"]:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = f"secret:{item['valueFrom']['secretKeyRef']['key']}"
        elif "fieldRef" in item["valueFrom"]:
            env[item["name"]] = POD_FIELDS[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = stand_ins[item["valueFrom"]["configMapKeyRef"]["key"]]
    return env


# ------------------------------------------------------------- validity


def invalid_objects(manifests: list[dict]) -> list[str]:
    """Why each object would be refused, by the API server or by its operator's CRD."""
    problems = []
    for manifest in manifests:
        where = f"{manifest['kind']} {manifest['metadata']['name']}"
        if manifest["kind"] in CRD_SCHEMAS:
            errors = jsonschema.Draft202012Validator(CRD_SCHEMAS[manifest["kind"]]).iter_errors(manifest)
            problems += [f"{where}: {list(e.absolute_path)}: {e.message}" for e in errors]
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{where}: no schema for {manifest['apiVersion']} in Kubernetes {version}, "
                                "and no CRD schema in tests/unit/deploy/crds")
            except kubernetes_validate.ValidationError as error:
                problems.append(f"{where} (Kubernetes {version}): {list(error.absolute_path)}: {error.message}")
        name = manifest["metadata"]["name"]
        rule = DNS_LABEL if manifest["kind"] in ("Service", "Deployment") else DNS_SUBDOMAIN
        if not rule.match(name) or len(name) > (63 if rule is DNS_LABEL else 253):
            problems.append(f"{where}: invalid name")
        for key, value in manifest["metadata"].get("labels", {}).items():
            if not LABEL_VALUE.match(value) or len(value) > 63:
                problems.append(f"{where}: label {key}={value!r} is invalid")
    return problems


def test_every_object_is_valid_for_kubernetes_or_its_operator(release):
    assert invalid_objects(release.manifests) == []


def test_dataset_and_model_names_with_underscores_give_valid_objects(chart):
    dataset = {**chart.values["datasets"][0], "name": "card_tx"}
    manifests = render(chart, {"datasets": [dataset], "models": ["card_tx"], "kafka": {"topicPrefix": "Team_A."}})
    assert invalid_objects(manifests) == []
    topics = {m["spec"]["topicName"] for m in manifests if m["kind"] == "KafkaTopic"}
    assert {"Team_A.ingest.card_tx", "Team_A.predictions.card_tx", "Team_A.feedback.card_tx"} <= topics


def test_object_names_are_unique_per_kind(release):
    seen = [(m["kind"], m["metadata"]["name"]) for m in release.manifests]
    assert len(seen) == len(set(seen)), sorted(k for k in seen if seen.count(k) > 1)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_finds_no_warning(value_set):
    values = {} if value_set == "values.yaml" else load_values_file(value_set)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    # Severity 1 is informational ("icon is recommended"); 2 and 3 are warnings and errors.
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_chart_copies_of_repository_files_are_current():
    sys.path.insert(0, str(REPO / "deploy"))
    try:
        import sync_chart_files
    finally:
        sys.path.remove(str(REPO / "deploy"))
    assert sync_chart_files.problems() == []


# ------------------------------------------------------------- autoscaling


def test_each_scaled_object_watches_the_group_and_topics_of_its_service(release):
    scaled = release.of_kind("ScaledObject")
    assert sorted(service_of(s) for s in scaled) == sorted(SERVICES)
    for scaled_object in scaled:
        service = service_of(scaled_object)
        triggers = scaled_object["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {CONSUMERS[service]["group"]}
        assert [t["metadata"]["topic"] for t in triggers] == expected_input_topics(service, release.values)
        assert {t["metadata"]["bootstrapServers"] for t in triggers} == {release.values["kafka"]["bootstrap"]}
        assert scaled_object["spec"]["scaleTargetRef"]["name"] == release.named(
            "Deployment", scaled_object["metadata"]["name"])["metadata"]["name"]


def test_scaled_objects_follow_a_topic_prefix_and_every_model(chart):
    values = {"kafka": {"topicPrefix": "prod."}, "models": ["fraud", "churn"]}
    merged = chart.merge_values(values)
    scaled = {service_of(s): s for s in render(chart, values) if s["kind"] == "ScaledObject"}
    monitor_topics = [t["metadata"]["topic"] for t in scaled["monitor"]["spec"]["triggers"]]
    assert monitor_topics == expected_input_topics("monitor", merged)
    assert monitor_topics == [
        "prod.predictions.fraud", "prod.predictions.churn", "prod.feedback.fraud", "prod.feedback.churn",
    ]
    prep_topics = [t["metadata"]["topic"] for t in scaled["prep"]["spec"]["triggers"]]
    assert prep_topics == ["prod.data.landed", "prod.drift.detected"]


def test_scaling_settings_are_explicit_and_match_the_consumers(release):
    for scaled_object in release.of_kind("ScaledObject"):
        for trigger in scaled_object["spec"]["triggers"]:
            metadata = trigger["metadata"]
            for key in ("lagThreshold", "activationLagThreshold", "offsetResetPolicy", "scaleToZeroOnInvalidOffset"):
                assert key in metadata, f"{scaled_object['metadata']['name']}: {key} is not set"
            # BatchConsumer starts a new group at the earliest offset; KEDA must count lag the same way.
            assert metadata["offsetResetPolicy"] == "earliest"


def test_max_replicas_never_exceed_the_partitions_of_the_input_topics(release):
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in release.of_kind("KafkaTopic")}
    for scaled_object in release.of_kind("ScaledObject"):
        topics = [t["metadata"]["topic"] for t in scaled_object["spec"]["triggers"]]
        assert scaled_object["spec"]["maxReplicaCount"] <= max(partitions[t] for t in topics)


def test_kafka_credentials_reach_keda_when_the_cluster_needs_them(renders):
    plain = renders["values.yaml"]
    assert plain.of_kind("TriggerAuthentication") == []
    assert all("authenticationRef" not in t for s in plain.of_kind("ScaledObject") for t in s["spec"]["triggers"])
    secured = renders["values-openshift.yaml"]
    (auth,) = secured.of_kind("TriggerAuthentication")
    kafka = secured.values["kafka"]
    assert {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("password", kafka["sasl"]["existingSecret"], kafka["sasl"]["passwordKey"]),
        ("ca", kafka["tls"]["caSecret"], kafka["tls"]["caKey"]),
    }
    for scaled_object in secured.of_kind("ScaledObject"):
        deployment = release_deployment(secured, scaled_object)
        username_source = [e for e in auth["spec"]["env"] if e["parameter"] == "username"][0]["name"]
        assert pod_environment(secured, deployment)[username_source] == kafka["sasl"]["username"]
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
            assert trigger["metadata"]["sasl"] == "scram_sha512"
            assert trigger["metadata"]["tls"] == "enable"


def release_deployment(release: Render, scaled_object: dict) -> dict:
    return release.named("Deployment", scaled_object["spec"]["scaleTargetRef"]["name"])


def test_deployments_leave_replicas_to_keda_when_it_scales_them(chart):
    on = {d["metadata"]["name"]: d for d in render(chart, {}) if d["kind"] == "Deployment"}
    assert on.pop("streamml-console")["spec"]["replicas"] == 1  # people, not lag, load the console
    assert all("replicas" not in d["spec"] for d in on.values())
    off = [d for d in render(chart, {"keda": {"enabled": False}}) if d["kind"] in ("Deployment", "ScaledObject")]
    assert all(d["kind"] == "Deployment" and d["spec"]["replicas"] == 1 for d in off)


# ------------------------------------------------------------- broken values fail


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"services": {"prep": {"autoscaling": {"maxReplicas": 5}}}},
         "services.prep.autoscaling.maxReplicas=5 exceeds the 4 partitions of its input topics "
         "data.landed, drift.detected"),
        ({"services": {"trainer": {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}}},
         "services.trainer.autoscaling.minReplicas=3 is above maxReplicas=2"),
        ({"datasets": []}, "services.ingest: no input topics to scale on; add an entry under datasets"),
        ({"models": []}, "services.monitor: no input topics to scale on; add an entry under models"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.sasl.mechanism is empty"),
        ({"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN"}}},
         "kafka.sasl.username and kafka.sasl.existingSecret"),
        ({"objectStore": {"existingSecret": ""}}, "objectStore.existingSecret is empty"),
        ({"services": {"prep": {"config": {"SPARK_MASTER": "local"}}}}, "does not match pattern '^STREAMML_"),
        ({"services": {"trainer": {"gpus": 1}}}, "additional properties 'gpus' not allowed"),
    ],
)
def test_broken_values_fail_rendering_with_the_fix(chart, values, message):
    with pytest.raises(helm.HelmError) as raised:
        render(chart, values)
    assert message in str(raised.value)


def test_duplicate_dataset_names_fail_rendering(chart):
    dataset = chart.values["datasets"][0]
    with pytest.raises(helm.HelmError, match="datasets: \"transactions\" is declared twice"):
        render(chart, {"datasets": [dataset, dataset]})


# ------------------------------------------------------------- topics


def test_kafka_topics_are_what_streamml_topics_apply_creates(release):
    values = release.values
    extra = [f"ingest.{d['name']}" for d in values["datasets"]]
    extra += [f"{kind}.{m}" for m in values["models"] for kind in ("predictions", "feedback")]
    wanted = resolve(load_topics(REPO / "topics.yaml"), values["kafka"]["topicPrefix"], extra,
                     values["topics"]["replicationFactor"] or None)
    rendered = {
        t["spec"]["topicName"]: (t["spec"]["partitions"], t["spec"]["replicas"], t["spec"]["config"])
        for t in release.of_kind("KafkaTopic")
    }
    assert rendered == {t.name: (t.partitions, t.replication_factor, t.config) for t in wanted}
    for topic in release.of_kind("KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == values["topics"]["strimziCluster"]
        assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_replication_factor_override_applies_to_every_topic(renders):
    topics = renders["values-openshift.yaml"].of_kind("KafkaTopic")
    assert topics and {t["spec"]["replicas"] for t in topics} == {3}


# ------------------------------------------------------------- pods


def test_pods_satisfy_the_restricted_pod_security_standard(release):
    for deployment in release.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        security = container(deployment)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # OpenShift's restricted SCC assigns the UID/GID; fixed ones would be refused.
        text = json.dumps(pod)
        for fixed in ("runAsUser", "runAsGroup", "fsGroup"):
            assert fixed not in text, f"{name} sets {fixed}"
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name


def test_writable_paths_are_empty_dirs(release):
    for deployment in release.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        state_dir = pod_environment(release, deployment)["STREAMML_STATE_DIR"]
        assert mounts.get("/tmp") in empty_dirs
        assert mounts.get(state_dir) in empty_dirs


def test_probes_use_the_health_endpoints_on_the_settings_port(release):
    for deployment in release.of_kind("Deployment"):
        main = container(deployment)
        env = pod_environment(release, deployment)
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        (port,) = main["ports"]
        assert port["name"] == "http" and str(port["containerPort"]) == env["STREAMML_HTTP_PORT"]
        assert env["STREAMML_HTTP_HOST"] == "0.0.0.0"


def test_every_pod_environment_is_accepted_by_the_service_settings(release, monkeypatch):
    for deployment in release.of_kind("Deployment"):
        for name in [n for n in list(os.environ) if n.startswith("STREAMML_")]:
            monkeypatch.delenv(name)
        env = pod_environment(release, deployment)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = load_settings(ServiceSettings)
        assert settings.kafka.bootstrap == release.values["kafka"]["bootstrap"]
        assert settings.s3.access_key_id is not None and settings.s3.secret_access_key is not None
        if release.values["objectStore"]["bucketClaim"]["enabled"]:
            assert settings.s3.endpoint == "http://rgw.storage.svc:80"
            assert settings.s3.bucket == "streamml-claimed"
            assert settings.s3.create_bucket is False
        if release.values["kafka"]["sasl"]["mechanism"]:
            assert settings.kafka.client_config()["sasl.password"] == "secret:password"


def test_service_specific_settings_reach_their_service(renders):
    release = renders["values.yaml"]
    env = {service_of(d): pod_environment(release, d) for d in release.of_kind("Deployment")}
    assert json.loads(env["monitor"]["STREAMML_MONITOR_MODELS"]) == release.values["models"]
    assert env["prep"]["STREAMML_PREP_SPARK_MASTER"] == "local[2]"
    assert env["trainer"]["STREAMML_TRAINER_DEVICE"] == "auto"
    assert "STREAMML_PREP_SPARK_MASTER" not in env["ingest"]
    ingest = release.named("Deployment", "streamml-ingest")
    mounts = {m["mountPath"]: m["name"] for m in container(ingest)["volumeMounts"]}
    specs_volume = mounts[env["ingest"]["STREAMML_INGEST_SPECS_DIR"]]
    (volume,) = [v for v in ingest["spec"]["template"]["spec"]["volumes"] if v["name"] == specs_volume]
    assert volume["configMap"]["name"] == "streamml-datasets"


def service_files(release: Render, deployment: dict, root: Path) -> dict[str, str]:
    """Write the ConfigMaps the pod mounts under ``root`` (at their mount paths) and return the pod's
    environment with paths into those mounts moved under ``root`` too."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {}
    for mount in container(deployment)["volumeMounts"]:
        config_map = volumes[mount["name"]].get("configMap")
        if config_map is None:
            continue
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True)
        data = release.named("ConfigMap", config_map["name"])["data"]
        # items place keys at paths of their own (folders included); without them each key is a file.
        paths = {item["key"]: item["path"] for item in config_map.get("items", [])} or {name: name for name in data}
        for key, path in paths.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(data[key])
        mounts[mount["mountPath"]] = folder
    env = pod_environment(release, deployment)
    for name, value in env.items():
        for path, folder in mounts.items():
            if value == path or value.startswith(path + "/"):
                env[name] = str(folder) + value[len(path):]
    return env


def boot_files(service: str) -> tuple[type, object]:
    """A service's settings class, and what it loads from its files at start (what exits 3 when missing)."""
    if service == "ingest":
        from services.ingest.settings import IngestSettings
        return IngestSettings, lambda s: load_dataset_specs(s.ingest.specs_dir)
    if service == "prep":
        from services.prep.service import PrepSettings
        return PrepSettings, lambda s: load_dataset_specs(s.prep.specs_dir)
    if service == "trainer":
        from services.trainer.service import TrainerSettings
        from services.trainer.spec import load_model_specs
        return TrainerSettings, lambda s: load_model_specs(s.trainer.models_dir)
    if service == "validator":
        from services.validator.policy import load_policies
        from services.validator.service import ValidatorSettings
        return ValidatorSettings, lambda s: load_policies(s.validator.policies_dir)
    if service == "console":  # it reads only the store and Kafka: its settings are what it loads
        from streamml.console.settings import ConsoleSettings
        return ConsoleSettings, lambda s: {"read_only": s.console.token is None, "port": s.http.port}
    from services.monitor.service import MonitorSettings
    return MonitorSettings, lambda s: {name: name for name in s.monitor.models}


def test_every_service_starts_with_its_own_settings_and_files_on_a_fresh_install(release, tmp_path, monkeypatch):
    """What each pod would load at start, from the rendered environment and mounted ConfigMaps: a
    service that would exit 3 and crash-loop (no specs, no policies) fails here."""
    loaded = {}
    for deployment in release.of_kind("Deployment"):
        service = service_of(deployment)
        for name in [n for n in list(os.environ) if n.startswith("STREAMML_")]:
            monkeypatch.delenv(name)
        monkeypatch.chdir(tmp_path)  # a relative default (./models) must not find the repository's folders
        env = service_files(release, deployment, tmp_path / service)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings_class, load_files = boot_files(service)
        settings = load_settings(settings_class)
        loaded[service] = load_files(settings)
        assert loaded[service], f"{service} starts with nothing to work on"
    datasets = set(loaded["prep"])
    assert set(loaded["ingest"]) == datasets == {d["name"] for d in release.values["datasets"]}
    assert {spec.dataset for spec in loaded["trainer"].values()} <= datasets
    assert set(loaded["validator"]) <= set(loaded["trainer"]), "a policy for a model no spec trains"
    assert set(loaded["monitor"]) == set(release.values["models"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"modelSpecs": []}, "modelSpecs is empty: the trainer needs at least one model spec"),
        ({"policies": []}, "policies is empty: the validator needs a promotion policy per model"),
        ({"datasets": [], "keda": {"enabled": False}}, "datasets is empty: ingest and prep need"),
    ],
)
def test_rendering_fails_naming_the_files_a_service_needs(chart, values, message):
    with pytest.raises(helm.HelmError, match=message):
        render(chart, values)


def test_the_files_a_disabled_service_would_need_are_not_required(chart):
    render(chart, {"modelSpecs": [], "services": {"trainer": {"enabled": False}}})
    render(chart, {"policies": [], "services": {"validator": {"enabled": False}}})


def test_two_policies_for_one_model_fail_rendering(chart):
    policy = chart.values["policies"][0]
    with pytest.raises(helm.HelmError, match='policies: "fraud" is declared twice'):
        render(chart, {"policies": [policy, policy]})


@pytest.mark.parametrize("values", [{"kafka": {"groupPrefix": "team_a."}},
                                    {"config": {"STREAMML_KAFKA_GROUP_PREFIX": "team_a."}}])
def test_keda_watches_the_consumer_groups_the_services_really_join(chart, values):
    manifests = render(chart, values)
    groups = {service_of(s): {t["metadata"]["consumerGroup"] for t in s["spec"]["triggers"]}
              for s in manifests if s["kind"] == "ScaledObject"}
    assert groups == {service: {"team_a." + CONSUMERS[service]["group"]} for service in SERVICES}
    settings = {m["metadata"]["name"]: m["data"] for m in manifests if m["kind"] == "ConfigMap"}
    assert {settings[f"streamml-{service}"]["STREAMML_KAFKA_GROUP_PREFIX"] for service in SERVICES} == {"team_a."}


def test_mounted_dataset_specs_are_valid_specs(release):
    specs = release.named("ConfigMap", "streamml-datasets")["data"]
    assert sorted(specs) == sorted(f"{d['name']}.yaml" for d in release.values["datasets"])
    for file_name, text in specs.items():
        spec = parse_dataset_spec(yaml.safe_load(text), file_name)
        assert f"{spec.name}.yaml" == file_name


def test_files_are_mounted_where_their_variable_points(chart):
    validator = {"files": {"default.yaml": {"min_auc": 0.8}}, "filesEnv": "STREAMML_VALIDATOR_POLICIES_DIR"}
    manifests = render(chart, {"services": {"validator": validator}})
    files = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "streamml-validator-files"]
    assert yaml.safe_load(files[0]["data"]["default.yaml"]) == {"min_auc": 0.8}
    settings = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "streamml-validator"]
    assert settings[0]["data"]["STREAMML_VALIDATOR_POLICIES_DIR"] == "/etc/streamml/files"


def test_the_trainer_requests_a_gpu_only_in_the_gpu_value_set(renders):
    for value_set, release in renders.items():
        trainer = release.named("Deployment", "streamml-trainer")
        pod = trainer["spec"]["template"]["spec"]
        limits = container(trainer)["resources"].get("limits", {})
        others = [d for d in release.of_kind("Deployment") if d is not trainer]
        assert all("nvidia.com/gpu" not in json.dumps(d) for d in others)
        if value_set == "values-gpu.yaml":
            assert limits["nvidia.com/gpu"] == 1
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert pod_environment(release, trainer)["STREAMML_TRAINER_DEVICE"] == "cuda"
            assert release.named("ScaledObject", "streamml-trainer")["spec"]["minReplicaCount"] == 0
        else:
            assert "nvidia.com/gpu" not in limits


def test_object_store_comes_from_a_secret_or_a_bucket_claim(renders):
    assert renders["values.yaml"].of_kind("ObjectBucketClaim") == []
    (claim,) = renders["values-openshift.yaml"].of_kind("ObjectBucketClaim")
    assert claim["spec"]["storageClassName"] == "ocs-storagecluster-ceph-rgw"
    trainer = renders["values-openshift.yaml"].named("Deployment", "streamml-trainer")
    refs = {e["valueFrom"][k]["name"] for e in container(trainer)["env"] if "valueFrom" in e
            for k in e["valueFrom"] if e["name"].startswith(("BUCKET_", "STREAMML_S3_"))}
    assert refs == {claim["metadata"]["name"]}


# ------------------------------------------------------------- monitoring


def test_alert_rules_are_the_repository_rules(release):
    (rule,) = release.of_kind("PrometheusRule")
    assert rule["spec"] == yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yaml").read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"StreammlConsumerLagHigh", "StreammlDeadLetters", "StreammlDriftDetected"} <= alerts


def test_service_monitor_scrapes_every_service(release):
    (monitor,) = release.of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [s for s in release.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert sorted(service_of(s) for s in scraped) == sorted([*SERVICES, "console"])
    ports = {p["name"] for s in scraped for p in s["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == ports == {"http"}


def test_every_chart_dashboard_is_a_configmap_when_dashboards_are_on(release):
    dashboards = {key: value for c in release.of_kind("ConfigMap") for key, value in c.get("data", {}).items()
                  if key.endswith(".json")}
    expected = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(dashboards) == (expected if release.values["monitoring"]["dashboards"]["enabled"] else [])
    for text in dashboards.values():
        assert json.loads(text)["panels"]


def test_network_policy_allows_only_the_http_port_in(release):
    policy = release.named("NetworkPolicy", "streamml")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert [p for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [{"port": "http", "protocol": "TCP"}]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    bootstrap_port = int(release.values["kafka"]["bootstrap"].rsplit(":", 1)[1])
    assert {53, bootstrap_port} <= egress_ports


def test_without_the_operators_only_core_objects_remain_and_are_valid(chart):
    values = {
        "keda": {"enabled": False},
        "topics": {"create": False},
        "networkPolicy": {"enabled": False},
        "monitoring": {name: {"enabled": False} for name in ("serviceMonitor", "prometheusRule", "dashboards")},
    }
    manifests = render(chart, values)
    assert {m["kind"] for m in manifests} == {"ServiceAccount", "ConfigMap", "Deployment", "Service"}
    assert invalid_objects(manifests) == []


# ------------------------------------------------------------- console


def test_the_console_runs_read_only_from_its_image_on_the_http_port(renders, monkeypatch):
    from streamml.console.settings import ConsoleSettings

    release = renders["values.yaml"]
    console = release.named("Deployment", "streamml-console")
    assert container(console)["image"] == f"ghcr.io/streamml/streamml-console:{CHART_VERSION}"
    env = pod_environment(release, console)
    assert "STREAMML_CONSOLE_TOKEN" not in env
    for name in [n for n in list(os.environ) if n.startswith("STREAMML_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(ConsoleSettings)
    assert (settings.http.host, settings.http.port, settings.console.token) == ("0.0.0.0", 8080, None)
    service = release.named("Service", "streamml-console")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert release.of_kind("Route") == []
    assert "streamml-console" not in {s["spec"]["scaleTargetRef"]["name"] for s in release.of_kind("ScaledObject")}


def test_the_console_token_comes_from_its_secret_and_a_route_only_when_enabled(chart):
    manifests = render(chart, {"console": {"tokenSecret": "console-token", "route": {"enabled": True,
                                                                                    "host": "ml.apps.example.com"}}})
    assert invalid_objects(manifests) == []
    (console,) = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "streamml-console"]
    (token,) = [e for e in container(console)["env"] if e["name"] == "STREAMML_CONSOLE_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "console-token", "key": "token"}
    (route,) = [m for m in manifests if m["kind"] == "Route"]
    assert route["spec"]["to"] == {"kind": "Service", "name": "streamml-console", "weight": 100}
    assert route["spec"]["host"] == "ml.apps.example.com"
    assert route["spec"]["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}


def test_the_console_can_be_left_out(chart):
    manifests = render(chart, {"console": {"enabled": False}})
    assert not [m for m in manifests if m["metadata"]["name"].startswith("streamml-console")]


# ------------------------------------------------------------- Spark on Kubernetes

SPARK_ON_KUBERNETES = {
    "imagePullSecrets": [{"name": "registry"}],
    "services": {"prep": {"spark": {
        "master": "k8s://https://kubernetes.default.svc",
        "executor": {"instances": 4, "cores": 2, "memory": "6g", "memoryOverhead": "2g",
                     "nodeSelector": {"pool": "spark"}},
        "conf": {"spark.sql.adaptive.enabled": True},
    }}},
}


@pytest.fixture(scope="module")
def on_kubernetes(chart) -> Render:
    return Render("spark-on-kubernetes", chart.merge_values(SPARK_ON_KUBERNETES), render(chart, SPARK_ON_KUBERNETES))


def executor_template(release: Render) -> dict:
    """The executor pod template, parsed from the ConfigMap prep mounts."""
    prep = release.named("Deployment", "streamml-prep")
    pod = prep["spec"]["template"]["spec"]
    (mount,) = [m for m in container(prep)["volumeMounts"] if m["name"] == "spark-templates"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "spark-templates"]
    settings = boot_prep(release, prep)
    path = Path(settings.prep.spark_conf["spark.kubernetes.executor.podTemplateFile"])
    assert path.parent == Path(mount["mountPath"])
    files = release.named("ConfigMap", volume["configMap"]["name"])["data"]
    return yaml.safe_load(files[path.name])


def boot_prep(release: Render, deployment: dict):
    """prep's settings as the pod would load them from its rendered environment."""
    from services.prep.service import PrepSettings

    env = pod_environment(release, deployment)
    saved = {name: os.environ.pop(name) for name in list(os.environ) if name.startswith("STREAMML_")}
    os.environ.update(env)
    try:
        return load_settings(PrepSettings)
    finally:
        for name in env:
            os.environ.pop(name, None)
        os.environ.update(saved)


def test_spark_on_kubernetes_renders_valid_objects(chart, on_kubernetes):
    assert invalid_objects(on_kubernetes.manifests) == []
    template = executor_template(on_kubernetes)
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(template, version, strict=True)
    report = helm.lint(CHART, SPARK_ON_KUBERNETES, strict=True, namespace=NAMESPACE)
    assert [m for m in report["messages"] if m["severity"] >= 2] + report["errors"] == []


def test_prep_boots_as_the_driver_of_executor_pods_from_the_rendered_environment(on_kubernetes):
    from services.prep.spark import spark_conf

    prep = on_kubernetes.named("Deployment", "streamml-prep")
    settings = boot_prep(on_kubernetes, prep).prep
    assert settings.spark_master == "k8s://https://kubernetes.default.svc"
    assert settings.spark_driver_host == POD_FIELDS["status.podIP"]
    assert settings.spark_driver_pod == POD_FIELDS["metadata.name"]
    conf = spark_conf(settings.spark_master, Path("/var/lib/streamml"), None, [], 4, extra=settings.spark_conf,
                      driver_host=settings.spark_driver_host, driver_pod=settings.spark_driver_pod)
    assert conf["spark.kubernetes.namespace"] == NAMESPACE
    assert conf["spark.kubernetes.container.image"] == container(prep)["image"]
    assert conf["spark.kubernetes.container.image.pullSecrets"] == "registry"
    assert conf["spark.kubernetes.driver.pod.name"] == POD_FIELDS["metadata.name"]  # executors die with the pod
    assert conf["spark.driver.host"] == POD_FIELDS["status.podIP"]
    assert (conf["spark.executor.instances"], conf["spark.executor.cores"]) == ("4", "2")
    assert (conf["spark.executor.memory"], conf["spark.executor.memoryOverhead"]) == ("6g", "2g")
    assert conf["spark.sql.shuffle.partitions"] == "16"  # two tasks per executor core
    assert conf["spark.sql.adaptive.enabled"] == "true"


def test_only_prep_may_manage_pods_and_only_in_its_namespace(on_kubernetes):
    prep = on_kubernetes.named("Deployment", "streamml-prep")
    pod = prep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    others = [d for d in on_kubernetes.of_kind("Deployment") if d is not prep]
    assert {d["spec"]["template"]["spec"]["automountServiceAccountToken"] for d in others} == {False}
    assert {d["spec"]["template"]["spec"]["serviceAccountName"] for d in others} == {"streamml"}
    (binding,) = on_kubernetes.of_kind("RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": NAMESPACE}]
    assert on_kubernetes.of_kind("ClusterRole") == on_kubernetes.of_kind("ClusterRoleBinding") == []
    role = on_kubernetes.named(binding["roleRef"]["kind"], binding["roleRef"]["name"])
    granted = {(resource, verb) for rule in role["rules"] if rule["apiGroups"] == [""]
               for resource in rule["resources"] for verb in rule["verbs"]}
    for verb in ("create", "get", "list", "watch", "delete"):
        assert ("pods", verb) in granted
    for resource in ("services", "configmaps"):
        assert {(resource, "create"), (resource, "delete")} <= granted
    assert not [r for r in role["rules"] if r["apiGroups"] != [""] or "secrets" in r["resources"]]


def test_executor_pods_run_prep_image_locked_down_with_the_object_store_keys(on_kubernetes):
    prep = on_kubernetes.named("Deployment", "streamml-prep")
    template = executor_template(on_kubernetes)
    pod = template["spec"]
    conf = boot_prep(on_kubernetes, prep).prep.spark_conf
    (executor,) = pod["containers"]
    assert executor["name"] == conf["spark.kubernetes.executor.podTemplateContainerName"]
    assert executor["image"] == container(prep)["image"]
    # prep's image starts the service; the executor launcher is in it too.
    assert executor["command"][-1] == "streamml-spark-executor"
    assert "/usr/local/bin/streamml-spark-executor" in (REPO / "services/prep/Dockerfile").read_text()
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "streamml"
    assert pod["securityContext"] == prep["spec"]["template"]["spec"]["securityContext"]
    assert executor["securityContext"] == container(prep)["securityContext"]
    assert pod["nodeSelector"] == {"pool": "spark"}
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    # Writable paths: the state folder (S3A buffers) and /tmp are emptyDirs, as in prep.
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in executor["volumeMounts"]}
    assert {mounts["/tmp"], mounts["/var/lib/streamml"]} <= empty_dirs
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in executor["env"]}
    prep_keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container(prep)["env"]
                 if e["name"].startswith("STREAMML_S3_")}
    assert keys["AWS_ACCESS_KEY_ID"] == prep_keys["STREAMML_S3_ACCESS_KEY_ID"]
    assert keys["AWS_SECRET_ACCESS_KEY"] == prep_keys["STREAMML_S3_SECRET_ACCESS_KEY"]
    labels = template["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "spark-executor"


def test_executors_from_a_bucket_claim_get_the_claim_keys(chart):
    values = {**SPARK_ON_KUBERNETES, "objectStore": {"bucketClaim": {"enabled": True}}}
    release = Render("claim", chart.merge_values(values), render(chart, values))
    assert invalid_objects(release.manifests) == []
    (executor,) = executor_template(release)["spec"]["containers"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in executor["env"]} == {"streamml-bucket"}


def test_the_network_policy_opens_the_driver_ports_between_driver_and_executors(on_kubernetes):
    conf = boot_prep(on_kubernetes, on_kubernetes.named("Deployment", "streamml-prep")).prep.spark_conf
    spark_ports = {int(conf["spark.driver.port"]), int(conf["spark.blockManager.port"])}
    policy = on_kubernetes.named("NetworkPolicy", "streamml-prep-spark")
    selected = {tuple(e["values"]) for e in policy["spec"]["podSelector"]["matchExpressions"]}
    assert ("prep", "spark-executor") in selected
    (ingress,) = policy["spec"]["ingress"]
    assert {p["port"] for p in ingress["ports"]} == spark_ports
    assert ingress["from"][0]["podSelector"] == policy["spec"]["podSelector"]
    egress_ports = [{p["port"] for p in rule["ports"]} for rule in policy["spec"]["egress"]]
    assert egress_ports == [spark_ports, {443, 6443}]  # executors, then the Kubernetes API


def test_a_standalone_master_gets_the_driver_address_and_no_kubernetes_rights(chart):
    values = {"services": {"prep": {"spark": {"master": "spark://spark-master.spark:7077"}}}}
    release = Render("standalone", chart.merge_values(values), render(chart, values))
    assert invalid_objects(release.manifests) == []
    prep = release.named("Deployment", "streamml-prep")
    assert prep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert not [m for m in release.manifests if m["kind"] in ("Role", "RoleBinding")]
    settings = boot_prep(release, prep).prep
    assert settings.spark_master == "spark://spark-master.spark:7077"
    assert settings.spark_driver_host == POD_FIELDS["status.podIP"] and settings.spark_driver_pod is None
    assert settings.spark_conf == {"spark.driver.port": "7078", "spark.blockManager.port": "7079"}


def test_the_default_runs_spark_inside_the_prep_pod(renders):
    release = renders["values.yaml"]
    prep = release.named("Deployment", "streamml-prep")
    settings = boot_prep(release, prep).prep
    assert (settings.spark_master, settings.spark_conf, settings.spark_driver_host) == ("local[2]", {}, None)
    assert not [m for m in release.manifests if m["metadata"]["name"].endswith("-spark")]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"services": {"prep": {"config": {"STREAMML_PREP_SPARK_MASTER": "k8s://https://kubernetes.default.svc"}}}},
         "services.prep.config.STREAMML_PREP_SPARK_MASTER: use services.prep.spark.master"),
        ({"config": {"STREAMML_PREP_SPARK_CONF": "{}"}}, "config.STREAMML_PREP_SPARK_CONF: use services.prep.spark"),
        ({"services": {"prep": {"spark": {"master": "yarn"}}}}, "at '/services/prep/spark/master': 'yarn'"),
        ({"services": {"prep": {"spark": {"conf": {"executor.memory": "4g"}}}}}, "executor.memory"),
        ({"services": {"prep": {"spark": {"executor": {"memory": "4 GB"}}}}}, "at '/services/prep/spark/executor/memory'"),
    ],
)
def test_broken_spark_values_fail_rendering(chart, values, message):
    with pytest.raises(helm.HelmError) as raised:
        render(chart, values)
    assert message in str(raised.value)


TRAINER_LOADS_CODE = """
from services.trainer.service import TrainerSettings
from services.trainer.spec import load_model_specs
from services.trainer.user_code import add_code_dir, code_digest, resolve
from streamml.settings import load_settings

settings = load_settings(TrainerSettings)
add_code_dir(settings.trainer.code_dir)
references = [r for spec in load_model_specs(settings.trainer.models_dir).values() for r in spec.code_references]
for reference in references:
    resolve("spec", reference)
print(code_digest(references)["sha256"])
"""


def test_model_code_is_mounted_with_its_folders_where_the_trainer_imports_it(chart, tmp_path):
    code = REPO / "examples" / "code"
    files = {path.relative_to(code).as_posix(): path.read_text() for path in sorted(code.rglob("*.py"))}
    specs = [yaml.safe_load(path.read_text()) for path in sorted((REPO / "examples" / "own_models").glob("*.yaml"))]
    release = Render("modelCode", {}, render(chart, {"modelCode": files, "modelSpecs": specs,
                                    "services": {"validator": {"enabled": False}}}))
    trainer = release.named("Deployment", "streamml-trainer")
    env = service_files(release, trainer, tmp_path)
    assert env["STREAMML_TRAINER_CODE_DIR"] == str(tmp_path / "etc/streamml/code")
    assert sorted(p.relative_to(tmp_path / "etc/streamml/code").as_posix()
                  for p in (tmp_path / "etc/streamml/code").rglob("*.py")) == sorted(files)

    def digest(environment: dict[str, str]) -> str:
        run = subprocess.run([sys.executable, "-c", TRAINER_LOADS_CODE], capture_output=True, text=True, timeout=120,
                             env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **environment})
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout.strip()

    trainer_env = {name: value for name, value in env.items() if name.startswith("STREAMML_TRAINER_")}
    # The mounted code is the code folder, file for file: the card's digest is the same.
    assert digest(trainer_env) == digest({**trainer_env, "STREAMML_TRAINER_CODE_DIR": str(code)})
    # The pods roll when the code changes.
    again = Render("modelCode", {}, render(chart, {"modelCode": {**files, "fraud_models/extra.py": "X = 1\n"}, "modelSpecs": specs,
                                  "services": {"validator": {"enabled": False}}}))
    checksum = "checksum/config"
    annotations = lambda r: r.named("Deployment", "streamml-trainer")["spec"]["template"]["metadata"]["annotations"]  # noqa: E731
    assert annotations(again)[checksum] != annotations(release)[checksum]


def test_without_model_code_the_trainer_mounts_none(release):
    trainer = release.named("Deployment", "streamml-trainer")
    assert "STREAMML_TRAINER_CODE_DIR" not in pod_environment(release, trainer)
    assert all(v["name"] != "model-code" for v in trainer["spec"]["template"]["spec"]["volumes"])
