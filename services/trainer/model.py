"""The tabular network: one embedding per categorical feature, concatenated with
the numeric features, then an MLP.

``TabularNet`` returns raw scores (logits for classification); ``Predictor``
wraps it with the task's output function and is what gets exported, so a
served model answers probabilities without knowing how it was trained.
"""

from __future__ import annotations

import torch
from torch import nn

from services.trainer.data import FeatureLayout
from services.trainer.spec import Architecture, ModelSpec, Task
from services.trainer.user_code import CustomArchitecture, build_module


class TabularNet(nn.Module):
    def __init__(self, numeric: int, cardinalities: list[int], architecture: Architecture, outputs: int):
        super().__init__()
        widths = [architecture.embedding.width(n) for n in cardinalities]
        self.embeddings = nn.ModuleList(nn.Embedding(n, width) for n, width in zip(cardinalities, widths, strict=True))
        layers: list[nn.Module] = []
        width_in = numeric + sum(widths)
        if width_in == 0:
            raise ValueError("the model has no inputs: the dataset declares no numeric or categorical feature")
        for width in architecture.hidden:
            layers.append(nn.Linear(width_in, width))
            if architecture.normalisation == "batch":
                layers.append(nn.BatchNorm1d(width))
            elif architecture.normalisation == "layer":
                layers.append(nn.LayerNorm(width))
            layers.append(nn.ReLU())
            if architecture.dropout > 0:
                layers.append(nn.Dropout(architecture.dropout))
            width_in = width
        layers.append(nn.Linear(width_in, outputs))
        self.mlp = nn.Sequential(*layers)
        self.outputs = outputs

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Scores ``[N]`` for one output, ``[N, K]`` for K classes."""
        parts = [numeric, *(embedding(categorical[:, i]) for i, embedding in enumerate(self.embeddings))]
        scores = self.mlp(torch.cat(parts, dim=1))
        return scores.squeeze(-1) if self.outputs == 1 else scores


class Predictor(nn.Module):
    """Scores to predictions: P(label = 1) for binary, class probabilities ``[N, K]``
    for multiclass, the label value for regression."""

    def __init__(self, net: nn.Module, task: Task):
        super().__init__()
        self.net = net
        self.task = task

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        scores = self.net(numeric, categorical)
        if self.task == "binary":
            return torch.sigmoid(scores)
        if self.task == "multiclass":
            return torch.softmax(scores, dim=1)
        return scores


def build_model(layout: FeatureLayout, architecture: Architecture) -> TabularNet:
    return TabularNet(len(layout.numeric), list(layout.cardinalities), architecture, layout.outputs)


def build_network(spec: ModelSpec, layout: FeatureLayout) -> nn.Module:
    """The spec's network: the user's own (checked by a dry forward pass) or the built-in one."""
    if isinstance(spec.architecture, CustomArchitecture):
        return build_module(spec.name, spec.architecture, layout)
    return build_model(layout, spec.architecture)
