"""The bundle's encoder: loaded at the asked precision (fine-tuned weights where the bundle has
them) and checked against what the head reads."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from polyemo.bundle import Bundle, BundleError

if TYPE_CHECKING:
    from polyemo.encoders.base import Encoder


def check_shapes(bundle: Bundle, encoder: Encoder) -> None:
    spec = bundle.config.features
    layers = getattr(encoder, "num_layers", None)
    if spec.layers is not None and layers is not None and any(not -layers <= i < layers for i in spec.layers):
        raise BundleError(bundle.path, "config.json", f"layers {spec.layers} do not exist in {spec.encoder} ({layers} layers)")
    dim = getattr(encoder, "pooled_dim" if spec.kind == "pooled" else "frame_dim", None)
    if dim is not None and dim != spec.feature_dim:
        raise BundleError(bundle.path, "config.json",
                          f"the head reads {spec.kind} features of size {spec.feature_dim}; {spec.encoder} gives {dim}")


def _takes_precision(name: str) -> bool:
    """Does the encoder's factory take a precision? (Functionals such as eGeMAPS have none.)"""
    from polyemo.encoders import ENCODERS

    try:
        factory = ENCODERS.get(name)
    except KeyError:
        return True  # a transformers model by path or hub id
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "precision" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def load_encoder(bundle: Bundle, precision: str | None = None) -> Encoder:
    """The bundle's encoder at ``precision`` (default ``auto``: bf16 where the hardware
    computes it natively, else fp32), whatever precision the head was trained on."""
    spec = bundle.config.features
    if spec.finetune is not None:  # a fine-tuned encoder: the pretrained weights + the bundle's changed tensors
        return load_finetuned(bundle, precision)
    try:
        from polyemo.encoders import get_encoder
    except ImportError as exc:
        raise BundleError(bundle.path, "config.json", f"cannot import the encoders to load {spec.encoder!r}: {exc}") from exc
    try:
        if _takes_precision(spec.encoder):
            encoder = get_encoder(spec.encoder, precision=precision or "auto")
        elif precision not in (None, "auto"):
            raise ValueError(f"{spec.encoder} has no precision setting (asked for {precision})")
        else:
            encoder = get_encoder(spec.encoder)
    except KeyError as exc:
        raise BundleError(bundle.path, "config.json", f"unknown encoder {spec.encoder!r}: {exc.args[0] if exc.args else exc}") from exc
    except Exception as exc:  # missing weights, bad precision...
        raise BundleError(bundle.path, "config.json", f"cannot load encoder {spec.encoder!r} ({type(exc).__name__}: {exc})") from exc
    return encoder


def load_finetuned(bundle: Bundle, precision: str | None = None) -> Encoder:
    spec = bundle.config.features
    try:
        from polyemo.train.finetuning.deploy import FinetunedEncoder

        return FinetunedEncoder(bundle.path / spec.finetune["weights"], spec.finetune, spec.identity,
                                None if precision == "auto" else precision)
    except Exception as exc:  # missing base weights, peft not installed, tensors that do not fit...
        raise BundleError(bundle.path, spec.finetune.get("weights"),
                          f"cannot load the fine-tuned encoder {spec.encoder!r} ({type(exc).__name__}: {exc})") from exc
