"""What a trained model leaves in the registry: a portable program, its weights,
and a model card. Everything is returned as bytes or a JSON-ready dict; the
caller decides where it goes (``models/<name>/<version>/``).

The portable program runs without streamml: it is a ``torch.export`` archive
with a dynamic batch dimension (TorchScript when export fails), taking
``numeric [N, F] float32`` and ``categorical [N, C] int64`` in the order the
card lists, and answering P(label = 1) ``[N]`` (binary), class probabilities
``[N, K]`` (multiclass) or the predicted label ``[N]`` (regression)::

    import torch
    predict = torch.export.load("model.pt2").module()
    probabilities = predict(numeric, categorical)

Loading either format is ``streamml.portable.load_program``, which the SDK uses too.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch

from services.trainer.data import FeatureLayout
from services.trainer.model import Predictor
from services.trainer.spec import TORCH_ONLY, ModelSpec
from services.trainer.train import TrainResult
from streamml.manifest import DatasetManifest
from streamml.portable import FLAVOURS, FORMAT_FILES, Format
from streamml.registry.keys import STATE_DICT_FILE, dataset_manifest_key

log = logging.getLogger(__name__)

OUTPUTS = {
    "binary": "probability that the label is 1, shape [N]",
    "multiclass": "probability of each class in classes order, shape [N, K]",
    "regression": "predicted label value, shape [N]",
}


@dataclass(frozen=True)
class PortableModel:
    format: Format
    data: bytes

    @property
    def filename(self) -> str:
        return FORMAT_FILES[self.format]


def export_portable(net: torch.nn.Module, layout: FeatureLayout) -> PortableModel:
    predictor = Predictor(net, layout.task).cpu().eval()
    # Two rows: torch.export specialises dimensions of size 0 and 1.
    example = (torch.zeros(2, len(layout.numeric)), torch.zeros(2, len(layout.categorical), dtype=torch.int64))
    buffer = io.BytesIO()
    try:
        batch = torch.export.Dim("batch")
        program = torch.export.export(
            predictor, example, dynamic_shapes={"numeric": {0: batch}, "categorical": {0: batch}}
        )
        torch.export.save(program, buffer)
        return PortableModel("torch.export", buffer.getvalue())
    except Exception as error:  # noqa: BLE001 - any export failure falls back to TorchScript
        log.warning("torch.export failed (%s: %s); exporting TorchScript instead", type(error).__name__, error)
    buffer = io.BytesIO()
    # TorchScript is deprecated, which is why it is only the fallback.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(predictor, example, check_trace=False), buffer)
    return PortableModel("torchscript", buffer.getvalue())


def state_dict_bytes(net: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in net.state_dict().items()}, buffer)
    return buffer.getvalue()


def model_card(
    *,
    spec: ModelSpec,
    manifest: DatasetManifest,
    layout: FeatureLayout,
    result: TrainResult,
    portable: PortableModel,
    model_version: str,
    code_version: str,
    user_code: dict[str, Any] | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """Everything needed to judge, serve and monitor the model, as a JSON-ready dict."""
    common = card_common(spec=spec, manifest=manifest, layout=layout, portable=portable,
                         model_version=model_version, code_version=code_version, created=created)
    return {
        **common,
        "flavour": "torch",
        "metrics": dict(result.metrics),
        # The best epoch's metrics on the validation split; the validator's test-split metrics are in decision.json.
        "metrics_split": "validation",
        "selection": {
            "metric": spec.metric,
            "mode": spec.metric_mode,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs,
            "stopped_early": result.stopped_early,
        },
        "history": [
            {"epoch": r.epoch, "train_loss": r.train_loss, "metrics": r.metrics, "lr": r.lr,
             "samples_per_s": r.samples_per_s}
            for r in result.history
        ],
        "parameter_count": sum(p.numel() for p in result.net.parameters()),
        "device": result.device,
        "training_seconds": result.train_seconds,
        "samples_per_s": result.samples_per_s,
        # The spec's own code (references, files, sha256), so lineage reaches the code as well as the data.
        "user_code": user_code,
        "torch_version": torch.__version__,
        "artifacts": {**common["artifacts"], "state_dict": STATE_DICT_FILE},
    }


def card_common(
    *,
    spec: ModelSpec,
    manifest: DatasetManifest,
    layout: FeatureLayout,
    portable: PortableModel,
    model_version: str,
    code_version: str,
    created: datetime | None = None,
) -> dict[str, Any]:
    """What every card says, whatever the flavour: the data, the inputs and outputs, the spec, the program."""
    features = [*layout.numeric, *layout.categorical]
    return {
        "model": spec.name,
        "version": model_version,
        "created": (created or datetime.now(UTC)).isoformat(),
        "task": spec.task,
        "dataset": {
            "name": manifest.dataset,
            "version": manifest.version,
            "manifest_key": dataset_manifest_key(manifest.dataset, manifest.version),
            "rows": dict(manifest.rows),
            "content_sha256": dict(manifest.content_sha256),
        },
        # A lightgbm spec has no network: the torch settings' defaults would only mislead.
        "params": spec.model_dump(mode="json", exclude=set(TORCH_ONLY) if spec.flavour == "lightgbm" else None),
        "seed": spec.seed,
        "code_version": code_version,
        "inputs": {
            "numeric": list(layout.numeric),
            "categorical": [
                {"name": name, "codes": codes}
                for name, codes in zip(layout.categorical, layout.cardinalities, strict=True)
            ],
            "transform": {name: manifest.transform[name].model_dump(mode="json") for name in features},
        },
        "outputs": {
            "meaning": OUTPUTS[spec.task],
            "label": layout.label,
            "classes": list(layout.classes) if layout.classes is not None else None,
        },
        "expected_features": {
            name: manifest.reference[name].model_dump(mode="json") for name in features if name in manifest.reference
        },
        "expected_label": manifest.label_reference.model_dump(mode="json") if manifest.label_reference else None,
        "artifacts": {"portable": portable.filename, "format": portable.format, "flavour": FLAVOURS[portable.format]},
    }
