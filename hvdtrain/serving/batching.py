"""Adaptive batching: concurrent requests' rows coalesced into one runtime call, then split back.

Why our own: KServe's Python batcher sits in its V1 path only; a V2 ``infer`` reaches the model
one request at a time. A small model costs about the same per call whatever the rows, so
one call for 64 single-row requests is most of the win, and the event loop must never wait
on the runtime: calls run in an executor (``concurrency`` at a time, one per slot).

The rule, per free slot: take the waiting requests in arrival order, up to ``max_rows`` rows;
if fewer rows wait and the oldest has waited less than ``max_delay`` seconds, wait for more
until either holds. Under load the slot is busy while requests queue, so batches fill without
any delay; at low load a lone request goes as soon as a slot is free (``max_delay`` 0) or
after at most ``max_delay``. With ``coalesce=False`` every request is its own call (the
baseline the benchmark compares against), through the same queue, slots and accounting.

A request is never split: one larger than ``max_rows`` is refused by the protocol layer
before it gets here. Results come back by row offsets; a runtime error fails every request of
its batch; a request whose caller went away (cancelled) is skipped. ``drain`` waits until the
queue is empty and no call is running. Pure asyncio + numpy, unit-tested without a server.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

Run = Callable[[np.ndarray], np.ndarray]
# (rows in the call, requests in the call, seconds the call took)
OnBatch = Callable[[int, int, float], None]


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, run: Run, executor: Executor, *, max_rows: int, max_delay: float,
                 concurrency: int = 1, coalesce: bool = True,
                 on_batch: OnBatch | None = None) -> None:
        if max_rows < 1 or concurrency < 1 or max_delay < 0:
            raise ValueError("max_rows and concurrency must be >= 1, max_delay >= 0")
        self.run, self.executor = run, executor
        self.max_rows, self.max_delay, self.coalesce = max_rows, max_delay, coalesce
        self.on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        """The runtime's output rows for ``x`` (rows first), computed in some batch."""
        if len(x) == 0:
            raise ValueError("an empty batch")
        if self._collector is None or self._collector.done():
            self._collector = asyncio.get_running_loop().create_task(self._collect())
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(x, future))
        self._queued_rows += len(x)
        self._arrived.set()
        return await future

    async def _collect(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            if self.coalesce:
                await self._fill()
            batch = self._take()
            if not batch:  # every waiting caller went away
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._call(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _fill(self) -> None:
        """Wait (at most until the oldest request is ``max_delay`` old) for a full batch."""
        while self._queued_rows < self.max_rows and self._queue:
            left = self._queue[0].arrived + self.max_delay - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled while waiting
                self._queue.popleft()
                self._queued_rows -= len(head.x)
                continue
            if batch and (not self.coalesce or rows + len(head.x) > self.max_rows):
                break
            self._queue.popleft()
            self._queued_rows -= len(head.x)
            batch.append(head)
            rows += len(head.x)
        return batch

    async def _call(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
            started = time.perf_counter()
            try:
                out = await loop.run_in_executor(self.executor, self.run, x)
                if len(out) != len(x):
                    raise RuntimeError(f"the runtime returned {len(out)} rows for {len(x)}")
            except Exception as exc:  # every request of the batch gets the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                return
            if self.on_batch is not None:
                self.on_batch(len(x), len(batch), time.perf_counter() - started)
            start = 0
            for pending in batch:
                end = start + len(pending.x)
                if not pending.future.done():
                    pending.future.set_result(out[start:end])
                start = end
        finally:
            self._slots.release()

    async def drain(self) -> None:
        """Until every accepted request has its answer (the queue empty, no call running);
        requests whose callers went away are dropped at once, not waited for."""
        live = [p for p in self._queue if not p.future.done()]
        if len(live) != len(self._queue):
            self._queue = deque(live)
            self._queued_rows = sum(len(p.x) for p in live)
            self._arrived.set()  # a collector waiting to fill a batch looks again
        while self._queue or self._running:
            if self._running:
                await asyncio.wait(set(self._running))
            else:  # the collector takes them as soon as it runs
                await asyncio.sleep(0.001)

    async def close(self) -> None:
        await self.drain()
        # again until it ends: Python 3.11's wait_for can swallow a cancellation that meets
        # the wake-up drain just gave it
        while self._collector is not None and not self._collector.done():
            self._collector.cancel()
            await asyncio.wait([self._collector], timeout=0.1)
