"""Bounded decoding (issue 15): header first, limits before any sample is decoded, block decoding
whose memory is the 16 kHz output, and exactly the samples of the old whole-file decoder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import audio_cases as cases  # noqa: E402

from polyemo.audio import (  # noqa: E402
    BLOCK_FRAMES,
    AudioError,
    AudioLimitError,
    AudioLimits,
    content_hash,
    load_audio,
    probe,
    read_audio,
)


def whole_file_reference(path) -> np.ndarray:
    """The loader before issue 15: the whole file decoded, averaged, resampled in one call."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != 16_000:
        data = soxr.resample(data, rate, 16_000, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)


@pytest.fixture(scope="session")
def click_bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "click-bomb-600s-8ch-192k.flac"
    if not path.exists():
        cases.write_click_bomb(path)
    return path


def test_real_corpora_decode_to_exactly_the_old_samples(shared_corpora):
    # Content hashes (and so the feature cache) must not change: FLAC of every corpus, ASED's Opus.
    paths = []
    for corpus in ("emodb", "ravdess", "savee", "emovo", "urdu", "baved", "ased"):
        paths += sorted((shared_corpora / corpus / "audio").iterdir())[:4]
    for path in paths:
        new, old = read_audio(path), whole_file_reference(path)
        assert new.shape == old.shape and np.array_equal(new, old), path


@pytest.mark.parametrize(("rate", "channels", "frames", "fmt"), [
    (44_100, 2, 3 * 44_100, "WAV"),
    (48_000, 3, 2 * BLOCK_FRAMES, "FLAC"),   # an exact multiple of the block: the resampler's flush
    (48_000, 1, BLOCK_FRAMES * 5 + 7, "FLAC"),
    (22_050, 8, 40_000, "WAV"),
    (192_000, 2, 3 * BLOCK_FRAMES + 1, "FLAC"),
    (8_000, 1, 1000, "WAV"),
    (44_100, 2, 100_000, "OGG"),
    (44_100, 1, 150_000, "MP3"),             # libsndfile's MP3 cannot be read in blocks: read whole
])
def test_block_decoding_equals_whole_file_decoding(tmp_path, rate, channels, frames, fmt):
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile without {fmt}")
    rng = np.random.default_rng(frames)
    wave = (0.2 * rng.standard_normal((frames, channels))).astype(np.float32)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, wave, rate, format=fmt)
    new, old = read_audio(path), whole_file_reference(path)
    assert new.shape == old.shape and np.array_equal(new, old)
    assert content_hash(path) == content_hash(path)  # deterministic


def test_bytes_paths_and_streams_give_the_same_samples(tmp_path):
    path = tmp_path / "t.flac"
    sf.write(path, cases.tone(1.3, 44_100, channels=2), 44_100)
    from_path = read_audio(path)
    np.testing.assert_array_equal(read_audio(path.read_bytes()), from_path)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(read_audio(handle), from_path)


def test_the_bomb_is_refused_from_its_header_before_decoding(click_bomb, monkeypatch):
    info = probe(click_bomb)
    assert (info.frames, info.sample_rate, info.channels) == (600 * 192_000, 192_000, 8)
    assert click_bomb.stat().st_size < 2_000_000 and info.decoded_bytes == 600 * 192_000 * 8 * 4
    # the server's limits (600 s, 192 kHz and 8 channels allowed; 1 GiB of decoded PCM)
    limits = AudioLimits(max_seconds=600, max_decoded_bytes=1024**3)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a sample before checking the limits")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    started = time.perf_counter()
    with pytest.raises(AudioLimitError, match="click-bomb.*decodes to 3,686,400,000 bytes of PCM") as caught:
        read_audio(click_bomb, limits=limits)
    assert caught.value.code == "decoded_too_large" and time.perf_counter() - started < 1.0
    for limits, code in [(AudioLimits(max_seconds=599), "too_long"), (AudioLimits(max_channels=4), "channels"),
                         (AudioLimits(max_sample_rate=96_000), "sample_rate")]:
        with pytest.raises(AudioLimitError) as caught:
            read_audio(click_bomb, limits=limits)
        assert caught.value.code == code


PEAK_SCRIPT = """
import json, resource, sys
from polyemo.audio import AudioLimits, read_audio
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wave = read_audio(sys.argv[1], limits=AudioLimits(max_seconds=None, max_decoded_bytes=None))
print(json.dumps({"samples": int(wave.size), "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "before": before, "max": float(abs(wave).max())}))
"""


@pytest.mark.slow
def test_the_bomb_decoded_in_blocks_stays_within_memory(click_bomb):
    # With the limits lifted it decodes (600 s at 16 kHz = 38 MB of output), in blocks: the old
    # whole-file decoder peaked at 4.1 GB RSS on this file (measured), the block decoder ~115 MB.
    result = json.loads(subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(click_bomb)], check=True,
                                       capture_output=True, text=True, timeout=300).stdout)
    assert result["samples"] == 600 * 16_000 and result["max"] > 0.1  # the clicks survived
    grown_mb = (result["peak"] - result["before"]) / 1024
    assert grown_mb < 250, f"decoding grew RSS by {grown_mb:.0f} MB"


def test_limits_are_checked_on_what_is_decoded_too(tmp_path):
    # A header can understate: the output is bounded while decoding, whatever the header said.
    path = tmp_path / "ten.flac"
    sf.write(path, cases.tone(10.0), 16_000)
    with pytest.raises(AudioLimitError, match="exceeds the limit of 4 s") as caught:
        read_audio(path, limits=AudioLimits(max_seconds=4))
    assert caught.value.code == "too_long"
    with pytest.raises(AudioLimitError, match="bytes of PCM"):
        read_audio(path, limits=AudioLimits(max_decoded_bytes=100_000))


def test_a_passed_deadline_stops_decoding(tmp_path):
    path = tmp_path / "t.wav"
    sf.write(path, cases.tone(1.0), 16_000)
    with pytest.raises(AudioLimitError, match="longer than the time allowed") as caught:
        read_audio(path, deadline=time.monotonic() - 1)
    assert caught.value.code == "timeout"


@pytest.mark.parametrize("name", sorted(cases.SEED_EXPECTED))
def test_seed_corpus_of_bad_files(name):
    code, seconds = cases.SEED_EXPECTED[name]
    path = cases.SEED_DIR / name
    assert path.exists(), f"{path}: run python tests/audio_cases.py to write the seed corpus"
    if code == "ok":
        wave = load_audio(path)
        assert wave.dtype == np.float32 and np.isfinite(wave).all()
        assert wave.size / 16_000 == pytest.approx(seconds, abs=0.01)
    else:
        with pytest.raises(AudioError) as caught:
            load_audio(path)
        assert caught.value.code == code and str(caught.value).startswith(f"{path}: ")
        assert "0x" not in str(caught.value)  # no object addresses from soundfile's wrapper


def test_seed_corpus_is_small():
    assert sum(p.stat().st_size for p in cases.SEED_DIR.iterdir()) < 1_000_000
    assert set(p.name for p in cases.SEED_DIR.iterdir()) == set(cases.SEED_EXPECTED)
