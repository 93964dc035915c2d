import numpy as np
import pytest
import soundfile as sf

from polyemo.audio import (
    SAMPLE_RATE,
    AudioError,
    content_hash,
    fix_length,
    load_audio,
    pcm_hash,
)


def tone(seconds=1.0, rate=SAMPLE_RATE, freq=440.0, level=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def correlation(a, b):
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize(("suffix", "lossless"), [(".wav", True), (".flac", True), (".ogg", False), (".mp3", False)])
def test_formats_decode_to_mono_16k(tmp_path, suffix, lossless):
    if suffix[1:].upper() not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {suffix}")
    signal = tone(1.0)
    path = tmp_path / f"tone{suffix}"
    sf.write(path, signal, SAMPLE_RATE)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    if lossless:
        assert len(wave) == SAMPLE_RATE
        np.testing.assert_allclose(wave, signal, atol=1e-4)
    else:
        # lossy codecs add encoder delay/padding: same length within 0.1 s, same tone
        assert abs(len(wave) - SAMPLE_RATE) < 0.1 * SAMPLE_RATE
        spectrum = np.abs(np.fft.rfft(wave))
        assert np.argmax(spectrum) * SAMPLE_RATE / len(wave) == pytest.approx(440, abs=5)


def test_stereo_is_averaged(tmp_path):
    left = tone(0.5)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), 0.75 * left, atol=1e-6)


def test_resampling_44k1_to_16k(tmp_path):
    path = tmp_path / "cd.wav"
    sf.write(path, tone(2.0, rate=44_100), 44_100)
    wave = load_audio(path)
    assert abs(len(wave) - 2 * SAMPLE_RATE) <= 1
    assert correlation(wave, tone(2.0)) > 0.99


def test_array_input_at_another_rate():
    wave = load_audio(tone(1.0, rate=8_000), 8_000)
    assert abs(len(wave) - SAMPLE_RATE) <= 1


def test_crop_and_pad():
    wave = np.arange(SAMPLE_RATE * 2, dtype=np.float32)
    assert len(fix_length(wave, 1.0)) == SAMPLE_RATE and fix_length(wave, 1.0)[0] == 0
    centre = fix_length(wave, 1.0, mode="center")
    assert centre[0] == SAMPLE_RATE // 2
    padded = fix_length(wave[:100], 0.5)
    assert len(padded) == SAMPLE_RATE // 2 and padded[99] == 99 and not padded[100:].any()
    assert len(load_audio(tone(3.0), SAMPLE_RATE, seconds=1.5)) == 1.5 * SAMPLE_RATE


def _empty_file(path):
    path.write_bytes(b"")


def _no_samples(path):
    sf.write(path, np.zeros((0,), np.float32), SAMPLE_RATE)


def _silent(path):
    sf.write(path, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)


def _too_short(path):
    sf.write(path, tone(0.05), SAMPLE_RATE)


def _corrupt(path):
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wave file" + bytes(range(256)))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_empty_file, "empty file"),
        (_no_samples, "no audio samples"),
        (_silent, "all-silent"),
        (_too_short, "too short"),
        (_corrupt, "cannot decode"),
    ],
)
def test_bad_audio_raises_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=reason) as error:
        load_audio(path)
    assert error.value.path == str(path) and str(path) in str(error.value)


def test_missing_file_and_nan_samples(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "nope.flac")
    signal = tone(0.5)
    signal[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        load_audio(signal, SAMPLE_RATE)


def test_same_audio_as_wav_and_flac_has_one_content_hash(tmp_path):
    # The same 16-bit samples (libsndfile quantises floats differently per format, so
    # write integers: the files then hold one recording).
    signal = tone(1.0) + np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
    pcm = np.round(signal * 32767).astype(np.int16)
    sf.write(tmp_path / "a.wav", pcm, SAMPLE_RATE, subtype="PCM_16")
    sf.write(tmp_path / "b.flac", pcm, SAMPLE_RATE, subtype="PCM_16")
    assert (tmp_path / "a.wav").read_bytes() != (tmp_path / "b.flac").read_bytes()
    assert content_hash(tmp_path / "a.wav") == content_hash(tmp_path / "b.flac")
    pcm[100] += 1  # one sample differs: another recording
    sf.write(tmp_path / "c.flac", pcm, SAMPLE_RATE, subtype="PCM_16")
    assert content_hash(tmp_path / "c.flac") != content_hash(tmp_path / "a.wav")
    assert len(pcm_hash(signal)) == 32
