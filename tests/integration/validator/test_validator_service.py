"""The validator against a real broker, Ceph and torch models trained by the trainer's code."""

from __future__ import annotations

import http.client
import time

import numpy as np
import pytest
import torch

from fault_proxy import FaultProxy
from registry_world import (
    MODEL,
    dataset,
    now,
    put_dataset,
    put_version,
    trained,
    trained_event,
    untrained,
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


def test_two_validators_racing_on_two_candidates_leave_one_champion_and_one_promotion(world, services):
    # A wide champion takes a while to load and evaluate: the window in which both
    # validators hold the same champion pointer and decide against it.
    put_dataset(world.store, 1)
    put_version(world.store, "v1", untrained((1024, 1024)))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seeded", time=now())
    for version in ("w0", "w1", "v2", "v3"):
        put_version(world.store, version, trained("weak" if version.startswith("w") else "strong", 1))
    trained_topic = world.kafka.topic("model.trained")
    first = services.start("validator", world.bucket, **world.env)
    second = services.start("validator", world.bucket, **world.env)
    _wait_one_partition_each([first, second], trained_topic)
    # One rejected candidate each first, so both have loaded torch and start the race equally warm.
    world.send(trained_event("w0", trained("weak", 1)), trained_event("w1", trained("weak", 1)), partitions=[0, 1])
    assert len(world.events("model.rejected", 2)) == 2

    # Same model on two partitions: each validator judges one candidate at the same time.
    world.send(trained_event("v2", trained("strong", 1)), trained_event("v3", trained("strong", 1)),
               partitions=[0, 1])
    rejected = world.events("model.rejected", 3)[2:]
    promoted = world.events("model.promoted", 2, timeout=5)  # a second promotion would show by now
    assert len(promoted) == 1 and len(rejected) == 1, (promoted, rejected)
    winner, loser = promoted[0].version, rejected[0].version
    assert {winner, loser} == {"v2", "v3"}
    champion, _ = read_champion(world.store, MODEL)
    assert (champion.version, champion.previous) == (winner, "v1")
    assert promoted[0].previous_champion == "v1"
    # The loser was judged against the winner, whether it lost the write or came second.
    assert read_decision(world.store, MODEL, loser).champion_version == winner
    assert rejected[0].champion == winner
    assert any("min_improvement" in reason for reason in rejected[0].reasons)
    conflicts = sum(1 for p in (first, second) for line in log_lines(p.log_path)
                    if line["message"] == "champion changed while judging; judging again")
    print(f"compare-and-swap conflicts in this run: {conflicts}")


def _wait_one_partition_each(processes, topic: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = []
        for process in processes:
            assert process.poll() is None, process.log_path.read_text()[-3000:]
            latest.append(_owned(log_lines(process.log_path)))
        if all(len(owned) == 1 for owned in latest) and set.union(*latest) == {f"{topic}[0]", f"{topic}[1]"}:
            return
        time.sleep(0.2)
    raise AssertionError(f"the validators did not split {topic}'s two partitions within {timeout}s")


def _owned(lines: list[dict]) -> set[str]:
    owned: set[str] = set()
    for line in lines:
        if line["message"] == "partitions assigned":
            owned |= set(line["partitions"])
        elif line["message"] == "partitions revoked":
            owned -= set(line["partitions"])
    return owned


def test_an_event_that_meets_a_store_outage_is_judged_once_the_store_is_back_not_dead_lettered(world, services, stack):
    weak_champion(world)
    put_dataset(world.store, 2)
    put_version(world.store, "v2", trained("strong", 2))
    health = free_port()
    with FaultProxy(int(stack.s3_endpoint.rsplit(":", 1)[1])) as store:
        # Its own consumer group: one that other tests' validators left may never assign it a partition.
        validator = services.start("validator", world.bucket, **world.env, STREAMML_HTTP_PORT=str(health),
                                   STREAMML_KAFKA_GROUP_PREFIX=world.env["STREAMML_KAFKA_TOPIC_PREFIX"],
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
