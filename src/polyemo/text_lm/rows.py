"""The row format of ``features: lm``: a text, its language and optional speech tokens in one array.

The LM's tokenizer belongs to the estimator, so a ``SplitData`` row carries the text itself:
a float32 array (L, 1 + S + B, D). Each of the L slots (one per speech-encoder layer, so the
experiment's layer choices keep working: a subset of slots is a subset of speech tokens)
holds a header row (S speech tokens; when D > 1 also the payload's byte count), its S speech
vectors (S, D), then the UTF-8 bytes of ``language + "\\x00" + text``, D per row, -1 after
the end. Without speech: one slot, D = 1, no padding. :func:`unpack_row` reads it back (the
speech tokens of all slots, slot after slot).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pack_row(text: str, language: str | None, speech: Sequence[np.ndarray] | np.ndarray | None = None) -> np.ndarray:
    """One row's array; ``speech``: per slot an (S, D) array (an (S, D) array is one slot), or None."""
    payload = np.frombuffer(f"{language or ''}\x00{text}".encode(), dtype=np.uint8).astype(np.float32)
    if speech is None or len(speech) == 0:
        return np.concatenate([[0.0], payload]).astype(np.float32)[None, :, None]
    slots = [np.asarray(speech, np.float32)] if np.ndim(speech) == 2 else [np.asarray(s, np.float32) for s in speech]
    s, d = slots[0].shape
    if d < 2 or any(x.shape != (s, d) for x in slots):
        raise ValueError(f"speech tokens must be (tokens, dim >= 2) alike in every slot, got {[x.shape for x in slots]}")
    rows = -(-payload.size // d)
    out = np.full((len(slots), 1 + s + rows, d), -1.0, np.float32)
    out[:, 0] = 0.0
    out[:, 0, 0], out[:, 0, 1] = s, payload.size
    for k, x in enumerate(slots):
        out[k, 1:1 + s] = x
        out[k, 1 + s:].reshape(-1)[:payload.size] = payload
    return out


def unpack_row(row: np.ndarray) -> tuple[str, str | None, np.ndarray | None]:
    """``(text, language, speech (S_total, D) or None)`` of a :func:`pack_row` array."""
    row = np.asarray(row)
    s = int(row[0, 0, 0])
    if row.shape[2] == 1:
        payload = row[0, 1:, 0]
    else:
        payload = row[0, 1 + s:].reshape(-1)[: int(row[0, 0, 1])]
    text = payload.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
    language, _, text = text.partition("\x00")
    speech = np.concatenate([np.asarray(slot[1:1 + s], np.float32) for slot in row]) if s else None
    return text, language or None, speech
