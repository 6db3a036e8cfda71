"""`streamml models show --wait` returns once the champion pointer shows the decision, not before.

The validator records a decision before it moves the pointer; a wait that returned on the
decision alone printed "no champion yet" right after a promotion."""

import threading
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from streamml.cli.app import app
from streamml.registry.champion import set_champion
from streamml.registry.decisions import DecisionRecord, Evaluation
from streamml.registry.keys import decision_key

pytestmark = pytest.mark.unit
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def record(version: str, promote: bool, champion_version: str | None) -> bytes:
    return DecisionRecord(model="cells", version=version, promote=promote, reasons=[] if promote else ["auc"],
                          notes=[], candidate=Evaluation(rows=10, metrics={"auc": 0.9}),
                          champion_version=champion_version, champion=None, policy={}, actor="validator",
                          time=NOW).model_dump_json().encode()


def test_a_promotion_recorded_but_not_yet_followed_is_waited_for(store):
    store.put("models/cells/d1-a/card.json", b"{}")
    store.put(decision_key("cells", "d1-a"), record("d1-a", True, None))
    mover = threading.Timer(0.5, lambda: set_champion(store, "cells", "d1-a", expected=None, actor="validator@host",
                                                      reason="passed", time=NOW))
    mover.start()
    try:
        result = CliRunner().invoke(app, ["models", "show", "cells", "--wait", "30"])
    finally:
        mover.join()
    assert result.exit_code == 0, result.output
    assert "champion d1-a (previous -) set by validator@host" in result.output, result.output


def test_a_promotion_never_followed_fails_the_wait_naming_it(store):
    store.put("models/cells/d1-a/card.json", b"{}")
    store.put(decision_key("cells", "d1-a"), record("d1-a", True, None))
    result = CliRunner().invoke(app, ["models", "show", "cells", "--wait", "0.1"])
    assert result.exit_code == 1
    assert "a promotion the champion pointer does not show yet" in result.output, result.output


def test_a_rejection_ends_the_wait_with_no_champion(store):
    store.put("models/cells/d1-a/card.json", b"{}")
    store.put(decision_key("cells", "d1-a"), record("d1-a", False, None))
    result = CliRunner().invoke(app, ["models", "show", "cells", "--wait", "30"])
    assert result.exit_code == 0, result.output
    assert "no champion yet" in result.output and "d1-a failed: auc" in result.output, result.output
