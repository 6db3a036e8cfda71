"""Scoring in shadow off the request path: bounded, dropped and counted when full, marked in the log."""

import json
import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from services.monitor.records import FeatureLayout, decode_predictions
from streamml.prediction_events import prediction_records
from streamml.sdk.shadow import ShadowScorer
from streamml.sdk.swap import ModelSnapshot
from streamml.sdk.wire import encode_predictions, prediction_batches

pytestmark = pytest.mark.unit
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


class Transform:
    features = ("amount",)

    def apply(self, records):
        return self

    def tensors(self):
        return None, None


def snapshot(model, version="v2"):
    return ModelSnapshot(version, model, Transform())


def test_a_full_queue_drops_and_counts_instead_of_waiting_and_the_rest_is_logged_marked():
    release = threading.Event()
    logged = []

    def slow(numeric, categorical):
        release.wait(10)
        return np.array([0.25, 0.75])

    scorer = ShadowScorer("fraud", lambda items: logged.extend(items) or len(items), capacity=2)
    records = [{"amount": 1.0}, {"amount": 2.0}]
    assert not scorer.offer(records, ["a", "b"], WHEN)  # no version in shadow: nothing to do
    scorer.serve(snapshot(slow))
    offered = [scorer.offer(records, [f"{i}a", f"{i}b"], WHEN) for i in range(5)]
    # One call is being scored (the thread took it), two wait; the others are dropped at once.
    assert offered.count(True) in (2, 3) and offered[:2] == [True, True]
    release.set()
    scorer.close()
    stats = scorer.stats()
    assert stats.dropped == 2 * offered.count(False) and stats.scored == 2 * offered.count(True)
    assert [json.loads(body)["request_id"] for body in logged[:2]] == ["0a", "0b"]
    first = json.loads(logged[0])
    assert (first["request_id"], first["features"], first["output"]) == ("0a", {"amount": 1.0}, 0.25)
    assert first["model_version"] == "v2" and first["shadow"] is True and first["latency_ms"] >= 0

    served = encode_predictions("fraud", "v1", ("amount",), WHEN, ["r1"], [{"amount": 1.0}], [0.5], {})
    assert "shadow" not in json.loads(served[0])
    ((key, headers, value),) = [chunk.message for chunk in prediction_batches(b"/s", "fraud", [logged[0], *served])]
    both = prediction_records(headers, key, value)
    assert [(r.model_version, r.shadow) for r in both] == [("v2", True), ("v1", False)]
    assert both[0].latency_ms == first["latency_ms"]
    # The monitor tells them apart, on its fast path and on its record-by-record one.
    for values in ([served[0], logged[0]], [served[0], logged[0], b"not json"]):
        decoded = decode_predictions(values, FeatureLayout(("amount",), ()), "fraud")
        assert decoded.shadow.tolist() == [False, True]


def test_a_failing_shadow_costs_nothing_but_its_own_records():
    def broken(numeric, categorical):
        raise RuntimeError("boom")

    scorer = ShadowScorer("fraud", lambda items: len(items))
    scorer.serve(snapshot(broken))
    assert scorer.offer([{"amount": 1.0}], ["a"], WHEN)
    scorer.close()
    assert scorer.stats().dropped == 1 and scorer.stats().scored == 0
    scorer.serve(None)
    assert scorer.version is None
