"""A lightgbm model with a search, through the real services: the trainer runs a few trials and
commits the best, the validator judges and promotes it, an SDK application and the inference
server (Open Inference Protocol) load it, and the next dataset version's model is swapped in
while requests keep coming, none failing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml

from oip_calls import call, output, tensors
from registry_world import DATASET, make_world, put_dataset, raw_records, wait_for
from services.trainer.publish import model_version
from services.trainer.spec import parse_model_spec
from streamml.events import DatasetReady, ModelPromoted
from streamml.registry.decisions import read_decision
from streamml.registry.models import read_card, read_champion
from streamml.sdk.client import ModelClient
from streamml.settings import ServiceSettings
from streamml.stack.ports import free_port

pytestmark = pytest.mark.integration
MODEL = "trees"
ROWS = 4000
SPEC = {
    "name": MODEL, "dataset": DATASET, "task": "binary", "flavour": "lightgbm",
    "lightgbm": {"num_boost_round": 40, "min_data_in_leaf": 10},
    "early_stopping": {"metric": "auc", "patience": 5}, "seed": 3,
    "search": {"trials": 3, "space": {"lightgbm.num_leaves": {"low": 2, "high": 32},
                                      "lightgbm.learning_rate": {"low": 0.03, "high": 0.5, "log": True}}},
}
# No improvement asked of the second version: it is trained on the same rows prepared another way.
POLICY = {"model": MODEL, "min": {"auc": 0.75}, "max_regression": {"auc": 0.05}}


def test_a_searched_lightgbm_model_is_promoted_served_and_swapped_without_a_failed_request(
        stack, unique, bucket, store, services, tmp_path):
    models, policies = tmp_path / "models", tmp_path / "policies"
    topics = {name: 1 for name in ("dataset.ready", "model.trained", "model.promoted", "model.rejected",
                                   "dlq.trainer", "dlq.validator", f"predictions.{MODEL}", f"feedback.{MODEL}")}
    world = make_world(stack, store, bucket, models, f"g{unique}.", topics, {
        "STREAMML_TRAINER_MODELS_DIR": str(models), "STREAMML_TRAINER_DEVICE": "cpu",
        "STREAMML_TRAINER_CPU_THREADS": "1", "STREAMML_VALIDATOR_POLICIES_DIR": str(policies)})
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(SPEC))
    policies.mkdir()
    (policies / f"{MODEL}.yaml").write_text(yaml.safe_dump(POLICY))
    spec = parse_model_spec(SPEC)

    first, _ = put_dataset(store, 1, rows=ROWS)
    world.send(DatasetReady.of(first, "manual"))
    trainer = services.start("trainer", bucket, **world.env)
    validator = services.start("validator", bucket, **world.env)
    api = free_port()
    server = services.start("serve", bucket, **world.env, STREAMML_SERVE_MODEL=MODEL, STREAMML_SERVE_PORT=str(api))

    v1 = model_version(spec, 1)
    promoted = world.events("model.promoted", 1, timeout=180)
    assert [event.version for event in promoted if isinstance(event, ModelPromoted)] == [v1], (
        trainer.log_path.read_text()[-3000:] + validator.log_path.read_text()[-3000:])

    # The search: every trial in the card, and the version is its best trial's model.
    card = read_card(store, MODEL, v1)
    assert card["flavour"] == "lightgbm" and card["artifacts"]["format"] == "lightgbm"
    trials = card["search"]["trials"]
    assert len(trials) == 3 and all(t["params"]["lightgbm.num_leaves"] in range(2, 33) for t in trials)
    best = trials[card["search"]["best_trial"]]
    assert best["state"] == "complete" and best["value"] == max(t["value"] for t in trials if t["state"] == "complete")
    assert card["metrics"] == best["metrics"]
    assert card["params"]["lightgbm"]["num_leaves"] == best["params"]["lightgbm.num_leaves"]
    decision = read_decision(store, MODEL, v1)
    assert decision.promote and decision.candidate.metrics["auc"] > 0.75, decision

    records = raw_records()[:200]
    wait_for(lambda: ready(api), 60, server, "the inference server's first model")
    status, metadata = call(api, "GET", f"/v2/models/{MODEL}")
    assert status == 200 and metadata["platform"] == "lightgbm" and metadata["versions"] == [v1], metadata
    with ModelClient(ServiceSettings(kafka=world.kafka, s3=store.settings), MODEL, reconcile_s=600) as client:
        assert client.wait_ready(30) and client.version == v1
        # The server and the application load the same program the same way.
        status, body = call(api, "POST", f"/v2/models/{MODEL}/infer", {"inputs": tensors(records[:50])})
        assert status == 200 and body["model_version"] == v1, body
        np.testing.assert_allclose(output(body), client.predict(records[:50]).outputs, rtol=1e-6)

        load = Load(client, records)
        load.start()
        second, _ = put_dataset(store, 2, rows=ROWS)
        world.send(DatasetReady.of(second, "manual"))
        v2 = model_version(spec, 2)
        wait_for(lambda: client.version == v2, 180, trainer, "the application's swap to the second version")
        wait_for(lambda: served_version(api) == v2, 30, server, "the server's swap to the second version")
        wait_for(lambda: v2 in load.versions(), 30, what="a request served by the second version")
        load.stop()
        assert not load.failures, load.failures[:3]
        assert load.versions() == {v1, v2} and load.count > 0
        status, body = call(api, "POST", f"/v2/models/{MODEL}/infer", {"inputs": tensors(records[:50])})
        assert status == 200 and body["model_version"] == v2
        np.testing.assert_allclose(output(body), client.predict(records[:50]).outputs, rtol=1e-6)
        wait_for(lambda: client.stats().in_flight == 0 and client.stats().buffered == 0, 30, what="the log to drain")
        stats = client.stats()
        assert stats.failed == 0 and stats.dropped == 0 and stats.delivered >= load.count, stats
    pointer, _ = read_champion(store, MODEL)
    assert pointer.version == v2 and pointer.previous == v1
    logged = world.predictions(MODEL, 1)
    assert logged and {event.model_version for event in logged} <= {v1, v2}


def ready(api: int) -> bool:
    try:
        return call(api, "GET", "/v2/health/ready")[0] == 200
    except OSError:
        return False


def served_version(api: int) -> str | None:
    status, metadata = call(api, "GET", f"/v2/models/{MODEL}")
    return metadata["versions"][0] if status == 200 else None


class Load:
    """One thread predicting batches of ``records`` in a loop, recording which version answered."""

    def __init__(self, client: ModelClient, records: list[dict]):
        self.client, self.records = client, records
        self.answered: list[str] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    @property
    def count(self) -> int:
        return 20 * len(self.answered)

    def versions(self) -> set[str]:
        return set(self.answered)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        offset = 0
        while not self._stop.is_set():
            try:
                self.answered.append(self.client.predict(self.records[offset:offset + 20]).version)
            except BaseException as error:  # noqa: BLE001 - every failure is what the test counts
                self.failures.append(error)
            offset = (offset + 20) % (len(self.records) - 20)
            time.sleep(0.005)
