"""A fine-tuned encoder as an :class:`polyemo.encoders.base.Encoder`, for bundles and prediction.

A bundle of a fine-tuned model keeps the pretrained encoder's identity (name, weights hash:
the base weights are loaded offline by name and checked), the tensors fine-tuning changed
(``encoder.safetensors``: LoRA adapters or the unfrozen encoder weights; listed with its
SHA-256 in the bundle manifest) and an ordinary pooled ``linear`` head. The encoder below
rebuilds the trainable model from the bundle's settings, loads those tensors and returns
the pooled hidden state(s) the head reads, computed on the evaluation crop of training
(the fixed 3.5 s cut, or the whole clip), so prediction sees what validation saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyemo.encoders.base import Encoder, EncoderIdentity, FrameFeatures
from polyemo.train.finetuning.settings import FinetuneSettings

ENCODER_FILE = "encoder.safetensors"


def encoder_tensors(model) -> dict[str, torch.Tensor]:
    """The trained tensors of a FinetuneModel that belong to the encoder (not the head), with
    the fixed standardisation of the pooled state (the encoder's output the head reads)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.trainable_state().items()
            if k.startswith("encoder.") or k.startswith("pool_")}


def finetune_spec(model, settings: FinetuneSettings) -> dict[str, Any]:
    """What a bundle's ``features.finetune`` records (the settings that rebuild the model)."""
    return {"settings": settings.model_dump(mode="json"), "weights": ENCODER_FILE,
            "tensors": sorted(encoder_tensors(model)), "num_classes": int(model.head.head.num_classes)}


class FinetunedEncoder(Encoder):
    """The fine-tuned encoder of a bundle: ``pooled(waves)`` -> (N, layers read, hidden)."""

    def __init__(self, weights: str | Path, spec: dict[str, Any], base_identity: dict[str, Any],
                 precision: str | None = None) -> None:
        import safetensors.torch

        from polyemo.encoders.hf import weights_hash
        from polyemo.encoders.precision import resolve_precision
        from polyemo.train.finetuning.loop import build_model

        self.settings = FinetuneSettings(**spec["settings"])
        self.precision = resolve_precision(precision or self.settings.precision, "cpu")
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the head built here is never used; keep the caller's RNG
            self.model = build_model(self.settings, int(spec["num_classes"]))
        state = safetensors.torch.load_file(str(weights))
        if sorted(state) != sorted(spec["tensors"]):
            raise ValueError(f"{weights}: holds other tensors than the bundle config lists")
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{weights}: tensors {unexpected[:3]} do not belong to this encoder")
        self.model.eval()
        from polyemo.encoders.hf import resolve_model

        self.resolved = resolve_model(self.settings.encoder)
        self._identity = EncoderIdentity(self.resolved.name, weights_hash(self.resolved.path), self.precision,
                                         dict(base_identity.get("options") or {}))
        self.num_layers = self.model.num_pooled_layers
        self.pooled_dim = self.frame_dim = self.model.encoder.hidden_size
        self.has_frames = False

    @property
    def identity(self) -> EncoderIdentity:
        return self._identity

    def frames(self, waves: list[np.ndarray]) -> list[FrameFeatures]:
        raise NotImplementedError("a fine-tuned encoder gives the pooled hidden state its head reads")

    @torch.no_grad()
    def pooled(self, waves: list[np.ndarray]) -> np.ndarray:
        from polyemo.train.finetuning.audio import eval_input
        from polyemo.train.finetuning.loop import autocast_for

        inputs = [eval_input(np.asarray(w, dtype=np.float32), self.settings.crop) for w in waves]
        settings = self.settings.model_copy(update={"precision": self.precision})
        with autocast_for(settings, torch.device("cpu")):
            pooled = self.model.pooled(self.model.encoder.prepare(inputs))
        return pooled.float().numpy()
