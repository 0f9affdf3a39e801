"""Functional GRU models: seqdeploy's native ONNX GRU vs tf2onnx's Loop, batch 1 and 32.

Two Functional models (two inputs, one output each), untrained weights:

* ``series``: a float window (50 steps x 8) through GRU(256), concatenated with a Dense branch;
* ``tokens``: ids (50 steps, 0 = padding, left-padded rows) through Embedding(mask_zero) and
  GRU(256) -- masked, so seqdeploy adds the mask compaction around the native op.

Each is exported twice: ``seqdeploy.export.convert.convert_model`` (native GRU) and plain tf2onnx
``from_function`` over the whole model (the Loop seqdeploy replaced). Both sessions run on one
thread, interleaved in rounds so drift hits both alike; the table gives the median per call,
the ratio and the max abs difference to Keras.

    .venv/bin/python benchmarks/functional_gru.py [--rounds 30] [--calls 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np  # noqa: E402

STEPS, UNITS = 50, 256


def _models():
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    series, static = keras.Input((STEPS, 8), name="series"), keras.Input((4,), name="static")
    h = L.Concatenate()([L.GRU(UNITS, name="gru")(series), L.Dense(16, activation="relu")(static)])
    m1 = keras.Model([series, static], L.Dense(1, name="forecast")(h), name="series_gru")
    tokens, extra = keras.Input((STEPS,), dtype="int32", name="tokens"), keras.Input((4,), name="extra")
    g = L.GRU(UNITS, name="gru")(L.Embedding(1000, 32, mask_zero=True)(tokens))
    m2 = keras.Model([tokens, extra], L.Dense(3, activation="softmax", name="label")(L.Concatenate()([g, extra])),
                     name="tokens_gru")
    return [m1, m2]


def _feed(model, batch: int, rng) -> dict[str, np.ndarray]:
    from seqdeploy.export.convert import keras_input_names

    feed = {}
    for name, inp in zip(keras_input_names(model), model.inputs):
        shape = (batch, *inp.shape[1:])
        if "int" in str(inp.dtype):
            ids = rng.integers(1, 1000, shape)
            lengths = rng.integers(1, STEPS + 1, batch)
            ids[np.arange(STEPS)[None, :] < (STEPS - lengths)[:, None]] = 0  # left padding
            feed[name] = ids.astype("int32")
        else:
            feed[name] = rng.standard_normal(shape).astype("float32")
    return feed


def _loop_proto(model):
    import tensorflow as tf
    import tf2onnx

    from seqdeploy.export.convert import _io_specs

    specs = _io_specs(model)
    fn = tf.function(lambda *xs: model(list(xs), training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=17)
    return proto


def _session(proto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=20, help="calls per runner per round (batch 32: a quarter)")
    args = ap.parse_args()

    from seqdeploy.cpu import cpu_model_name
    from seqdeploy.export.convert import convert_model, op_counts

    cpu = cpu_model_name()
    print(f"CPU: {cpu}; onnxruntime 1 thread; median of {args.rounds} interleaved rounds")

    rng = np.random.default_rng(0)
    print("| model | batch | native GRU ms | tf2onnx Loop ms | native speedup | native |diff| | Loop |diff| |")
    print("|---|---|---|---|---|---|---|")
    for model in _models():
        native = convert_model(model).model
        loop = _loop_proto(model)
        assert "Loop" not in op_counts(native) and op_counts(native).get("GRU") == 1, op_counts(native)
        assert op_counts(loop).get("Loop", 0) >= 1, op_counts(loop)
        sessions = {"native": _session(native), "loop": _session(loop)}
        for batch in (1, 32):
            feed = _feed(model, batch, rng)
            want = np.asarray(model([feed[k] for k in feed], training=False))
            diffs = {k: float(np.max(np.abs(s.run(None, feed)[0] - want))) for k, s in sessions.items()}
            calls = args.calls if batch == 1 else max(2, args.calls // 4)
            times: dict[str, list[float]] = {k: [] for k in sessions}
            for _ in range(3):  # warm-up
                for s in sessions.values():
                    s.run(None, feed)
            for r in range(args.rounds):
                order = list(sessions.items()) if r % 2 == 0 else list(sessions.items())[::-1]
                for k, s in order:
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        s.run(None, feed)
                    times[k].append((time.perf_counter() - t0) / calls * 1e3)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {model.name} | {batch} | {med['native']:.3f} | {med['loop']:.3f} | "
                  f"{med['loop'] / med['native']:.2f}x | {diffs['native']:.1e} | {diffs['loop']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
