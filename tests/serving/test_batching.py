"""The adaptive batcher alone (no server): results split back to the right request, the row
limit, the delay, the baseline without coalescing, errors, cancellation and the drain."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hvdtrain.serving.batching import Batcher


class Runtime:
    """Doubles its input; records each call's rows; the first call can be held (``gate``) so
    that the requests after it queue up."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.gate.wait(5)
        self.calls.append(len(x))
        return x * 2


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as pool:
        yield pool


def rows(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count * 3, dtype=np.float32).reshape(count, 3)


async def _release_soon(runtime: Runtime, after: float = 0.05) -> None:
    await asyncio.sleep(after)
    runtime.gate.set()


async def one_then_many(batcher: Batcher, inputs: list[np.ndarray],
                        runtime: Runtime) -> list[np.ndarray]:
    """The first request's call starts (and is held); the others arrive while it runs."""
    first = asyncio.create_task(batcher(inputs[0]))
    await asyncio.sleep(0.02)
    release = asyncio.create_task(_release_soon(runtime))
    out = await asyncio.gather(first, *(batcher(x) for x in inputs[1:]))
    await release
    return list(out)


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows(
        executor: ThreadPoolExecutor) -> None:
    runtime = Runtime(hold_first=True)
    sizes = [1, 2, 1, 3, 1, 1, 4, 1, 2, 1]

    async def main() -> list[np.ndarray]:
        batcher = Batcher(runtime, executor, max_rows=64, max_delay=0)
        inputs = [rows(100 * i, n) for i, n in enumerate(sizes)]
        out = await one_then_many(batcher, inputs, runtime)
        await batcher.close()
        for x, y in zip(inputs, out):
            np.testing.assert_array_equal(y, x * 2)
        return out

    asyncio.run(main())
    assert sum(runtime.calls) == sum(sizes)
    assert runtime.calls[0] == 1  # the first went alone, the rest queued behind it
    assert len(runtime.calls) == 2, runtime.calls


def test_a_call_never_exceeds_max_rows_and_requests_are_not_split(
        executor: ThreadPoolExecutor) -> None:
    runtime = Runtime(hold_first=True)

    async def main() -> None:
        batcher = Batcher(runtime, executor, max_rows=7, max_delay=0)
        inputs = [rows(10 * i, 3) for i in range(9)]
        out = await one_then_many(batcher, inputs, runtime)
        await batcher.close()
        for x, y in zip(inputs, out):
            np.testing.assert_array_equal(y, x * 2)

    asyncio.run(main())
    assert runtime.calls[0] == 3
    assert all(c <= 7 and c % 3 == 0 for c in runtime.calls), runtime.calls
    assert runtime.calls[1:] == [6, 6, 6, 6], runtime.calls


def test_a_lone_request_waits_at_most_the_delay_and_a_full_batch_not_at_all(
        executor: ThreadPoolExecutor) -> None:
    runtime = Runtime()

    async def main() -> tuple[float, float]:
        batcher = Batcher(runtime, executor, max_rows=4, max_delay=0.2)
        started = time.monotonic()
        await batcher(rows(0, 1))
        lone = time.monotonic() - started
        started = time.monotonic()
        await asyncio.gather(*(batcher(rows(i, 1)) for i in range(4)))
        full = time.monotonic() - started
        await batcher.close()
        return lone, full

    lone, full = asyncio.run(main())
    assert 0.19 <= lone < 1.0
    assert full < 0.15
    assert runtime.calls == [1, 4]


def test_two_requests_within_the_delay_share_a_call(executor: ThreadPoolExecutor) -> None:
    runtime = Runtime()

    async def main() -> None:
        batcher = Batcher(runtime, executor, max_rows=8, max_delay=0.3)

        async def later() -> np.ndarray:
            await asyncio.sleep(0.05)
            return await batcher(rows(5, 2))

        first, second = await asyncio.gather(batcher(rows(0, 1)), later())
        np.testing.assert_array_equal(first, rows(0, 1) * 2)
        np.testing.assert_array_equal(second, rows(5, 2) * 2)
        await batcher.close()

    asyncio.run(main())
    assert runtime.calls == [3]


def test_without_coalescing_every_request_is_its_own_call(executor: ThreadPoolExecutor) -> None:
    runtime = Runtime(hold_first=True)

    async def main() -> None:
        batcher = Batcher(runtime, executor, max_rows=64, max_delay=0.5, coalesce=False)
        release = asyncio.create_task(_release_soon(runtime))
        await asyncio.gather(*(batcher(rows(i, 2)) for i in range(5)))
        await release
        await batcher.close()

    started = time.monotonic()
    asyncio.run(main())
    assert runtime.calls == [2, 2, 2, 2, 2]
    assert time.monotonic() - started < 0.5  # no delay without coalescing


def test_a_runtime_error_fails_its_batch_only(executor: ThreadPoolExecutor) -> None:
    calls: list[int] = []

    def flaky(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x + 1

    async def main() -> None:
        batcher = Batcher(flaky, executor, max_rows=8, max_delay=0.05)
        results = await asyncio.gather(batcher(rows(0, 1)), batcher(rows(1, 1)),
                                       return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results), results
        np.testing.assert_array_equal(await batcher(rows(2, 1)), rows(2, 1) + 1)
        await batcher.close()

    asyncio.run(main())
    assert calls == [2, 1]


def test_a_runtime_returning_the_wrong_rows_is_an_error(executor: ThreadPoolExecutor) -> None:
    async def main() -> None:
        batcher = Batcher(lambda x: x[:1], executor, max_rows=8, max_delay=0)
        with pytest.raises(RuntimeError, match="returned 1 rows for 2"):
            await batcher(rows(0, 2))
        await batcher.close()

    asyncio.run(main())


def test_a_cancelled_request_is_skipped_and_drain_waits_for_the_rest(
        executor: ThreadPoolExecutor) -> None:
    runtime = Runtime(hold_first=True)

    async def main() -> None:
        batcher = Batcher(runtime, executor, max_rows=64, max_delay=0)
        first = asyncio.create_task(batcher(rows(0, 1)))
        await asyncio.sleep(0.02)  # the first call is running (held)
        gone = asyncio.create_task(batcher(rows(1, 5)))
        kept = asyncio.create_task(batcher(rows(2, 2)))
        await asyncio.sleep(0.02)
        gone.cancel()
        assert batcher.queued_requests == 2
        draining = asyncio.create_task(batcher.drain())
        await asyncio.sleep(0.05)
        assert not draining.done()  # a call is still running
        runtime.gate.set()
        await asyncio.wait_for(draining, 5)
        assert first.done() and kept.done()
        np.testing.assert_array_equal(kept.result(), rows(2, 2) * 2)
        assert batcher.queued_rows == 0
        await batcher.close()

    asyncio.run(main())
    assert runtime.calls == [1, 2]


def test_two_slots_run_two_calls_at_once() -> None:
    active, most = [0], [0]
    lock = threading.Lock()

    def slow(x: np.ndarray) -> np.ndarray:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return x

    async def main() -> None:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(slow, pool, max_rows=1, max_delay=0, concurrency=2)
            await asyncio.gather(*(batcher(rows(i, 1)) for i in range(4)))
            await batcher.close()

    asyncio.run(main())
    assert most[0] == 2


def test_bad_settings_are_refused(executor: ThreadPoolExecutor) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            Batcher(lambda x: x, executor, max_rows=0, max_delay=0)

    asyncio.run(main())


def test_drain_drops_requests_whose_callers_went_away_without_waiting(
        executor: ThreadPoolExecutor) -> None:
    runtime = Runtime()

    async def main() -> float:
        batcher = Batcher(runtime, executor, max_rows=64, max_delay=5.0)
        waiting = asyncio.create_task(batcher(rows(0, 1)))
        await asyncio.sleep(0.05)  # the collector waits up to 5 s to fill the batch
        waiting.cancel()
        started = time.monotonic()
        await asyncio.wait_for(batcher.close(), 2)
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0
    assert runtime.calls == []
