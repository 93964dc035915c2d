"""Extraction batches as Ray tasks (the optional ``ray`` extra), writing into one shared store.

The store is content-addressed and safe for several writers (see :mod:`polyemo.cache.store`),
so a cluster needs only the cache folder on a path every node sees (NFS, a shared disk): each
task builds its encoder once per worker process, encodes its share of the batches and writes
its own shards there, exactly as a local worker process does. A killed task, node or driver
loses at most its unflushed batch; running the same command again computes what is missing.

Addresses: see :mod:`polyemo.distributed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def run_on_ray(address: str, task: Callable[..., list], spec: tuple, store_dir: str, batches: list, plan: Any,
               on_report: Callable[[Any], None], threads_per_task: int = 1) -> dict[str, str]:
    """Run ``batches`` as Ray tasks of ``task(spec, store_dir, batches, plan, threads)`` (which
    returns their batch reports); ``on_report`` gets each batch's outcome as tasks finish.
    Returns the errors of tasks that failed (their batches stay uncomputed, as for a dead worker)."""
    from polyemo.distributed import cluster_cpus, run_tasks

    slots = max(1, cluster_cpus(address) // threads_per_task)
    # a few chunks per slot: loads stay balanced, encoders load once per worker process
    count = min(len(batches), slots * 2)
    size = math.ceil(len(batches) / count) if count else 0
    chunks = [batches[i:i + size] for i in range(0, len(batches), size)] if size else []
    errors: dict[str, str] = {}
    arguments = [(spec, store_dir, chunk, plan, threads_per_task) for chunk in chunks]
    for index, reports, error in run_tasks(address, task, arguments, num_cpus=threads_per_task):
        if error is not None:
            text = str(error).strip()
            errors[f"ray task {index}"] = f"{type(error).__name__}: {text.splitlines()[-1] if text else error}"
            continue
        for report in reports:
            on_report(report)
    return errors
