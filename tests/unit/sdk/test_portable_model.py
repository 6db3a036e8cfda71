"""The SDK serves a torch.export program exactly as a model card describes it."""

import io

import numpy as np
import pytest
import torch
from torch import nn

from streamml.manifest import CategoryTransform, NumericTransform
from streamml.sdk.preprocess import FeatureTransform
from streamml.sdk.swap import ModelSlot, ModelSnapshot

pytestmark = pytest.mark.unit


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(4, 2)
        self.linear = nn.Linear(2 + 2, 1)

    def forward(self, numeric, categorical):
        joined = torch.cat([numeric, self.embedding(categorical[:, 0])], dim=1)
        return torch.sigmoid(self.linear(joined).squeeze(-1))


def portable(module: nn.Module) -> bytes:
    batch = torch.export.Dim("batch")
    example = (torch.zeros(2, 2), torch.zeros(2, 1, dtype=torch.int64))
    program = torch.export.export(module.eval(), example,
                                  dynamic_shapes={"numeric": {0: batch}, "categorical": {0: batch}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def test_exported_program_predicts_like_the_module_it_came_from():
    module = Tiny()
    card = {"inputs": {
        "numeric": ["amount", "hour"],
        "categorical": [{"name": "channel", "codes": 4}],
        "transform": {
            "amount": NumericTransform(mean=50, std=20, impute=40).model_dump(mode="json"),
            "hour": NumericTransform(mean=12, std=6).model_dump(mode="json"),
            "channel": CategoryTransform(vocabulary=["web", "pos", "atm"]).model_dump(mode="json"),
        },
    }}
    program = torch.export.load(io.BytesIO(portable(module))).module()
    transform = FeatureTransform.from_card(card)
    slot = ModelSlot("fraud", ModelSnapshot("v1", program, transform))
    records = [{"amount": 10.0 * i, "hour": i % 24, "channel": ["web", "pos", "atm", None][i % 4]} for i in range(37)]
    result = slot.predict(records)
    assert result.version == "v1" and result.output.shape == (37,)
    with torch.no_grad():
        expected = module(*transform.apply(records).tensors()).numpy()
    np.testing.assert_allclose(result.output, expected, rtol=1e-6)
    assert slot.predict(records[:1]).output.shape == (1,)
