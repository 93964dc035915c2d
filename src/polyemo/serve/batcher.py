"""Micro-batching of concurrent requests onto one model.

Requests wait in a bounded asyncio queue; one worker task takes up to ``max_batch`` of them
(waiting at most ``max_wait_seconds`` for company) and runs the batch in a worker thread,
so the event loop stays free and the model is only ever used by one thread at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFullError(RuntimeError):
    """More requests are waiting than the server accepts; the client should retry later."""


@dataclass
class _Job(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result] = field(repr=False)


class MicroBatcher(Generic[Item, Result]):
    """Collects items submitted concurrently and processes them in batches.

    ``process(items) -> results`` (same length and order) runs in a thread. An exception
    from it fails every request of that batch, never the batcher itself.
    """

    def __init__(
        self,
        process: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch: int = 8,
        max_wait_seconds: float = 0.01,
        max_queue: int = 256,
    ) -> None:
        self._process = process
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self._queue: asyncio.Queue[_Job[Item, Result]] = asyncio.Queue(maxsize=max_queue)
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.items_run = 0

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="polyemo-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("server is shutting down"))

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def submit(self, item: Item) -> Result:
        if self._worker is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        job: _Job[Item, Result] = _Job(item, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFullError(f"{self._queue.maxsize} requests are already waiting") from None
        return await job.future

    async def _collect(self) -> list[_Job[Item, Result]]:
        jobs = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_seconds
        while len(jobs) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 and self._queue.empty():
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), timeout=max(remaining, 0)))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._collect()
            # A client that disconnected cancelled its future; skip its work.
            jobs = [job for job in jobs if not job.future.done()]
            if not jobs:
                continue
            try:
                results = await asyncio.to_thread(self._process, [job.item for job in jobs])
                if len(results) != len(jobs):
                    raise RuntimeError(f"batch of {len(jobs)} items gave {len(results)} results")
            except Exception as exc:  # noqa: BLE001 - fail the batch's requests, keep serving
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.batches_run += 1
            self.items_run += len(jobs)
            for job, result in zip(jobs, results):
                if not job.future.done():
                    job.future.set_result(result)
