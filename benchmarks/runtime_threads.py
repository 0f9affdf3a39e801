"""Throughput of one shared Predictor with 1, 2 and 4 caller threads.

Same 30-16-8-1 MLP bundle as predictor_overhead.py. Each configuration runs for
``--seconds`` with N threads calling ``Predictor.run`` (model-ready feeds) or
``Predictor.predict`` (raw rows) in a loop; the table shows calls/s and rows/s
(median of ``--repeats``). onnxruntime releases the GIL during ``run``, so
caller threads scale until the cores are busy; intra-op threads (``--threads``
on the predictor) are compared as the alternative way to use the cores.

    .venv/bin/python benchmarks/runtime_threads.py [--seconds 1.5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor_overhead import build_mlp_bundle  # noqa: E402


def measure(fn, n_threads: int, seconds: float) -> int:
    """Total calls completed by ``n_threads`` threads looping on ``fn`` for ``seconds``."""
    stop = threading.Event()
    counts = [0] * n_threads
    start = threading.Barrier(n_threads + 1)

    def worker(i: int) -> None:
        start.wait()
        c = 0
        while not stop.is_set():
            fn()
            c += 1
        counts[i] = c

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts)


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from seqdeploy.runtime.predictor import Predictor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}; "
          f"{args.repeats} x {args.seconds}s per cell, median")
    print(f"{'call':<10} {'batch':>5} {'intra-op':>8} {'callers':>7} {'calls/s':>10} {'rows/s':>11} {'vs 1 caller':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        run = build_mlp_bundle(Path(tmp))
        rng = np.random.default_rng(0)
        for intra in (1, 2):
            pred = Predictor.from_bundle(run, threads=intra)
            for batch in (1, 64):
                raw = rng.normal(size=(batch, 30))
                feeds = pred.preprocess(raw)
                for call, fn in (("run", lambda: pred.run(feeds)), ("predict", lambda: pred.predict(raw))):
                    base = None
                    for callers in (1, 2, 4):
                        calls = statistics.median(measure(fn, callers, args.seconds) for _ in range(args.repeats))
                        rate = calls / args.seconds
                        base = base or rate
                        print(f"{call:<10} {batch:>5} {intra:>8} {callers:>7} {rate:>10,.0f} {rate * batch:>11,.0f} "
                              f"{rate / base:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
