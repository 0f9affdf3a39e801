"""Micro-batching: coalesce concurrent requests for one model into one onnxruntime call.

Requests are queued; one collector task takes the first waiting request, then
keeps taking more until the batch holds ``max_batch_rows`` rows or
``max_delay`` seconds have passed since the first one arrived (with
``max_delay = 0`` it takes whatever is already waiting, without waiting). When
the previous batch held a single request (an idle server) a request is not held
back for others (and, when nothing is queued or running, skips the queue
altogether): waiting only pays off under load, and under load the previous batch
held several. The
batch runs in a thread pool (never on the event loop), and each request gets
back its own rows. While ``workers`` batches run, the next batch keeps filling.

A batch that fails is re-run one request at a time, so one bad request (say a
row onnxruntime rejects) fails alone and its neighbours still get their answers.

Only asyncio, numpy and the standard library: the server and the tests share it.

    >>> b = MicroBatcher(run_batch, max_batch_rows=64, max_delay=0.001)  # doctest: +SKIP
    >>> await b.submit(payload, rows=3)                                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

__all__ = ["MicroBatcher", "BatchObserver", "concat_feeds", "split_outputs"]


class BatchObserver(Protocol):
    """What the batcher reports per onnxruntime call (the server feeds Prometheus from it)."""

    def batch(self, rows: int, requests: int, queue_seconds: Sequence[float], run_seconds: float) -> None: ...


@dataclass
class _Item:
    payload: Any
    rows: int
    future: asyncio.Future
    enqueued: float


class MicroBatcher:
    """Queue + collector task for one model.

    ``run_batch(payloads) -> results`` runs in ``executor`` (one result per
    payload, same order). ``max_batch_rows`` bounds the rows of a batch; a single
    request larger than that runs alone. ``enabled=False`` runs every request by
    itself (still off the event loop): the "batching off" baseline.
    """

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], *, max_batch_rows: int = 64,
                 max_delay: float = 0.001, executor: Executor | None = None, workers: int = 1,
                 enabled: bool = True, observer: BatchObserver | None = None):
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows = {max_batch_rows} (expected >= 1)")
        if max_delay < 0:
            raise ValueError(f"max_delay = {max_delay} (expected >= 0 seconds)")
        if workers < 1:
            raise ValueError(f"workers = {workers} (expected >= 1)")
        self._run_batch = run_batch
        self.max_batch_rows = max_batch_rows
        self.max_delay = max_delay
        self.enabled = enabled
        self._executor = executor
        self._observer = observer
        self._slots = asyncio.Semaphore(workers)
        self._queue: asyncio.Queue[_Item] | None = None
        self._collector: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._carry: _Item | None = None  # taken from the queue but did not fit the last batch
        self._closed = False
        self._waiting = 0  # submitted requests still waiting for their result
        self._last_requests = 0  # requests in the last batch formed (1 = the server is idle)

    # ------------------------------------------------------------------ public

    async def submit(self, payload: Any, rows: int) -> Any:
        """Queue one request of ``rows`` rows and wait for its own result."""
        if self._closed:
            raise RuntimeError("the batcher is shut down (the server is stopping)")
        loop = asyncio.get_running_loop()
        self._waiting += 1
        try:
            if not self.enabled:
                return await self._run_alone(loop, payload, rows)
            if self._last_requests <= 1 and self._carry is None and not self._slots.locked() \
                    and (self._queue is None or self._queue.empty()):
                # idle: nothing to coalesce with, so skip the queue and the collector's extra loop turns
                self._last_requests = 1
                return await self._run_alone(loop, payload, rows)
            if self._queue is None:
                self._queue = asyncio.Queue()
                self._collector = loop.create_task(self._collect())
            item = _Item(payload, rows, loop.create_future(), time.perf_counter())
            self._queue.put_nowait(item)
            return await item.future
        finally:
            self._waiting -= 1

    @property
    def waiting(self) -> int:
        """Requests submitted and not yet answered."""
        return self._waiting

    async def close(self) -> None:
        """Finish every queued and running batch, then stop the collector."""
        self._closed = True
        while self._waiting:
            await asyncio.sleep(0.001)
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass

    # ------------------------------------------------------------------ internals

    async def _run_alone(self, loop: asyncio.AbstractEventLoop, payload: Any, rows: int) -> Any:
        t0 = time.perf_counter()
        async with self._slots:
            t1 = time.perf_counter()
            result = await loop.run_in_executor(self._executor, self._run_batch, [payload])
            t2 = time.perf_counter()
        if self._observer is not None:
            self._observer.batch(rows, 1, (t1 - t0,), t2 - t1)
        return result[0]

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            first = self._carry or await queue.get()
            self._carry = None
            batch, rows = [first], first.rows
            # an idle server (the last batch was one request) does not hold a lone request back
            deadline = first.enqueued + (self.max_delay if self._last_requests > 1 else 0.0)
            await asyncio.sleep(0)  # let requests whose bodies are already parsed enqueue first
            while rows < self.max_batch_rows:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    wait = deadline - time.perf_counter()
                    if wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(queue.get(), wait)
                    except asyncio.TimeoutError:
                        break
                if rows + item.rows > self.max_batch_rows:
                    self._carry = item  # starts the next batch
                    break
                batch.append(item)
                rows += item.rows
            self._last_requests = len(batch)
            await self._slots.acquire()  # at most `workers` batches run at once; the queue keeps filling
            task = loop.create_task(self._dispatch(loop, batch, rows))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item], rows: int) -> None:
        try:
            started = time.perf_counter()
            waits = tuple(started - it.enqueued for it in batch)
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, [it.payload for it in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
            except Exception as exc:  # noqa: BLE001 - isolate the failing request(s)
                if len(batch) == 1:
                    _settle(batch[0].future, exc=exc)
                else:
                    await self._one_by_one(loop, batch)
                return
            finally:
                if self._observer is not None:
                    self._observer.batch(rows, len(batch), waits, time.perf_counter() - started)
            for it, res in zip(batch, results):
                _settle(it.future, result=res)
        finally:
            self._slots.release()

    async def _one_by_one(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        for it in batch:
            try:
                res = await loop.run_in_executor(self._executor, self._run_batch, [it.payload])
                _settle(it.future, result=res[0])
            except Exception as exc:  # noqa: BLE001
                _settle(it.future, exc=exc)


def _settle(fut: asyncio.Future, *, result: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():  # the client went away and the request was cancelled
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


# --------------------------------------------------------------------------- helpers for tensor batches


def concat_feeds(payloads: Sequence[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Stack per-request feeds along the batch axis; returns the feeds and each request's row count."""
    sizes = [next(iter(p.values())).shape[0] for p in payloads]
    if len(payloads) == 1:
        return dict(payloads[0]), sizes
    names = list(payloads[0])
    return {n: np.concatenate([p[n] for p in payloads], axis=0) for n in names}, sizes


def split_outputs(outputs: dict[str, np.ndarray], sizes: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut batched outputs back into one dict per request (rows in request order)."""
    if len(sizes) == 1:
        return [outputs]
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise RuntimeError(f"output {name!r} has shape {arr.shape}, expected {total} rows on its first axis "
                               f"(a model whose outputs are not per-row cannot be batched; serve it without batching)")
    cuts = np.cumsum(sizes)[:-1]
    parts = {name: np.split(arr, cuts, axis=0) for name, arr in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(sizes))]
