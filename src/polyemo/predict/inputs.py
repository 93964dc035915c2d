"""What to predict: files, folders, list tables, arrays and uploaded bytes -> :class:`AudioItem`.

Discovery (:func:`collect_inputs`) turns a file, a folder (searched recursively) or a list
(``.csv``/``.tsv``/``.parquet`` with a ``path`` column and optionally ``speaker`` or ``group``;
``.txt`` one path a line) into :class:`InputFile` rows with their normalisation groups.
:func:`audio_items` does the same for the arguments of ``Recogniser.predict`` (paths and
arrays), :func:`decode_upload` for bytes received by the server. Every error names the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from polyemo.audio import DEFAULT_LIMITS, AudioError, AudioLimits, check_usable, load_audio, read_audio

AudioInput = str | os.PathLike[str] | np.ndarray
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")
SpeakerNorm = Literal["per-recording", "per-folder", "column"]
LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")


@dataclass
class AudioItem:
    """One recording to predict: a file path, or a decoded 16 kHz mono ``wave``.

    ``group``: normalisation group (speaker, folder, recording); None -> the recording alone.
    ``segment``: True/False forces voice-activity segmentation; None decides by duration.
    """

    source: str
    wave: np.ndarray | None = None
    group: str | None = None
    segment: bool | None = None


@dataclass
class InputFile:
    path: str
    group: str | None = None


def audio_items(inputs: AudioInput | Sequence[AudioInput], sample_rate: int | None = None,
                speakers: str | Sequence[str | None] | None = None, segment: bool | None = None) -> list[AudioItem]:
    """Items for files and/or arrays (arrays at ``sample_rate``, default 16 kHz), one speaker name
    for all or one per input (``speaker:<name>`` groups; None: each recording alone)."""
    single = isinstance(inputs, (str, os.PathLike, np.ndarray))
    sources: list[AudioInput] = [inputs] if single else list(inputs)  # type: ignore[list-item]
    if isinstance(speakers, str) or speakers is None:
        groups: list[str | None] = [speakers] * len(sources)
    else:
        groups = list(speakers)
        if len(groups) != len(sources):
            raise ValueError(f"{len(groups)} speakers for {len(sources)} inputs")
    items = []
    for index, (source, group) in enumerate(zip(sources, groups)):
        if isinstance(source, np.ndarray):
            name = f"<array {index}>"
            wave = load_audio(source, sample_rate, check=False)
        else:
            name, wave = os.fspath(source), None
        items.append(AudioItem(name, wave, f"speaker:{group}" if group is not None else None, segment))
    return items


def item_wave(item: AudioItem) -> np.ndarray:
    """The item's 16 kHz mono waveform: decoded from its file, or its checked in-memory wave."""
    if item.wave is None:
        return load_audio(item.source)
    check_usable(item.wave, item.source)
    return item.wave


def collect_inputs(source: str | os.PathLike[str], speaker_norm: SpeakerNorm | None = None
                   ) -> tuple[list[InputFile], SpeakerNorm]:
    """The recordings named by ``source`` and their normalisation groups.

    ``source``: an audio file, a folder (searched recursively for audio files), or a list
    (``.csv``/``.tsv``/``.parquet`` with a ``path`` column and optionally ``speaker`` or
    ``group``; ``.txt`` one path a line; relative paths are relative to the list).
    ``speaker_norm``: ``per-recording`` (each file alone), ``per-folder`` (files of a folder
    form a group), ``column`` (the list's ``speaker``/``group`` column); default ``column`` for
    lists with such a column, else per-recording.
    """
    source = Path(source)
    column: list[str | None] | None = None
    if source.is_dir():
        paths = sorted(str(p) for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not paths:
            raise FileNotFoundError(f"{source}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
    elif source.suffix.lower() in LIST_SUFFIXES:
        paths, column = _read_list(source)
    elif source.exists():
        paths = [str(source)]
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")
    if speaker_norm is None:
        speaker_norm = "column" if column is not None else "per-recording"
    if speaker_norm == "column":
        if column is None:
            raise ValueError(f"{source}: --speaker-norm column needs a list (.csv/.tsv/.parquet) "
                             "with a 'speaker' (or 'group') column")
        groups = column
    elif speaker_norm == "per-folder":
        groups = [f"folder:{Path(p).parent}" for p in paths]
    elif speaker_norm == "per-recording":
        groups = [None] * len(paths)
    else:
        raise ValueError(f"unknown speaker normalisation {speaker_norm!r}; use per-recording, per-folder or column")
    return [InputFile(p, g) for p, g in zip(paths, groups)], speaker_norm


def _read_list(source: Path) -> tuple[list[str], list[str | None] | None]:
    """Paths of a list file and its groups (``speaker:<s>`` or ``group:<g>``; None without a column)."""
    import pandas as pd

    suffix = source.suffix.lower()
    if suffix == ".txt":
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{source}: cannot read the list (not UTF-8 text: {exc.reason} at byte {exc.start})") from exc
        lines = [line.strip() for line in text.splitlines()]
        names = [line for line in lines if line and not line.startswith("#")]
        return [str(_resolve(source, n)) for n in names], None
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(source)
            table = pd.DataFrame({c: ["" if pd.isna(v) else str(v) for v in table[c]] for c in table.columns})
        else:
            table = pd.read_csv(source, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas' and pyarrow's parser errors are varied
        raise ValueError(f"{source}: cannot read the list ({exc})") from exc
    columns = {str(c).strip().lower(): c for c in table.columns}
    if "path" not in columns:
        raise ValueError(f"{source}: the list needs a 'path' column; found {list(table.columns)}")
    paths = [str(_resolve(source, p)) for p in table[columns["path"]]]
    for name in ("speaker", "group"):
        if name in columns:
            return paths, [f"{name}:{s.strip()}" if s.strip() else None for s in table[columns[name]]]
    return paths, None


def _resolve(listing: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else listing.parent / path


class UnusableUpload(AudioError):
    """Uploaded bytes that cannot be predicted; ``code``: empty, undecodable, non_finite, out_of_range, too_long,
    decoded_too_large, sample_rate, channels, timeout, silent, too_short."""

    def __init__(self, name: str, reason: str, code: str) -> None:
        super().__init__(name, reason, code)


def decode_upload(data: bytes, name: str, max_seconds: float, min_seconds: float = 0.1, *,
                  limits: AudioLimits | None = None, deadline: float | None = None) -> np.ndarray:
    """Decode uploaded bytes to mono float32 16 kHz, refusing audio that is too long or unusable.

    The same bounded loader as files (:func:`polyemo.audio.read_audio`): the header is checked
    against ``limits`` (their ``max_seconds`` replaced by ``max_seconds``) before decoding.
    """
    if not data:
        raise UnusableUpload(name, "empty upload (0 bytes)", "empty")
    limits = replace(limits or DEFAULT_LIMITS, max_seconds=max_seconds)
    try:
        wave = read_audio(data, limits=limits, name=name, deadline=deadline)
        check_usable(wave, name, min_seconds)
    except AudioError as exc:
        reason = exc.reason
        if exc.code == "undecodable" and reason.startswith("cannot decode"):
            reason += "; send WAV, FLAC, OGG or MP3"
        raise UnusableUpload(exc.path, reason, exc.code) from exc
    return wave
