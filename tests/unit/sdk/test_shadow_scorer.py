"""Scoring in shadow off the request path: bounded, dropped and counted when full, marked in the log."""

import json
import threading

import numpy as np
import pytest

from services.monitor.records import FeatureLayout, decode_predictions
from streamml.events import decode
from streamml.sdk.shadow import ShadowScorer
from streamml.sdk.swap import ModelSnapshot
from streamml.sdk.wire import prediction_messages

pytestmark = pytest.mark.unit
WHEN = "2026-01-01T00:00:00Z"


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
    assert [item[0] for item in logged][:2] == ["0a", "0b"]
    request_id, record, output, flags, context = logged[0]
    assert (record, output, flags) == ({"amount": 1.0}, 0.25, ())
    assert context[:3] == ("v2", ("amount",), WHEN) and context[3] >= 0

    served = ("r1", {"amount": 1.0}, 0.5, (), ("v1", ("amount",), WHEN))
    (key, headers, value), (_, _, champion) = prediction_messages(b"/s", "fraud", [logged[0], served])
    assert json.loads(value)["shadow"] is True and "shadow" not in json.loads(champion)
    event, _ = decode(headers, key, value)
    assert event.shadow and event.model_version == "v2" and event.latency_ms == context[3]
    # The monitor tells them apart, on its fast path and on its record-by-record one.
    for values in ([champion, value], [champion, value, b"not json"]):
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
