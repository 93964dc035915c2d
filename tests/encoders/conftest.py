"""Fixtures for the encoder tests: tiny random transformers models on disk, real speech clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

TINY_CONV = {"conv_dim": (32,) * 7, "conv_stride": (5, 2, 2, 2, 2, 2, 2), "conv_kernel": (10, 3, 3, 3, 3, 2, 2)}
TINY_SSL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **TINY_CONV)


def _tiny_configs() -> dict:
    from transformers import (
        Data2VecAudioConfig,
        HubertConfig,
        Wav2Vec2Config,
        WavLMConfig,
        WhisperConfig,
    )

    return {
        # group-norm front ends (base-size convention): no attention mask, no input normalisation
        "wavlm": WavLMConfig(feat_extract_norm="group", num_buckets=32, max_bucket_distance=80, **TINY_SSL),
        "hubert": HubertConfig(feat_extract_norm="group", **TINY_SSL),
        "wavlm-layer": WavLMConfig(feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=32,
                                   max_bucket_distance=80, **TINY_SSL),
        # layer-norm front ends (large-size convention): padded batches with attention masks
        "wav2vec2": Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, **TINY_SSL),
        "data2vec-audio": Data2VecAudioConfig(**{**TINY_SSL, "num_conv_pos_embeddings": 3}, conv_pos_kernel_size=5),
        "whisper": WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=64,
                                 num_mel_bins=80, max_source_positions=1500, max_target_positions=32,
                                 pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2),
    }


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the Hugging Face hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Random-weight models saved with save_pretrained; loaded back by local path."""
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    root = tmp_path_factory.mktemp("tiny_models")
    paths = {}
    for name, config in _tiny_configs().items():
        torch.manual_seed(0)
        model = AutoModel.from_config(config)
        model.save_pretrained(root / name)
        paths[name] = root / name
    # one model with its own preprocessor config (AutoFeatureExtractor path)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(paths["wav2vec2"])
    return paths


@pytest.fixture(scope="session")
def speech(shared_corpora) -> list[np.ndarray]:
    """Real speech of different lengths and languages (German, English, Italian, Urdu)."""
    from polyemo.audio import load_audio

    picks = [("emodb", 0), ("ravdess", 3), ("emovo", 7), ("urdu", 2), ("emodb", 11), ("savee", 5)]
    waves = []
    for corpus, index in picks:
        files = sorted((shared_corpora / corpus / "audio").glob("*.flac"))
        waves.append(load_audio(files[index]))
    return waves



@pytest.fixture(scope="session")
def short_speech(speech) -> list[np.ndarray]:
    """Real speech cut to four different short lengths (1.0-2.2 s), for the tiny models."""
    return [wave[: int(seconds * 16_000)] for wave, seconds in zip(speech, (1.0, 1.45, 1.8, 2.2))]
