"""Measure the effect of each onnxruntime session setting on CPU latency; print a markdown table.

Usage:
    .venv/bin/python benchmarks/session_settings.py            # ~3 minutes
    .venv/bin/python benchmarks/session_settings.py --quick    # ~1 minute
    .venv/bin/python benchmarks/session_settings.py --out benchmarks/session_settings.md

Models are built with onnx.helper (no TensorFlow): the seed MLP 10-16-8-1 and a larger
MLP 784-1024-1024-10 (Gemm + Relu, sigmoid/softmax head, dynamic batch axis). Every
configuration of one model runs *interleaved* (seqdeploy.bench.run_interleaved) so machine
drift cancels in the ratios; each row is one setting changed from the baseline.
Session creation time is measured separately (median of several creations), with and
without the on-disk optimized-model cache.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqdeploy.bench import OrtRunner, OrtSettings, StopRule, latency_stats, run_interleaved
from seqdeploy.runtime.session import make_session


def mlp_onnx(sizes: list[int], head: str, path: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"B{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [f"h{i}"]))
        prev = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Sigmoid" if head == "sigmoid" else "Softmax", [prev], ["y"]))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


@dataclass(frozen=True)
class Config:
    label: str
    threads: int
    settings: OrtSettings


BASE = OrtSettings(allow_spinning=False, graph_optimization="all", per_call="iobinding")


def configs() -> list[Config]:
    return [
        Config("baseline: 1 thread, spinning off, level all, IOBinding", 1, BASE),
        Config("per call: session.run (no IOBinding)", 1, OrtSettings(allow_spinning=False, per_call="run")),
        Config("graph optimization: disable", 1, OrtSettings(allow_spinning=False, graph_optimization="disable")),
        Config("graph optimization: basic", 1, OrtSettings(allow_spinning=False, graph_optimization="basic")),
        Config("graph optimization: extended", 1, OrtSettings(allow_spinning=False, graph_optimization="extended")),
        Config("execution mode: parallel", 1, OrtSettings(allow_spinning=False, execution_mode="parallel")),
        Config("spinning on (1 thread)", 1, OrtSettings(allow_spinning=True)),
        Config("2 threads, spinning off", 2, OrtSettings(allow_spinning=False)),
        Config("2 threads, spinning on", 2, OrtSettings(allow_spinning=True)),
    ]


def measure_model(path: Path, batches: list[int], duration: float) -> list[dict]:
    rows = []
    cfgs = configs()
    for b in batches:
        x = {"x": np.random.default_rng(1).standard_normal((b, _in_dim(path))).astype(np.float32)}
        runners = []
        for c in cfgs:
            r = OrtRunner(path, settings=c.settings, name=c.label)
            r.prepare(c.threads)
            r.set_batch(b)
            r.infer(x)
            runners.append(r)
        calls = [(lambda r=r: r.infer(x)) for r in runners]
        for fn in calls:
            for _ in range(200):
                fn()
        samples = run_interleaved(calls, StopRule(duration_s=duration * len(cfgs), slice_s=0.01))
        base = latency_stats(samples[0]).p50_us
        for c, s in zip(cfgs, samples):
            st = latency_stats(s)
            rows.append({"model": path.stem, "batch": b, "setting": c.label, "p50_us": st.p50_us, "p99_us": st.p99_us,
                         "vs_baseline": st.p50_us / base, "n": st.n})
    return rows


def _in_dim(path: Path) -> int:
    import onnxruntime as ort

    return int(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape[1])


def measure_creation(path: Path, repeats: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        variants = [
            ("level all, no cache", OrtSettings(allow_spinning=False)),
            ("level disable", OrtSettings(allow_spinning=False, graph_optimization="disable")),
            ("level all, optimized model cached on disk", OrtSettings(allow_spinning=False, cache_dir=cache)),
        ]
        make_session(path, variants[2][1], threads=1, cache_dir=cache)  # fill the cache
        times: dict[str, list[float]] = {v[0]: [] for v in variants}
        for _ in range(repeats):  # interleaved
            for label, st in variants:
                t0 = time.perf_counter()
                make_session(path, st, threads=1, cache_dir=st.cache_dir)
                times[label].append(time.perf_counter() - t0)
        base = statistics.median(times[variants[0][0]])
        for label, _ in variants:
            med = statistics.median(times[label])
            rows.append({"model": path.stem, "setting": label, "creation_ms": med * 1e3, "vs_no_cache": med / base})
    return rows


def render(latency: list[dict], creation: list[dict]) -> str:
    import onnxruntime as ort

    out = [f"onnxruntime {ort.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}", "",
           "| model | batch | setting | p50 | p99 | p50 vs baseline | n |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in latency:
        out.append(f"| {r['model']} | {r['batch']} | {r['setting']} | {r['p50_us']:.1f} us | {r['p99_us']:.1f} us | "
                   f"{r['vs_baseline']:.2f} | {r['n']} |")
    out += ["", "| model | session creation | median | vs no cache |", "|---|---|---:|---:|"]
    for r in creation:
        out.append(f"| {r['model']} | {r['setting']} | {r['creation_ms']:.1f} ms | {r['vs_no_cache']:.2f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter slices, fewer batches")
    ap.add_argument("--out", type=Path, help="also write the table to this file (atomically)")
    args = ap.parse_args(argv)
    duration = 0.4 if args.quick else 1.5
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        seed = mlp_onnx([10, 16, 8, 1], "sigmoid", d / "seed_mlp_10-16-8-1.onnx")
        big = mlp_onnx([784, 1024, 1024, 10], "softmax", d / "mlp_784-1024-1024-10.onnx")
        latency = measure_model(seed, [1] if args.quick else [1, 64], duration)
        latency += measure_model(big, [1] if args.quick else [1, 64], duration)
        creation = measure_creation(seed, 5) + measure_creation(big, 5)
    text = render(latency, creation)
    sys.stdout.write(text)
    if args.out:
        from seqdeploy.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
