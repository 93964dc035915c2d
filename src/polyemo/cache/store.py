"""Content-addressed storage of encoder features: safetensors shards plus a Parquet index.

Layout of one encoder's store (``<cache root>/<encoder name>-<identity key>/``)::

    encoder.json             identity (name, weights hash, precision, options), dims
    pooled/<shard>.safetensors            "features": (items, num_layers, pooled_dim) float32
    frames-float16/<shard>.safetensors    one tensor "<content hash>/<layer>": (frames, dim)
    index.parquet            kind, content_hash, layer, shard, row  (rebuilt from shards)
    .lock                    fcntl lock held while the index is rewritten

Shards are self-describing (their safetensors header lists what they hold), written to a
temporary file and renamed into place, and never modified afterwards. The index is only a
cache of the shard headers: shards missing from it (a writer killed before it merged its
shards, or another process writing at the same time) are found by listing the folders, so
several processes can fill one store, and a killed run loses at most its unflushed batch.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import safetensors
import safetensors.numpy

from polyemo.encoders.base import Encoder, EncoderIdentity
from polyemo.io import atomic_path, write_json, write_table
from polyemo.paths import user_cache_dir

FORMAT = "polyemo-features/1"
POOLED = "pooled"
FRAME_DTYPES = {"float16": np.float16, "float32": np.float32}
SHARD_SUFFIX = ".safetensors"
INDEX_COLUMNS = ["kind", "content_hash", "layer", "shard", "row"]
# Temporary files older than this are leftovers of killed writers (live ones take seconds).
STALE_TEMP_SECONDS = 3600.0


class CacheError(RuntimeError):
    """A feature store that cannot be used (wrong encoder dims, unreadable index)."""


def frames_kind(dtype: str) -> str:
    if dtype not in FRAME_DTYPES:
        raise ValueError(f"frame dtype must be one of {sorted(FRAME_DTYPES)}, got {dtype!r}")
    return f"frames-{dtype}"


def default_cache_root() -> Path:
    return user_cache_dir() / "features"


def store_dir_name(identity: EncoderIdentity) -> str:
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", identity.name).strip("_") or "encoder"
    return f"{safe_name}-{identity.key()}"


def new_shard_name() -> str:
    # Unique across processes and hosts sharing a folder; sortable by creation time.
    return f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{SHARD_SUFFIX}"


@dataclass(frozen=True)
class EncoderShape:
    """What the store needs to know about an encoder's output."""

    num_layers: int
    pooled_dim: int
    frame_dim: int | None

    @classmethod
    def of(cls, encoder: Encoder) -> EncoderShape:
        frame_dim = int(encoder.frame_dim) if encoder.has_frames and hasattr(encoder, "frame_dim") else None
        return cls(int(encoder.num_layers), int(encoder.pooled_dim), frame_dim)


class FeatureStore:
    """The features of one encoder identity, addressed by audio content hash."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        info_path = self.directory / "encoder.json"
        if not info_path.exists():
            raise CacheError(f"{self.directory}: not a feature store (no encoder.json)")
        self.info = json.loads(info_path.read_text(encoding="utf-8"))
        self.num_layers = int(self.info["num_layers"])
        self.pooled_dim = int(self.info["pooled_dim"])
        # kind -> content_hash -> (shard, row) for pooled; (content_hash, layer) -> shard for frames
        self._pooled: dict[str, tuple[str, int]] = {}
        self._frames: dict[str, dict[tuple[str, int], str]] = {}
        self._known_shards: set[tuple[str, str]] = set()
        self.reload()

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, encoder: Encoder, cache_dir: str | os.PathLike[str] | None = None) -> FeatureStore:
        """Open (creating if needed) the store of ``encoder`` under ``cache_dir``."""
        identity = encoder.identity
        shape = EncoderShape.of(encoder)
        directory = Path(cache_dir) if cache_dir is not None else default_cache_root()
        directory = directory / store_dir_name(identity)
        directory.mkdir(parents=True, exist_ok=True)
        info_path = directory / "encoder.json"
        info = {
            "format": FORMAT,
            "identity": identity.as_dict(),
            "num_layers": shape.num_layers,
            "pooled_dim": shape.pooled_dim,
            "frame_dim": shape.frame_dim,
        }
        if info_path.exists():
            stored = json.loads(info_path.read_text(encoding="utf-8"))
            for field in ("num_layers", "pooled_dim"):
                if stored.get(field) != info[field]:
                    raise CacheError(
                        f"{directory}: stored {field}={stored.get(field)} but encoder "
                        f"{identity.name!r} gives {info[field]}; the identity key does not capture "
                        "an option that changes the output"
                    )
        else:
            write_json(info_path, info)
        return cls(directory)

    # --- index --------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.directory / "index.parquet"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive fcntl lock of this store (index and failures-table updates)."""
        with open(self.directory / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _kind_dirs(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and (p.name == POOLED or p.name.startswith("frames-")))

    def _list_shards(self) -> list[tuple[str, str]]:
        shards = []
        for kind in self._kind_dirs():
            for entry in os.scandir(self.directory / kind):
                # Names starting with "." are temporary files of writers still at work.
                if entry.name.endswith(SHARD_SUFFIX) and not entry.name.startswith("."):
                    shards.append((kind, entry.name))
        return sorted(shards, key=lambda ks: (ks[0], ks[1]))

    def _read_index_file(self) -> pd.DataFrame:
        if not self.index_path.exists():
            return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("layer", "row") else "object") for c in INDEX_COLUMNS})
        try:
            return pd.read_parquet(self.index_path)[INDEX_COLUMNS]
        except Exception as exc:  # a damaged index is rebuilt from the shards
            warnings.warn(f"{self.index_path}: unreadable index ({exc}); rebuilding from shards", stacklevel=2)
            return pd.DataFrame(columns=INDEX_COLUMNS)

    def _shard_rows(self, kind: str, shard: str) -> list[tuple[str, str, int, str, int]] | None:
        path = self.directory / kind / shard
        try:
            with safetensors.safe_open(str(path), framework="np") as handle:
                meta = handle.metadata() or {}
                keys = list(handle.keys())
        except Exception as exc:
            warnings.warn(f"{path}: unreadable feature shard ignored ({exc})", stacklevel=2)
            return None
        if meta.get("format") != FORMAT:
            warnings.warn(f"{path}: not a {FORMAT} shard; ignored", stacklevel=2)
            return None
        if kind == POOLED:
            hashes = json.loads(meta["content_hashes"])
            return [(kind, h, -1, shard, row) for row, h in enumerate(hashes)]
        rows = []
        for key in keys:
            content_hash, layer = key.rsplit("/", 1)
            rows.append((kind, content_hash, int(layer), shard, -1))
        return rows

    def _scan(self, index: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
        """Add shards missing from ``index``, drop entries of vanished shards."""
        on_disk = self._list_shards()
        disk_set = set(on_disk)
        indexed = set(zip(index["kind"], index["shard"])) if len(index) else set()
        changed = False
        if indexed - disk_set:
            keep = [(k, s) in disk_set for k, s in zip(index["kind"], index["shard"])]
            index = index[keep]
            changed = True
        new_rows = []
        for kind, shard in on_disk:
            if (kind, shard) not in indexed:
                rows = self._shard_rows(kind, shard)
                if rows is not None:
                    new_rows.extend(rows)
                    changed = True
        if new_rows:
            added = pd.DataFrame(new_rows, columns=INDEX_COLUMNS)
            index = added if index.empty else pd.concat([index, added], ignore_index=True)
        return index.reset_index(drop=True), changed

    def _apply(self, index: pd.DataFrame) -> None:
        # Sorted so a duplicate (two writers computing the same audio) resolves the same way
        # in every process: the earliest shard wins.
        index = index.sort_values(["kind", "shard", "row", "layer"], kind="stable")
        pooled: dict[str, tuple[str, int]] = {}
        frames: dict[str, dict[tuple[str, int], str]] = {}
        for kind, content_hash, layer, shard, row in index.itertuples(index=False):
            if kind == POOLED:
                pooled.setdefault(content_hash, (shard, int(row)))
            else:
                frames.setdefault(kind, {}).setdefault((content_hash, int(layer)), shard)
        self._pooled = pooled
        self._frames = frames
        self._known_shards = set(zip(index["kind"], index["shard"]))

    def reload(self) -> None:
        """Read the index and any shards written since it was last merged (no writes)."""
        index, _ = self._scan(self._read_index_file())
        self._apply(index)

    def merge_index(self) -> int:
        """Fold every finished shard into ``index.parquet`` (under the lock); returns its rows.

        Also removes temporary files left behind by killed writers.
        """
        with self.locked():
            self._remove_stale_temps()
            index, changed = self._scan(self._read_index_file())
            if changed or not self.index_path.exists():
                index = index.astype({"layer": "int64", "row": "int64"})
                write_table(self.index_path, index)
        self._apply(index)
        return len(index)

    def _remove_stale_temps(self) -> None:
        now = time.time()
        for kind in self._kind_dirs():
            for entry in os.scandir(self.directory / kind):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    try:
                        if now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                            os.unlink(entry.path)
                    except FileNotFoundError:
                        pass

    # --- queries ------------------------------------------------------------------------

    def has_pooled(self, content_hash: str) -> bool:
        return content_hash in self._pooled

    def has_frames(self, content_hash: str, layers: Iterable[int], dtype: str = "float16") -> bool:
        table = self._frames.get(frames_kind(dtype), {})
        return all((content_hash, layer) in table for layer in layers)

    def pooled_hashes(self) -> set[str]:
        return set(self._pooled)

    def check_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Normalise a layer selection (None = all, negatives count from the end)."""
        if layers is None:
            return list(range(self.num_layers))
        chosen = []
        for layer in layers:
            index = int(layer) + self.num_layers if int(layer) < 0 else int(layer)
            if not 0 <= index < self.num_layers:
                raise ValueError(f"layer {layer} out of range: the encoder has {self.num_layers} layers (0..{self.num_layers - 1})")
            chosen.append(index)
        return chosen

    # --- reading ------------------------------------------------------------------------

    def read_pooled(self, hashes: Sequence[str], layers: Sequence[int] | None = None) -> np.ndarray:
        """(len(hashes), len(layers), pooled_dim) float32; every hash must be stored."""
        chosen = self.check_layers(layers)
        out = np.empty((len(hashes), len(chosen), self.pooled_dim), dtype=np.float32)
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for position, content_hash in enumerate(hashes):
            if content_hash not in self._pooled:
                raise KeyError(f"{self.directory}: no pooled features for content hash {content_hash}")
            shard, row = self._pooled[content_hash]
            by_shard.setdefault(shard, []).append((position, row))
        for shard, pairs in by_shard.items():
            with safetensors.safe_open(str(self.directory / POOLED / shard), framework="np") as handle:
                block = handle.get_tensor("features")
            positions = np.fromiter((p for p, _ in pairs), dtype=np.int64, count=len(pairs))
            rows = np.fromiter((r for _, r in pairs), dtype=np.int64, count=len(pairs))
            out[positions] = block[rows][:, chosen]
        return out

    def read_frames(self, content_hash: str, layers: Sequence[int] | None = None, dtype: str = "float16") -> np.ndarray:
        """(len(layers), frames, frame_dim) in the stored dtype."""
        chosen = self.check_layers(layers)
        table = self._frames.get(frames_kind(dtype), {})
        arrays = []
        for layer in chosen:
            shard = table.get((content_hash, layer))
            if shard is None:
                raise KeyError(f"{self.directory}: no {dtype} frames of layer {layer} for content hash {content_hash}")
            with safetensors.safe_open(str(self.directory / frames_kind(dtype) / shard), framework="np") as handle:
                arrays.append(handle.get_tensor(f"{content_hash}/{layer}"))
        return np.stack(arrays)

    def frame_rate(self) -> float | None:
        if self.info.get("frame_rate") is None:  # another process may have stored frames since
            self.info = json.loads((self.directory / "encoder.json").read_text(encoding="utf-8"))
        rate = self.info.get("frame_rate")
        return float(rate) if rate is not None else None

    # --- writing ------------------------------------------------------------------------

    def _write_shard(self, kind: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
        folder = self.directory / kind
        folder.mkdir(exist_ok=True)
        name = new_shard_name()
        with atomic_path(folder / name) as tmp:
            safetensors.numpy.save_file(tensors, str(tmp), metadata={"format": FORMAT, **metadata})
            with open(tmp, "rb+") as handle:  # durable before it becomes visible
                os.fsync(handle.fileno())
        return name

    def write_pooled(self, hashes: Sequence[str], features: np.ndarray) -> str:
        """Store (items, num_layers, pooled_dim) features as one new shard; returns its name."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        expected = (len(hashes), self.num_layers, self.pooled_dim)
        if features.shape != expected:
            raise ValueError(f"pooled features of shape {features.shape}, expected {expected}")
        name = self._write_shard(POOLED, {"features": features}, {"content_hashes": json.dumps(list(hashes))})
        for row, content_hash in enumerate(hashes):
            self._pooled.setdefault(content_hash, (name, row))
        self._known_shards.add((POOLED, name))
        return name

    def write_frames(
        self,
        items: Sequence[tuple[str, np.ndarray]],
        layers: Sequence[int],
        dtype: str = "float16",
        frame_rate: float | None = None,
    ) -> str:
        """Store frames (len(layers), frames, dim) per content hash as one new shard."""
        kind = frames_kind(dtype)
        chosen = self.check_layers(layers)
        tensors = {}
        for content_hash, array in items:
            if array.ndim != 3 or array.shape[0] != len(chosen):
                raise ValueError(f"frames of shape {array.shape}, expected ({len(chosen)}, frames, dim)")
            for position, layer in enumerate(chosen):
                tensors[f"{content_hash}/{layer}"] = np.ascontiguousarray(array[position], dtype=FRAME_DTYPES[dtype])
        metadata = {"frame_rate": json.dumps(frame_rate)}
        name = self._write_shard(kind, tensors, metadata)
        if frame_rate is not None and self.info.get("frame_rate") is None:
            self.info["frame_rate"] = frame_rate
            with self.locked():
                write_json(self.directory / "encoder.json", self.info)
        table = self._frames.setdefault(kind, {})
        for content_hash, _ in items:
            for layer in chosen:
                table.setdefault((content_hash, layer), name)
        self._known_shards.add((kind, name))
        return name

    # --- checks -------------------------------------------------------------------------

    def verify(self) -> dict[str, int]:
        """Open every shard and check it against the index; raises :class:`CacheError`."""
        self.reload()
        counts = {"pooled": len(self._pooled), "frame_tensors": sum(len(t) for t in self._frames.values()), "shards": 0}
        for kind, shard in self._list_shards():
            rows = self._shard_rows(kind, shard)
            if rows is None:
                raise CacheError(f"{self.directory / kind / shard}: unreadable shard")
            counts["shards"] += 1
            if kind == POOLED:
                with safetensors.safe_open(str(self.directory / kind / shard), framework="np") as handle:
                    shape = handle.get_slice("features").get_shape()
                if list(shape) != [len(rows), self.num_layers, self.pooled_dim]:
                    raise CacheError(f"{self.directory / kind / shard}: shape {shape} does not match its {len(rows)} hashes")
        return counts
