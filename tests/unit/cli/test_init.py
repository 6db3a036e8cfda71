"""`streamml init`: what it guesses from a sample, and that what it writes loads as a valid spec, model and policy."""

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from services.trainer.spec import load_model_spec
from services.validator.policy import load_policy
from streamml.cli import starter
from streamml.cli.app import app
from streamml.specs import load_dataset_spec

pytestmark = pytest.mark.unit


def run(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=400)


def churn_rows(count: int = 400, seed: int = 3) -> list[dict]:
    """A learnable table: churn follows tenure and plan; signup is an ISO time with a zone."""
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(count):
        tenure = float(rng.uniform(0, 60))
        plan = ["basic", "plus", "pro"][number % 3]
        risk = -tenure / 15 + (1.5 if plan == "basic" else 0.0) + rng.normal(0, 0.5)
        rows.append({"customer_id": f"c{number:05d}", "signup_time": f"2026-01-{1 + number % 28:02d}T10:00:00+00:00",
                     "tenure": round(tenure, 3), "plan": plan, "spend": round(float(rng.gamma(2, 30)), 2),
                     "churn": int(risk > 0)})
    return rows


def test_profile_reads_types_nulls_ranges_and_categories():
    table = pa.table({"id": [1, 2, 3, 4, 5, 6], "amount": [1.5, None, -2.0, 4.0, 0.0, 1.0],
                      "channel": ["web", "app", "web", "app", "app", "web"], "note": ["a", "b", "c", "d", "e", "f"],
                      "flag": [True, False, True, True, False, False]})
    profiles = {p.name: p for p in starter.profile_table(table)}
    assert profiles["id"].type == "int" and profiles["id"].unique
    assert profiles["amount"].type == "float" and profiles["amount"].nulls == 1
    assert (profiles["amount"].low, profiles["amount"].high) == (-2.0, 4.0)
    assert profiles["channel"].type == "category" and profiles["channel"].values == ["app", "web"]
    assert profiles["note"].type == "string"  # every value distinct: free text, not a category
    assert profiles["flag"].type == "bool"


def test_a_column_name_streamml_cannot_use_is_named_with_a_fix():
    with pytest.raises(starter.StarterError, match=r"column 'Mean Radius' .* e\.g\. to 'mean_radius'"):
        starter.profile_table(pa.table({"Mean Radius": [1.0]}))


def test_roles_key_label_and_event_time_each_with_a_reason():
    table = pa.Table.from_pylist(churn_rows(60))
    roles = starter.guess_roles(starter.profile_table(table))
    assert (roles.key, roles.label, roles.event_time) == ("customer_id", "churn", "signup_time")
    assert roles.why["label"] == "named like a label"
    untimed = starter.guess_roles(starter.profile_table(table.drop(["signup_time"])))
    assert untimed.event_time is None and "Kafka timestamp" in untimed.why["event_time"]


def test_a_sample_without_a_unique_column_has_no_key():
    with pytest.raises(starter.StarterError, match="no column is unique"):
        starter.guess_roles(starter.profile_table(pa.table({"a": [1, 1, 2], "b": [0.5, 0.5, 0.1]})))


@pytest.mark.parametrize(("values", "task"), [([0, 1, 1, 0], "binary"), ([True, False, True, True], "binary"),
                                               (["a", "b", "c", "a"], "multiclass"), ([1, 2, 3, 4], "multiclass"),
                                               ([0.1, 2.5, 3.7, 9.0], "regression")])
def test_the_task_follows_the_label(values, task):
    (label,) = starter.profile_table(pa.table({"y": values}))
    assert starter.task_for(label) == task


def test_the_floors_sit_below_what_the_baseline_scored():
    table = pa.Table.from_pylist(churn_rows())
    profiles = starter.profile_table(table)
    baseline = starter.fit_baseline(table, starter.guess_roles(profiles), profiles)
    assert baseline.task == "binary" and baseline.holdout_rows == 80
    assert baseline.metrics["auc"] > 0.85  # churn is learnable from tenure and plan
    floors, ceilings = starter.bounds(baseline, test_rows=80)
    assert 0.5 < floors["auc"] < baseline.metrics["auc"]
    # Log-loss need only beat predicting the label's frequencies: one confident miss on a small test split moves it
    # far more than its standard error on the holdout says.
    assert baseline.metrics["log_loss"] < ceilings["log_loss"] <= baseline.no_skill_log_loss
    assert ceilings["log_loss"] > 0.9 * baseline.no_skill_log_loss
    # A smaller test split is noisier, so its floor is lower.
    assert starter.bounds(baseline, test_rows=20)[0]["auc"] < floors["auc"]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_init_writes_a_spec_a_model_and_a_policy_that_load(tmp_path, monkeypatch, suffix):
    monkeypatch.chdir(tmp_path)
    rows = churn_rows()
    if suffix == "csv":
        write_csv(tmp_path / "churn.csv", rows)
    elif suffix == "jsonl":
        (tmp_path / "churn.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "churn.parquet")
    result = run("init", "churn", "--from", f"churn.{suffix}")
    assert result.exit_code == 0, result.output
    spec = load_dataset_spec(Path("datasets/churn.yaml"))
    assert (spec.key, spec.label, spec.event_time) == ("customer_id", "churn", "signup_time")
    assert {f.name: f.type for f in spec.fields}["plan"] == "category"
    model = load_model_spec(Path("models/churn.yaml"))
    assert (model.name, model.dataset, model.task) == ("churn", "churn", "binary")
    policy = load_policy(Path("policies/churn.yaml"))
    assert policy.model == "churn" and 0.5 < policy.min["auc"] < 1
    # Only the application knows its latency budget: init shows how to set one and sets none.
    assert policy.latency is None and "# latency: {p95_ms:" in Path("policies/churn.yaml").read_text()
    assert "# review:" in Path("datasets/churn.yaml").read_text()
    for line in ("key: customer_id — named like an id", "label: churn — named like a label",
                 "event_time: signup_time — a timestamp column"):
        assert line in result.output, result.output
    for kind in ("datasets", "models", "policies"):
        assert run(kind, "validate", f"{kind}/churn.yaml").exit_code == 0


def test_init_never_overwrites_without_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "churn.csv", churn_rows())
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "churn.yaml").write_text("mine\n")
    refused = run("init", "churn", "--from", "churn.csv")
    assert refused.exit_code == 2 and "policies/churn.yaml exist(s); nothing was written" in refused.output
    assert not (tmp_path / "datasets" / "churn.yaml").exists()
    assert (tmp_path / "policies" / "churn.yaml").read_text() == "mine\n"
    forced = run("init", "churn", "--from", "churn.csv", "--force")
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "policies" / "churn.yaml").read_text() != "mine\n"


def test_init_names_the_file_and_the_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.csv").write_text("id,y\n1,0\n2,1\n")
    result = run("init", "tiny", "--from", "tiny.csv")
    assert result.exit_code == 2 and "tiny.csv: the sample has 2 labelled rows; a baseline needs at least 50" \
        in result.output, result.output
    assert not (tmp_path / "datasets").exists()
    bad_name = run("init", "Tiny", "--from", "tiny.csv")
    assert bad_name.exit_code == 2 and "'Tiny' cannot be a dataset name" in bad_name.output
