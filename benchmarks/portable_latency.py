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
    python benchmarks/portable_latency.py RUN_DIR ... --baseline-rev REV

``--baseline-rev REV`` also times ``Predictor.predict`` of seqdeploy as of git revision REV (e.g. the last
release before portable graphs) on a schema-1 copy of each bundle, in a second process; the two processes
are driven alternately, round by round, so both see the same machine load.

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
    from seqdeploy.runtime.predictor import Predictor

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


_WORKER = r"""
import sys, time, json, numpy as np
sys.path.insert(0, sys.argv[1])
from seqdeploy.runtime.predictor import Predictor
p = Predictor.from_bundle(sys.argv[2])
raws = {}
for line in sys.stdin:
    b, calls = map(int, line.split())
    if b not in raws:
        raws[b] = np.load(sys.argv[3] + f"/raw{b}.npy", allow_pickle=True)
        raws[b] = list(raws[b]) if raws[b].dtype == object else raws[b]
        for _ in range(20):
            p.predict(raws[b])
    raw = raws[b]
    t0 = time.perf_counter()
    for _ in range(calls):
        p.predict(raw)
    print(json.dumps({"us": (time.perf_counter() - t0) / calls * 1e6, "out": np.asarray(p.predict(raw)).tolist()}),
          flush=True)
"""


def _schema1_copy(run: Path, dest: Path) -> Path:
    """The bundle as a pre-portable seqdeploy reads it: manifest schema 1, no portable entries."""
    import shutil

    shutil.copytree(run, dest, dirs_exist_ok=True)
    m = json.loads((dest / "manifest.json").read_text())
    m["schema_version"] = 1
    for a in m["artifacts"]:
        a.pop("portable", None)
    m["files"] = [f for f in m.get("files", []) if f.get("role") != "golden-portable"]
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def bench_vs_baseline(run: Path, rev: str, rounds: int, calls: int, batches=(1, 64)) -> dict:
    """Interleave current and baseline ``Predictor.predict`` in two worker processes."""
    import subprocess
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="portable-bench-"))
    base_src = tmp / "base"
    base_src.mkdir()
    subprocess.run(f"git -C {REPO} archive {rev} seqdeploy | tar -x -C {base_src}", shell=True, check=True)
    old_bundle = _schema1_copy(run, tmp / "bundle")
    for b in batches:
        raw, _ = _raw_rows(run, b)
        np.save(tmp / f"raw{b}.npy", np.asarray(raw, dtype=object) if isinstance(raw, list) else raw,
                allow_pickle=True)
    workers = {
        "current": subprocess.Popen([sys.executable, "-c", _WORKER, str(REPO), str(run), str(tmp)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True),
        f"baseline {rev}": subprocess.Popen([sys.executable, "-c", _WORKER, str(base_src), str(old_bundle), str(tmp)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True),
    }
    out = {"bundle": run.name, "baseline": rev, "batches": {}}
    try:
        for b in batches:
            samples: dict[str, list[float]] = {k: [] for k in workers}
            answers = {}
            for _ in range(rounds):
                for k, w in workers.items():
                    w.stdin.write(f"{b} {calls}\n")
                    w.stdin.flush()
                    r = json.loads(w.stdout.readline())
                    samples[k].append(r["us"])
                    answers[k] = r["out"]
            med = {k: statistics.median(v) for k, v in samples.items()}
            cur, old = answers["current"], answers[f"baseline {rev}"]
            same = cur == old if isinstance(cur[0], str) else float(np.max(np.abs(np.subtract(cur, old))))
            out["batches"][b] = {"p50_us": med, "current_vs_baseline": med[f"baseline {rev}"] / med["current"],
                                 "answers_equal": same}
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait(timeout=30)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--train", action="store_true", help="train every spec in models/ briefly first")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--baseline-rev", help="also time Predictor.predict of this git revision (interleaved)")
    args = ap.parse_args(argv)
    runs = list(args.runs)
    if args.train:
        from seqdeploy.export.convert import export_onnx
        from seqdeploy.bundle.write import write_bundle_manifest
        from seqdeploy.train.local import train

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
    if args.baseline_rev:
        print(f"\n{'bundle':22} {'batch':>5} {'current us':>11} {'baseline us':>12} {'current/baseline':>17}  answers")
        for run in runs:
            r = bench_vs_baseline(run, args.baseline_rev, args.rounds, args.calls)
            results.append(r)
            for b, v in r["batches"].items():
                p = list(v["p50_us"].values())
                print(f"{r['bundle']:22} {b:>5} {p[0]:>11.1f} {p[1]:>12.1f} {v['current_vs_baseline']:>16.2f}x  "
                      f"{v['answers_equal']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
