"""A residual MLP for the trainer's loop: ``architecture: {module: "fraud_models.residual:build"}``.

The trainer calls ``build(schema, params)`` and fits the network it returns:
``forward(numeric [N, F] float32, categorical [N, C] int64)`` answers raw scores,
``[N]`` for binary and regression, ``[N, K]`` for K classes.
"""

import torch
from torch import nn


class Block(nn.Module):
    """x + f(x): each block learns a correction, so depth does not make training harder."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualMLP(nn.Module):
    def __init__(self, schema, width: int = 64, blocks: int = 2, dropout: float = 0.0, embedding_dim: int = 8):
        super().__init__()
        # schema.cardinalities: codes per categorical feature, the out-of-vocabulary code 0 included.
        self.embeddings = nn.ModuleList(nn.Embedding(n, min(embedding_dim, n)) for n in schema.cardinalities)
        width_in = len(schema.numeric) + sum(min(embedding_dim, n) for n in schema.cardinalities)
        self.stem = nn.Linear(width_in, width)
        self.blocks = nn.Sequential(*(Block(width, dropout) for _ in range(blocks)))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, schema.outputs))
        self.outputs = schema.outputs

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric, *(embedding(categorical[:, i]) for i, embedding in enumerate(self.embeddings))]
        scores = self.head(self.blocks(self.stem(torch.cat(parts, dim=1))))
        return scores.squeeze(-1) if self.outputs == 1 else scores


def build(schema, params: dict) -> nn.Module:
    return ResidualMLP(schema, **params)
