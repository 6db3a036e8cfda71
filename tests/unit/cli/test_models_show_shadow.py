"""`streamml models show` says which version is in shadow, and what a version showed live."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from streamml.cli.app import app
from streamml.registry.decisions import DecisionRecord, Evaluation, ShadowEvidence
from streamml.registry.keys import decision_key
from streamml.registry.shadow import ShadowState, start_shadow

pytestmark = pytest.mark.unit
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def decision(version: str, promote: bool, shadow: ShadowEvidence | None = None) -> DecisionRecord:
    return DecisionRecord(model="fraud", version=version, promote=promote, reasons=[] if promote else ["live"],
                          notes=[], candidate=Evaluation(rows=10, metrics={"auc": 0.9}), champion_version="v1",
                          champion=None, policy={}, actor="validator", time=NOW, shadow=shadow)


def test_the_version_in_shadow_and_the_live_evidence_of_a_decided_one_are_shown(store, tmp_path):
    live = ShadowEvidence(rows=2400, started=NOW, ended=NOW, candidate={"log_loss": 0.36},
                          champion={"log_loss": 0.39}, disagreement=0.05, latency_p95_ms=2.0)
    store.put(decision_key("fraud", "v2"), decision("v2", True, live).model_dump_json().encode())
    store.put("models/fraud/v3/card.json", b"{}")
    start_shadow(store, ShadowState(model="fraud", version="v3", champion_version="v2", started=NOW,
                                    deadline=NOW + timedelta(seconds=120), offsets={},
                                    offline=decision("v3", True), actor="validator"))

    result = CliRunner().invoke(app, ["models", "show", "fraud", "--json"])
    rows = {row["version"]: row for row in json.loads(result.output)["versions"]}
    assert rows["v3"]["decision"] == "in shadow" and rows["v3"]["shadow"] is None
    assert rows["v2"]["decision"] == "promoted" and rows["v2"]["shadow"]["rows"] == 2400

    text = CliRunner().invoke(app, ["models", "show", "fraud"]).output
    assert "in shadow: v3 beside v2 since 2026-03-01T12:00:00+00:00" in text, text
    assert "v2 live, in shadow beside the champion: 2400 labelled requests, log_loss 0.36 vs champion log_loss " \
           "0.39" in text, text
