"""Dimensional head: arousal / valence / dominance regression, with categorical and gender outputs.

The IS25-SER winner's heads, on pooled features (the layer average is :class:`HeadModel`'s
learned layer weighting): a shared projection (the seed's 1-D pointwise convolution, which on
a pooled vector is a linear layer), then a 2-layer MLP per attribute whose output goes
through a sigmoid and is mapped min-max onto the corpus scale ``scale`` (``[1, 7]`` for
MSP-Podcast, ``[1, 3]`` for BAVED's low/neutral/high arousal levels). Outputs:

- ``avd`` (N, 3): arousal, valence, dominance on the corpus scale (attributes not trained
  keep the scale's midpoint: they are never scored);
- ``emotion`` (N, C): class logits from a linear layer on the projection, trained with the
  experiment's loss weighted by ``class_weight`` (0: the categorical output is not trained);
- ``gender`` (N, 2) when ``gender_weight`` (the seed's alpha) > 0.

Loss: ``dim_loss`` per attribute (``ccc``: 1 - CCC, the seed's; ``mse``), averaged over the
trained attributes and weighted ``dim_weight``; rows without a value (NaN) are left out per
attribute. It is trained by the ``dimensional`` estimator (:mod:`polyemo.train.dimensional`),
which picks the epoch by the validation mean CCC.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polyemo.heads import HEADS
from polyemo.heads.base import EmotionLoss, Head, Output, Targets
from polyemo.losses import build_loss

DIMENSIONS = ("arousal", "valence", "dominance")


def masked_mse(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the finite targets of each column, averaged over columns that have any."""
    losses = []
    for d in range(predictions.shape[1]):
        valid = torch.isfinite(targets[:, d])
        if bool(valid.any()):
            losses.append(((predictions[valid, d] - targets[valid, d]) ** 2).mean())
    return torch.stack(losses).mean() if losses else predictions.sum() * 0.0


@HEADS.register("dimensional", "avd")
class DimensionalHead(Head):
    """Per-attribute MLPs with sigmoid + min-max output on a shared projection (see the module)."""

    input_kind = "pooled"
    estimator = "dimensional"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None, *,
                 attributes: Sequence[str] = DIMENSIONS, scale: Sequence[float] = (1.0, 7.0),
                 projection_dim: int = 256, hidden_dim: int = 128, dropout: float = 0.2,
                 dim_loss: str = "ccc", dim_weight: float = 1.0, class_weight: float = 0.0,
                 gender_weight: float = 0.0) -> None:
        if outputs is not None:
            raise ValueError("dimensional head builds its own outputs; do not pass 'outputs'")
        attributes = [str(a) for a in attributes]
        unknown = [a for a in attributes if a not in DIMENSIONS]
        if not attributes or unknown or len(set(attributes)) != len(attributes):
            raise ValueError(f"dimensional head: attributes must be distinct names of {DIMENSIONS}, got {attributes}")
        if len(scale) != 2 or not float(scale[0]) < float(scale[1]):
            raise ValueError(f"dimensional head: scale must be [low, high] with low < high, got {list(scale)}")
        if dim_loss not in ("ccc", "mse"):
            raise ValueError(f"dimensional head: dim_loss must be ccc or mse, got {dim_loss!r}")
        if min(dim_weight, class_weight, gender_weight) < 0 or dim_weight == 0:
            raise ValueError("dimensional head: weights must be >= 0 and dim_weight > 0")
        heads = [Output("emotion", num_classes, "class"), Output("avd", len(DIMENSIONS), "regression")]
        if gender_weight > 0:
            heads.append(Output("gender", 2, "class"))
        super().__init__(input_dim, num_classes, heads)
        self.attributes = attributes
        self.columns = [DIMENSIONS.index(a) for a in attributes]
        self.register_buffer("scale", torch.tensor([float(scale[0]), float(scale[1])]))
        self.projection = nn.Sequential(nn.Linear(input_dim, projection_dim), nn.ReLU(), nn.Dropout(dropout))
        self.regressors = nn.ModuleList(
            nn.Sequential(nn.Linear(projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, 1))
            for _ in attributes)
        self.classifier = nn.Linear(projection_dim, num_classes)
        self.gender = nn.Linear(projection_dim, 2) if gender_weight > 0 else None
        self.dim_loss = build_loss("ccc") if dim_loss == "ccc" else masked_mse
        self.dim_weight, self.class_weight, self.gender_weight = float(dim_weight), float(class_weight), float(gender_weight)
        self.gender_loss = build_loss("ce")  # ignores rows with gender -1

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h = self.projection(x)
        low, high = self.scale[0], self.scale[1]
        avd = torch.full((x.shape[0], len(DIMENSIONS)), float((low + high) / 2), dtype=h.dtype, device=h.device)
        values = torch.cat([torch.sigmoid(r(h)) for r in self.regressors], dim=1) * (high - low) + low
        avd = avd.index_copy(1, torch.tensor(self.columns, device=h.device), values)
        out = {"emotion": self.classifier(h), "avd": avd}
        if self.gender is not None:
            out["gender"] = self.gender(h)
        return out

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: Targets,
                     emotion_loss: EmotionLoss) -> tuple[torch.Tensor, dict[str, float]]:
        # Experiments always give targets (config: head dimensional needs target: dimensions);
        # without any (a bare head) only the other tasks train.
        total = outputs["avd"].sum() * 0.0
        parts: dict[str, float] = {}
        if targets.avd is not None:
            d = self.dim_loss(outputs["avd"][:, self.columns], targets.avd[:, self.columns])
            total = total + self.dim_weight * d
            parts["dims"] = float(d.detach())
        if self.class_weight > 0:
            e = emotion_loss(outputs["emotion"], targets.emotion, targets.masks)
            total = total + self.class_weight * e
            parts["emotion"] = float(e.detach())
        if self.gender is not None:
            if targets.gender is None:
                raise ValueError("dimensional head with gender_weight > 0 needs gender targets (SplitData.gender)")
            g = self.gender_loss(outputs["gender"], targets.gender)
            total = total + self.gender_weight * g
            parts["gender"] = float(g.detach())
        return total, parts
