"""The validator against a real broker, Ceph and torch models trained by the trainer's code."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fault_proxy import FaultProxy
from registry_world import (
    MODEL,
    POLICY,
    dataset,
    messages,
    now,
    put_dataset,
    put_version,
    trained,
    trained_event,
    untrained,
    wait_for,
    wait_one_partition_each,
)
from service_logs import log_lines
from services.validator.metrics import auc
from services.validator.promote import set_champion
from streamml.events import ModelPromoted, ModelRejected, ModelTrained
from streamml.kafka import dead_letter_reason
from streamml.portable import load_program
from streamml.registry.decisions import read_decision
from streamml.registry.models import read_champion
from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration
CRASH_AT = Path(__file__).with_name("crash_at.py")


def weak_champion(world) -> None:
    """v1: a model that learnt nothing, trained on dataset v1, champion before the test starts."""
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("weak", 1))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seeded", time=now())


def test_a_better_model_is_promoted_and_a_worse_one_rejected_with_reasons(world, services):
    weak_champion(world)
    put_dataset(world.store, 2)  # same rows, another transform: the champion is judged through recode
    put_version(world.store, "v2", trained("strong", 2))
    put_version(world.store, "v3", trained("weak", 2))
    validator = services.start("validator", world.bucket, **world.env)

    world.send(trained_event("v2", trained("strong", 2)))
    promoted = world.events("model.promoted", 1)
    assert len(promoted) == 1, validator.log_path.read_text()[-3000:]
    event = promoted[0]
    assert isinstance(event, ModelPromoted)
    assert (event.version, event.previous_champion) == ("v2", "v1")
    assert event.actor.startswith("validator@") and "auc" in event.reason
    assert event.metrics["auc"] > 0.9
    champion, _ = read_champion(world.store, MODEL)
    assert (champion.version, champion.previous) == ("v2", "v1")

    decision = read_decision(world.store, MODEL, "v2")
    assert decision.promote and decision.champion_version == "v1"
    assert decision.candidate.latency is not None and decision.candidate.latency.batch_size == 64
    assert set(decision.candidate.slices["cat_0"]) >= {"cat_0_v1", "cat_0_v11"}
    # The champion was judged on dataset v2's rows re-expressed in its own transform:
    # the same AUC as on dataset v1's identical rows.
    manifest, splits = dataset(1)
    test = splits["test"]
    numeric = torch.tensor(np.column_stack([test.column(f"num_{i}").to_numpy() for i in range(6)]), dtype=torch.float32)
    codes = torch.tensor(np.column_stack([test.column(f"cat_{i}").to_numpy() for i in range(2)]))
    with torch.inference_mode():
        direct = load_program(trained("weak", 1).portable.data, "torch.export")(numeric, codes).numpy()
    assert decision.champion.metrics["auc"] == pytest.approx(auc(direct, test.column("label").to_numpy()), abs=1e-6)

    world.send(trained_event("v3", trained("weak", 2)))
    rejected = world.events("model.rejected", 1)
    assert len(rejected) == 1 and isinstance(rejected[0], ModelRejected)
    assert rejected[0].version == "v3" and rejected[0].champion == "v2"
    reasons = " | ".join(rejected[0].reasons)
    assert "< floor 0.8" in reasons and "worse than champion" in reasons, reasons
    assert read_champion(world.store, MODEL)[0].version == "v2"

    # A redelivered event is not judged again: the recorded decision is announced again.
    before = world.store.get_bytes(f"models/{MODEL}/v2/decision.json")
    world.send(trained_event("v2", trained("strong", 2)))
    promoted = world.events("model.promoted", 2)
    assert [e.version for e in promoted] == ["v2", "v2"]
    assert world.store.get_bytes(f"models/{MODEL}/v2/decision.json") == before


@pytest.mark.parametrize("crash", ["before:2", "after:2"], ids=["between-the-two-writes", "after-both-writes"])
def test_a_validator_killed_at_a_registry_write_leaves_decision_and_pointer_agreeing(world, services, crash):
    """v2 beats the champion v1: a promotion, two registry writes (a decision and the pointer). The
    validator dies at one of them; the one that replaces it runs a policy v2 fails, so a version
    judged again would be rejected. Whatever was written, the decision and the pointer must agree,
    and the champion's move is announced once."""
    weak_champion(world)
    put_dataset(world.store, 2)
    put_version(world.store, "v2", trained("strong", 2))
    env = {**os.environ, **services.stack.env(world.bucket), **world.env, "STREAMML_HTTP_PORT": str(free_port())}
    with open(services.log_dir / "validator-crashing.log", "wb") as log:
        dying = subprocess.Popen([sys.executable, str(CRASH_AT), crash], env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    services.running.append(dying)
    world.send(trained_event("v2", trained("strong", 2)))
    assert dying.wait(timeout=180) == 137, (services.log_dir / "validator-crashing.log").read_text()[-3000:]

    (world.folder / f"{MODEL}.yaml").write_text(POLICY.replace("min: {auc: 0.80}", "min: {auc: 0.9999}"))
    validator = services.start("validator", world.bucket, **world.env)
    wait_for(lambda: messages(validator.log_path, "promoted") or messages(validator.log_path, "rejected"), 120,
             validator, "the replay's announcement")

    decision = read_decision(world.store, MODEL, "v2")
    champion, _ = read_champion(world.store, MODEL)
    assert decision is not None and decision.promote, "the first validator recorded its promotion before dying"
    assert champion.version == "v2" and champion.previous == "v1"
    promoted = world.read("model.promoted", 2, timeout=10)
    assert len({dict(m.headers())["ce_id"] for m in promoted}) == 1
    assert world.read("model.rejected", 1, timeout=5) == []


def test_a_version_whose_file_differs_from_its_manifest_is_refused_not_judged(world, services):
    weak_champion(world)
    put_dataset(world.store, 2)
    put_version(world.store, "v2", trained("strong", 2))
    # Another model's program where v2's manifest names its own: what a second trainer's late
    # upload, or a damaged copy, would leave. It loads and predicts; only its hash tells.
    marker = json.loads(world.store.get_bytes(f"models/{MODEL}/v2/manifest.json"))
    folder = marker.get("prefix") or f"models/{MODEL}/v2/"
    world.store.put(folder + "model.pt2", trained("weak", 2).portable.data)
    validator = services.start("validator", world.bucket, **world.env)

    world.send(trained_event("v2", trained("strong", 2)))
    dead = world.read("dlq.validator", 1)
    assert len(dead) == 1, validator.log_path.read_text()[-3000:]
    reason = dead_letter_reason(dead[0])
    assert f"{folder}model.pt2 does not match the manifest of {MODEL} v2" in reason, reason
    assert read_decision(world.store, MODEL, "v2") is None
    assert read_champion(world.store, MODEL)[0].version == "v1"


def test_a_model_without_a_policy_is_dead_lettered(world, services):
    services.start("validator", world.bucket, **world.env)
    world.send(ModelTrained(model="churn", version="v1", dataset="customers", dataset_version=1,
                            artifact_prefix="models/churn/v1/", metrics={}, device="cpu", training_seconds=1))
    dead = world.read("dlq.validator", 1)
    assert len(dead) == 1
    reason = dead_letter_reason(dead[0])
    assert "no promotion policy for model 'churn'" in reason and "fraud" in reason


def test_a_bad_policy_stops_the_validator_naming_file_and_field(world, services):
    (world.folder / "broken.yaml").write_text("model: churn\nmin: {log_loss: 0.3}\n")
    validator = services.start("validator", world.bucket, **world.env)
    assert validator.wait(timeout=60) == 3
    output = validator.log_path.read_text()
    assert "broken.yaml: min.log_loss" in output and "put it under max" in output


def test_two_validators_judging_one_version_at_once_record_one_decision_and_one_promotion(world, services):
    """A rebalance can hand a version's event to a second validator while the first still judges it.
    Here both get it at once (the event on both partitions); a wide champion makes judging slow, so
    both decide before either records. One decision stands, the pointer moves once, and every
    announcement of that move carries the same id."""
    put_dataset(world.store, 1)
    put_version(world.store, "v1", untrained((1024, 1024)))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seeded", time=now())
    for version in ("w0", "w1", "v2"):
        put_version(world.store, version, trained("weak" if version.startswith("w") else "strong", 1))
    trained_topic = world.kafka.topic("model.trained")
    first = services.start("validator", world.bucket, **world.env)
    second = services.start("validator", world.bucket, **world.env)
    wait_one_partition_each([first, second], trained_topic)
    # One rejected candidate each first, so both have loaded torch and start equally warm.
    world.send(trained_event("w0", trained("weak", 1)), trained_event("w1", trained("weak", 1)), partitions=[0, 1])
    assert len(world.events("model.rejected", 2)) == 2

    world.send(trained_event("v2", trained("strong", 1)), trained_event("v2", trained("strong", 1)),
               partitions=[0, 1])
    deadline = time.monotonic() + 120
    while sum(1 for p in (first, second) for line in log_lines(p.log_path)
              if line.get("version") == "v2" and line["message"] in ("promoted", "rejected")) < 2:
        assert time.monotonic() < deadline, first.log_path.read_text()[-2000:] + second.log_path.read_text()[-2000:]
        time.sleep(0.3)
    promoted = world.read("model.promoted", 2, timeout=10)
    assert len({dict(m.headers())["ce_id"] for m in promoted}) == 1, promoted
    assert len(world.events("model.rejected", 3, timeout=10)) == 2  # only w0 and w1
    decision = read_decision(world.store, MODEL, "v2")
    champion, _ = read_champion(world.store, MODEL)
    assert decision.promote and decision.champion_version == "v1"
    assert (champion.version, champion.previous) == ("v2", "v1")
    followed = [line for p in (first, second) for line in log_lines(p.log_path)
                if line["message"] == "another validator decided this version first; following its decision"]
    print(f"validators that followed the other's decision in this run: {len(followed)}")




def test_an_event_that_meets_a_store_outage_is_judged_once_the_store_is_back_not_dead_lettered(world, services, stack):
    weak_champion(world)
    put_dataset(world.store, 2)
    put_version(world.store, "v2", trained("strong", 2))
    health = free_port()
    with FaultProxy(int(stack.s3_endpoint.rsplit(":", 1)[1])) as store:
        validator = services.start("validator", world.bucket, **world.env, STREAMML_HTTP_PORT=str(health),
                                   STREAMML_S3_ENDPOINT=f"http://127.0.0.1:{store.port}", STREAMML_S3_MAX_ATTEMPTS="1")
        wait_until(lambda: readiness(health) == 200, validator)
        store.fail("http503")
        world.send(trained_event("v2", trained("strong", 2)))
        wait_until(lambda: "the object store is unavailable" in validator.log_path.read_text(), validator)
        wait_until(lambda: readiness(health) == 503, validator)
        store.heal()
        promoted = world.events("model.promoted", 1)
        assert [event.version for event in promoted] == ["v2"], validator.log_path.read_text()[-3000:]
        wait_until(lambda: readiness(health) == 200, validator)
        services.stop_all()  # before the proxy goes, which the validator would see as another outage
    assert world.read("dlq.validator", 1, timeout=5) == []
    outage = [line for line in log_lines(validator.log_path) if line.get("dependency") == "object_store"]
    assert [line["message"] for line in outage] == ["the object store is unavailable; retrying with backoff until "
                                                    "it answers", "the object store is available again"]


def readiness(port: int) -> int | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/readyz")
        return connection.getresponse().status
    except OSError:
        return None


def wait_until(condition, process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, process.log_path.read_text()[-3000:]
        time.sleep(0.2)
