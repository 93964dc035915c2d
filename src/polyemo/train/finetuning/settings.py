"""The fine-tuning settings: the ``finetune`` head's params, validated.

Everything an experiment file says about fine-tuning besides the plain training numbers
(``training.lr`` is the encoder's peak learning rate, ``epochs``, ``batch_size``,
``grad_accum``, ``warmup_ratio``, ``max_grad_norm``, ``weight_decay``, ``sampling``,
``selection_metric``, ``seed``, ``device`` are read from :class:`polyemo.train.TrainConfig`)::

    head:
      name: finetune
      params:
        encoder: whisper-base        # filled in from encoder.name when absent
        layer: -1                    # hidden state fed to the head (0 = input embedding), or "weighted"
        dropout: 0.1
        method: full                 # full | lora
        freeze_frontend: false       # the CNN / conv stem (and Whisper's mel convolutions)
        freeze_blocks: 0             # also the first N transformer blocks
        lora: {rank: 8, alpha: 16, dropout: 0.0, targets: [q_proj, v_proj]}
        head_lr: 0.001
        layer_decay: 1.0             # block i's lr = lr * layer_decay ** (blocks - i)
        gradient_checkpointing: false
        precision: auto              # bf16 autocast only where the device computes it natively
        crop: {train: fixed, eval: fixed, seconds: 3.5}   # train: fixed | random | whole; eval: fixed | whole
        augment: {speed: null, gain_db: null, noise_snr_db: null, p: 0.5}
        bucket: true                 # length-bucketed batches
        standardise: false           # pooled state standardised per dimension (training clips' statistics)
        processes: 1                 # DDP processes (gloo on CPU); POLYEMO_NPROC overrides
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    #: module names to adapt (peft's target_modules); attention projections by default
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])


class CropSettings(_Strict):
    """How clips become model inputs. ``fixed``: the first ``seconds`` (shorter clips
    zero-padded to exactly that length, the seed system's 3.5 s); ``random``: a random
    ``seconds`` window each time a clip is drawn (shorter clips whole); ``whole``: the clip
    as it is (at most ``max_seconds``)."""

    train: Literal["fixed", "random", "whole"] = "fixed"
    eval: Literal["fixed", "whole"] = "fixed"
    seconds: float = Field(3.5, gt=0)
    max_seconds: float = Field(30.0, gt=0)


class AugmentSettings(_Strict):
    """Training-only augmentation, each applied with probability ``p`` per drawn clip."""

    speed: tuple[float, float] | None = None  # resampling factor range, e.g. [0.9, 1.1]
    gain_db: float | None = Field(None, gt=0)  # uniform in [-gain_db, +gain_db]
    noise_snr_db: tuple[float, float] | None = None  # white noise at an SNR in this range
    p: float = Field(0.5, ge=0, le=1)

    @property
    def active(self) -> bool:
        return self.speed is not None or self.gain_db is not None or self.noise_snr_db is not None


class FinetuneSettings(_Strict):
    encoder: str
    #: encoder options of the frozen-feature encoder (kept for the identity; precision below)
    encoder_options: dict[str, Any] = Field(default_factory=dict)
    layer: int | Literal["weighted"] = -1
    dropout: float = Field(0.1, ge=0, lt=1)
    method: Literal["full", "lora"] = "full"
    freeze_frontend: bool = False
    freeze_blocks: int = Field(0, ge=0)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    head_lr: float | None = Field(1e-3, gt=0)
    layer_decay: float = Field(1.0, gt=0, le=1)
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    crop: CropSettings = Field(default_factory=CropSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    bucket: bool = True
    #: standardise the pooled hidden state per dimension with its mean and standard deviation
    #: over training clips under the PRETRAINED encoder (fixed before the first step, as a frozen
    #: probe's global normalisation): Whisper's intermediate residual stream is not normalised
    #: (a few dimensions carry offsets ~30x the between-clip spread), which a linear head on
    #: raw values learns slowly; the last hidden state passes Whisper's final layer norm
    standardise: bool = False
    #: training clips (evenly spaced, at most this many) the statistics are computed on
    standardise_clips: int = Field(512, ge=2)
    processes: int = Field(1, ge=1)
    #: keep the frozen prefix's (front-end + frozen blocks) outputs per clip in memory when
    #: they cannot change between epochs (fixed crop, no augmentation): a large CPU saving
    cache_frozen: bool = True

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, value: str) -> str:
        if not value:
            raise ValueError("name the encoder to fine-tune (encoder.name or head.params.encoder)")
        return value

    @model_validator(mode="after")
    def _check(self) -> FinetuneSettings:
        if self.method == "lora" and self.freeze_blocks:
            raise ValueError("freeze_blocks applies to full fine-tuning; LoRA trains adapters only")
        return self

    @classmethod
    def of(cls, params: dict[str, Any]) -> FinetuneSettings:
        return cls(**params)

    @property
    def layer_mode(self) -> Literal["weighted"] | int:
        return self.layer

    def frozen_prefix_cacheable(self, training: bool) -> bool:
        """Whether the frozen part's outputs of a clip are the same every time it is drawn."""
        if not self.cache_frozen or self.method == "lora" or not (self.freeze_frontend or self.freeze_blocks):
            return False
        if training and (self.crop.train == "random" or self.augment.active):
            return False
        return True
