"""`streamml models validate` and `streamml policies validate` report every problem at once, like datasets."""

import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamml.cli.app import app

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def project(tmp_path, monkeypatch):
    for folder in ("datasets", "models", "policies"):
        shutil.copytree(EXAMPLES / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=400)


def test_the_examples_are_valid_and_checked_against_each_other(project):
    models = run("models", "validate", "models/transactions.yaml")
    assert models.exit_code == 0, models.output
    assert "model 'fraud', binary on dataset 'transactions', checked against datasets/" in models.output
    policies = run("policies", "validate", "policies/transactions.yaml")
    assert policies.exit_code == 0, policies.output
    assert "checked against models/, datasets/" in policies.output


def test_every_problem_of_a_model_spec_at_once(project):
    (project / "models" / "bad.yaml").write_text(
        "name: Cancer\ndataset: transactionz\ntask: regresion\nbatch_size: 0\n")
    (project / "models" / "wrong_task.yaml").write_text("name: amounts\ndataset: transactions\ntask: binary\n")
    (project / "datasets" / "amounts.yaml").write_text(
        "name: amounts\nkey: id\nlabel: amount\nfields:\n  - {name: id, type: string}\n"
        "  - {name: amount, type: float}\n  - {name: channel, type: category}\n")
    (project / "models" / "wrong_label.yaml").write_text("name: amounts\ndataset: amounts\ntask: binary\n")
    result = run("models", "validate", "models/bad.yaml", "models/wrong_label.yaml", "models/transactions.yaml")
    assert result.exit_code == 2
    for problem in ("models/bad.yaml: name: String should match pattern '^[a-z][a-z0-9_]{0,62}$' (got 'Cancer')",
                    "models/bad.yaml: task: Input should be 'binary', 'multiclass' or 'regression' (got 'regresion')",
                    "models/bad.yaml: batch_size: Input should be greater than or equal to 1 (got 0)",
                    "models/bad.yaml: dataset: 'transactionz' is not among the dataset specs in datasets/",
                    "models/wrong_label.yaml: task: binary learns a label of 0 and 1, and 'amount' is float; "
                    "use task: regression",
                    "2 of 3 file(s) have problems"):
        assert problem in result.output, result.output
    assert "models/transactions.yaml: ok" in result.output


def test_every_problem_of_a_policy_at_once(project):
    (project / "policies" / "bad.yaml").write_text(
        "model: fraud\nmin: {rmse: 0.3, auc: 1.5}\nmax: {auc: 0.2}\n"
        "slices: [{feature: amount, min: {auc: 0.6}}]\nlatency: {p95_ms: 0, batch_size: 256}\n")
    result = run("policies", "validate", "policies/bad.yaml")
    assert result.exit_code == 2
    for problem in ("min.rmse: rmse is better when lower", "min.auc: 1.5 is outside [0, 1]",
                    "max.auc: auc is better when higher", "latency.p95_ms: Input should be greater than 0",
                    "min.rmse: a binary model is judged on auc, log_loss, accuracy, never rmse",
                    "slices[0].feature: 'amount' is not a category feature of the dataset "
                    "(its category features: channel, country)"):
        assert f"policies/bad.yaml: {problem}" in result.output, result.output
    (project / "policies" / "other.yaml").write_text("model: churn\nmin: {auc: 0.7}\n")
    unknown = run("policies", "validate", "policies/other.yaml")
    assert unknown.exit_code == 2 and "model: 'churn' is not among the model specs in models/" in unknown.output


def test_a_spec_with_its_own_code_is_imported_and_its_module_tried_on_the_dataset(project, tmp_path, monkeypatch):
    # --code puts the folder on this process's import path: it is this test's only.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    code = tmp_path / "code"
    shutil.copytree(EXAMPLES / "code", code)
    (code / "narrow.py").write_text(
        "from torch import nn\n\ndef build(schema, params):\n    return nn.Linear(3, 1)\n")
    (project / "models" / "narrow.yaml").write_text(
        "name: narrow\ndataset: transactions\ntask: binary\narchitecture: {module: 'narrow:build'}\n")
    own = [str(path) for path in sorted((EXAMPLES / "own_models").glob("*.yaml"))]
    result = run("models", "validate", *own, "models/narrow.yaml", "--code", str(code))
    assert result.exit_code == 2
    assert "fraud_residual.yaml: ok" in result.output and "fraud_own_fit.yaml: ok" in result.output
    own_policies = [str(path) for path in sorted((EXAMPLES / "own_policies").glob("*.yaml"))]
    policies = run("policies", "validate", *own_policies, "--models", str(EXAMPLES / "own_models"))
    assert policies.exit_code == 0, policies.output
    # The example dataset has four numeric features and two categories: a module built for 3 inputs cannot run.
    assert ("models/narrow.yaml: model spec 'narrow': narrow:build: forward(numeric [N, 4] float32, "
            "categorical [N, 2] int64) raised TypeError") in result.output, result.output
