"""A model spec's own code: references in the spec, loading it, the dry forward, the code digest,
and training it with the trainer's loop or with its own function."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from services.trainer.artifact import export_portable
from services.trainer.custom_fit import fit_with_entrypoint
from services.trainer.publish import model_version
from services.trainer.spec import parse_model_spec
from services.trainer.train import checkpoint_bytes, load_checkpoint, train
from services.trainer.user_code import (
    Checkpoint,
    CustomArchitecture,
    UserCodeError,
    add_code_dir,
    build_module,
    code_digest,
    resolve,
)
from streamml.portable import load_program
from streamml.specs import SpecError

pytestmark = pytest.mark.unit
EXAMPLE_CODE = Path(__file__).resolve().parents[3] / "examples" / "code"


@pytest.fixture(scope="module", autouse=True)
def example_code():
    add_code_dir(EXAMPLE_CODE)
    yield
    sys.path.remove(str(EXAMPLE_CODE))


def document(**overrides: object) -> dict:
    return {"name": "own", "dataset": "synthetic", "task": "binary", "max_epochs": 2, "batch_size": 256,
            "early_stopping": {"patience": None}, "seed": 3, **overrides}


RESIDUAL = {"module": "fraud_models.residual:build", "params": {"width": 16, "blocks": 2}}


def test_a_spec_names_its_own_module_or_training_function():
    own = parse_model_spec(document(architecture=RESIDUAL))
    assert own.architecture == CustomArchitecture(module="fraud_models.residual:build", params=RESIDUAL["params"])
    assert own.code_references == ["fraud_models.residual:build"]
    fitted = parse_model_spec(document(training={"entrypoint": "fraud_models.fit:fit", "params": {"epochs": 2}}))
    assert fitted.code_references == ["fraud_models.fit:fit"]
    assert parse_model_spec(document(architecture={"hidden": [4]})).code_references == []
    # The params are part of the fingerprint: other params are another model version.
    other = parse_model_spec(document(architecture={**RESIDUAL, "params": {"width": 8}}))
    assert own.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(("change", "message"), [
    ({"architecture": {"module": "no colon"}}, "architecture.module: 'no colon' is not package.module:function"),
    ({"architecture": {"module": "a:b", "hidden": [3]}}, "architecture.hidden: Extra inputs are not permitted"),
    ({"architecture": {"hiden": [3]}}, "architecture.hiden: Extra inputs are not permitted"),
    ({"training": {"entrypoint": "a.b"}}, "training.entrypoint: 'a.b' is not package.module:function"),
    ({"training": {"entrypoint": "a:b"}, "architecture": {"hidden": [3]}},
     "training.entrypoint builds and fits the model itself, so architecture is not used"),
])
def test_a_bad_reference_is_reported_naming_the_field(change, message):
    with pytest.raises(SpecError) as error:
        parse_model_spec(document(**change))
    assert any(message in line for line in error.value.problems), error.value.problems


@pytest.fixture
def broken(tmp_path, monkeypatch):
    """A package of broken builders, importable for this test only."""
    package = tmp_path / "broken_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "builders.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def raises(schema, params):
            raise RuntimeError("width must be even")

        def not_a_module(schema, params):
            return 42

        def wrong_width(schema, params):
            return nn.Linear(len(schema.numeric) + 1, 1)  # forgets that numeric has F columns

        class TwoOutputs(nn.Module):
            def __init__(self, schema):
                super().__init__()
                self.linear = nn.Linear(len(schema.numeric), 2)
            def forward(self, numeric, categorical):
                return self.linear(numeric)

        def two_outputs(schema, params):
            return TwoOutputs(schema)
    """))
    (package / "typo.py").write_text("import torch\nfrom torch import nn\nnn.Linearr\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [name for name in sys.modules if name.startswith("broken_models")]:
        del sys.modules[name]


@pytest.mark.parametrize(("reference", "message"), [
    ("not_there.models:build", "cannot import not_there.models: ModuleNotFoundError"),
    ("broken_models.typo:build", "cannot import broken_models.typo: AttributeError"),
    ("broken_models.builders:missing", "broken_models.builders has no function 'missing'"),
    ("broken_models.builders:raises", "the builder raised RuntimeError: width must be even"),
    ("broken_models.builders:not_a_module", "the builder returned int, not a torch.nn.Module"),
    ("broken_models.builders:wrong_width", "forward(numeric [N, 6] float32, categorical [N, 2] int64) raised"),
    ("broken_models.builders:two_outputs", "forward must answer a tensor of shape [2] (task binary, N = 2), "
                                           "it answered shape [2, 2]"),
])
def test_code_that_does_not_fit_is_rejected_naming_the_spec_and_why(broken, binary, reference, message):
    with pytest.raises(UserCodeError) as error:
        build_module("fraud", CustomArchitecture(module=reference), binary.layout)
    assert str(error.value).startswith(f"model spec 'fraud': {reference}: ")
    assert message in str(error.value)


def test_the_code_digest_follows_the_files_not_where_they_are(tmp_path, monkeypatch):
    for folder in ("a", "b"):
        package = tmp_path / folder / f"pkg_{folder}"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "net.py").write_text("def build(schema, params):\n    return None\n")
        monkeypatch.syspath_prepend(str(tmp_path / folder))
    resolve("m", "pkg_a.net:build")
    resolve("m", "pkg_b.net:build")
    first = code_digest(["pkg_a.net:build"])
    assert first["files"] == ["pkg_a/__init__.py", "pkg_a/net.py"]
    (tmp_path / "a" / "pkg_a" / "helpers.py").write_text("X = 1\n")
    changed = code_digest(["pkg_a.net:build"])
    assert changed["sha256"] != first["sha256"] and "pkg_a/helpers.py" in changed["files"]
    spec = parse_model_spec(document(architecture={"module": "pkg_a.net:build"}))
    assert model_version(spec, 1, first["sha256"]) != model_version(spec, 1, changed["sha256"])
    assert model_version(spec, 1, first["sha256"]) == model_version(spec, 1, first["sha256"])


def test_the_trainers_loop_fits_an_own_module_and_exports_it(binary):
    spec = parse_model_spec(document(architecture=RESIDUAL, max_epochs=3))
    result = train(spec, binary.layout, binary.train, binary.validation, device="cpu")
    assert result.epochs == 3 and result.metrics["auc"] > 0.7
    assert type(result.net).__name__ == "ResidualMLP"
    # The exported program is the module with the task's output function, and runs without its code.
    portable = export_portable(result.net, binary.layout)
    assert portable.format == "torch.export"
    program = load_program(portable.data, portable.format)
    with torch.no_grad():
        expected = torch.sigmoid(result.net(binary.validation.numeric, binary.validation.categorical))
        assert torch.allclose(program(binary.validation.numeric, binary.validation.categorical), expected, atol=1e-6)


def test_an_own_module_resumed_from_a_checkpoint_ends_where_an_uninterrupted_run_does(binary):
    spec = parse_model_spec(document(architecture=RESIDUAL, max_epochs=3))
    whole = train(spec, binary.layout, binary.train, binary.validation, device="cpu")
    checkpoints = []
    train(parse_model_spec(document(architecture=RESIDUAL, max_epochs=3)), binary.layout, binary.train,
          binary.validation, device="cpu", on_checkpoint=lambda c: checkpoints.append(checkpoint_bytes(c)))
    resumed = train(spec, binary.layout, binary.train, binary.validation, device="cpu",
                    resume_from=load_checkpoint(checkpoints[0]))
    assert resumed.metrics == whole.metrics
    for name, tensor in whole.net.state_dict().items():
        assert torch.equal(tensor, resumed.net.state_dict()[name]), name


class MemoryCheckpoint:
    def __init__(self):
        self.saved = []

    def handle(self) -> Checkpoint:
        return Checkpoint(save=lambda state: self.saved.append(checkpoint_bytes(state)),
                          load=lambda: load_checkpoint(self.saved[-1]) if self.saved else None)


def test_an_own_training_function_is_published_with_metrics_the_trainer_computes(binary):
    spec = parse_model_spec(document(training={"entrypoint": "fraud_models.fit:fit",
                                               "params": {"epochs": 2, "network": {"width": 16, "blocks": 1}}}))
    checkpoint, epochs = MemoryCheckpoint(), []
    result = fit_with_entrypoint(spec, binary.layout, {}, binary.train, binary.validation, device="cpu",
                                 checkpoint=checkpoint.handle(), on_epoch=epochs.append)
    assert [report.epoch for report in epochs] == [1, 2] and result.epochs == 2 and result.best_epoch == 2
    assert len(checkpoint.saved) == 2 and result.metrics["auc"] > 0.7
    assert epochs[0].lr is None and epochs[0].train_loss > 0
    # Run again with the last checkpoint there: the function resumes after epoch 2 and trains nothing more.
    again = fit_with_entrypoint(spec, binary.layout, {}, binary.train, binary.validation, device="cpu",
                                checkpoint=checkpoint.handle())
    assert again.epochs == 0 and again.metrics == result.metrics


def test_a_training_function_that_raises_or_returns_no_module_names_the_spec(broken, binary, tmp_path):
    (tmp_path / "broken_models" / "fits.py").write_text(
        "def raises(run):\n    raise KeyError('lr')\n\ndef nothing(run):\n    return None\n")
    for name, message in (("raises", "the training function raised KeyError: 'lr'"),
                          ("nothing", "the training function returned NoneType, not a torch.nn.Module")):
        spec = parse_model_spec(document(name="mine", training={"entrypoint": f"broken_models.fits:{name}"}))
        with pytest.raises(UserCodeError) as error:
            fit_with_entrypoint(spec, binary.layout, {}, binary.train, binary.validation, device="cpu",
                                checkpoint=MemoryCheckpoint().handle())
        assert str(error.value) == f"model spec 'mine': broken_models.fits:{name}: {message}"
