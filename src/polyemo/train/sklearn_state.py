"""Fitted scikit-learn objects as parameters, without pickle: ``<name>.safetensors`` + ``<name>.json``.

Unpickling runs code named by the file, so a run folder from someone else could run anything.
Here an object is stored as its ``__dict__``: numeric arrays go to safetensors, everything else
(numbers, strings, lists, tuples, dicts, numpy scalars) to tagged JSON, and the classes are
named. Loading rebuilds only classes on :data:`TRUSTED` (plus the classical heads registered in
``polyemo.heads.HEADS``), looked up in that table, never imported by name from the file; any
other class, tag or array is refused with :class:`UnsafeStateError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "polyemo-sklearn-state/1"


class UnsafeStateError(ValueError):
    """A stored object that cannot be (or may not be) rebuilt: an untrusted class, a bad tag, a bad file."""


def _trusted() -> dict[str, type]:
    from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    from polyemo.heads import HEADS
    from polyemo.heads.classical import ClassicalHead, MaskedLogisticRegression

    table = {_name(c): c for c in (CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration, Pipeline,
                                   StandardScaler, SVC, LinearSVC, MaskedLogisticRegression)}
    for name in HEADS.names():
        cls = HEADS.get(name)
        if isinstance(cls, type) and issubclass(cls, ClassicalHead):
            table[_name(cls)] = cls
    return table


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: the classes a stored state may name (filled on first use: the heads registry is imported lazily)
TRUSTED: dict[str, type] = {}


def trusted() -> dict[str, type]:
    if not TRUSTED:
        TRUSTED.update(_trusted())
    return TRUSTED


class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, value: np.ndarray) -> Any:
        if value.dtype.kind in "biuf":
            key = f"a{len(self.arrays)}"
            self.arrays[key] = np.ascontiguousarray(value)
            return {"__array__": key}
        if value.dtype.kind in "UO" and all(isinstance(v, str) for v in value.ravel()):
            return {"__strarray__": value.tolist(), "shape": list(value.shape)}
        raise TypeError(f"cannot store an array of dtype {value.dtype} without pickle")

    def __call__(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int) and not isinstance(value, np.integer):
            return value
        if isinstance(value, float) and not isinstance(value, np.floating):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, np.ndarray):
            return self.array(value)
        if isinstance(value, np.generic):
            return {"__scalar__": value.dtype.str, "value": self(value.item())}
        if isinstance(value, np.dtype):
            return {"__dtype__": value.str}
        if isinstance(value, list):
            return {"__list__": [self(v) for v in value]}
        if isinstance(value, tuple):
            return {"__tuple__": [self(v) for v in value]}
        if isinstance(value, dict):
            return {"__dict__": [[self(k), self(v)] for k, v in value.items()]}
        cls = type(value)
        if trusted().get(_name(cls)) is cls:
            return {"__object__": _name(cls), "state": self(dict(vars(value)))}
        raise TypeError(f"cannot store a {_name(cls)} without pickle (not a trusted class)")


class _Decoder:
    def __init__(self, arrays: Mapping[str, np.ndarray], source: str) -> None:
        self.arrays = arrays
        self.source = source

    def fail(self, what: str) -> UnsafeStateError:
        return UnsafeStateError(f"{self.source}: {what}; refusing to load it")

    def __call__(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or len(node) not in (1, 2):
            raise self.fail(f"unexpected value {str(node)[:80]!r}")
        if "__array__" in node:
            key = node["__array__"]
            if key not in self.arrays:
                raise self.fail(f"array {key!r} is missing from the tensors")
            return np.array(self.arrays[key])
        if "__strarray__" in node:
            values = node["__strarray__"]
            return np.array(values, dtype=str).reshape([int(n) for n in node.get("shape", [len(values)])])
        if "__float__" in node:
            if node["__float__"] not in ("nan", "inf", "-inf"):
                raise self.fail(f"bad float {node['__float__']!r}")
            return float(node["__float__"])
        if "__scalar__" in node:
            dtype = np.dtype(self._dtype(node["__scalar__"]))
            return dtype.type(self(node["value"]))
        if "__dtype__" in node:
            return np.dtype(self._dtype(node["__dtype__"]))
        if "__list__" in node:
            return [self(v) for v in node["__list__"]]
        if "__tuple__" in node:
            return tuple(self(v) for v in node["__tuple__"])
        if "__dict__" in node:
            return {self._key(k): self(v) for k, v in node["__dict__"]}
        if "__object__" in node:
            name = node["__object__"]
            cls = trusted().get(name) if isinstance(name, str) else None
            if cls is None:
                raise self.fail(f"class {str(name)[:100]!r} is not on the trusted list")
            state = self(node.get("state"))
            if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
                raise self.fail(f"bad state for {name}")
            obj = cls.__new__(cls)
            obj.__dict__.update(state)
            return obj
        raise self.fail(f"unknown tag {sorted(node)[0][:40]!r}")

    def _key(self, key: Any) -> Any:
        value = self(key)
        if isinstance(value, (list, dict, np.ndarray)):
            raise self.fail("a dict key that is not hashable")
        return value

    def _dtype(self, text: Any) -> str:
        # numeric dtypes only (no object dtype: nothing may come back as arbitrary Python objects)
        if not isinstance(text, str) or np.dtype(text).kind not in "biuf":
            raise self.fail(f"dtype {str(text)[:40]!r} is not numeric")
        return text


def save_state(obj: Any, directory: str | os.PathLike[str], name: str, meta: dict | None = None) -> list[Path]:
    """Write ``obj`` as ``<name>.safetensors`` + ``<name>.json`` in ``directory`` (atomically each)."""
    from safetensors.numpy import save

    from polyemo.io import atomic_path

    encoder = _Encoder()
    tree = encoder(obj)
    directory = Path(directory)
    tensors, document = directory / f"{name}.safetensors", directory / f"{name}.json"
    with atomic_path(tensors) as tmp:
        Path(tmp).write_bytes(save(encoder.arrays, metadata={"format": FORMAT}) if encoder.arrays else
                              save({"_empty": np.zeros(0, dtype=np.float32)}, metadata={"format": FORMAT}))
    with atomic_path(document) as tmp:
        Path(tmp).write_text(json.dumps({"format": FORMAT, **(meta or {}), "object": tree}, indent=1), encoding="utf-8")
    return [tensors, document]


def load_state(directory: str | os.PathLike[str], name: str) -> Any:
    """The object :func:`save_state` wrote; only trusted classes are rebuilt (else :class:`UnsafeStateError`)."""
    from safetensors.numpy import load

    directory = Path(directory)
    tensors, document = directory / f"{name}.safetensors", directory / f"{name}.json"
    for path in (document, tensors):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (a classical head is stored as {name}.json + {name}.safetensors)")
    try:
        data = json.loads(document.read_text(encoding="utf-8"))
    except (ValueError, UnicodeError) as exc:
        raise UnsafeStateError(f"{document}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UnsafeStateError(f"{document}: not a {FORMAT} file")
    try:
        arrays = load(tensors.read_bytes())
    except Exception as exc:  # safetensors' errors are untyped
        raise UnsafeStateError(f"{tensors}: not a readable safetensors file ({exc})") from exc
    return _Decoder(arrays, str(document))(data.get("object"))
