"""MLP applied to every frame; frame predictions pooled to the utterance (SER Evals).

Pooling averages over valid frames only, either the logits or the class probabilities
(returned as log-probabilities, so softmax and cross-entropy treat them as logits).
Regression outputs are always averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from polyemo.heads import HEADS
from polyemo.heads.base import Head, Output, frame_mask, masked_mean, mlp


@HEADS.register("frame_mlp")
class FrameMLPHead(Head):
    input_kind = "frames"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None,
                 hidden_dim: int = 256, num_layers: int = 2, dropout: float = 0.1,
                 pooling: Literal["logits", "probabilities"] = "logits") -> None:
        super().__init__(input_dim, num_classes, outputs)
        if pooling not in ("logits", "probabilities"):
            raise ValueError(f"frame_mlp pooling must be 'logits' or 'probabilities', got {pooling!r}")
        self.pooling = pooling
        body, size = mlp(input_dim, hidden_dim, num_layers, dropout)
        self.body = body
        self.out = torch.nn.Linear(size, self.total_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.dim() != 3:
            raise ValueError(f"frame_mlp expects frame features (batch, frames, dim), got {tuple(x.shape)}")
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        mask = frame_mask(lengths, x.shape[1])
        per_frame = self.split(self.out(self.body(x)))  # name -> (B, T, size)
        pooled: dict[str, torch.Tensor] = {}
        for spec in self.outputs:
            values = per_frame[spec.name]
            if spec.kind == "class" and self.pooling == "probabilities":
                probs = masked_mean(torch.softmax(values, dim=-1), mask)
                pooled[spec.name] = torch.log(probs.clamp_min(1e-12))
            else:
                pooled[spec.name] = masked_mean(values, mask)
        return pooled
