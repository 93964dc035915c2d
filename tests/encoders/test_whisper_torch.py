"""polyemo's plain-torch Whisper front end and encoder compute what transformers computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyemo.encoders import get_encoder
from polyemo.encoders.whisper_torch import LogMel, slaney_mel_filters


def test_mel_filters_equal_transformers():
    from transformers.audio_utils import mel_filter_bank

    for n_mels in (80, 128):
        theirs = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=8000.0,
                                 sampling_rate=16_000, norm="slaney", mel_scale="slaney")
        np.testing.assert_allclose(slaney_mel_filters(n_mels), theirs, rtol=1e-12, atol=1e-15)


def test_log_mel_equals_the_feature_extractor(speech):
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=80)
    ours = LogMel(80)
    for wave in speech[:4]:
        wave = wave[: wave.size // 320 * 320]
        theirs = extractor(wave, sampling_rate=16_000, padding="longest", return_tensors="np")["input_features"][0]
        np.testing.assert_array_equal(ours(wave), theirs)
        padded = extractor(wave, sampling_rate=16_000, padding="max_length", return_tensors="np")["input_features"][0]
        np.testing.assert_array_equal(ours.padded(wave), padded)


def _transformers_states(folder, mels):
    from transformers import WhisperModel

    encoder = WhisperModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                           attn_implementation="sdpa").get_encoder().eval()
    with torch.inference_mode():
        return encoder(torch.from_numpy(np.stack(mels)), output_hidden_states=True).hidden_states


def test_encoder_equals_transformers_on_a_tiny_random_model(tiny_models, short_speech):
    ours = get_encoder(str(tiny_models["whisper"]), trim=False)
    assert ours._encoder_module is None  # nothing loaded before the first forward
    mels = [ours.log_mel.padded(w) for w in short_speech[:2]]
    theirs = _transformers_states(tiny_models["whisper"], mels)
    with torch.inference_mode():
        mine = ours._run_trimmed(mels)
    assert len(mine) == len(theirs) == 3
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_encoder_equals_transformers_on_whisper_base(speech):
    ours = get_encoder("whisper-base", trim=False, precision="fp32")
    mels = [ours.log_mel.padded(w) for w in speech[:2]]
    theirs = _transformers_states(ours.resolved.path, mels)
    with torch.inference_mode():
        mine = ours._run_trimmed(mels)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_no_weights_load_when_every_feature_is_cached(tiny_models, prepared_manifest, tmp_path):
    from polyemo.cache import features

    manifest = prepared_manifest("emodb").sort_values("utt_id").iloc[:3]
    first = get_encoder(str(tiny_models["whisper"]))
    features(manifest, first, cache_dir=tmp_path, progress=False)
    assert first._encoder_module is not None
    second = get_encoder(str(tiny_models["whisper"]))
    again = features(manifest, second, cache_dir=tmp_path, progress=False)
    assert again.reused == 3 and second._encoder_module is None  # answered from the cache alone
