"""Head configuration and the model that puts layer reduction in front of a head."""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from polyemo.heads import HEADS
from polyemo.heads.base import EmotionLoss, Head, Targets
from polyemo.heads.layers import LayerWeighting, layer_reducer


class HeadConfig(BaseModel):
    """Which head, its parameters, and how the encoder's layers are combined.

    ``layers``: ``"weighted"`` (learned softmax weights, the default for torch heads),
    ``"mean"``, ``"concat"``, or a layer index (negative counts from the top). Classical
    heads cannot learn weights; for them the default is ``"mean"``.
    ``layer_norm``: layer-normalise each layer before the weighted sum (s3prl option).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "linear"
    params: dict[str, Any] = Field(default_factory=dict)
    layers: Literal["weighted", "mean", "concat"] | int | None = None
    layer_norm: bool = False

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        try:
            HEADS.get(name)
        except KeyError as error:  # pydantic reports ValueErrors, with the list of known heads
            raise ValueError(error.args[0]) from None
        return name

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> HeadConfig:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        try:
            return cls(**data)
        except Exception as error:  # name the file, keep pydantic's detail
            raise ValueError(f"{path}: invalid head config: {error}") from error

    def input_kind(self) -> Literal["pooled", "frames"]:
        """What the head takes: pooled utterance features or frame features."""
        return head_input_kind(self.name, self.params)

    def layer_mode(self) -> Literal["weighted", "mean", "concat"] | int:
        if self.layers is not None:
            return self.layers
        return "mean" if is_classical(self.name) else "weighted"


def is_classical(name: str) -> bool:
    # By the estimator a head names (heads/base.py, heads/classical.py): asking about a torch
    # head does not import scikit-learn.
    return getattr(HEADS.get(name), "estimator", "torch") == "classical"


def head_input_kind(name: str, params: dict[str, Any] | None = None) -> Literal["pooled", "frames"]:
    """``"pooled"`` or ``"frames"`` for a head name and its params (a multitask head takes
    what its ``base`` takes)."""
    params = params or {}
    if is_classical(name):
        return "pooled"
    factory = HEADS.get(name)
    from polyemo.heads.multitask import MultiTaskHead

    if factory is MultiTaskHead:
        return head_input_kind(params.get("base", "linear"))
    return factory.input_kind


class HeadModel(nn.Module):
    """Layer reduction then a head: input (B, L, D) pooled or (B, L, T, D) frames."""

    def __init__(self, head: Head, num_layers: int, layer_mode: Literal["weighted", "mean", "concat"] | int = "weighted",
                 layer_norm: bool = False) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.layers, _ = layer_reducer(layer_mode, num_layers, layer_norm)
        self.head = head

    @property
    def input_kind(self) -> str:
        return self.head.input_kind

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        expected = 3 if self.input_kind == "pooled" else 4
        if x.dim() != expected:
            shape = "(batch, layers, dim)" if expected == 3 else "(batch, layers, frames, dim)"
            raise ValueError(f"{type(self.head).__name__} expects {shape}, got {tuple(x.shape)}")
        return self.head(self.layers(x), lengths)

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: Targets,
                     emotion_loss: EmotionLoss) -> tuple[torch.Tensor, dict[str, float]]:
        return self.head.compute_loss(outputs, targets, emotion_loss)

    def layer_weights(self) -> np.ndarray | None:
        """Learned layer weights (sum to 1), or None when layers are not weighted."""
        return self.layers.weights() if isinstance(self.layers, LayerWeighting) else None


def build_head(config: HeadConfig, num_layers: int, feature_dim: int, num_classes: int):
    """A :class:`HeadModel` for torch heads, or a fitted-later ClassicalHead for sklearn heads.

    ``num_layers`` and ``feature_dim`` describe the features the head will receive.
    """
    factory = HEADS.get(config.name)
    mode = config.layer_mode()
    if is_classical(config.name):
        input_dim = feature_dim * (num_layers if mode == "concat" else 1)
        return factory(input_dim, num_classes, **config.params)
    input_dim = feature_dim * (num_layers if mode == "concat" and num_layers > 1 else 1)
    head = factory(input_dim, num_classes, **config.params)
    if not isinstance(head, Head):
        raise TypeError(f"head {config.name!r} did not build a torch Head")
    return HeadModel(head, num_layers, mode, config.layer_norm)
