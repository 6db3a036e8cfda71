"""A watched model across restarts: persisted episodes, adopted references, other versions (no broker)."""

import numpy as np
import pyarrow as pa
import pytest

from services.monitor.champion import Champion
from services.monitor.config import MonitorOptions
from services.monitor.drift import MonitorThresholds
from services.monitor.records import DecodedPredictions
from services.monitor.state import MonitorState
from services.monitor.synthetic import Traffic, traffic, training_reference
from services.monitor.watch import ModelWatch
from services.monitor.windows import WindowSpec

pytestmark = pytest.mark.unit
WINDOW = 2_000
OPTIONS = MonitorOptions(windows=WindowSpec(size=WINDOW), thresholds=MonitorThresholds(min_count=1_000))


@pytest.fixture(scope="module")
def champion() -> Champion:
    reference, baseline = training_reference(seed=1, rows=50_000)
    return Champion("fraud", "v1", reference, baseline)


class Feed:
    """Synthetic traffic, one window per call, with increasing ids and times."""

    def __init__(self, seed: int, version: str = "v1"):
        self.rng = np.random.default_rng(seed)
        self.version = version
        self.next_id = 0

    def decoded(self, data: Traffic, versions: list[str] | None = None) -> DecodedPredictions:
        n = data.outputs.size
        ids = np.arange(self.next_id, self.next_id + n)
        self.next_id += n
        return DecodedPredictions(
            request_ids=pa.array(ids).cast(pa.string()),
            versions=pa.array(versions or [self.version] * n),
            times=1.7e9 + ids.astype(float),
            features={name: pa.array(values) for name, values in data.features.items()},
            outputs=data.outputs,
        )

    def windows(self, watch: ModelWatch, count: int, shift: float = 0.0) -> list:
        events = []
        for _ in range(count):
            events += watch.add_predictions(self.decoded(traffic(self.rng, WINDOW, shift=shift)))[0]
        return events


def kinds(events) -> list[str]:
    return sorted(event.kind for event in events)


def round_trip(state: MonitorState) -> MonitorState:
    return MonitorState.model_validate_json(state.model_dump_json())


def test_a_restart_continues_the_drift_episode_instead_of_announcing_it_again(champion):
    feed = Feed(seed=2)
    first = ModelWatch(champion, OPTIONS)
    assert feed.windows(first, 3) == []
    raised = feed.windows(first, 2, shift=1.0)
    assert "covariate" in kinds(raised)
    assert {f.feature for e in raised if e.kind == "covariate" for f in e.features} == {"score_a"}
    saved = round_trip(first.state())

    restarted = ModelWatch(champion, OPTIONS, saved)
    fresh = ModelWatch(champion, OPTIONS)  # what a restart without the saved state would do
    drifting = Feed(seed=3)
    assert feed.windows(restarted, 4, shift=1.0) == []
    assert "covariate" in kinds(drifting.windows(fresh, 4, shift=1.0))
    assert [e.kind for e in restarted.events] == [e.kind for e in raised]  # the events shown by `drift report`


def test_a_new_champion_version_does_not_inherit_the_old_ones_episodes(champion):
    feed = Feed(seed=4)
    first = ModelWatch(champion, OPTIONS)
    feed.windows(first, 3, shift=1.0)
    saved = round_trip(first.state())
    promoted = Champion("fraud", "v2", champion.reference, champion.baseline)
    watch = ModelWatch(promoted, OPTIONS, saved)
    assert watch.events == [] and len(watch.monitor.window_reports) == 0
    feed.version = "v2"
    assert "covariate" in kinds(feed.windows(watch, 2, shift=1.0))


def test_the_prediction_reference_adopted_from_live_traffic_survives_a_restart(champion):
    without = Champion("fraud", "v1", champion.reference.model_copy(update={"prediction": None}), champion.baseline)
    feed = Feed(seed=5)
    first = ModelWatch(without, OPTIONS)
    feed.windows(first, 1)
    adopted = first.monitor.reference.prediction
    assert adopted is not None
    restarted = ModelWatch(without, OPTIONS, round_trip(first.state()))
    assert restarted.monitor.reference.prediction == adopted
    # Drifted predictions after the restart are judged against the adopted reference, not adopted themselves.
    feed.windows(restarted, 2, shift=1.5)
    assert restarted.monitor.window_reports[-1].prediction_drift
    assert restarted.monitor.decider.active("prediction")


def test_predictions_of_another_version_are_counted_and_left_out(champion):
    feed = Feed(seed=6)
    watch = ModelWatch(champion, OPTIONS)
    data = traffic(feed.rng, 2 * WINDOW)
    events, others = watch.add_predictions(feed.decoded(data, ["v1", "v0"] * WINDOW))
    assert others == WINDOW
    (report,) = watch.monitor.window_reports
    assert report.count == WINDOW and report.judged


def test_changed_says_whether_there_is_anything_new_to_save(champion):
    feed = Feed(seed=7)
    watch = ModelWatch(champion, OPTIONS)
    assert watch.changed()  # a new watch is saved at once, so reports show its version
    watch.state()
    assert not watch.changed()
    watch.add_predictions(feed.decoded(traffic(feed.rng, WINDOW // 2)))
    assert not watch.changed()  # the window is still open
    watch.add_predictions(feed.decoded(traffic(feed.rng, WINDOW // 2)))
    assert watch.changed()
    state = watch.state()
    assert not watch.changed() and [r.count for r in state.window_reports] == [WINDOW]


def test_a_batch_spanning_several_windows_adopts_the_prediction_reference_from_its_first_window(champion):
    without = Champion("fraud", "v1", champion.reference.model_copy(update={"prediction": None}), champion.baseline)
    feed = Feed(seed=8)
    watch = ModelWatch(without, OPTIONS)
    # One batch: three full windows and half of a fourth.
    watch.add_predictions(feed.decoded(traffic(feed.rng, 3 * WINDOW + WINDOW // 2)))
    reports = list(watch.monitor.window_reports)
    assert [r.prediction is None for r in reports] == [True, False, False]
    assert all(r.judged for r in reports) and not any(r.prediction_drift for r in reports[1:])
    feed.windows(watch, 1)
    later = watch.monitor.window_reports[-1]
    assert later.prediction is not None and not later.prediction.drifted


def test_answers_of_a_version_in_shadow_are_not_monitored_even_once_it_is_champion(champion):
    """A version in shadow answers every request beside the champion; once promoted, its shadow answers
    still in the topic must not count as served ones."""
    watch = ModelWatch(Champion("fraud", "v2", champion.reference, champion.baseline), OPTIONS)
    feed = Feed(seed=6, version="v2")
    decoded = feed.decoded(traffic(feed.rng, 10))
    marked = DecodedPredictions(decoded.request_ids, decoded.versions, decoded.times, decoded.features,
                                decoded.outputs, shadow=np.arange(10) < 4)
    _, others = watch.add_predictions(marked)
    assert others == 4
