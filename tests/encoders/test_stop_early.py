"""Stopping at the last layer needed: the same layers as a full run, and later blocks never run."""

from __future__ import annotations

import numpy as np
import pytest

from polyemo.encoders import get_encoder

FAMILIES = ["wavlm", "wavlm-layer", "hubert", "wav2vec2", "data2vec-audio", "whisper"]


@pytest.fixture(scope="module")
def encoders(tiny_models):
    return {name: get_encoder(str(path)) for name, path in tiny_models.items()}


def _blocks(encoder):
    return encoder.encoder.layers if hasattr(encoder, "encoder") else encoder.model.encoder.layers


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("last", [0, 1])
def test_truncated_run_gives_the_full_runs_layers_and_skips_later_blocks(encoders, short_speech, family, last):
    encoder = encoders[family]
    waves = short_speech[:3]  # ragged lengths: masks and padding take part
    full = encoder.frames(waves)
    calls = []
    handles = [block.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, block in enumerate(_blocks(encoder))]
    try:
        cut = encoder.frames_upto(waves, last)
    finally:
        for handle in handles:
            handle.remove()
    assert calls and max(calls) == last - 1 if last else not calls  # blocks after `last` never ran
    for a, b in zip(full, cut):
        assert b.layers.shape == (last + 1, *a.layers.shape[1:])
        np.testing.assert_allclose(b.layers, a.layers[: last + 1], rtol=0, atol=1e-6)
    pooled = encoder.pooled_upto(waves, last)
    np.testing.assert_allclose(pooled, encoder.pooled(waves)[:, : last + 1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
def test_last_layer_asked_means_a_full_run(encoders, short_speech, family):
    encoder = encoders[family]
    assert encoder.stops_early
    assert encoder.last_layer([0, 2]) is None and encoder.last_layer([1]) == 1 and encoder.last_layer(None) is None
    np.testing.assert_array_equal(encoder.pooled_upto(short_speech[:1], 2), encoder.pooled(short_speech[:1]))
    with pytest.raises(ValueError, match="out of range"):
        encoder.pooled_upto(short_speech[:1], 3)


def test_padded_whisper_stops_early_too(tiny_models, short_speech):
    encoder = get_encoder(str(tiny_models["whisper"]), trim=False)
    full, cut = encoder.frames(short_speech[:2]), encoder.frames_upto(short_speech[:2], 1)
    for a, b in zip(full, cut):
        np.testing.assert_allclose(b.layers, a.layers[:2], rtol=0, atol=1e-5)
