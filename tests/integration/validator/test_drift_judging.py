"""A candidate built for a drift is judged on the post-drift test rows prep wrote, and the decision says so."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from registry_world import MODEL, POLICY, dataset, messages, now, put_dataset, put_version, trained, trained_event
from services.trainer.synthetic_store import commit_version
from services.validator.promote import set_champion
from streamml.cli.models import app as models_app
from streamml.events import ModelPromoted, ModelRejected
from streamml.manifest import DriftBuild
from streamml.registry.decisions import read_decision

pytestmark = pytest.mark.integration
POINT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def put_drift_dataset(store, version: int) -> int:
    """Dataset ``version`` as prep commits a drift build: its manifest names the drift; returns its test rows."""
    manifest, splits = dataset(version)
    drift = DriftBuild(event_id="drift-e1", model=MODEL, kind="performance", window_start=POINT, window_end=POINT,
                       point=POINT, training_window="since_drift", rows_before=0,
                       rows_after=sum(table.num_rows for table in splits.values()), landed_rows_after=20_000)
    commit_version(store, manifest.model_copy(update={"drift": drift}), splits)
    return splits["test"].num_rows


def test_a_drift_candidate_is_judged_on_post_drift_rows_with_a_minimum(world, services, stack):
    put_dataset(world.store, 1)
    put_version(world.store, "v1", trained("weak", 1))
    set_champion(world.store, MODEL, "v1", expected=None, actor="test", reason="seeded", time=now())
    test_rows = put_drift_dataset(world.store, 2)
    put_version(world.store, "v2", trained("strong", 2))
    put_version(world.store, "v3", trained("strong", 2))
    policy = world.folder / f"{MODEL}.yaml"
    policy.write_text(POLICY + f"min_rows_after_drift: {test_rows + 1}\n")
    validator = services.start("validator", world.bucket, **world.env)

    # Too few post-drift rows to judge on: rejected, naming how many there were.
    world.send(trained_event("v2", trained("strong", 2)))
    rejected = world.events("model.rejected", 1)
    assert len(rejected) == 1 and isinstance(rejected[0], ModelRejected), validator.log_path.read_text()[-3000:]
    assert f"{test_rows} post-drift test rows < min_rows_after_drift {test_rows + 1}" in rejected[0].reasons
    decision = read_decision(world.store, MODEL, "v2")
    judged = decision.judged_on
    assert (judged.dataset_version, judged.rows, judged.after_drift, judged.drift_event) == (2, test_rows, True,
                                                                                            "drift-e1")
    assert judged.drift_point == POINT and decision.candidate.rows == decision.champion.rows == test_rows

    # Enough of them: the candidate and the champion are compared on those rows, and it is promoted.
    policy.write_text(POLICY + f"min_rows_after_drift: {test_rows}\n")
    world.send(trained_event("v3", trained("strong", 2)))
    promoted = world.events("model.promoted", 1)
    assert len(promoted) == 1 and isinstance(promoted[0], ModelPromoted), validator.log_path.read_text()[-3000:]
    assert promoted[0].version == "v3"
    decision = read_decision(world.store, MODEL, "v3")
    assert decision.judged_on.rows == test_rows and decision.champion_version == "v1"
    assert f"{test_rows} post-drift test rows >= min_rows_after_drift {test_rows}" in decision.notes
    assert messages(validator.log_path, "judging on post-drift rows")

    shown = CliRunner().invoke(models_app, ["show", MODEL], env={**stack.env(world.bucket), **world.env,
                                                                 "STREAMML_CONFIG_FILE": "", "COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert (f"v3 judged on: test split of transactions v2, {test_rows} rows, all landed after the drift at "
            f"2026-03-01 12:00:00 (event drift-e1)") in shown.output
