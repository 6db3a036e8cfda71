import threading

import numpy as np
import pytest
import torch

from streamml.manifest import NumericTransform
from streamml.sdk.preprocess import FeatureTransform
from streamml.sdk.swap import ModelSlot, ModelSnapshot, NoModelLoaded

pytestmark = pytest.mark.unit
RECORDS = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]


def version_of(number: int) -> ModelSnapshot:
    """Version n standardises x with mean n and answers n for inputs made by its own transform.

    A call that mixed the transform of one version with the model of another
    answers NaN, so consistency is visible in every output.
    """
    transform = FeatureTransform({"x": NumericTransform(mean=float(number), std=1.0)}, ["x"])
    expected = torch.tensor([[1.0 - number], [2.0 - number], [3.0 - number]])

    def model(numeric, categorical):
        consistent = numeric.shape == expected.shape and torch.equal(numeric, expected)
        return torch.full((numeric.shape[0],), float(number) if consistent else float("nan"))

    return ModelSnapshot(f"v{number}", model, transform)


def test_empty_slot_says_what_to_wait_for():
    slot = ModelSlot("fraud")
    assert not slot.ready
    with pytest.raises(NoModelLoaded, match="no version of model 'fraud' is loaded yet"):
        slot.predict(RECORDS)


def test_swap_returns_the_previous_snapshot_and_serves_the_new_one():
    slot = ModelSlot("fraud", version_of(1))
    previous = slot.swap(version_of(2))
    assert previous.version == "v1"
    result = slot.predict(RECORDS)
    assert result.version == "v2"
    np.testing.assert_array_equal(result.output, [2.0, 2.0, 2.0])
    with pytest.raises(TypeError, match="swap takes a ModelSnapshot"):
        slot.swap("v3")


def test_snapshot_is_immutable():
    snapshot = version_of(1)
    with pytest.raises(AttributeError):
        snapshot.version = "v9"


def test_a_call_in_flight_finishes_on_its_version_while_others_are_served_and_swapped():
    entered = threading.Barrier(3, timeout=5)  # two calls inside the model, plus the test
    release = threading.Event()
    plain = version_of(1)

    def slow_model(numeric, categorical):
        entered.wait()  # both calls are inside predict at once: no lock serialises them
        release.wait(5)
        return plain.model(numeric, categorical)

    slot = ModelSlot("fraud", ModelSnapshot("v1", slow_model, plain.transform))
    results = []
    callers = [threading.Thread(target=lambda: results.append(slot.predict(RECORDS))) for _ in range(2)]
    for caller in callers:
        caller.start()
    entered.wait()
    swapper = threading.Thread(target=slot.swap, args=(version_of(2),))
    swapper.start()
    swapper.join(5)
    assert not swapper.is_alive(), "swap waited for calls in flight"
    assert slot.predict(RECORDS).version == "v2"
    release.set()
    for caller in callers:
        caller.join(5)
    assert [r.version for r in results] == ["v1", "v1"]
    assert all(np.array_equal(r.output, [1.0, 1.0, 1.0]) for r in results)


def test_swapping_while_many_threads_predict_never_fails_or_mixes_versions():
    slot = ModelSlot("fraud", version_of(1))
    versions = [version_of(n) for n in range(2, 202)]
    swaps_done = threading.Event()
    failures, outcomes = [], []
    lock = threading.Lock()

    def predictor():
        mine = []
        try:
            while not swaps_done.is_set() or len(mine) < 20:
                result = slot.predict(RECORDS)
                mine.append((result.version, result.output.tolist()))
        except Exception as error:  # noqa: BLE001 - any failure is what the test looks for
            failures.append(error)
        with lock:
            outcomes.extend(mine)

    def swapper():
        for snapshot in versions:
            slot.swap(snapshot)
            threading.Event().wait(0.0005)
        swaps_done.set()

    threads = [threading.Thread(target=predictor) for _ in range(8)] + [threading.Thread(target=swapper)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    for version, output in outcomes:
        number = float(version[1:])
        assert output == [number, number, number], (version, output)
    seen = {version for version, _ in outcomes}
    assert len(seen) > 1, "predictions did not overlap the swaps"
    assert slot.current().version == "v201"
