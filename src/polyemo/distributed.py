"""Ray, when asked for (the optional ``ray`` extra): connecting once, and running independent
tasks with their outcomes as they finish. Used by extraction (batches) and benchmarks (cells).

``address`` is what ``ray.init`` takes: ``"auto"`` (a running cluster: ``ray start --head`` on
this machine, or the one ``RAY_ADDRESS`` names), ``"ray://host:10001"``, or ``"local"`` to
start a private instance on this machine. Every node must see the same paths for the cache
and the output folders (a shared file system); polyemo's stores and run folders are safe for
several writers and resumable, so a lost task only costs its unfinished work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def require_ray():
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("Ray is not installed: pip install 'polyemo[ray]' (or run without --ray)") from exc
    return ray


def connect(address: str, num_cpus: int | None = None):
    """``ray.init`` once per process (``local``: a private instance with ``num_cpus``)."""
    ray = require_ray()
    if not ray.is_initialized():
        options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if address == "local":
            options.update(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
        else:
            options["address"] = address
        ray.init(**options)
    return ray


def cluster_cpus(address: str) -> int:
    return max(1, int(connect(address).cluster_resources().get("CPU", 1)))


def run_tasks(address: str, function: Callable[..., Any], arguments: Sequence[tuple], num_cpus: int = 1
              ) -> Iterator[tuple[int, Any, BaseException | None]]:
    """``function(*arguments[i])`` as Ray tasks; yields ``(i, result, None)`` or ``(i, None, error)``
    in the order they finish (never retried: polyemo's resumable outputs make a re-run cheap)."""
    ray = connect(address)
    remote = ray.remote(num_cpus=num_cpus, max_retries=0)(function)
    pending = {remote.remote(*args): index for index, args in enumerate(arguments)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(done[0])
        try:
            yield index, ray.get(done[0]), None
        except Exception as exc:  # noqa: BLE001 - reported to the caller, per task
            yield index, None, exc
