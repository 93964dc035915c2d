"""Text features stored once per (text, language, text-encoder identity).

A small store of its own, beside the audio :class:`~polyemo.cache.store.FeatureStore`: text
features are addressed by the text's hash (and its language where the encoder uses it, see
:attr:`polyemo.encoders.text.TextEncoder.uses_language`), not by audio content. Layout:
``<root>/text/<identity key>/identity.json`` and one ``.npy`` per entry under a two-letter
folder (pooled ``(layers, dim)`` float32, tokens ``(layers, tokens, dim)`` float16). Every file
is written to a temporary name and renamed into place, so an interrupted run leaves whole
entries only and resumes with what is missing; concurrent writers of the same entry write
the same bytes.

:func:`text_features` is the entry point: features aligned with the given texts, computing
only what the store lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("pooled", "tokens")


def text_key(text: str, language: str | None, kind: str) -> str:
    blob = json.dumps({"text": text, "language": language, "kind": kind}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


class TextFeatureStore:
    """The stored features of one text-encoder identity."""

    def __init__(self, root: str | os.PathLike[str] | None, identity: dict[str, Any]) -> None:
        if root is None:
            from polyemo.cache import default_cache_root

            root = default_cache_root()
        self.identity = dict(identity)
        self.folder = Path(root) / "text" / str(identity["key"])
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "identity.json"
        if not marker.exists():
            self._atomic(marker, json.dumps(self.identity, indent=2, sort_keys=True).encode())

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # a damaged entry is recomputed
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npy", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as f:
                np.save(f, array, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _atomic(self, path: Path, data: bytes) -> None:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def text_features(texts: list[str], encoder, *, languages: list[str | None] | None = None, kind: str = "pooled",
                  cache_dir: str | os.PathLike[str] | None = None, batch_size: int = 16,
                  progress: bool = False) -> tuple[np.ndarray | list[np.ndarray], dict[str, Any]]:
    """Features of ``texts`` from a :class:`~polyemo.encoders.text.TextEncoder`, via the store.

    Returns ``(features, counts)``: pooled ``(N, layers, dim)`` float32, or for ``tokens`` a
    list of ``(layers, tokens, dim)`` float16 arrays; counts ``{"cached", "computed"}``.
    Identical (text, language) pairs are encoded once.
    """
    from polyemo.encoders.text import _text
    from polyemo.progress import progress_bar

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    texts = [_text(t) for t in texts]
    languages = list(languages) if languages is not None else [None] * len(texts)
    if len(languages) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
    if not encoder.uses_language:
        languages = [None] * len(texts)
    identity = encoder.identity.as_dict()
    store = TextFeatureStore(cache_dir, identity)
    keys = [text_key(t, lang, kind) for t, lang in zip(texts, languages)]
    found: dict[str, np.ndarray] = {}
    for key in dict.fromkeys(keys):
        value = store.get(key)
        if value is not None:
            found[key] = value
    todo = [k for k in dict.fromkeys(keys) if k not in found]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("text features", total=len(todo))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            tokens = encoder.tokens([texts[first[k]] for k in chunk], [languages[first[k]] for k in chunk], batch_size)
            for key, value in zip(chunk, tokens):
                value = encoder.pool(value) if kind == "pooled" else value.astype(np.float16)
                store.put(key, value)
                found[key] = value
            bar.advance(task, len(chunk))
    counts = {"cached": len(set(keys)) - len(todo), "computed": len(todo)}
    if kind == "pooled":
        out: np.ndarray | list[np.ndarray] = (np.stack([found[k] for k in keys]).astype(np.float32) if keys else
                                              np.zeros((0, encoder.num_layers, encoder.dim), np.float32))
    else:
        out = [found[k] for k in keys]
    return out, counts
