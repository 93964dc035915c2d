"""Attentive statistics pooling + MLP (Okabe et al., 2018).

A small network scores every frame; the attention-weighted mean and standard deviation
over the valid frames form the utterance vector (Okabe et al., 2018), which an MLP classifies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polyemo.heads import HEADS
from polyemo.heads.base import Head, Output, frame_mask, mlp


class AttentiveStatsPooling(nn.Module):
    """(B, T, D) frames + lengths -> (B, 2D): attention-weighted mean and std."""

    def __init__(self, input_dim: int, attention_dim: int = 128) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(input_dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = frame_mask(lengths, x.shape[1])
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # padding never reaches the statistics
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(scores, dim=1).unsqueeze(-1)
        mean = (alpha * x).sum(1)
        var = (alpha * (x - mean.unsqueeze(1)) ** 2).sum(1)
        return torch.cat([mean, torch.sqrt(var.clamp_min(1e-6))], dim=-1)


@HEADS.register("attentive_stats", "asp")
class AttentiveStatsHead(Head):
    input_kind = "frames"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None,
                 attention_dim: int = 128, hidden_dim: int = 256, num_layers: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__(input_dim, num_classes, outputs)
        self.pool = AttentiveStatsPooling(input_dim, attention_dim)
        body, size = mlp(2 * input_dim, hidden_dim, num_layers, dropout)
        self.body = body
        self.out = nn.Linear(size, self.total_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.dim() != 3:
            raise ValueError(f"attentive_stats expects frame features (batch, frames, dim), got {tuple(x.shape)}")
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        return self.split(self.out(self.body(self.pool(x, lengths))))
