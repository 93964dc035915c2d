"""Content-addressed storage of encoder features: safetensors shards plus a Parquet index.

Layout of one encoder's store (``<cache root>/<encoder name>-<identity key>/``)::

    encoder.json             identity (name, weights hash, precision, options), dims
    pooled/<shard>.safetensors            "features": (items, len(layers), pooled_dim) float32,
                                          metadata "layers" (absent in old shards: all layers)
    frames-float16/<shard>.safetensors    one tensor "<content hash>/<layer>": (frames, dim)
    index.parquet            kind, content_hash, layer, shard, row, slot, checksum (rebuilt from shards)
    quarantine/              shards that failed their checksum, moved out of the way
    .lock                    fcntl lock held while the index is rewritten

Pooled features are stored per layer: a run that needs layers <= k stores only those (its
encoder stops after block k), and a later request for deeper layers computes the rows that
lack them. Shards are self-describing (their safetensors header lists what they hold), written
to a temporary file and renamed into place under a name that ends in the SHA-256 of their
bytes, and never modified afterwards. Every read checks a shard against that checksum once
per process: a corrupt or missing shard is reported by file, moved to ``quarantine/`` and its
entries dropped, so :func:`polyemo.cache.features` recomputes them instead of returning wrong
numbers. (Shards written before checksums were named get theirs when first indexed.) The
index is only a cache of the shard headers: shards missing from it (a writer killed before it
merged its shards, or another process writing at the same time) are found by listing the
folders, so several processes can fill one store, and a killed run loses at most its
unflushed batch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import safetensors
import safetensors.numpy

from polyemo.encoders.base import Encoder, EncoderIdentity
from polyemo.io import write_json, write_table
from polyemo.paths import user_cache_dir

FORMAT = "polyemo-features/1"
POOLED = "pooled"
FRAME_DTYPES = {"float16": np.float16, "float32": np.float32}
SHARD_SUFFIX = ".safetensors"
INDEX_COLUMNS = ["kind", "content_hash", "layer", "shard", "row", "slot", "checksum"]
# Temporary files older than this are leftovers of killed writers (live ones take seconds).
STALE_TEMP_SECONDS = 3600.0
QUARANTINE = "quarantine"
# hex digits of the SHA-256 that end a shard's name
CHECKSUM_DIGITS = 32
_NAMED_CHECKSUM = re.compile(rf"-([0-9a-f]{{{CHECKSUM_DIGITS}}}){re.escape(SHARD_SUFFIX)}$")


class CacheError(RuntimeError):
    """A feature store that cannot be used (wrong encoder dims, unreadable index)."""


class CorruptShardError(CacheError):
    """A shard that failed its checksum or could not be read; it has been quarantined."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}; moved to quarantine, its features will be recomputed")
        self.path = path
        self.reason = reason


def file_checksum(path: str | os.PathLike[str]) -> str:
    """The first :data:`CHECKSUM_DIGITS` hex digits of a file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:CHECKSUM_DIGITS]


def named_checksum(shard: str) -> str | None:
    """The checksum a shard's name carries (None for shards named before checksums)."""
    match = _NAMED_CHECKSUM.search(shard)
    return match.group(1) if match else None


def frames_kind(dtype: str) -> str:
    if dtype not in FRAME_DTYPES:
        raise ValueError(f"frame dtype must be one of {sorted(FRAME_DTYPES)}, got {dtype!r}")
    return f"frames-{dtype}"


def default_cache_root() -> Path:
    return user_cache_dir() / "features"


def store_dir_name(identity: EncoderIdentity) -> str:
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", identity.name).strip("_") or "encoder"
    return f"{safe_name}-{identity.key()}"


def new_shard_name(checksum: str) -> str:
    # Unique across processes and hosts sharing a folder; sortable by creation time; the
    # content checksum last, so a shard carries it wherever the index goes.
    return f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}-{checksum}{SHARD_SUFFIX}"


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
        # (content_hash, layer) -> (shard, row, slot) for pooled; kind -> (content_hash, layer) -> shard for frames
        self._pooled: dict[tuple[str, int], tuple[str, int, int]] = {}
        self._frames: dict[str, dict[tuple[str, int], str]] = {}
        self._known_shards: set[tuple[str, str]] = set()
        self._checksums: dict[tuple[str, str], str] = {}
        # shards whose checksum this process has checked: (kind, shard) -> (size, mtime_ns)
        self._verified: dict[tuple[str, str], tuple[int, int]] = {}
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

    @staticmethod
    def _empty_index() -> pd.DataFrame:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("layer", "row", "slot") else "object")
                             for c in INDEX_COLUMNS})

    def _read_index_file(self) -> pd.DataFrame:
        if not self.index_path.exists():
            return self._empty_index()
        try:
            index = pd.read_parquet(self.index_path)
        except Exception as exc:  # a damaged index is rebuilt from the shards
            warnings.warn(f"{self.index_path}: unreadable index ({exc}); rebuilding from shards", stacklevel=2)
            return self._empty_index()
        if list(index.columns) != INDEX_COLUMNS:  # an index of an older format: rebuilt from the shards
            return self._empty_index()
        return index

    def _shard_layers(self, meta: dict[str, str]) -> list[int]:
        return json.loads(meta["layers"]) if "layers" in meta else list(range(self.num_layers))

    def _shard_rows(self, kind: str, shard: str) -> list[tuple[str, str, int, str, int, int, str]] | None:
        path = self.directory / kind / shard
        try:
            with safetensors.safe_open(str(path), framework="np") as handle:
                meta = handle.metadata() or {}
                keys = list(handle.keys())
            checksum = named_checksum(shard) or file_checksum(path)
        except Exception as exc:
            warnings.warn(f"{path}: unreadable feature shard ignored ({exc})", stacklevel=2)
            return None
        if meta.get("format") != FORMAT:
            warnings.warn(f"{path}: not a {FORMAT} shard; ignored", stacklevel=2)
            return None
        if kind == POOLED:
            hashes = json.loads(meta["content_hashes"])
            layers = self._shard_layers(meta)
            return [(kind, h, layer, shard, row, slot, checksum)
                    for row, h in enumerate(hashes) for slot, layer in enumerate(layers)]
        rows = []
        for key in keys:
            content_hash, layer = key.rsplit("/", 1)
            rows.append((kind, content_hash, int(layer), shard, -1, -1, checksum))
        return rows

    def _scan(self, index: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
        """Add shards missing from ``index``, drop entries of vanished shards."""
        on_disk = self._list_shards()
        disk_set = set(on_disk)
        indexed = set(zip(index["kind"].tolist(), index["shard"].tolist())) if len(index) else set()
        changed = False
        if indexed - disk_set:
            keep = [(k, s) in disk_set for k, s in zip(index["kind"].tolist(), index["shard"].tolist())]
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
        shards = index.drop_duplicates(["kind", "shard"])
        checksums = dict(zip(zip(shards["kind"].tolist(), shards["shard"].tolist()), shards["checksum"].tolist()))
        winners = index.drop_duplicates(["kind", "content_hash", "layer"])  # keeps the earliest shard
        is_pooled = (winners["kind"] == POOLED).to_numpy()
        pooled_rows = winners[is_pooled]
        keys = zip(pooled_rows["content_hash"].tolist(), pooled_rows["layer"].astype(int).tolist())
        values = zip(pooled_rows["shard"].tolist(), pooled_rows["row"].astype(int).tolist(), pooled_rows["slot"].astype(int).tolist())
        frames: dict[str, dict[tuple[str, int], str]] = {}
        for kind, rows in winners[~is_pooled].groupby("kind"):
            frames[str(kind)] = dict(zip(zip(rows["content_hash"].tolist(), rows["layer"].astype(int).tolist()), rows["shard"].tolist()))
        self._pooled = dict(zip(keys, values))
        self._frames = frames
        self._checksums = checksums
        self._known_shards = set(checksums)

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
                index = index.astype({"layer": "int64", "row": "int64", "slot": "int64"})
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

    def has_pooled(self, content_hash: str, layers: Iterable[int] | None = None) -> bool:
        """Are pooled features of ``layers`` (default all) stored for this audio?"""
        chosen = range(self.num_layers) if layers is None else layers
        return all((content_hash, layer) in self._pooled for layer in chosen)

    def has_frames(self, content_hash: str, layers: Iterable[int], dtype: str = "float16") -> bool:
        table = self._frames.get(frames_kind(dtype), {})
        return all((content_hash, layer) in table for layer in layers)

    def pooled_hashes(self) -> set[str]:
        """Audio with pooled features of at least one layer."""
        return {content_hash for content_hash, _ in self._pooled}

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

    # --- integrity ------------------------------------------------------------------------

    def quarantine(self, kind: str, shard: str, reason: str) -> Path:
        """Move a bad shard out of the store and forget its entries; returns where it went."""
        source = self.directory / kind / shard
        folder = self.directory / QUARANTINE
        folder.mkdir(exist_ok=True)
        target = folder / f"{kind}__{shard}"
        try:
            os.replace(source, target)
        except FileNotFoundError:
            pass  # missing, or another process moved it first
        with open(folder / "reasons.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps({"kind": kind, "shard": shard, "reason": reason, "time": time.time()}) + "\n")
        warnings.warn(f"{source}: {reason}; quarantined, its features will be recomputed", stacklevel=3)
        self._forget(kind, shard)
        return target

    def _forget(self, kind: str, shard: str) -> None:
        if kind == POOLED:
            self._pooled = {key: value for key, value in self._pooled.items() if value[0] != shard}
        else:
            table = self._frames.get(kind, {})
            self._frames[kind] = {key: value for key, value in table.items() if value != shard}
        self._known_shards.discard((kind, shard))
        self._verified.pop((kind, shard), None)

    def check_shard(self, kind: str, shard: str) -> None:
        """Check a shard against its checksum (once per process while the file is unchanged);
        a missing, unreadable or changed shard is quarantined and :class:`CorruptShardError` raised."""
        path = self.directory / kind / shard
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._forget(kind, shard)
            raise CorruptShardError(path, "shard is missing") from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get((kind, shard)) == stamp:
            return
        expected = named_checksum(shard) or self._checksums.get((kind, shard))
        if expected is None:  # a shard of an older writer, not yet indexed: trusted as found
            expected = file_checksum(path)
            self._checksums[(kind, shard)] = expected
        actual = file_checksum(path)
        if actual != expected:
            self.quarantine(kind, shard, f"checksum mismatch (sha256 {actual}..., expected {expected}...)")
            raise CorruptShardError(path, "checksum mismatch")
        self._verified[(kind, shard)] = stamp

    def shards_of(self, hashes: Iterable[str], layers: Sequence[int], kind: str = POOLED) -> set[str]:
        """The shards that hold these entries (pooled, or a frames kind)."""
        if kind == POOLED:
            return {self._pooled[(h, layer)][0] for h in hashes for layer in layers if (h, layer) in self._pooled}
        table = self._frames.get(kind, {})
        return {table[(h, layer)] for h in hashes for layer in layers if (h, layer) in table}

    def check_entries(self, hashes: Iterable[str], layers: Sequence[int], kind: str = POOLED) -> list[CorruptShardError]:
        """Check every shard holding these entries; bad ones are quarantined (and returned), so
        the entries they held read as missing and get recomputed."""
        problems = []
        for shard in sorted(self.shards_of(list(hashes), layers, kind)):
            try:
                self.check_shard(kind, shard)
            except CorruptShardError as exc:
                problems.append(exc)
        return problems

    def _open_checked(self, kind: str, shard: str):
        self.check_shard(kind, shard)
        path = self.directory / kind / shard
        try:
            return safetensors.safe_open(str(path), framework="np")
        except Exception as exc:
            self.quarantine(kind, shard, f"unreadable ({exc})")
            raise CorruptShardError(path, f"unreadable ({exc})") from exc

    # --- reading ------------------------------------------------------------------------

    def read_pooled(self, hashes: Sequence[str], layers: Sequence[int] | None = None) -> np.ndarray:
        """(len(hashes), len(layers), pooled_dim) float32; every entry must be stored.

        Raises :class:`CorruptShardError` (after quarantining it) for a shard that fails its checksum."""
        chosen = self.check_layers(layers)
        out = np.empty((len(hashes), len(chosen), self.pooled_dim), dtype=np.float32)
        by_shard: dict[str, list[tuple[int, int, int, int]]] = {}
        for position, content_hash in enumerate(hashes):
            for column, layer in enumerate(chosen):
                entry = self._pooled.get((content_hash, layer))
                if entry is None:
                    raise KeyError(f"{self.directory}: no pooled features of layer {layer} for content hash {content_hash}")
                shard, row, slot = entry
                by_shard.setdefault(shard, []).append((position, column, row, slot))
        for shard, entries in by_shard.items():
            with self._open_checked(POOLED, shard) as handle:
                block = handle.get_tensor("features")
            positions, columns, rows, slots = (np.asarray(part, dtype=np.int64) for part in zip(*entries))
            out[positions, columns] = block[rows, slots]
        return out

    def read_frames(self, content_hash: str, layers: Sequence[int] | None = None, dtype: str = "float16") -> np.ndarray:
        """(len(layers), frames, frame_dim) in the stored dtype."""
        chosen = self.check_layers(layers)
        kind = frames_kind(dtype)
        table = self._frames.get(kind, {})
        arrays = []
        for layer in chosen:
            shard = table.get((content_hash, layer))
            if shard is None:
                raise KeyError(f"{self.directory}: no {dtype} frames of layer {layer} for content hash {content_hash}")
            with self._open_checked(kind, shard) as handle:
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
        fd, tmp_name = tempfile.mkstemp(prefix=".shard.", suffix=".tmp", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            safetensors.numpy.save_file(tensors, str(tmp), metadata={"format": FORMAT, **metadata})
            with open(tmp, "rb+") as handle:  # durable before it becomes visible
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            name = new_shard_name(file_checksum(tmp))
            os.replace(tmp, folder / name)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._checksums[(kind, name)] = named_checksum(name)  # type: ignore[assignment]
        return name

    def write_pooled(self, hashes: Sequence[str], features: np.ndarray, layers: Sequence[int] | None = None) -> str:
        """Store (items, len(layers), pooled_dim) features (default: all layers) as one new shard."""
        chosen = self.check_layers(layers)
        features = np.ascontiguousarray(features, dtype=np.float32)
        expected = (len(hashes), len(chosen), self.pooled_dim)
        if features.shape != expected:
            raise ValueError(f"pooled features of shape {features.shape}, expected {expected}")
        metadata = {"content_hashes": json.dumps(list(hashes)), "layers": json.dumps(chosen)}
        name = self._write_shard(POOLED, {"features": features}, metadata)
        for row, content_hash in enumerate(hashes):
            for slot, layer in enumerate(chosen):
                self._pooled.setdefault((content_hash, layer), (name, row, slot))
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

    def verify(self, repair: bool = True) -> dict[str, Any]:
        """Check every shard: readable, a known format, shapes consistent, checksum matching.

        Returns counts and the bad files with their problem; with ``repair`` (default) bad
        shards are quarantined and the index rewritten, so the next run recomputes their rows.
        """
        self.reload()
        report: dict[str, Any] = {"store": str(self.directory), "shards": 0, "bytes": 0, "bad": []}
        for kind, shard in self._list_shards():
            path = self.directory / kind / shard
            report["shards"] += 1
            report["bytes"] += path.stat().st_size
            problem = None
            rows = self._shard_rows(kind, shard)
            if rows is None:
                problem = "unreadable or not a polyemo shard"
            else:
                expected = named_checksum(shard) or self._checksums.get((kind, shard))
                actual = file_checksum(path)
                if expected is not None and actual != expected:
                    problem = f"checksum mismatch (sha256 {actual}..., expected {expected}...)"
                elif kind == POOLED:
                    with safetensors.safe_open(str(path), framework="np") as handle:
                        shape = handle.get_slice("features").get_shape()
                        layers = self._shard_layers(handle.metadata() or {})
                    items = len({r[1] for r in rows})
                    if list(shape) != [items, len(layers), self.pooled_dim]:
                        problem = f"shape {shape} does not match its {items} hashes x {len(layers)} layers"
            if problem:
                report["bad"].append({"file": str(path), "problem": problem})
                if repair:
                    self.quarantine(kind, shard, problem)
        if repair and report["bad"]:
            self.merge_index()
        report["pooled"] = len(self.pooled_hashes())
        report["pooled_entries"] = len(self._pooled)
        report["frame_tensors"] = sum(len(t) for t in self._frames.values())
        return report

    def gc(self) -> dict[str, Any]:
        """Free space: quarantined shards, temporary files of killed writers, and shards whose
        every entry is also held by an earlier shard (two writers computed the same audio)."""
        self.merge_index()
        freed, removed = 0, []
        with self.locked():
            quarantine = self.directory / QUARANTINE
            if quarantine.is_dir():
                for entry in quarantine.iterdir():
                    freed += entry.stat().st_size
                    if entry.name.endswith(SHARD_SUFFIX):  # not the reasons log
                        removed.append(str(entry))
                shutil.rmtree(quarantine, ignore_errors=True)
            winners = {value[0] for value in self._pooled.values()}
            winners |= {(kind, shard) for kind, table in self._frames.items() for shard in table.values()}  # type: ignore[arg-type]
            for kind, shard in self._list_shards():
                held = shard in winners if kind == POOLED else (kind, shard) in winners
                if not held:
                    path = self.directory / kind / shard
                    freed += path.stat().st_size
                    removed.append(str(path))
                    path.unlink()
        self.merge_index()
        self._remove_stale_temps()
        return {"store": str(self.directory), "removed": removed, "bytes_freed": freed}


def open_stores(cache_dir: str | os.PathLike[str] | None = None) -> list[FeatureStore]:
    """Every feature store under a cache root (default: the user cache)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    if not root.is_dir():
        return []
    return [FeatureStore(folder) for folder in sorted(root.iterdir()) if (folder / "encoder.json").is_file()]
