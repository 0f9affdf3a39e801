"""Raw row -> answer latency: the portable deployment graph vs numpy preprocessing + the model-ready graph.

For each bundle, side by side in one process, interleaved rounds, medians (p50 of per-call times):

* ``deployed``: ``Predictor.predict(raw)`` running the portable graph (preprocessing, model and labels in ONNX);
* ``numpy+model``: ``Predictor.predict(raw)`` with ``graph="model-ready"`` — the recorded preprocessing in
  numpy, the model-ready graph, labels in numpy (what the runtime did before portable graphs);
* ``model alone``: the model-ready graph's fast path on already-preprocessed feeds (no preprocessing at all:
  the floor the deployed path is compared with).

Usage::

    python benchmarks/portable_latency.py RUN_DIR [RUN_DIR ...] [--rounds 15] [--calls 300] [--json out.json]
    python benchmarks/portable_latency.py --train          # trains every spec in models/ briefly first

Timing goals (reported, not asserted): deployed no slower than numpy+model at batch 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _raw_rows(run: Path, n: int):
    from seqdeploy.data import load_run_splits

    s = load_run_splits(run)
    raw = s.raw_test
    reps = int(np.ceil(n / len(raw)))
    rows = np.concatenate([raw] * reps)[:n]
    return (list(rows) if rows.dtype.kind == "U" else rows), s


def _per_call_us(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def bench(run: Path, rounds: int, calls: int, batches=(1, 64)) -> dict:
    from seqdeploy.runtime import Predictor

    deployed = Predictor.from_bundle(run)
    numpy_path = Predictor.from_bundle(run, graph="model-ready")
    out = {"bundle": run.name, "graph_file": deployed.info.graph_file, "batches": {}}
    for b in batches:
        raw, _ = _raw_rows(run, b)
        feeds = numpy_path.preprocess(raw)
        runners = {
            "deployed": lambda: deployed.predict(raw),
            "numpy+model": lambda: numpy_path.predict(raw),
            "model alone": lambda: numpy_path.run(feeds),
        }
        same = np.array_equal(deployed.predict(raw), numpy_path.predict(raw)) if deployed.manifest.task != \
            "regression" else float(np.max(np.abs(deployed.predict(raw) - numpy_path.predict(raw))))
        for fn in runners.values():  # warm up: sessions, bound buffers
            for _ in range(20):
                fn()
        samples = {k: [] for k in runners}
        for _ in range(rounds):
            for k, fn in runners.items():  # interleaved
                samples[k].append(_per_call_us(fn, calls))
        med = {k: statistics.median(v) for k, v in samples.items()}
        out["batches"][b] = {"p50_us": med, "deployed_vs_numpy": med["numpy+model"] / med["deployed"],
                             "deployed_vs_model_alone": med["model alone"] / med["deployed"],
                             "answers_equal": same}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--train", action="store_true", help="train every spec in models/ briefly first")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    runs = list(args.runs)
    if args.train:
        from seqdeploy.export import export_onnx
        from seqdeploy.manifest import write_bundle_manifest
        from seqdeploy.train import train

        work = REPO / "benchmarks" / "work" / "portable"
        for spec in sorted((REPO / "models").glob("*.toml")):
            run = work / spec.stem
            if not (run / "manifest.json").exists():
                train(spec, out=run, epochs=2)
                export_onnx(run)
                write_bundle_manifest(run)
            runs.append(run)
    if not runs:
        ap.error("give bundle directories or --train")
    results = []
    print(f"{'bundle':22} {'batch':>5} {'deployed us':>12} {'numpy+model us':>15} {'model alone us':>15} "
          f"{'deployed/numpy':>15} {'vs alone':>9}  equal")
    for run in runs:
        r = bench(run, args.rounds, args.calls)
        results.append(r)
        for b, v in r["batches"].items():
            p = v["p50_us"]
            print(f"{r['bundle']:22} {b:>5} {p['deployed']:>12.1f} {p['numpy+model']:>15.1f} {p['model alone']:>15.1f} "
                  f"{v['deployed_vs_numpy']:>14.2f}x {v['deployed_vs_model_alone']:>8.2f}x  {v['answers_equal']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
