"""ConvLSTM2D next-frame model: tf2onnx's Loop (variable number of frames) vs the unrolled export (static
frames, :mod:`seqdeploy.export.layers.conv_lstm`) in onnxruntime, 1 thread, batch 1.

Both models share their weights and are fed the same frames; runs are interleaved in rounds (A B, A B, ...)
so drift on a shared machine hits both alike. Prints medians of per-call milliseconds and the graphs' op counts.

    .venv/bin/python benchmarks/conv_lstm_unroll.py [--frames 10] [--size 32] [--filters 16] [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(frames, size, filters):
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((frames, size, size, 1), name="x"),
        L.ConvLSTM2D(filters, 3, padding="same", return_sequences=True), L.BatchNormalization(),
        L.ConvLSTM2D(filters, 3, padding="same", return_sequences=True), L.BatchNormalization(),
        L.Conv3D(1, 3, padding="same", activation="sigmoid")])


def main() -> None:
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--filters", type=int, default=16)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--calls", type=int, default=10)
    a = p.parse_args()
    static = build(a.frames, a.size, a.filters)
    variable = build(None, a.size, a.filters)
    variable.set_weights(static.get_weights())
    x = np.random.RandomState(0).uniform(size=(1, a.frames, a.size, a.size, 1)).astype("float32")
    want = np.asarray(static(x, training=False))
    runs = {}
    for name, model in [("Loop (variable frames)", variable), ("unrolled (static frames)", static)]:
        proto = convert_model(model).model
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        err = float(np.max(np.abs(sess.run(None, {"x": x})[0] - want)))
        ops = op_counts(proto)
        print(f"{name}: Loop {ops.get('Loop', 0)}, Conv {ops.get('Conv', 0)}, Transpose {ops.get('Transpose', 0)}, "
              f"max abs err vs Keras {err:.1e}")
        runs[name] = (sess, [])
    for _ in range(a.rounds):
        for sess, times in runs.values():
            t0 = time.perf_counter()
            for _ in range(a.calls):
                sess.run(None, {"x": x})
            times.append((time.perf_counter() - t0) / a.calls * 1e3)
    print(f"{a.frames} frames of {a.size}x{a.size}x1, 2 x ConvLSTM2D({a.filters}), batch 1, 1 thread:")
    for name, (_, times) in runs.items():
        print(f"  {name}: median {statistics.median(times):.2f} ms/call")


if __name__ == "__main__":
    main()
