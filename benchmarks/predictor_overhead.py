"""Per-call overhead of seqdeploy.runtime.Predictor vs a bare onnxruntime session.

Model: the seed MLP shape (30-16-8-1 Dense, ReLU, sigmoid) built with onnx.helper,
bundled with a standardize record. All runners see the same batch-1 feed and are
timed in interleaved rounds (A B C D, A B C D, ...) so drift hits them all alike;
the table shows medians over rounds of per-call microseconds.

    .venv/bin/python benchmarks/predictor_overhead.py [--rounds 30] [--calls 2000]

Goal: Predictor.run within 10% of bare InferenceSession.run (same session options).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_mlp_bundle(root: Path) -> Path:
    """A bundle directory with a 30-16-8-1 MLP (onnx.helper) and a standardize record."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from seqdeploy.manifest import write_bundle_manifest

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "features"
    for i, (n_in, n_out, act) in enumerate([(30, 16, "Relu"), (16, 8, "Relu"), (8, 1, "Sigmoid")]):
        inits += [numpy_helper.from_array(rng.normal(0, 0.3, (n_in, n_out)).astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]),
                  helper.make_node(act, [f"z{i}"], [f"a{i}"])]
        x = f"a{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 30])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    run = root / "mlp"
    run.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(run / "model.onnx"))
    names = [f"f{i}" for i in range(30)]
    (run / "train.json").write_text(json.dumps({
        "spec_name": "bench_mlp", "task": "binary", "labels": ["no", "yes"], "target_name": None,
        "input": {"name": "features", "shape": [None, 30], "dtype": "float32"},
        "preprocessing": {"kind": "standardize", "feature_names": names, "mean": [0.0] * 30, "std": [1.0] * 30}}))
    write_bundle_manifest(run)
    return run


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from seqdeploy.runtime import Predictor, make_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        run = build_mlp_bundle(Path(tmp))
        pred = Predictor.from_bundle(run)
        bare = make_session(run / "model.onnx")  # same options as the predictor
        plain = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])  # ORT defaults
        x_raw = np.random.default_rng(1).normal(size=(1, 30))
        feeds = {"features": x_raw.astype(np.float32)}
        out_names = [o.name for o in bare.get_outputs()]
        binding = bare.io_binding()
        binding.bind_cpu_input("features", feeds["features"])
        binding.bind_output(out_names[0])

        runners = {
            "bare InferenceSession.run (seqdeploy options)": lambda: bare.run(out_names, feeds),
            "bare InferenceSession.run (onnxruntime defaults)": lambda: plain.run(out_names, feeds),
            "bare run_with_iobinding (pre-bound)": lambda: bare.run_with_iobinding(binding),
            "Predictor.run(feeds)": lambda: pred.run(feeds),
            "Predictor.predict_proba(raw)": lambda: pred.predict_proba(x_raw),
            "Predictor.predict(raw)": lambda: pred.predict(x_raw),
        }
        samples: dict[str, list[float]] = {k: [] for k in runners}
        for fn in runners.values():  # warm up
            for _ in range(200):
                fn()
        for _ in range(args.rounds):
            for name, fn in runners.items():
                t0 = time.perf_counter_ns()
                for _ in range(args.calls):
                    fn()
                samples[name].append((time.perf_counter_ns() - t0) / args.calls / 1000)

    base = statistics.median(samples["bare InferenceSession.run (seqdeploy options)"])
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}; "
          f"batch 1, 30-16-8-1 MLP, {args.rounds} interleaved rounds x {args.calls} calls")
    print(f"{'runner':<50} {'median us':>10} {'p10':>8} {'p90':>8} {'vs bare':>8}")
    for name, vals in samples.items():
        vals = sorted(vals)
        med = statistics.median(vals)
        p10, p90 = vals[len(vals) // 10], vals[(len(vals) * 9) // 10]
        print(f"{name:<50} {med:>10.2f} {p10:>8.2f} {p90:>8.2f} {med / base - 1:>+8.1%}")
    overhead = statistics.median(samples["Predictor.run(feeds)"]) / base - 1
    print(f"\nPredictor.run overhead vs bare run: {overhead:+.1%} (goal: within +10%) -> "
          f"{'OK' if overhead <= 0.10 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
