"""The exported model runs in a fresh Python that has torch and nothing of streamml."""

import subprocess
import sys
import textwrap

import pytest
import torch

from services.trainer import artifact
from services.trainer.artifact import export_portable
from services.trainer.data import FeatureLayout, tensors_from_table
from services.trainer.model import Predictor
from services.trainer.spec import parse_model_spec
from services.trainer.synthetic import synthetic_dataset
from services.trainer.train import train
from streamml.portable import load_program

pytestmark = pytest.mark.integration
torch.set_num_threads(2)

LOADER = textwrap.dedent("""
    import sys
    import torch

    model_path, inputs_path, outputs_path, kind = sys.argv[1:]
    predict = torch.export.load(model_path).module() if kind == "torch.export" else torch.jit.load(model_path)
    numeric, categorical = torch.load(inputs_path)
    with torch.no_grad():
        outputs = [predict(numeric, categorical), predict(numeric[:1], categorical[:1])]
    torch.save(outputs, outputs_path)
    ours = sorted(name for name in sys.modules if name.split(".")[0] in ("services", "streamml"))
    assert not ours, ours
""")


def trained(task):
    manifest, splits = synthetic_dataset(3000, task=task, seed=9)
    layout = FeatureLayout.from_manifest(manifest, task).with_classes(splits["train"])
    train_data = tensors_from_table(splits["train"], layout)
    validation = tensors_from_table(splits["validation"], layout)
    spec = parse_model_spec({
        "name": "tiny", "dataset": "synthetic", "task": task, "max_epochs": 2, "batch_size": 256,
        "architecture": {"hidden": [16, 8], "dropout": 0.3, "normalisation": "batch"},
    })
    result = train(spec, layout, train_data, validation, device="cpu")
    with torch.no_grad():
        expected = Predictor(result.net, task).eval()(validation.numeric, validation.categorical)
    return result, layout, validation, expected


def run_fresh_python(tmp_path, portable, validation):
    model_path = tmp_path / portable.filename
    model_path.write_bytes(portable.data)
    torch.save((validation.numeric, validation.categorical), tmp_path / "inputs.pt")
    # cwd outside the repository and a clean PYTHONPATH: streamml cannot even be imported there.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "2"}
    process = subprocess.run(
        [sys.executable, "-c", LOADER, str(model_path), "inputs.pt", "outputs.pt", portable.format],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return torch.load(tmp_path / "outputs.pt")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_exported_program_predicts_the_same_in_a_fresh_process(tmp_path, task):
    result, layout, validation, expected = trained(task)
    portable = export_portable(result.net, layout)
    assert portable.format == "torch.export"

    full, single = run_fresh_python(tmp_path, portable, validation)
    assert full.shape == expected.shape == ((len(validation), 3) if task == "multiclass" else (len(validation),))
    assert torch.allclose(full, expected, rtol=0, atol=1e-6)
    assert torch.allclose(single, expected[:1], rtol=0, atol=1e-6)
    assert torch.allclose(load_program(portable.data, portable.format)(validation.numeric, validation.categorical), expected,
                          rtol=0, atol=1e-6)


def test_torchscript_fallback_when_export_fails(tmp_path, monkeypatch):
    result, layout, validation, expected = trained("binary")

    def broken_export(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(artifact.torch.export, "export", broken_export)
    portable = export_portable(result.net, layout)
    assert portable.format == "torchscript" and portable.filename == "model.torchscript.pt"

    full, single = run_fresh_python(tmp_path, portable, validation)
    assert torch.allclose(full, expected, rtol=0, atol=1e-6)
    assert torch.allclose(single, expected[:1], rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(load_program(portable.data, portable.format)(validation.numeric, validation.categorical), expected,
                              rtol=0, atol=1e-6)
