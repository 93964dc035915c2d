"""Encoders: 16 kHz waveforms in, per-layer frame and pooled features out.

One module per family registers factories in ``ENCODERS``:

- ``opensmile_features``: ``egemaps`` (eGeMAPSv02 functionals, 88-d), ``compare``
  (ComParE_2016 functionals, 6373-d), ``egemaps-lld`` (frame-level eGeMAPS LLDs).
- ``ssl``: WavLM, HuBERT, wav2vec 2.0, data2vec-audio under short aliases
  (``wavlm-base-plus``, ...).
- ``whisper``: ``whisper-base`` and ``whisper-tiny.en`` (packaged offline OpenAI weights),
  other Whisper sizes from the Hugging Face cache.

:func:`get_encoder` also takes any transformers speech encoder by hub id or local path; the
resolution order is documented in :mod:`polyemo.encoders.hf`.
"""

from __future__ import annotations

from collections.abc import Callable

from polyemo.encoders.base import Encoder, EncoderIdentity, FrameFeatures, pool_mean_std
from polyemo.registry import Registry

ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder", __name__)

__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderIdentity",
    "FrameFeatures",
    "get_encoder",
    "pool_mean_std",
    "transformers_encoder",
]


def transformers_encoder(name: str, **options) -> Encoder:
    """A transformers speech encoder by hub id, alias or local path (Whisper or wav2vec2 family)."""
    import json

    from polyemo.encoders.hf import resolve_model
    from polyemo.encoders.ssl import SSLEncoder
    from polyemo.encoders.whisper import WhisperSpeechEncoder

    folder = resolve_model(name).path
    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config}: unreadable model config ({exc})") from exc
    if model_type == "whisper":
        return WhisperSpeechEncoder(name, **options)
    return SSLEncoder(name, **options)


def get_encoder(name: str, **options) -> Encoder:
    """The encoder registered as ``name``, else a transformers encoder by hub id or path.

    ``options`` go to the encoder, e.g. ``precision="bf16"``, ``window_seconds=20``,
    ``trim=False`` (Whisper).
    """
    from pathlib import Path

    if not Path(name).expanduser().exists():  # a model folder is never a registry name
        try:
            factory = ENCODERS.get(name)
        except KeyError:
            pass
        else:
            return factory(**options)
    return transformers_encoder(name, **options)
