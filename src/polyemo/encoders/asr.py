"""Transcripts: speech recognition that fills a manifest's text, cached by audio content.

:class:`Transcriber` wraps an ASR model: the packaged offline Whisper weights
(``whisper-base``, multilingual; ``whisper-tiny.en``), any Whisper or other sequence-to-sequence
transformers ASR model by local path or hub id (resolved like the speech encoders, see
:mod:`polyemo.encoders.hf`), or a CTC model (wav2vec2-style, greedy CTC decoding). Whisper
decodes greedily (``beams=1``) or with beam search, in the row's language (``language="manifest"``,
the manifest's ISO 639-1 code where Whisper knows it), one fixed language, or the language
Whisper detects (``"detect"``); the language used is recorded with each transcript.

:class:`TranscriptStore` keeps transcripts in one SQLite table keyed by (model identity,
decoding options, language, audio content hash): every finished batch is committed at once,
so an interrupted run resumes where it stopped, and concurrent runs share entries safely.
:func:`transcribe_manifest` is the whole stage (the ``polyemo transcribe`` command): it
writes the ASR output to the ``transcript`` column and fills ``text`` where it is missing.

This module sits with the encoders (not in a package of its own) because the import layout
(tests/test_architecture.py) orders stages, and ASR needs audio decoding and the encoders'
model resolution, while the cache and experiment stages build on it.

:func:`word_error_rate` scores transcripts against reference sentences (word-level
Levenshtein distance after :func:`normalise_words`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from polyemo.paths import user_cache_dir

LANGUAGE_MODES = ("manifest", "detect")
TRANSCRIPT_COLUMN = "transcript"
# Bump when decoding changes what a cached transcript would be.
ASR_VERSION = 1


class TranscribeError(ValueError):
    """A manifest or model that cannot be transcribed (the message names it)."""


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None  # the language decoded in (given or detected); None for CTC models


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or (
        isinstance(value, str) and not value.strip())


class Transcriber:
    """An ASR model with fixed decoding options.

    ``model``: ``whisper-base`` (default, packaged offline), a hub id or a local transformers
    folder. ``language``: ``"manifest"`` (each row's language; Whisper detects where it has
    none or Whisper does not know it), ``"detect"``, or an ISO code (``"de"``). ``beams``: 1
    greedy, >1 beam search. ``max_new_tokens`` bounds a transcript (acted corpora: a sentence).
    """

    def __init__(self, model: str = "whisper-base", *, language: str = "manifest", beams: int = 1,
                 max_new_tokens: int = 96, task: str = "transcribe") -> None:
        from transformers import AutoConfig, AutoProcessor

        import polyemo.encoders.whisper  # noqa: F401  (registers the packaged Whisper folders)
        from polyemo.encoders.hf import quiet_loading, resolve_model, weights_hash

        if beams < 1:
            raise ValueError(f"beams must be >= 1, got {beams}")
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be transcribe or translate, got {task!r}")
        self.resolved = resolve_model(model)
        folder = self.resolved.path
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        self.model_type = config.model_type
        self.language = language
        self.beams = int(beams)
        self.max_new_tokens = int(max_new_tokens)
        self.task = task
        with quiet_loading():
            self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            if self.model_type == "whisper":
                from transformers import WhisperForConditionalGeneration

                self.model = WhisperForConditionalGeneration.from_pretrained(folder, local_files_only=True,
                                                                             dtype=torch.float32)
                self.kind = "whisper"
            elif getattr(config, "is_encoder_decoder", False):
                from transformers import AutoModelForSpeechSeq2Seq

                self.model = AutoModelForSpeechSeq2Seq.from_pretrained(folder, local_files_only=True,
                                                                       dtype=torch.float32)
                self.kind = "seq2seq"
            else:
                from transformers import AutoModelForCTC

                self.model = AutoModelForCTC.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
                self.kind = "ctc"
        self.model.eval()
        self.languages: dict[str, int] = {}
        if self.kind == "whisper":
            lang_to_id = getattr(self.model.generation_config, "lang_to_id", None) or {}
            self.languages = {k.strip("<|>"): v for k, v in lang_to_id.items()}
            self.id_to_language = {v: k for k, v in self.languages.items()}
            if language not in LANGUAGE_MODES and self.languages and language not in self.languages:
                raise ValueError(f"{model}: Whisper does not know the language {language!r}")
        elif language not in LANGUAGE_MODES:
            raise ValueError(f"{model}: a {self.kind} model has no language option (got {language!r})")
        self._weights = weights_hash(folder)

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that changes a transcript except the language (which is per row)."""
        return {"name": self.resolved.name, "weights_hash": self._weights, "kind": self.kind, "beams": self.beams,
                "max_new_tokens": self.max_new_tokens, "task": self.task, "version": ASR_VERSION}

    def language_for(self, row_language: Any) -> str | None:
        """The language a row is decoded in (None: detect, or a model without languages)."""
        if self.kind != "whisper" or not self.languages:
            return None
        if self.language == "detect":
            return None
        if self.language == "manifest":
            code = None if _missing(row_language) else str(row_language).strip().lower()
            return code if code in self.languages else None
        return self.language

    def transcribe(self, waves: list[np.ndarray], languages: list[str | None] | None = None) -> list[Transcript]:
        """Transcripts of 16 kHz mono waveforms, each in its language (None: detect)."""
        languages = list(languages) if languages is not None else [None] * len(waves)
        if len(languages) != len(waves):
            raise ValueError(f"{len(waves)} waveforms but {len(languages)} languages")
        if not waves:
            return []
        with torch.inference_mode():
            if self.kind == "ctc":
                return self._ctc(waves)
            out: list[Transcript | None] = [None] * len(waves)
            for language in dict.fromkeys(languages):  # one generate call per language
                rows = [i for i, lang in enumerate(languages) if lang == language]
                for i, t in zip(rows, self._generate([waves[i] for i in rows], language)):
                    out[i] = t
            return [t for t in out if t is not None]

    def _generate(self, waves: list[np.ndarray], language: str | None) -> list[Transcript]:
        inputs = self.processor(waves, sampling_rate=16_000, return_tensors="pt")
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.beams,
                                  "do_sample": False}
        if self.kind == "whisper":
            kwargs["task"] = self.task
            if language is not None:
                kwargs["language"] = language
            features = inputs["input_features"]
            # the dict output keeps the decoder prompt, which holds the detected language token
            sequences = self.model.generate(features, return_dict_in_generate=True, **kwargs)
        else:
            sequences = self.model.generate(**inputs, **kwargs)
        if not isinstance(sequences, torch.Tensor):
            sequences = sequences.sequences
        texts = self.processor.batch_decode(sequences, skip_special_tokens=True)
        detected = [language] * len(texts)
        if self.kind == "whisper" and language is None:
            detected = [self._language_token(row) for row in sequences.tolist()]
        return [Transcript(_clean(t), lang) for t, lang in zip(texts, detected)]

    def _language_token(self, tokens: list[int]) -> str | None:
        for token in tokens[:4]:  # <|startoftranscript|><|xx|><|transcribe|>...
            if token in self.id_to_language:
                return self.id_to_language[token]
        return None

    def _ctc(self, waves: list[np.ndarray]) -> list[Transcript]:
        # one clip at a time: padding changes a CTC model's output where it has no attention
        # mask, and a cached transcript must not depend on the batch it was decoded in
        out = []
        for wave in waves:
            inputs = self.processor(wave, sampling_rate=16_000, return_tensors="pt")
            logits = self.model(inputs["input_values"]).logits
            out.append(Transcript(_clean(self.processor.batch_decode(logits.argmax(-1))[0]), None))
        return out


def _clean(text: str) -> str:
    return " ".join(text.split())


# --- the transcript store ------------------------------------------------------------------

def default_store_path() -> Path:
    return user_cache_dir() / "transcripts.sqlite"


class TranscriptStore:
    """Transcripts by (model identity, language, content hash) in one SQLite table."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS transcripts (key TEXT PRIMARY KEY, text TEXT NOT NULL,"
                       " language TEXT, model TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    @staticmethod
    def key(identity: dict[str, Any], language: str | None, content_hash: str) -> str:
        blob = json.dumps({"model": identity, "language": language, "audio": content_hash}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def lookup(self, keys: list[str]) -> dict[str, Transcript]:
        found: dict[str, Transcript] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, text, language in db.execute(
                        f"SELECT key, text, language FROM transcripts WHERE key IN ({marks})", chunk):
                    found[key] = Transcript(text, language)
        return found

    def store(self, entries: dict[str, Transcript], model: str) -> None:
        with self._connect() as db:  # one transaction: a batch is stored whole or not at all
            db.executemany("INSERT OR REPLACE INTO transcripts VALUES (?, ?, ?, ?)",
                           [(k, t.text, t.language, model) for k, t in entries.items()])


# --- the stage -----------------------------------------------------------------------------

@dataclass
class TranscribeResult:
    manifest: pd.DataFrame
    n_rows: int  # rows that were to be transcribed
    n_cached: int  # of them, found in the store
    n_computed: int  # clips decoded now (identical audio is decoded once)
    failures: pd.DataFrame  # utt_id, path, error

    def summary(self) -> str:
        return (f"{self.n_rows} rows to transcribe: {self.n_cached} from the store, {self.n_computed} decoded, "
                f"{len(self.failures)} failed")


def transcribe_manifest(manifest: pd.DataFrame | str | os.PathLike[str], model: str | Transcriber = "whisper-base", *,
                        rows: str = "missing", language: str = "manifest", beams: int = 1,
                        batch_size: int = 8, store: TranscriptStore | str | os.PathLike[str] | None = None,
                        progress: bool = True) -> TranscribeResult:
    """Transcribe a manifest's audio; ``transcript`` holds the ASR output, ``text`` is filled where missing.

    ``rows``: ``"missing"`` (only rows without text) or ``"all"`` (every row gets a
    ``transcript``; existing ``text`` is kept). Rows need a ``content_hash`` (the store's key).
    Audio that cannot be decoded is listed in ``failures`` and keeps its text as it was.
    """
    from polyemo.audio import AudioError, load_audio
    from polyemo.manifest import load as load_manifest
    from polyemo.progress import progress_bar

    source = "manifest"
    if not isinstance(manifest, pd.DataFrame):
        source = str(manifest)
        manifest = load_manifest(manifest)
    if rows not in ("missing", "all"):
        raise TranscribeError(f"rows must be 'missing' or 'all', got {rows!r}")
    for column in ("utt_id", "path", "content_hash"):
        if column not in manifest.columns:
            raise TranscribeError(f"{source}: no {column!r} column")
    if batch_size < 1:
        raise TranscribeError(f"batch_size must be >= 1, got {batch_size}")
    frame = manifest.copy()
    if "text" not in frame.columns:
        frame["text"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    if TRANSCRIPT_COLUMN not in frame.columns:
        frame[TRANSCRIPT_COLUMN] = pd.Series(pd.NA, index=frame.index, dtype="string")
    frame[TRANSCRIPT_COLUMN] = frame[TRANSCRIPT_COLUMN].astype("string")
    todo = frame.index[[True] * len(frame)] if rows == "all" else frame.index[frame["text"].map(_missing)]
    unhashed = [i for i in todo if _missing(frame.at[i, "content_hash"])]
    if unhashed:
        raise TranscribeError(f"{source}: row {int(unhashed[0])} ({frame.at[unhashed[0], 'utt_id']}) has no "
                              "content_hash (prepare the manifest with polyemo data first)")
    transcriber = model if isinstance(model, Transcriber) else Transcriber(model, language=language, beams=beams)
    store = store if isinstance(store, TranscriptStore) else TranscriptStore(store)
    identity = transcriber.identity
    language_col = frame["language"] if "language" in frame.columns else pd.Series(None, index=frame.index)
    langs = {i: transcriber.language_for(language_col[i]) for i in todo}
    keys = {i: TranscriptStore.key(identity, langs[i], str(frame.at[i, "content_hash"])) for i in todo}
    found = store.lookup(sorted(set(keys.values())))
    results: dict[int, Transcript] = {i: found[k] for i, k in keys.items() if k in found}
    n_cached = len(results)
    # one decode per distinct key (identical audio in the same language is decoded once)
    rows_of: dict[str, list[int]] = {}
    for i in todo:
        if i not in results:
            rows_of.setdefault(keys[i], []).append(i)
    pending = list(rows_of)
    failures: list[tuple[str, str, str]] = []
    computed = 0
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("transcribing", total=len(todo), completed=n_cached)
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            batch, waves = [], []
            for key in chunk:
                first = rows_of[key][0]
                try:
                    waves.append(load_audio(frame.at[first, "path"]))
                    batch.append(key)
                except (AudioError, OSError) as error:
                    failures += [(str(frame.at[i, "utt_id"]), str(frame.at[i, "path"]), str(error)) for i in rows_of[key]]
            if batch:
                done = transcriber.transcribe(waves, [langs[rows_of[k][0]] for k in batch])
                store.store(dict(zip(batch, done)), identity["name"])  # committed per batch: resumable
                for key, t in zip(batch, done):
                    results.update({i: t for i in rows_of[key]})
                computed += len(batch)
            bar.advance(task, sum(len(rows_of[k]) for k in chunk))
    for i, t in results.items():
        frame.at[i, TRANSCRIPT_COLUMN] = t.text
        if _missing(frame.at[i, "text"]):
            frame.at[i, "text"] = t.text
    return TranscribeResult(frame, len(todo), n_cached, computed,
                            pd.DataFrame(failures, columns=["utt_id", "path", "error"]))


# --- word error rate -----------------------------------------------------------------------

def normalise_words(text: str) -> list[str]:
    """Lower case, Unicode NFKC, punctuation and symbols removed, split on white space."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZ" and ch != "'" else ch for ch in text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)  # quotes, not apostrophes inside words
    return text.split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance between word sequences (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(references: list[str], hypotheses: list[str]) -> tuple[float, int, int]:
    """Corpus WER: (total edit distance / total reference words, errors, reference words)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = words = 0
    for ref, hyp in zip(references, hypotheses):
        r = normalise_words(ref)
        errors += edit_distance(r, normalise_words(hyp))
        words += len(r)
    if words == 0:
        raise ValueError("the references have no words")
    return errors / words, errors, words
