"""Heads: small models that turn frozen encoder features into emotion predictions.

One module per head registers a factory in ``HEADS``; every factory is called as
``factory(input_dim, num_classes, **params)``. Torch heads are :class:`~polyemo.heads.base.Head`
modules that take pooled features ``(batch, dim)`` or frame features ``(batch, frames, dim)``
with valid lengths and return a dict of named outputs (``"emotion"`` logits at least).
Classical heads (scikit-learn) live in :mod:`polyemo.heads.classical`.

In front of any torch head, :class:`~polyemo.heads.model.HeadModel` reduces the encoder's
layers (learned softmax weighting, mean or concatenation; see :mod:`polyemo.heads.layers`).
"""

from __future__ import annotations

from polyemo.registry import Registry

HEADS: Registry = Registry("head", __name__)

from polyemo.heads.base import Head, Output, Targets
from polyemo.heads.model import (
    HeadConfig,
    HeadModel,
    build_head,
    head_input_kind,
    is_classical,
)

__all__ = ["HEADS", "Head", "HeadConfig", "HeadModel", "Output", "Targets", "build_head", "head_input_kind", "is_classical"]
