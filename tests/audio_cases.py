"""Bad and hostile audio for the loader, fuzz and server tests.

``write_seed_corpus`` writes the small files kept in ``tests/data/bad/`` (each < 40 kB; the
expected outcome of each is in ``SEED_EXPECTED``); ``write_click_bomb`` writes the
decompression bomb of issue 15 (600 s, 8 channels, 192 kHz, a click every 4 s: a 1.7 MB FLAC
that decodes to 3.7 GB of float32) at test time, as it is too big to keep in the repository.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

SEED_DIR = Path(__file__).resolve().parent / "data" / "bad"

#: file -> (expected AudioError code, or "ok" with the expected duration in seconds)
SEED_EXPECTED: dict[str, tuple[str, float | None]] = {
    "empty.wav": ("empty", None),
    "truncated_header.wav": ("undecodable", None),
    "garbage.wav": ("undecodable", None),
    "text.mp3": ("undecodable", None),
    "nan.wav": ("non_finite", None),
    "inf.wav": ("non_finite", None),
    "huge_values.wav": ("out_of_range", None),
    "zero_frames.wav": ("empty", None),
    "silent.wav": ("silent", None),
    "too_short.wav": ("too_short", None),
    "rate_384k.wav": ("sample_rate", None),
    "channels_9.wav": ("channels", None),
    "channels_64.wav": ("channels", None),
    "unknown_length.flac": ("undecodable", None),  # libsndfile cannot read a FLAC of unknown length
    "truncated_data.flac": ("undecodable", None),  # libFLAC loses sync where the file ends
    "header_says_longer.wav": ("ok", 0.5),
    "flac_named.wav": ("ok", 0.5),
    "ünïcødé 音声 ..%2F.wav": ("ok", 0.5),
    "rate_8hz.wav": ("ok", 2.0),
}


def tone(seconds: float, rate: int = 16_000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.repeat(wave[:, None], channels, axis=1)


def encode(wave: np.ndarray, rate: int, format: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def wav_header(rate: int, channels: int, frames: int, bits: int = 16, data: bytes = b"") -> bytes:
    """A PCM WAV whose header says ``rate``, ``channels`` and ``frames`` (data may be shorter)."""
    block = channels * bits // 8
    size = frames * block
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", size) + data)


def unknown_length_flac(wave: np.ndarray, rate: int) -> bytes:
    """A FLAC whose STREAMINFO says 0 total samples (allowed: "unknown")."""
    data = bytearray(encode(wave, rate, "FLAC"))
    assert data[:4] == b"fLaC"
    info = 8  # "fLaC" + the metadata block header
    data[info + 13] &= 0xF0
    data[info + 14:info + 18] = b"\0\0\0\0"
    return bytes(data)


def seed_files() -> dict[str, bytes]:
    rng = np.random.default_rng(15)
    good = tone(0.5)
    flac = encode(tone(1.0), 16_000, "FLAC")
    nan = tone(0.5)
    nan[1234] = np.nan
    inf = tone(0.5)
    inf[999] = np.inf
    return {
        "empty.wav": b"",
        "truncated_header.wav": encode(good, 16_000)[:20],
        "garbage.wav": rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "text.mp3": b"ID3 this is not audio at all, only text pretending to be an mp3\n" * 20,
        "nan.wav": encode(nan, 16_000, "WAV", "FLOAT"),
        "inf.wav": encode(inf, 16_000, "WAV", "FLOAT"),
        "huge_values.wav": encode(tone(0.5) * np.float32(1e30), 16_000, "WAV", "FLOAT"),
        "zero_frames.wav": wav_header(16_000, 1, 0),
        "silent.wav": encode(np.zeros(16_000, dtype=np.float32), 16_000),
        "too_short.wav": encode(tone(0.03), 16_000),
        "rate_384k.wav": wav_header(384_000, 1, 3840, data=encode(tone(0.01, 384_000), 384_000)[44:]),
        "channels_9.wav": wav_header(16_000, 9, 1600, data=b"\x01\x00" * 9 * 1600),
        "channels_64.wav": wav_header(16_000, 64, 10, data=b"\x01\x00" * 64 * 10),
        "unknown_length.flac": unknown_length_flac(tone(1.0), 16_000),
        "truncated_data.flac": flac[: len(flac) // 2],
        "header_says_longer.wav": wav_header(16_000, 1, 16_000 * 3600, data=encode(good, 16_000)[44:]),
        "flac_named.wav": encode(good, 16_000, "FLAC"),
        "ünïcødé 音声 ..%2F.wav": encode(good, 16_000),
        "rate_8hz.wav": wav_header(8, 1, 16, data=(np.sin(np.arange(16)) * 8000).astype("<i2").tobytes()),
    }


def write_seed_corpus(folder: Path = SEED_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in seed_files().items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def write_click_bomb(path: Path, seconds: int = 600, channels: int = 8, rate: int = 192_000) -> Path:
    """The decompression bomb of issue 15: digital silence with a click every 4 s (1.7 MB as FLAC)."""
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as out:
        block = np.zeros((rate * 4, channels), dtype=np.int16)
        block[:48] = 20000
        for _ in range(seconds // 4):
            out.write(block)
    return path


if __name__ == "__main__":
    for written in write_seed_corpus():
        print(f"{written.stat().st_size:>7} {written.name}")
