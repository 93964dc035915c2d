"""Linear probe on pooled utterance features (the EmoBox protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polyemo.heads import HEADS
from polyemo.heads.base import Head, Output


@HEADS.register("linear", "linear_probe")
class LinearHead(Head):
    """Dropout then one linear layer on (B, D) pooled features."""

    input_kind = "pooled"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__(input_dim, num_classes, outputs)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(input_dim, self.total_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.dim() != 2:
            raise ValueError(f"linear head expects pooled features (batch, dim), got {tuple(x.shape)}")
        return self.split(self.linear(self.dropout(x)))
