"""Reducing an encoder's layers to one feature stream, in front of any head.

:class:`LayerWeighting` is the s3prl "Featurizer": a learned softmax-weighted sum over
layers, optionally layer-normalising each layer first so that layers with large norms do
not dominate. The learned weights are kept for saving and plotting (:func:`plot_layer_weights`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LayerMode = Literal["weighted", "mean", "concat"]


class LayerWeighting(nn.Module):
    """Learned convex combination of layers: input (B, L, ..., D) -> (B, ..., D)."""

    def __init__(self, num_layers: int, layer_norm: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"LayerWeighting needs at least one layer, got {num_layers}")
        self.num_layers = num_layers
        self.layer_norm = layer_norm
        # Zeros: uniform weights at the start, as in s3prl.
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def normalised_weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def weights(self) -> np.ndarray:
        """The current layer weights (sum to 1) as a numpy array, for saving and plotting."""
        return self.normalised_weights().detach().cpu().numpy().astype(np.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.num_layers:
            raise ValueError(f"LayerWeighting expects {self.num_layers} layers, got input {tuple(x.shape)}")
        if self.layer_norm:
            x = F.layer_norm(x, x.shape[-1:])
        w = self.normalised_weights().to(x.dtype)
        return (x * w.view(1, -1, *([1] * (x.dim() - 2)))).sum(1)


class LayerMean(nn.Module):
    """Unweighted mean over layers: (B, L, ..., D) -> (B, ..., D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


class LayerConcat(nn.Module):
    """Concatenate layers along the feature axis: (B, L, ..., D) -> (B, ..., L*D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -2).flatten(-2)


class SingleLayer(nn.Module):
    """Input that has exactly one layer: (B, 1, ..., D) -> (B, ..., D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"expected one layer, got input {tuple(x.shape)}")
        return x[:, 0]


class SelectLayer(nn.Module):
    """One layer by index: (B, L, ..., D) -> (B, ..., D)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


def layer_reducer(mode: LayerMode | int, num_layers: int, layer_norm: bool = False) -> tuple[nn.Module, int]:
    """The module that reduces ``num_layers`` layers, and the factor it multiplies the dim by."""
    if num_layers == 1:
        if isinstance(mode, int) and mode not in (0, -1):
            raise ValueError(f"layer {mode} requested from features with one layer")
        return SingleLayer(), 1
    if isinstance(mode, (int, np.integer)):
        if not -num_layers <= int(mode) < num_layers:
            raise ValueError(f"layer {mode} out of range for {num_layers} layers")
        return SelectLayer(int(mode)), 1
    if mode == "weighted":
        return LayerWeighting(num_layers, layer_norm), 1
    if mode == "mean":
        return LayerMean(), 1
    if mode == "concat":
        return LayerConcat(), num_layers
    raise ValueError(f"unknown layer mode {mode!r}; use 'weighted', 'mean', 'concat' or a layer index")


def reduce_layers_numpy(features: np.ndarray, mode: LayerMode | int) -> np.ndarray:
    """Pooled features (N, L, D) -> (N, F) for classical heads: one layer, mean or concat."""
    if features.ndim != 3:
        raise ValueError(f"pooled features must be (utterances, layers, dim), got shape {features.shape}")
    if isinstance(mode, (int, np.integer)):
        return features[:, int(mode)]
    if mode == "mean":
        return features.mean(axis=1)
    if mode == "concat":
        return features.reshape(len(features), -1)
    raise ValueError(f"layer mode {mode!r} is not available for classical heads; use an index, 'mean' or 'concat'")


def plot_layer_weights(
    weights: np.ndarray | Sequence[float],
    path: str | os.PathLike[str] | None = None,
    layer_names: Sequence[str] | None = None,
    title: str = "Learned layer weights",
):
    """Bar plot of layer weights; saved to ``path`` (png/pdf/svg) when given. Returns the Figure."""
    from matplotlib.figure import (
        Figure,  # no pyplot: works without a display or global state
    )

    weights = np.asarray(weights, dtype=float)
    if weights.ndim == 2:  # several folds: plot the mean with the spread
        mean, spread = weights.mean(0), weights.std(0)
    else:
        mean, spread = weights, None
    names = list(layer_names) if layer_names is not None else [str(i) for i in range(len(mean))]
    if len(names) != len(mean):
        raise ValueError(f"{len(names)} layer names for {len(mean)} weights")
    fig = Figure(figsize=(max(4.0, 0.3 * len(mean) + 1.5), 3.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(mean)), mean, yerr=spread, color="#4477aa", capsize=2)
    ax.axhline(1.0 / len(mean), color="grey", linestyle="--", linewidth=0.8, label="uniform")
    ax.set_xticks(range(len(mean)), names, rotation=90 if len(mean) > 16 else 0)
    ax.set_xlabel("layer")
    ax.set_ylabel("weight")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    if path is not None:
        from polyemo.io import atomic_path

        suffix = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix, dpi=120)
    return fig
