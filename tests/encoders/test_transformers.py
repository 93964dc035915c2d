"""Transformers encoders on tiny random models loaded by local path: shapes, masks, windows."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.encoders import get_encoder
from polyemo.encoders.hf import ModelNotFoundError, resolve_model, window_bounds

FAMILIES = ["wavlm", "wavlm-layer", "hubert", "wav2vec2", "data2vec-audio", "whisper"]


@pytest.fixture(scope="module")
def encoders(tiny_models):
    return {name: get_encoder(str(path)) for name, path in tiny_models.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_layers_and_identity(encoders, tiny_models, short_speech, family):
    encoder = encoders[family]
    assert encoder.resolved.source == "local"
    assert encoder.num_layers == 3  # embedding output + 2 layers
    assert (encoder.frame_dim, encoder.pooled_dim) == (32, 64)
    waves = short_speech[:2]
    frames = encoder.frames(waves)
    for wave, feats in zip(waves, frames):
        # 20 ms frames; the conv stacks lose at most one frame at the end
        assert feats.layers.shape[0] == 3 and feats.layers.shape[2] == 32
        assert abs(feats.layers.shape[1] - wave.size / 320) <= 1.5
        assert feats.layers.dtype == np.float32 and np.isfinite(feats.layers).all()
        assert feats.frame_rate == pytest.approx(50.0)
    pooled = encoder.pooled(waves)
    assert pooled.shape == (2, 3, 64) and np.isfinite(pooled).all()
    np.testing.assert_allclose(pooled, np.stack([encoder.pool(f.layers) for f in frames]), rtol=1e-5, atol=1e-5)
    identity = encoder.identity
    assert identity.name == f"local:{tiny_models[family].name}"
    assert identity.options["model_type"] == family.removesuffix("-layer")
    assert len(identity.weights_hash) == 16 and identity.key() == encoder.identity.key()


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_never_changes_an_utterance(encoders, short_speech, family):
    encoder = encoders[family]
    waves = short_speech[1:]  # three different lengths in one ragged batch
    batched = encoder.frames(waves)
    for wave, feats in zip(waves, batched):
        alone = encoder.frames([wave])[0].layers
        assert feats.layers.shape == alone.shape
        np.testing.assert_allclose(feats.layers, alone, rtol=1e-4, atol=1e-4 * np.abs(alone).max())


def test_long_audio_is_cut_into_windows_of_at_most_30s(encoders, speech):
    encoder = encoders["whisper"]
    long = np.concatenate(speech * 4)[: 16_000 * 41]  # 41 s -> two windows of 20.5 s
    bounds = window_bounds(long.size, 30 * 16_000)
    assert len(bounds) == 2 and all(end - start <= 30 * 16_000 for start, end in bounds)
    _check_windows(encoder, long, bounds)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_windows_concatenate_frame_features(tiny_models, speech, family):
    encoder = get_encoder(str(tiny_models[family]), window_seconds=1.5)
    wave = speech[1][: 16_000 * 4]  # 4 s -> three windows of ~1.33 s
    bounds = window_bounds(wave.size, 24_000)
    assert len(bounds) == 3
    _check_windows(encoder, wave, bounds)


def _check_windows(encoder, wave, bounds):
    whole = encoder.frames([wave])[0].layers
    parts = [encoder.frames([wave[start:end]])[0].layers for start, end in bounds]
    expected = np.concatenate(parts, axis=1)
    assert whole.shape == expected.shape
    np.testing.assert_allclose(whole, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_window_bounds_are_aligned_and_even():
    assert window_bounds(1000, 480_000) == [(0, 1000)]
    bounds = window_bounds(480_001, 480_000)
    assert len(bounds) == 2 and bounds[0][0] == 0 and bounds[-1][1] == 480_001
    assert all(start % 320 == 0 for start, _ in bounds)
    sizes = [end - start for start, end in window_bounds(100 * 16_000, 480_000)]
    assert len(sizes) == 4 and max(sizes) <= 480_000 and min(sizes) > 0.9 * max(sizes)


def test_group_norm_models_batch_only_equal_lengths(encoders):
    assert encoders["wavlm"].group_norm and encoders["hubert"].group_norm
    assert not encoders["wav2vec2"].group_norm
    assert encoders["wavlm"]._batches([5, 7, 5]) == [[0, 2], [1]]
    assert encoders["data2vec-audio"]._batches([5, 7, 5]) == [[0, 2], [1]]
    assert encoders["wav2vec2"]._batches([5, 7, 5]) == [[0, 1, 2]]
    assert encoders["wavlm-layer"]._batches([5, 7, 5]) == [[0, 1, 2]]
    # normalisation: the model's own feature extractor, else the family convention
    assert encoders["wav2vec2"].do_normalize and encoders["data2vec-audio"].do_normalize
    assert not encoders["wavlm"].do_normalize


def test_whisper_trimmed_matches_padded_on_random_weights(tiny_models, short_speech):
    trimmed = get_encoder(str(tiny_models["whisper"])).pooled(short_speech[:2])
    padded = get_encoder(str(tiny_models["whisper"]), trim=False).pooled(short_speech[:2])
    cos = (trimmed * padded).sum(-1) / np.linalg.norm(trimmed, axis=-1) / np.linalg.norm(padded, axis=-1)
    assert cos.min() > 0.95, cos


def test_bad_input_and_options_are_clear_errors(encoders, tiny_models):
    with pytest.raises(ValueError, match="wave 1"):
        encoders["hubert"].pooled([np.zeros(16_000, np.float32), np.zeros((2, 100), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        encoders["whisper"].pooled([np.full(16_000, np.nan, np.float32)])
    with pytest.raises(ValueError, match="receptive field"):
        encoders["wavlm"].pooled([np.zeros(100, np.float32)])
    with pytest.raises(ValueError, match="precision"):
        get_encoder(str(tiny_models["hubert"]), precision="fp8")
    with pytest.raises(ValueError, match="window_seconds"):
        get_encoder(str(tiny_models["hubert"]), window_seconds=45)


def test_resolution_never_reaches_the_hub_offline(tmp_path):
    with pytest.raises(ModelNotFoundError, match="offline"):
        resolve_model("someone/not-a-cached-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError):
        get_encoder("no-such-encoder-name")
