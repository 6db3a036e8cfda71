"""ModelClient against a real broker and Ceph: hot swap under load, prediction log, feedback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from registry_world import (
    MODEL,
    direct_predictions,
    now,
    put_dataset,
    put_spec,
    put_version,
    raw_records,
    trained,
)
from services.validator.promote import set_champion
from streamml.events import FeedbackRecord, ModelPromoted
from streamml.registry.models import read_version_manifest
from streamml.sdk.client import ModelClient
from streamml.sdk.input_checks import InputRejected
from streamml.settings import ServiceSettings

pytestmark = pytest.mark.integration
BATCH = 8


def settings_of(world) -> ServiceSettings:
    return ServiceSettings(kafka=world.kafka, s3=world.store.settings)


def promote(world, version: str, previous: str) -> None:
    """What the validator does: move the pointer, then announce."""
    set_champion(world.store, MODEL, version, expected=previous, actor="test", reason="test", time=now())
    world.send(ModelPromoted(model=MODEL, version=version, artifact_prefix=f"models/{MODEL}/{version}/",
                             metrics={}, previous_champion=previous, actor="test", reason="test"))


class Load:
    """Threads predicting batches of the test rows in a loop, recording what answered."""

    def __init__(self, client: ModelClient, records: list[dict], threads: int = 4):
        self.client, self.records = client, records
        self.answers: list[list[tuple[str, int, np.ndarray]]] = [[] for _ in range(threads)]
        self.failures: list[BaseException] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        start = index * 97
        while not self.stop.is_set():
            offset = start % (len(self.records) - BATCH)
            try:
                result = self.client.predict(self.records[offset:offset + BATCH])
            except BaseException as error:  # noqa: BLE001 - every failure is what the test counts
                self.failures.append(error)
                continue
            self.answers[index].append((result.version, offset, result.outputs))
            start += BATCH
            time.sleep(0.002)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def all_saw(self, version: str) -> bool:
        return all(answers and answers[-1][0] == version for answers in self.answers)


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_client_under_load_switches_to_the_promoted_version_with_no_failed_request(world):
    put_dataset(world.store, 1)
    put_dataset(world.store, 2)  # v2 is trained on another transform: each version brings its own
    put_version(world.store, "v1", trained("weak", 1))
    put_version(world.store, "v2", trained("strong", 2))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seed", time=now())
    expected = {"v1": direct_predictions(trained("weak", 1)), "v2": direct_predictions(trained("strong", 2))}
    records = raw_records()

    # reconcile_s is long so that only the event can cause the swap.
    client = ModelClient(settings_of(world), MODEL, reconcile_s=600)
    assert client.version == "v1"
    with Load(client, records) as load:
        time.sleep(1.5)
        promote(world, "v2", "v1")
        wait_until(lambda: load.all_saw("v2"))
        time.sleep(0.5)
    request_id = client.predict(records[:1]).request_ids[0]
    assert client.feedback(request_id, 1)
    client.close()
    stats = client.stats()

    assert load.failures == []
    answered = 0
    for answers in load.answers:
        versions = [version for version, _, _ in answers]
        # Each thread moves from v1 to v2 once and never back.
        assert versions == sorted(versions) and versions[0] == "v1" and versions[-1] == "v2"
        for version, offset, outputs in answers:
            np.testing.assert_allclose(outputs, expected[version][offset:offset + BATCH], rtol=1e-5, atol=1e-6)
        answered += len(answers) * BATCH
    print(f"{answered} rows predicted by 4 threads across the swap")

    # Delivered means acknowledged by the broker: every prediction, none dropped or failed.
    assert (stats.delivered, stats.dropped, stats.failed) == (answered + 1, 0, 0)
    logged = world.predictions(MODEL, answered + 1, timeout=30)
    assert len(logged) == answered + 1
    assert len({e.request_id for e in logged}) == len(logged)
    assert {e.model_version for e in logged} == {"v1", "v2"}
    first = next(e for e in logged if e.request_id == request_id)
    assert first.features == records[0] and first.model_version == "v2"
    feedback = world.events(f"feedback.{MODEL}", 1)
    assert len(feedback) == 1 and isinstance(feedback[0], FeedbackRecord)
    assert (feedback[0].request_id, feedback[0].label) == (request_id, 1)


def test_a_version_that_cannot_be_loaded_leaves_the_old_one_serving(world, caplog):
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("weak", 1))
    put_version(world.store, "v2", trained("strong", 1))
    world.store.put(read_version_manifest(world.store, MODEL, "v2").key("model.pt2"), b"not a torch archive")
    put_version(world.store, "v3", trained("strong", 1))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seed", time=now())

    def failures() -> float:
        return REGISTRY.get_sample_value("streamml_sdk_load_failures_total", {"model": MODEL}) or 0

    def error_lines() -> list:
        return [r for r in caplog.records if r.name == "streamml.sdk.client" and r.levelname == "ERROR"]

    client = ModelClient(settings_of(world), MODEL, reconcile_s=600, log_predictions=False)
    before = failures()
    with Load(client, raw_records()) as load:
        promote(world, "v2", "v1")
        # The failure is counted a moment before it is logged.
        wait_until(lambda: failures() > before and error_lines())
        assert client.version == "v1"
        # One line that names the damaged object, without a stack trace.
        [line] = error_lines()
        assert f"models/{MODEL}/v2/attempts/" in line.getMessage()
        assert "model.pt2 does not match the manifest of fraud v2" in line.getMessage()
        assert line.exc_info is None
        promote(world, "v3", "v2")
        wait_until(lambda: load.all_saw("v3"))
    client.close()
    assert load.failures == []
    assert {version for answers in load.answers for version, _, _ in answers} == {"v1", "v3"}


def test_input_checks_reject_flag_or_let_pass_what_the_dataset_spec_forbids(world, caplog):
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("strong", 1))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seed", time=now())
    records = raw_records()[:4]
    bad = [records[0], {**records[1], "num_0": -11.5}, records[2], {**records[3], "num_2": "high"}]
    expected = direct_predictions(trained("strong", 1))[:4]

    # Without a stored spec the client serves, unchecked, and says why.
    with ModelClient(settings_of(world), MODEL, log_predictions=False) as unchecked:
        assert unchecked.predict(bad[:3]).flags == {}
    assert any("no spec of dataset 'transactions'" in r.getMessage() for r in caplog.records)

    put_spec(world.store)
    with ModelClient(settings_of(world), MODEL, log_predictions=False, input_checks="reject") as client:
        np.testing.assert_allclose(client.predict(records).outputs, expected, rtol=1e-5, atol=1e-6)
        with pytest.raises(InputRejected, match=r"record 1 .* num_0: below the minimum -10 \(got -11.5\); 1 more"):
            client.predict(bad)
    with ModelClient(settings_of(world), MODEL, log_predictions=False) as client:
        result = client.predict(bad[:3])
        assert [(index, [(v.field, v.rule) for v in found]) for index, found in result.flags.items()] == [
            (1, [("num_0", "min")])]
        assert result.outputs.shape == (3,)
    with ModelClient(settings_of(world), MODEL, log_predictions=False, input_checks="off") as client:
        assert client.predict(bad[:3]).flags == {}
    with pytest.raises(ValueError, match="input_checks='strict'; use one of reject, flag, off"):
        ModelClient(settings_of(world), MODEL, input_checks="strict")
