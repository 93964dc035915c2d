"""Encoder features for a manifest, through the content-addressed cache.

:func:`features` reads what the cache already holds and computes only what is missing:
audio is grouped by content hash (the same recording under two names is encoded once),
sorted by duration and packed into batches of about ``batch_seconds`` of audio, loaded
with :func:`polyemo.audio.load_audio` (one unusable file becomes a row of the failures
table, never a stopped run), encoded, and written to the cache in atomic shards. With
``workers > 1`` each worker is a separate process with its own encoder and its share of
the CPU threads, taking batches from a shared queue and writing its own shards.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from polyemo.audio import SAMPLE_RATE, AudioError, load_audio, pcm_hash
from polyemo.cache.store import FRAME_DTYPES, FeatureStore, frames_kind
from polyemo.encoders.base import Encoder, pool_mean_std
from polyemo.io import read_table, write_table
from polyemo.progress import progress_bar

FAILURE_COLUMNS = ["utt_id", "path", "content_hash", "error"]
KINDS = ("pooled", "frames")


@dataclass
class WorkItem:
    """One distinct recording to encode (a representative row of its content hash)."""

    content_hash: str
    path: str
    seconds: float
    need_pooled: bool
    need_frames: bool


@dataclass
class Plan:
    """What a batch loop computes and how it writes it."""

    kind: str
    frame_layers: list[int]
    frame_dtype: str
    #: the encoder runs blocks up to this layer only (None: all); pooled features are stored for ``pooled_layers``
    last_layer: int | None
    pooled_layers: list[int]
    flush_seconds: float
    shard_items: int
    shard_bytes: int


@dataclass
class BatchReport:
    """Outcome of one batch, sent from a worker to the progress display."""

    done: list[tuple[str, float]]  # (content_hash, audio seconds)
    failed: list[tuple[str, str]]  # (content_hash, error)


@dataclass
class FeatureResult:
    """Features aligned with the manifest rows.

    ``array`` is (rows, layers, pooled_dim) float32 for pooled features (NaN where a row
    failed) or, for frames, a list with one (layers, frames, frame_dim) array per row (None
    where it failed). ``ok`` marks the rows that have features; ``failures`` lists the
    others (utt_id, path, content_hash, error). Counts are of distinct recordings.
    """

    array: np.ndarray | list[np.ndarray | None]
    ok: np.ndarray
    failures: pd.DataFrame
    utt_ids: list[str]
    layers: list[int]
    kind: str
    encoder: dict[str, Any]
    store_dir: Path
    frame_rate: float | None = None
    computed: int = 0
    reused: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures_path: Path | None = None

    @property
    def x_real_time(self) -> float:
        """Seconds of audio encoded per wall-clock second (0 when nothing was computed)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> str:
        speed = f"{self.x_real_time:.1f}x real time" if self.computed else "nothing to compute"
        return (
            f"{self.encoder.get('name')} {self.kind}: {int(self.ok.sum())}/{len(self.ok)} rows ok; "
            f"computed {self.computed}, reused {self.reused} from cache, failed {self.failed}; "
            f"{self.audio_seconds:.1f} s audio in {self.wall_seconds:.1f} s ({speed})"
        )


# --- the batch loop (runs in the calling process or in each worker) -------------------------

def make_batches(items: Sequence[WorkItem], batch_seconds: float) -> list[list[WorkItem]]:
    """Longest first, packed up to ``batch_seconds`` of audio (a longer file goes alone)."""
    ordered = sorted(items, key=lambda item: -item.seconds)
    batches: list[list[WorkItem]] = []
    current: list[WorkItem] = []
    total = 0.0
    for item in ordered:
        if current and total + item.seconds > batch_seconds:
            batches.append(current)
            current, total = [], 0.0
        current.append(item)
        total += item.seconds
    if current:
        batches.append(current)
    return batches


def _load(item: WorkItem) -> np.ndarray | str:
    """The waveform, or the reason it cannot be used."""
    try:
        wave = load_audio(item.path)
    except AudioError as exc:
        return exc.reason
    except Exception as exc:  # never let one file stop the batch
        return f"{type(exc).__name__}: {exc}"
    actual = pcm_hash(wave)
    if actual != item.content_hash:
        return f"audio changed since the manifest was made (content hash {actual}, manifest says {item.content_hash})"
    return wave


def _load_batch(batch: list[WorkItem]) -> list[np.ndarray | str]:
    return [_load(item) for item in batch]


def _prefetched(batches: Iterable[list[WorkItem]]) -> Iterator[tuple[list[WorkItem], list[np.ndarray | str]]]:
    """Decode the next batch in a thread while the encoder works on this one."""
    iterator = iter(batches)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="polyemo-audio") as pool:
        batch = next(iterator, None)
        future = pool.submit(_load_batch, batch) if batch is not None else None
        while batch is not None:
            loaded = future.result()
            following = next(iterator, None)
            future = pool.submit(_load_batch, following) if following is not None else None
            yield batch, loaded
            batch = following


def _error_text(exc: BaseException) -> str:
    return f"encoder failed: {type(exc).__name__}: {exc}"


class _Writer:
    """Buffers computed features and flushes them to the store as shards."""

    def __init__(self, store: FeatureStore, plan: Plan) -> None:
        self.store = store
        self.plan = plan
        self.pooled: list[tuple[str, np.ndarray]] = []
        self.frames: list[tuple[str, np.ndarray]] = []
        self.frame_bytes = 0
        self.frame_rate: float | None = None
        self.last_flush = time.monotonic()

    def add_pooled(self, content_hash: str, features: np.ndarray) -> None:
        self.pooled.append((content_hash, features))

    def add_frames(self, content_hash: str, frames: np.ndarray, frame_rate: float) -> None:
        self.frames.append((content_hash, frames))
        self.frame_bytes += frames.nbytes
        self.frame_rate = frame_rate

    def maybe_flush(self) -> None:
        due = time.monotonic() - self.last_flush >= self.plan.flush_seconds
        if due or len(self.pooled) >= self.plan.shard_items or self.frame_bytes >= self.plan.shard_bytes:
            self.flush()

    def flush(self) -> None:
        # Frames first: an item counts as done only once its pooled row exists too.
        if self.frames:
            self.store.write_frames(self.frames, self.plan.frame_layers, self.plan.frame_dtype, self.frame_rate)
            self.frames, self.frame_bytes = [], 0
        if self.pooled:
            self.store.write_pooled([h for h, _ in self.pooled], np.stack([f for _, f in self.pooled]), self.plan.pooled_layers)
            self.pooled = []
        self.last_flush = time.monotonic()


def _frames_upto(encoder: Encoder, waves: list[np.ndarray], last_layer: int | None):
    if last_layer is None or not hasattr(encoder, "frames_upto"):
        return encoder.frames(waves)
    return encoder.frames_upto(waves, last_layer)


def _pooled_upto(encoder: Encoder, waves: list[np.ndarray], last_layer: int | None) -> np.ndarray:
    if last_layer is None or not hasattr(encoder, "pooled_upto"):
        return encoder.pooled(waves)
    return encoder.pooled_upto(waves, last_layer)


def _encode(encoder: Encoder, plan: Plan, batch: list[WorkItem], waves: list[np.ndarray]):
    """Pooled features (or None per item) and frames (or None per item) for a batch."""
    n = len(batch)
    pooled: list[np.ndarray | None] = [None] * n
    frames: list[tuple[np.ndarray, float] | None] = [None] * n
    if plan.kind == "frames":
        outputs = _frames_upto(encoder, waves, plan.last_layer)
        if len(outputs) != n:
            raise ValueError(f"encoder returned {len(outputs)} frame sets for {n} waveforms")
        # Pool the frames we already have with the encoder's own pooling (Encoder.pool
        # equals what pooled() returns); older encoders without it pool by mean/std only
        # when they do not override pooled().
        pool = getattr(encoder, "pool", None)
        if pool is None and type(encoder).pooled is Encoder.pooled:
            pool = pool_mean_std
        for i, output in enumerate(outputs):
            layers = np.asarray(output.layers, dtype=np.float32)
            if batch[i].need_frames:
                frames[i] = (layers[plan.frame_layers], float(output.frame_rate))
            if batch[i].need_pooled and pool is not None:
                pooled[i] = np.asarray(pool(layers), dtype=np.float32)
        wanted = [i for i in range(n) if batch[i].need_pooled and pooled[i] is None]
        if wanted:
            block = np.asarray(_pooled_upto(encoder, [waves[i] for i in wanted], plan.last_layer), dtype=np.float32)
            for j, i in enumerate(wanted):
                pooled[i] = block[j]
    else:
        block = np.asarray(_pooled_upto(encoder, waves, plan.last_layer), dtype=np.float32)
        if block.shape[0] != n:
            raise ValueError(f"encoder returned {block.shape[0]} pooled rows for {n} waveforms")
        pooled = list(block)
    return pooled, frames


def run_batches(
    encoder: Encoder,
    store: FeatureStore,
    batches: Iterable[list[WorkItem]],
    plan: Plan,
    report: Callable[[BatchReport], None],
) -> None:
    """Encode ``batches`` into ``store``; ``report`` is told each batch's outcome."""
    writer = _Writer(store, plan)
    expected = (len(plan.pooled_layers), encoder.pooled_dim)
    try:
        for batch, loaded in _prefetched(batches):
            outcome = BatchReport(done=[], failed=[])
            usable = [(item, wave) for item, wave in zip(batch, loaded) if not isinstance(wave, str)]
            for item, wave in zip(batch, loaded):
                if isinstance(wave, str):
                    outcome.failed.append((item.content_hash, wave))
            groups = [usable]
            results = []
            while groups:
                group = groups.pop()
                if not group:
                    continue
                try:
                    pooled, frames = _encode(encoder, plan, [i for i, _ in group], [w for _, w in group])
                    results.extend(zip(group, pooled, frames))
                except Exception as exc:
                    if len(group) == 1:
                        outcome.failed.append((group[0][0].content_hash, _error_text(exc)))
                    else:  # find the culprit: retry the items one by one
                        groups.extend([member] for member in group)
            for (item, wave), pooled_row, frame_pair in results:
                if pooled_row is not None and (pooled_row.shape != expected or not np.all(np.isfinite(pooled_row))):
                    problem = "non-finite values" if pooled_row.shape == expected else f"shape {pooled_row.shape}, expected {expected}"
                    outcome.failed.append((item.content_hash, f"encoder output has {problem}"))
                    continue
                if frame_pair is not None and not np.all(np.isfinite(frame_pair[0])):
                    outcome.failed.append((item.content_hash, "encoder frames have non-finite values"))
                    continue
                if frame_pair is not None:
                    writer.add_frames(item.content_hash, frame_pair[0], frame_pair[1])
                if pooled_row is not None:
                    writer.add_pooled(item.content_hash, pooled_row)
                outcome.done.append((item.content_hash, wave.size / SAMPLE_RATE))
            writer.maybe_flush()
            report(outcome)
    finally:
        writer.flush()


# --- worker processes ---------------------------------------------------------------------

def _build_encoder(spec: tuple) -> Encoder:
    if spec[0] == "name":
        from polyemo.encoders import get_encoder

        return get_encoder(spec[1], **spec[2])
    return spec[1]


def _set_threads(threads: int) -> None:
    import sys

    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def _worker_main(spec: tuple, store_dir: str, plan: Plan, threads: int, tasks, events) -> None:
    try:
        encoder = _build_encoder(spec)
        _set_threads(threads)
        store = FeatureStore(store_dir)
    except BaseException:
        events.put(("fatal", os.getpid(), traceback.format_exc()))
        return

    def from_queue() -> Iterator[list[WorkItem]]:
        while (batch := tasks.get()) is not None:
            yield batch

    try:
        run_batches(encoder, store, from_queue(), plan, lambda outcome: events.put(("batch", os.getpid(), outcome)))
    except BaseException:
        events.put(("fatal", os.getpid(), traceback.format_exc()))
        return
    events.put(("exit", os.getpid(), None))


#: encoders built in this Ray worker process, by spec (weights load once per worker)
_RAY_ENCODERS: dict[str, Encoder] = {}


def _ray_task(spec: tuple, store_dir: str, batches: list[list[WorkItem]], plan: Plan, threads: int) -> list[BatchReport]:
    """One Ray task (:mod:`polyemo.cache.ray_backend`): encode ``batches`` into the store."""
    if spec[0] == "name":
        encoder = _RAY_ENCODERS.get(repr(spec)) or _RAY_ENCODERS.setdefault(repr(spec), _build_encoder(spec))
    else:  # an instance, shipped with the task
        encoder = _build_encoder(spec)
    _set_threads(threads)
    reports: list[BatchReport] = []
    run_batches(encoder, FeatureStore(store_dir), batches, plan, reports.append)
    return reports


def _run_workers(
    spec: tuple,
    store: FeatureStore,
    batches: list[list[WorkItem]],
    plan: Plan,
    workers: int,
    on_report: Callable[[BatchReport], None],
) -> dict[str, str]:
    """Run batches in ``workers`` processes; returns errors of workers that failed."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fork is unsafe after torch started threads
    tasks = context.Queue()
    events = context.Queue()
    for batch in batches:
        tasks.put(batch)
    for _ in range(workers):
        tasks.put(None)
    threads = max(1, (os.cpu_count() or 1) // workers)
    thread_vars = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in thread_vars}
    for name in thread_vars:  # children read these at import, before any of our code runs
        os.environ[name] = str(threads)
    processes = []
    try:
        for _ in range(workers):
            process = context.Process(
                target=_worker_main, args=(spec, str(store.directory), plan, threads, tasks, events), daemon=True
            )
            process.start()
            processes.append(process)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    errors: dict[str, str] = {}
    finished: set[int] = set()

    def handle(event: tuple) -> None:
        kind, pid, payload = event
        if kind == "batch":
            on_report(payload)
        else:
            finished.add(pid)
            if kind == "fatal":
                errors[f"worker {pid}"] = payload

    try:
        while any(p.is_alive() for p in processes):
            try:
                handle(events.get(timeout=0.2))
            except queue.Empty:
                pass
        while True:  # what the workers sent just before they exited
            try:
                handle(events.get(timeout=0.2))
            except queue.Empty:
                break
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    for process in processes:
        if process.pid not in finished:
            errors[f"worker {process.pid}"] = f"worker process died (exit code {process.exitcode})"
    return errors


# --- the public entry point -----------------------------------------------------------------

def _as_frame(manifest: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    frame = read_table(manifest) if not isinstance(manifest, pd.DataFrame) else manifest
    for column in ("utt_id", "path"):
        if column not in frame.columns:
            raise ValueError(f"manifest lacks the column {column!r}")
    frame = frame.reset_index(drop=True).copy()
    if "content_hash" not in frame.columns:
        frame["content_hash"] = pd.NA
    if "duration" not in frame.columns:
        frame["duration"] = np.nan
    return frame


def _fill_hashes(frame: pd.DataFrame, workers: int) -> dict[int, str]:
    """Content hashes for rows without one; returns row -> error for undecodable files."""
    from polyemo.manifest import hash_files

    missing = frame.index[frame["content_hash"].isna() | (frame["content_hash"].astype("string") == "")]
    if not len(missing):
        return {}
    paths = frame.loc[missing, "path"].astype(str).tolist()
    results, failures = hash_files(sorted(set(paths)), workers=workers)
    errors = {}
    for row, path in zip(missing, paths):
        if path in results:
            frame.at[row, "content_hash"], seconds = results[path]
            if pd.isna(frame.at[row, "duration"]):
                frame.at[row, "duration"] = seconds
        else:
            errors[row] = failures.get(path, "cannot hash audio")
    return errors


def _duration(path: str, known: float) -> float:
    if pd.notna(known) and known > 0:
        return float(known)
    try:
        return float(sf.info(path).duration)
    except Exception:
        return 0.0  # the load will report the real problem


def _save_failures(table: pd.DataFrame, target: Path, manifest_paths: set[str], merge: bool) -> None:
    """Write the failures; with ``merge`` (the per-store table) rows of other manifests stay."""
    if merge and target.exists():
        previous = read_table(target)
        previous = previous[~previous["path"].astype(str).isin(manifest_paths)]
        if not previous.empty:
            table = pd.concat([previous, table], ignore_index=True) if not table.empty else previous
    elif merge and table.empty:
        return
    write_table(target, table)


#: adopting an older store needs this many of its recordings recomputed to agree within ADOPT_RTOL
ADOPT_CHECKS = 8
ADOPT_RTOL = 1e-4


def adopt_unversioned(store: FeatureStore, encoder: Encoder, frame: pd.DataFrame, row_errors: dict[int, str]) -> bool:
    """Take over the features of a store written before identities carried versions.

    Such a store has the same name, weights, precision and options but a key without the
    feature-code and library versions, so nothing says which code computed it. It is adopted
    only if :data:`ADOPT_CHECKS` of its recordings from this manifest, recomputed now, agree
    with what it holds (relative difference <= :data:`ADOPT_RTOL` of each vector's largest
    value); its shards are then hard-linked (copied across file systems) into the new store,
    whose encoder.json records the check. Otherwise everything is computed afresh.
    """
    import json
    import shutil
    import warnings

    from polyemo.cache.store import CacheError, store_dir_name
    from polyemo.io import write_json

    identity = encoder.identity
    if not identity.versions:
        return False
    legacy_dir = store.directory.parent / store_dir_name(identity).replace(identity.key(), identity.unversioned_key())
    if legacy_dir == store.directory or not (legacy_dir / "encoder.json").is_file():
        return False
    try:
        legacy = FeatureStore(legacy_dir)
    except (CacheError, OSError, ValueError):
        return False
    if legacy.info.get("identity", {}).get("versions") or (legacy.num_layers, legacy.pooled_dim) != (store.num_layers, store.pooled_dim):
        return False
    stored = legacy.pooled_hashes()
    sample: dict[str, str] = {}
    for row in range(len(frame)):
        content_hash = str(frame.at[row, "content_hash"])
        if row not in row_errors and content_hash in stored and legacy.has_pooled(content_hash):
            sample.setdefault(content_hash, str(frame.at[row, "path"]))
    picked = sorted(sample)[:ADOPT_CHECKS]
    if len(picked) < min(ADOPT_CHECKS, len(stored)):
        return False  # too few of its recordings in this manifest to check it
    waves = [_load(WorkItem(h, sample[h], 0.0, True, False)) for h in picked]
    if any(isinstance(w, str) for w in waves):
        return False
    fresh = np.asarray(encoder.pooled(waves), dtype=np.float32)
    old = legacy.read_pooled(picked)
    scale = np.maximum(np.abs(old).max(axis=-1, keepdims=True), np.finfo(np.float32).tiny)
    difference = float((np.abs(fresh - old) / scale).max())
    if not difference <= ADOPT_RTOL:
        warnings.warn(f"{legacy_dir}: features of an older polyemo differ from this version's by {difference:.2e} "
                      f"(relative); not reused, computing afresh", stacklevel=3)
        return False
    for kind in legacy._kind_dirs():
        target = store.directory / kind
        target.mkdir(exist_ok=True)
        for source in (legacy_dir / kind).glob("*.safetensors"):
            if source.name.startswith(".") or (target / source.name).exists():
                continue
            try:
                os.link(source, target / source.name)
            except OSError:
                shutil.copy2(source, target / source.name)
    info = json.loads((store.directory / "encoder.json").read_text(encoding="utf-8"))
    info["adopted_from"] = {"store": legacy_dir.name, "checked_recordings": len(picked),
                            "max_relative_difference": difference, "tolerance": ADOPT_RTOL,
                            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with store.locked():
        write_json(store.directory / "encoder.json", info)
    store.info = info
    store.merge_index()
    return True


def _extraction_bar(enabled: bool, total: int, description: str):
    """The shared progress bar with extraction's columns: audio seconds, x real time,
    failures and the time remaining."""
    from rich.progress import TimeRemainingColumn

    bar = progress_bar("{task.fields[audio]:.0f} s audio", "{task.fields[speed]:.1f}x real time",
                       "{task.fields[failed]} failed", TimeRemainingColumn(), enabled=enabled)
    task = bar.add_task(description, total=total, audio=0.0, speed=0.0, failed=0)
    return bar, task


def features(
    manifest: pd.DataFrame | str | os.PathLike[str],
    encoder: Encoder | str,
    layers: Sequence[int] | None = None,
    kind: str = "pooled",
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    batch_seconds: float = 60.0,
    progress: bool = True,
    *,
    encoder_options: dict[str, Any] | None = None,
    frame_dtype: str = "float16",
    failures_path: str | os.PathLike[str] | None = None,
    flush_seconds: float = 60.0,
    shard_items: int = 1024,
    shard_bytes: int = 256 * 2**20,
    ray: str | None = None,
) -> FeatureResult:
    """Encoder features for every manifest row, computing only what the cache lacks.

    ``encoder`` is an :class:`~polyemo.encoders.base.Encoder` or a registry name (built
    with ``encoder_options``; worker processes then build their own copy, otherwise they
    receive the instance by pickling). ``kind`` is "pooled" (per-layer utterance vectors)
    or "frames" (per-layer frame features stored as ``frame_dtype`` for ``layers``; pooled
    features are stored alongside). ``layers`` (default all) are the layers wanted: an
    encoder that can stop early runs only up to the deepest of them, and pooled features of
    every layer it computed are cached. Shards about to be reused are checked against their
    checksums first; a corrupt one is quarantined and its rows computed again.
    ``batch_seconds`` of audio go through the encoder at once.

    Unusable files (unreadable, empty, silent, too short, changed since the manifest was
    made, or an encoder error) are skipped and listed in ``result.failures``; that table
    is also written to ``failures_path`` (CSV or Parquet) or, by default, merged into
    ``failures.parquet`` in the encoder's cache folder.

    With ``ray`` (an address: ``auto``, ``ray://host:port``, or ``local`` for a private
    instance) the batches run as Ray tasks writing into the same store, which must then be on
    a path every node sees (:mod:`polyemo.cache.ray_backend`); ``workers`` is ignored.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if frame_dtype not in FRAME_DTYPES:
        raise ValueError(f"frame_dtype must be one of {sorted(FRAME_DTYPES)}, got {frame_dtype!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    options = dict(encoder_options or {})
    if isinstance(encoder, str):
        from polyemo.encoders import get_encoder

        spec: tuple = ("name", encoder, options)
        encoder = get_encoder(encoder, **options)
    else:
        if options:
            raise ValueError("encoder_options apply only when the encoder is given by name")
        spec = ("instance", encoder)
    if kind == "frames" and not encoder.has_frames:
        raise ValueError(f"encoder {encoder.identity.name!r} gives utterance functionals only, no frames")

    frame = _as_frame(manifest)
    row_errors = _fill_hashes(frame, workers)
    store = FeatureStore.open(encoder, cache_dir)
    chosen = store.check_layers(layers)
    hashes = frame["content_hash"].astype("string")
    if not store.pooled_hashes():
        adopt_unversioned(store, encoder, frame, row_errors)
    # The encoder stops after the deepest layer asked for (if it can); pooled features are
    # stored for every layer it computed, so a later request for shallower ones is free.
    last_layer = encoder.last_layer(chosen) if hasattr(encoder, "last_layer") else None
    pooled_layers = list(range(last_layer + 1)) if last_layer is not None else list(range(store.num_layers))
    # Checksums of the shards about to be reused; a bad one is quarantined and its rows
    # become missing, so they are computed now instead of read wrong.
    valid_rows = [row for row in range(len(frame)) if row not in row_errors]
    present = sorted({str(hashes.iat[row]) for row in valid_rows})
    store.check_entries(present, chosen)
    if kind == "frames":
        store.check_entries(present, chosen, frames_kind(frame_dtype))

    # One work item per distinct recording that the cache lacks.
    items: dict[str, WorkItem] = {}
    reused: set[str] = set()
    for row in range(len(frame)):
        if row in row_errors:
            continue
        content_hash = str(hashes.iat[row])
        if content_hash in items or content_hash in reused:
            continue
        need_pooled = not store.has_pooled(content_hash, chosen)
        need_frames = kind == "frames" and not store.has_frames(content_hash, chosen, frame_dtype)
        if need_pooled or need_frames:
            path = str(frame.at[row, "path"])
            items[content_hash] = WorkItem(content_hash, path, _duration(path, frame.at[row, "duration"]), need_pooled, need_frames)
        else:
            reused.add(content_hash)

    plan = Plan(kind, chosen, frame_dtype, last_layer, pooled_layers, flush_seconds, shard_items, shard_bytes)
    batches = make_batches(list(items.values()), batch_seconds)
    if batches and workers == 1 and ray is None and hasattr(encoder, "load"):
        encoder.load()  # weights load once here, not inside the first batch's time
    hash_errors: dict[str, str] = {}
    audio_seconds = 0.0
    computed = 0
    started = time.perf_counter()
    bar, task = _extraction_bar(progress and bool(items), len(items), f"{encoder.identity.name} {kind}")
    lock = threading.Lock()

    def on_report(outcome: BatchReport) -> None:
        nonlocal audio_seconds, computed
        with lock:
            for content_hash, error in outcome.failed:
                hash_errors[content_hash] = error
            for _, seconds in outcome.done:
                audio_seconds += seconds
            computed += len(outcome.done)
            elapsed = time.perf_counter() - started
            bar.update(
                task,
                advance=len(outcome.done) + len(outcome.failed),
                audio=audio_seconds,
                speed=audio_seconds / elapsed if elapsed > 0 else 0.0,
                failed=len(hash_errors),
            )

    with bar:
        if batches and ray is None and workers == 1:
            run_batches(encoder, store, batches, plan, on_report)
        elif batches:
            if ray is not None:
                from polyemo.cache.ray_backend import run_on_ray

                worker_errors = run_on_ray(ray, _ray_task, spec, str(store.directory), batches, plan, on_report)
                every_one_failed = bool(worker_errors) and computed == 0
            else:
                worker_errors = _run_workers(spec, store, batches, plan, min(workers, len(batches)), on_report)
                every_one_failed = len(worker_errors) >= min(workers, len(batches)) and computed == 0
            if every_one_failed:
                raise RuntimeError("every extraction worker failed:\n" + "\n".join(worker_errors.values()))
            if worker_errors:
                reason = "; ".join(sorted({e.strip().splitlines()[-1] for e in worker_errors.values()}))
                for content_hash in items:
                    hash_errors.setdefault(content_hash, f"not computed: an extraction worker failed ({reason})")
    wall = time.perf_counter() - started if items else 0.0
    store.merge_index()

    # Align with the manifest rows.
    n = len(frame)
    ok = np.zeros(n, dtype=bool)
    errors: list[str | None] = [None] * n
    for row in range(n):
        if row in row_errors:
            errors[row] = row_errors[row]
            continue
        content_hash = str(hashes.iat[row])
        stored = store.has_pooled(content_hash, chosen) and (kind == "pooled" or store.has_frames(content_hash, chosen, frame_dtype))
        if stored:
            ok[row] = True
        else:
            errors[row] = hash_errors.get(content_hash, "not computed (extraction stopped before reaching it)")
    if kind == "pooled":
        array: np.ndarray | list[np.ndarray | None] = np.full((n, len(chosen), store.pooled_dim), np.nan, dtype=np.float32)
        ok_rows = np.flatnonzero(ok)
        if len(ok_rows):
            unique, inverse = np.unique(hashes.iloc[ok_rows].to_numpy(dtype=str), return_inverse=True)
            array[ok_rows] = store.read_pooled(list(unique), chosen)[inverse]
    else:
        cache: dict[str, np.ndarray] = {}
        array = []
        for row in range(n):
            if not ok[row]:
                array.append(None)
                continue
            content_hash = str(hashes.iat[row])
            if content_hash not in cache:
                cache[content_hash] = store.read_frames(content_hash, chosen, frame_dtype)
            array.append(cache[content_hash])

    bad = [row for row in range(n) if not ok[row]]
    failures = pd.DataFrame(
        {
            "utt_id": frame.loc[bad, "utt_id"].astype(str).tolist(),
            "path": frame.loc[bad, "path"].astype(str).tolist(),
            "content_hash": [None if pd.isna(hashes.iat[r]) else str(hashes.iat[r]) for r in bad],
            "error": [errors[r] for r in bad],
        },
        columns=FAILURE_COLUMNS,
    )
    target = Path(failures_path) if failures_path is not None else store.directory / "failures.parquet"
    with store.locked():
        _save_failures(failures, target, set(frame["path"].astype(str)), merge=failures_path is None)

    failed_hashes = {str(hashes.iat[r]) for r in bad if r not in row_errors}
    return FeatureResult(
        array=array,
        ok=ok,
        failures=failures,
        utt_ids=frame["utt_id"].astype(str).tolist(),
        layers=chosen,
        kind=kind,
        encoder=encoder.identity.as_dict(),
        store_dir=store.directory,
        frame_rate=store.frame_rate(),
        computed=computed,
        reused=len(reused),
        failed=len(failed_hashes) + len(row_errors),
        audio_seconds=audio_seconds,
        wall_seconds=wall,
        failures_path=target if (failures_path is not None or target.exists()) else None,
    )
