"""Per-call overhead of seqdeploy.runtime.predictor.Predictor vs bare onnxruntime (and TFLite) on a tiny model.

Model: the seed MLP shape (30-16-8-1 Dense, ReLU, sigmoid) built with onnx.helper,
bundled with a standardize record. All runners see the same feed and are timed in
interleaved rounds (A B C D, A B C D, ...) so drift on a shared machine hits them
all alike; the table shows medians over rounds of per-call microseconds and ratios.

    .venv/bin/python benchmarks/predictor_overhead.py [--rounds 30] [--calls 2000] [--batch 1]
                     [--baseline-rev HEAD] [--tflite]

``--baseline-rev REV`` also times ``seqdeploy/runtime.py`` as of git revision REV
(loaded from ``git show``) so before/after are measured in the same interleaved run.
``--tflite`` adds TFLite (same weights through Keras, converted in-process, XNNPACK,
1 thread), timed with the bench harness's ``TfliteRunner.infer``
(set_tensor/invoke/get_tensor): it imports TensorFlow, so it is opt-in.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [(30, 16, "Relu"), (16, 8, "Relu"), (8, 1, "Sigmoid")]


def mlp_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.normal(0, 0.3, (n_in, n_out)).astype(np.float32), rng.normal(0, 0.1, n_out).astype(np.float32))
            for n_in, n_out, _ in LAYERS]


def mlp_model():
    """The 30-16-8-1 MLP (:func:`mlp_weights`) as an ``onnx.ModelProto``."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "features"
    for i, ((w, b), (_, _, act)) in enumerate(zip(mlp_weights(), LAYERS)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]),
                  helper.make_node(act, [f"z{i}"], [f"a{i}"])]
        x = f"a{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 30])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def build_mlp_bundle(root: Path) -> Path:
    """A bundle directory with a 30-16-8-1 MLP (onnx.helper) and a standardize record."""
    import onnx

    from seqdeploy.bundle.write import write_bundle_manifest

    model = mlp_model()
    run = root / "mlp"
    run.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(run / "model.onnx"))
    names = [f"f{i}" for i in range(30)]
    (run / "train.json").write_text(json.dumps({
        "spec_name": "bench_mlp", "task": "binary", "labels": ["no", "yes"], "target_name": None,
        "input": {"name": "features", "shape": [None, 30], "dtype": "float32"},
        "preprocessing": {"kind": "standardize", "feature_names": names,
                          "mean": [0.1 * i for i in range(30)], "std": [1.0 + 0.05 * i for i in range(30)]}}))
    write_bundle_manifest(run)
    return run


def load_module_at(rev: str, module: str = "runtime") -> Any:
    """``seqdeploy/<module>.py`` as of git revision ``rev``, imported as a separate module (an older release's
    code timed beside today's in one process)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:seqdeploy/{module}.py"], capture_output=True,
                         text=True, check=True).stdout
    name = f"{module}_at_rev"
    path = Path(tempfile.mkdtemp(prefix=f"{module}-rev-")) / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = mod  # type: ignore[union-attr]  (dataclasses look the module up)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def tflite_runner(batch: int) -> Any:
    """The same MLP through Keras -> TFLite fp32, as the bench harness runs it."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from seqdeploy.bench import TfliteModel, TfliteRunner

    acts = {"Relu": "relu", "Sigmoid": "sigmoid"}
    model = keras.Sequential([keras.Input((30,))] + [keras.layers.Dense(n, activation=acts[a]) for _, n, a in LAYERS])
    for layer, (w, b) in zip(model.layers, mlp_weights()):
        layer.set_weights([w, b])
    t0 = time.perf_counter()
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    r = TfliteRunner(TfliteModel(content, "fp32", None, time.perf_counter() - t0))
    r.prepare(1)
    r.set_batch(batch)
    return r


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from seqdeploy.runtime.predictor import FastSession, Predictor, make_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--baseline-rev", default=None, help="also time seqdeploy/runtime.py at this git revision")
    ap.add_argument("--tflite", action="store_true", help="also time TFLite fp32 (imports TensorFlow)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        run = build_mlp_bundle(Path(tmp))
        pred = Predictor.from_bundle(run)
        bare = make_session(run / "model.onnx")  # same options as the predictor
        fast = FastSession(make_session(run / "model.onnx"))
        x_raw = np.random.default_rng(1).normal(size=(args.batch, 30)) * 2 + 1
        feeds = pred.preprocess(x_raw)
        out_names = [o.name for o in bare.get_outputs()]
        binding = bare.io_binding()
        in_buf = feeds["features"].copy()
        out_buf = np.empty((args.batch, 1), np.float32)
        binding.bind_ortvalue_input("features", ort.OrtValue.ortvalue_from_numpy(in_buf))
        binding.bind_ortvalue_output(out_names[0], ort.OrtValue.ortvalue_from_numpy(out_buf))

        runners: dict[str, Callable[[], Any]] = {
            "bare session.run (seqdeploy options)": lambda: bare.run(out_names, feeds),
            "bare run_with_iobinding (pre-bound, no copies)": lambda: bare.run_with_iobinding(binding),
            "FastSession.run (bare ONNX fast path)": lambda: fast.run(feeds),
            "Predictor.run(feeds)": lambda: pred.run(feeds),
            "Predictor.predict(raw rows)": lambda: pred.predict(x_raw),
            "Predictor.predict_proba(raw rows)": lambda: pred.predict_proba(x_raw),
        }
        if args.baseline_rev:
            old = load_module_at(args.baseline_rev, "runtime").Predictor.from_bundle(run)
            runners[f"[{args.baseline_rev}] Predictor.run(feeds)"] = lambda: old.run(feeds)
            runners[f"[{args.baseline_rev}] Predictor.predict(raw rows)"] = lambda: old.predict(x_raw)
        tfl = None
        if args.tflite:
            tfl = tflite_runner(args.batch)
            runners["TFLite fp32 set_tensor/invoke/get_tensor"] = lambda: tfl.infer(feeds)

        # the paths must agree before their speed means anything
        want = bare.run(out_names, feeds)[0]
        for _ in range(3):
            assert np.array_equal(pred.run(feeds)[out_names[0]], want) and np.array_equal(fast.run(feeds)[0], want)
        assert fast.fast_enabled and pred._fast.fast_enabled, (fast.fast_error, pred._fast.fast_error)
        if args.baseline_rev:
            assert np.array_equal(old.predict_proba(x_raw), pred.predict_proba(x_raw))
            assert np.array_equal(old.predict(x_raw), pred.predict(x_raw))
        tfl_diff = float(np.max(np.abs(tfl.infer(feeds)[0] - want))) if tfl else None

        samples: dict[str, list[float]] = {k: [] for k in runners}
        for fn in runners.values():  # warm up
            for _ in range(300):
                fn()
        for _ in range(args.rounds):
            for name, fn in runners.items():
                t0 = time.perf_counter_ns()
                for _ in range(args.calls):
                    fn()
                samples[name].append((time.perf_counter_ns() - t0) / args.calls / 1000)

    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["bare session.run (seqdeploy options)"]
    tfl_key = "TFLite fp32 set_tensor/invoke/get_tensor"
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}; "
          f"batch {args.batch}, 30-16-8-1 MLP, {args.rounds} interleaved rounds x {args.calls} calls"
          + (f"; TFLite max |diff| vs ORT {tfl_diff:.1e}" if tfl_diff is not None else ""))
    head = f"{'runner':<48} {'median us':>10} {'p10':>8} {'p90':>8} {'/ bare run':>10}"
    print(head + (f" {'TFLite/this':>11}" if tfl else ""))
    for name, vals in samples.items():
        vals = sorted(vals)
        p10, p90 = vals[len(vals) // 10], vals[(len(vals) * 9) // 10]
        line = f"{name:<48} {med[name]:>10.2f} {p10:>8.2f} {p90:>8.2f} {med[name] / base:>10.2f}"
        print(line + (f" {med[tfl_key] / med[name]:>11.2f}" if tfl else ""))
    if tfl:
        r = med[tfl_key] / med["Predictor.run(feeds)"]
        print(f"\nPredictor.run vs TFLite: {r:.2f}x TFLite's speed (goal >= 0.5x, i.e. within 2x) -> "
              f"{'met' if r >= 0.5 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
