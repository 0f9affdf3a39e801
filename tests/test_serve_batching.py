"""seqdeploy.serve.batching: coalescing, splitting, isolation of bad requests (no server, no kserve)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from seqdeploy.serve.batching import MicroBatcher, concat_feeds, split_outputs


class Recorder:
    def __init__(self):
        self.batches: list[tuple[int, int]] = []

    def batch(self, rows, requests, queue_seconds, run_seconds):
        assert len(queue_seconds) == requests and run_seconds >= 0
        self.batches.append((rows, requests))


def _double(payloads):
    feeds, sizes = concat_feeds(payloads)
    if np.isnan(feeds["x"]).any():
        raise ValueError("nan in batch")
    return split_outputs({"y": feeds["x"] * 2, "s": feeds["x"].sum(axis=1)}, sizes)


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    rec = Recorder()
    threads: set[str] = set()

    def run(payloads):
        threads.add(threading.current_thread().name)
        return _double(payloads)

    async def main():
        with ThreadPoolExecutor(1, thread_name_prefix="infer") as ex:
            b = MicroBatcher(run, max_batch_rows=16, max_delay=0.02, executor=ex, observer=rec)
            xs = [np.full((1 + i % 3, 4), float(i), np.float32) for i in range(40)]
            outs = await asyncio.gather(*(b.submit({"x": x}, len(x)) for x in xs))
            await b.close()
            return xs, outs

    xs, outs = _run(main())
    for x, o in zip(xs, outs):
        np.testing.assert_array_equal(o["y"], x * 2)  # each request gets exactly its own rows back
        np.testing.assert_array_equal(o["s"], x.sum(axis=1))
    assert sum(r for r, _ in rec.batches) == sum(len(x) for x in xs)
    assert all(r <= 16 for r, _ in rec.batches)
    assert max(n for _, n in rec.batches) > 1 and len(rec.batches) < 40
    assert threads == {t for t in threads if t.startswith("infer")}  # never on the event loop's thread


def test_batching_off_runs_each_request_alone():
    rec = Recorder()

    async def main():
        b = MicroBatcher(_double, enabled=False, observer=rec)
        outs = await asyncio.gather(*(b.submit({"x": np.ones((2, 3), np.float32) * i}, 2) for i in range(10)))
        await b.close()
        return outs

    outs = _run(main())
    assert [n for _, n in rec.batches] == [1] * 10
    assert [float(o["y"][0, 0]) for o in outs] == [2.0 * i for i in range(10)]


def test_a_failing_request_fails_alone():
    async def main():
        b = MicroBatcher(_double, max_batch_rows=64, max_delay=0.02)
        xs = [np.ones((1, 2), np.float32) * i for i in range(8)]
        xs[3] = np.array([[np.nan, 1.0]], np.float32)
        res = await asyncio.gather(*(b.submit({"x": x}, 1) for x in xs), return_exceptions=True)
        await b.close()
        return res

    res = _run(main())
    assert isinstance(res[3], ValueError)
    for i, r in enumerate(res):
        if i != 3:
            np.testing.assert_array_equal(r["y"], [[2.0 * i, 2.0 * i]])


def test_a_request_larger_than_the_batch_runs_alone_and_delay_zero_does_not_wait():
    rec = Recorder()

    async def main():
        b = MicroBatcher(_double, max_batch_rows=4, max_delay=0.0, observer=rec)
        big = await b.submit({"x": np.ones((10, 2), np.float32)}, 10)
        await b.close()
        return big

    assert _run(main())["y"].shape == (10, 2)
    assert rec.batches == [(10, 1)]


def test_split_refuses_outputs_that_are_not_per_row():
    with pytest.raises(RuntimeError, match="not per-row"):
        split_outputs({"y": np.zeros((3,))}, [1, 1])


def test_bad_settings_refused():
    with pytest.raises(ValueError, match="max_batch_rows"):
        MicroBatcher(_double, max_batch_rows=0)
    with pytest.raises(ValueError, match="max_delay"):
        MicroBatcher(_double, max_delay=-1)


def test_an_idle_server_does_not_hold_a_lone_request_for_max_delay():
    rec = Recorder()

    async def main():
        b = MicroBatcher(_double, max_batch_rows=64, max_delay=1.0, observer=rec)
        t0 = asyncio.get_running_loop().time()
        await b.submit({"x": np.ones((1, 2), np.float32)}, 1)
        first = asyncio.get_running_loop().time() - t0
        # under load (the last batch held several requests) the batcher waits for more, up to max_delay
        await asyncio.gather(*(b.submit({"x": np.ones((1, 2), np.float32)}, 1) for _ in range(5)))
        late = asyncio.gather(b.submit({"x": np.ones((1, 2), np.float32)}, 1))
        await asyncio.sleep(0.2)
        extra = b.submit({"x": np.ones((1, 2), np.float32)}, 1)  # arrives while the first is held
        await asyncio.gather(late, extra)
        await b.close()
        return first

    assert _run(main()) < 0.5  # not the 1 s max_delay
    # idle: the lone request and the first of the five run at once; the other four, queued behind a running
    # batch, run together; after that batch of four the late request waits for the extra one
    assert rec.batches == [(1, 1), (1, 1), (4, 4), (2, 2)]
