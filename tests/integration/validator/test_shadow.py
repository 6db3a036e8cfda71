"""The shadow phase on a real broker and Ceph: validators judge a candidate on the live traffic of a
``ModelClient``, which scores it beside the champion and logs both answers, and on the labels fed back.

The champion v1 learnt nothing; the candidate v2 learnt the signal, so it passes the offline rules.
Live, the application labels its requests with the test split's labels (v2 is genuinely better) or
with their opposite (v2, better offline, is worse on this traffic)."""

from __future__ import annotations

import threading

import pytest

from registry_world import (
    MODEL,
    POLICY,
    dataset,
    now,
    put_dataset,
    put_version,
    raw_records,
    trained,
    trained_event,
    wait_for,
    wait_one_partition_each,
)
from services.validator.promote import set_champion
from streamml.events import ModelRejected
from streamml.prediction_events import prediction_records
from streamml.registry.decisions import read_decision
from streamml.registry.models import read_champion
from streamml.registry.shadow import read_shadow
from streamml.sdk.client import ModelClient
from streamml.settings import ServiceSettings

pytestmark = pytest.mark.integration
BATCH = 8
MIN_PREDICTIONS = 300
SHADOW = f"""
shadow:
  min_predictions: {MIN_PREDICTIONS}
  max_duration_s: 300
  rules:
    - {{metric: auc, max_regression: 0.02}}
    - {{max_disagreement: 0.95}}
    - {{max_latency_p95_ms: 2000}}
"""


class Traffic:
    """An application: predicts batches of the test rows in a loop and sends each request's label."""

    def __init__(self, client: ModelClient, invert: bool) -> None:
        self.client, self.invert = client, invert
        self.records = raw_records()
        self.labels = dataset(1)[1]["test"].column("label").to_pylist()
        self.failures: list[BaseException] = []
        self.answered = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        offset = 0
        while not self.stop.is_set():
            offset = (offset + BATCH) % (len(self.records) - BATCH)
            try:
                result = self.client.predict(self.records[offset:offset + BATCH])
            except BaseException as error:  # noqa: BLE001 - every failure is what the test counts
                self.failures.append(error)
                continue
            self.answered += BATCH
            for request_id, label in zip(result.request_ids, self.labels[offset:offset + BATCH], strict=True):
                self.client.feedback(request_id, 1 - label if self.invert else label)
            self.stop.wait(0.01)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def start_world(world) -> ModelClient:
    """v1 champion, v2 to judge, a policy with a shadow phase, and a client of the model."""
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("weak", 1))
    put_version(world.store, "v2", trained("strong", 1))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seeded", time=now())
    (world.folder / f"{MODEL}.yaml").write_text(POLICY + SHADOW)
    # One short round of the offline latency measurement: the live phase is what is tested here.
    world.env.update(STREAMML_VALIDATOR_LATENCY_ROUNDS="1", STREAMML_VALIDATOR_LATENCY_CALLS="10")
    client = ModelClient(ServiceSettings(kafka=world.kafka, s3=world.store.settings), MODEL, reconcile_s=600)
    assert client.version == "v1" and client.shadow_version is None
    return client


def test_a_genuinely_better_candidate_is_promoted_after_its_shadow_once_by_two_validators(world, services):
    client = start_world(world)
    first = services.start("validator", world.bucket, **world.env)
    second = services.start("validator", world.bucket, **world.env)
    wait_one_partition_each([first, second], world.kafka.topic("model.trained"))
    # Both validators get the event at once: both judge it offline, both follow one shadow and one decision.
    world.send(trained_event("v2", trained("strong", 1)), trained_event("v2", trained("strong", 1)),
               partitions=[0, 1])
    wait_for(lambda: client.shadow_version == "v2", 120, first, "the client scoring v2 in shadow")
    assert client.version == "v1"
    with Traffic(client, invert=False) as traffic:
        wait_for(lambda: client.version == "v2", 120, first, "the promotion after the shadow")
    client.close()

    assert traffic.failures == [] and traffic.answered > 0
    decision = read_decision(world.store, MODEL, "v2")
    assert decision.promote and decision.champion_version == "v1", decision.reasons
    assert decision.shadow.rows >= MIN_PREDICTIONS
    assert decision.shadow.candidate["auc"] > decision.shadow.champion["auc"] + 0.2
    assert any(note.startswith("live auc") for note in decision.notes), decision.notes
    assert any(note.startswith("live latency p95") for note in decision.notes), decision.notes
    assert read_champion(world.store, MODEL)[0].version == "v2"
    assert read_shadow(world.store, MODEL) is None
    assert client.shadow_version is None
    promoted = world.read("model.promoted", 2, timeout=10)
    assert len({dict(m.headers())["ce_id"] for m in promoted}) == 1
    # Everything the client logged (it was closed, so flushed): batches of predictions, read for a few seconds.
    logged = [record for m in world.read(f"predictions.{MODEL}", 10**9, timeout=5)
              for record in prediction_records(m.headers(), m.key(), m.value())]
    marked = [e for e in logged if e.shadow]
    assert marked and {e.model_version for e in marked} == {"v2"} and all(e.latency_ms is not None for e in marked)
    assert all(e.model_version == "v1" for e in logged if not e.shadow and e.time < decision.shadow.started)
    stats = client.shadow_stats()
    print(f"{traffic.answered} requests rows answered; shadow scored {stats.scored}, dropped {stats.dropped}")


def test_a_candidate_better_offline_but_worse_live_is_rejected_and_a_restart_resumes_its_shadow(world, services):
    client = start_world(world)
    validator = services.start("validator", world.bucket, **world.env)
    world.send(trained_event("v2", trained("strong", 1)))
    wait_for(lambda: client.shadow_version == "v2", 120, validator, "the client scoring v2 in shadow")
    started = read_shadow(world.store, MODEL)
    with Traffic(client, invert=True) as traffic:
        wait_for(lambda: traffic.answered >= MIN_PREDICTIONS // 3, 60, validator, "some live evidence")
        validator.kill()  # during the shadow: nothing is decided yet
        validator.wait()
        assert read_decision(world.store, MODEL, "v2") is None
        assert read_shadow(world.store, MODEL) == started
        resumed = services.start("validator", world.bucket, **world.env)
        rejected = world.events("model.rejected", 1, timeout=120)
    wait_for(lambda: client.shadow_version is None, 30, what="the client to stop scoring v2")
    client.close()

    assert traffic.failures == []
    assert len(rejected) == 1 and isinstance(rejected[0], ModelRejected), resumed.log_path.read_text()[-3000:]
    reasons = " | ".join(rejected[0].reasons)
    assert "live auc" in reasons and "worse (max_regression 0.02)" in reasons, reasons
    decision = read_decision(world.store, MODEL, "v2")
    assert not decision.promote and decision.shadow.started == started.started  # resumed, not started again
    assert decision.shadow.rows >= MIN_PREDICTIONS
    assert decision.shadow.candidate["auc"] < decision.shadow.champion["auc"]
    assert any(note.startswith("live disagreement") for note in decision.notes), decision.notes
    assert read_champion(world.store, MODEL)[0].version == "v1"
    assert read_shadow(world.store, MODEL) is None
