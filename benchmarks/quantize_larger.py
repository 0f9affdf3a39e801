"""Which quantization recipe wins on which model? Measure it.

Trains three small Keras models briefly on real data bundled with scikit-learn,
exports them with tf2onnx and runs ``seqdeploy.quantize.quantize_model`` in
``auto`` mode (plus every explicit recipe with ``--all-recipes``):

* ``mlp_784``: 784-1024-1024-10 MLP on sklearn digits upsampled 8x8 -> 28x28
* ``cnn_32``: Conv 32/64/128 (3x3, ReLU, max-pool) + GAP + Dense(10) on digits
  upsampled to 32x32x3 (grey repeated over 3 channels)
* ``tiny_mlp``: 30-16-8-1 MLP on sklearn breast cancer (binary)

    .venv/bin/python benchmarks/quantize_larger.py [--out DIR] [--all-recipes] [--threads N]

Prints one Markdown table per model and writes ``DIR/<model>/quantize.json``.
Timings are from this machine, in this process: compare ratios, not absolute ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def digits(size: int, channels: int | None, seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    img = d.images.astype(np.float32) / 16.0  # (n, 8, 8)
    rep = -(-size // 8)
    big = np.kron(img, np.ones((rep, rep), np.float32))
    off = (big.shape[1] - size) // 2
    big = big[:, off:off + size, off:off + size]
    big += np.random.default_rng(seed).normal(0, 0.05, big.shape).astype(np.float32)
    x = big.reshape(len(big), -1) if channels is None else np.repeat(big[..., None], channels, axis=-1)
    return train_test_split(x.astype(np.float32), d.target.astype(np.int64), test_size=0.3, random_state=seed,
                            stratify=d.target)


def breast_cancer(seed: int = 0):
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    d = load_breast_cancer()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.3, random_state=seed, stratify=d.target)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-8
    return ((xtr - mean) / std).astype(np.float32), ((xte - mean) / std).astype(np.float32), ytr, yte


def _export(model, input_shape, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, *input_shape), tf.float32, name="x")]
    fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=str(path))


def build_models(work: Path, seed: int = 0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    out = []

    xtr, xte, ytr, yte = digits(28, None, seed)
    mlp = keras.Sequential([keras.Input((784,)), layers.Dense(1024, activation="relu"),
                            layers.Dense(1024, activation="relu"), layers.Dense(10, activation="softmax")])
    mlp.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    mlp.fit(xtr, ytr, epochs=4, batch_size=64, verbose=0)
    _export(mlp, (784,), work / "mlp_784.onnx")
    out.append(("mlp_784", "784-1024-1024-10 MLP, digits 28x28", "multiclass", xtr, xte, yte))

    xtr, xte, ytr, yte = digits(32, 3, seed)
    cnn = keras.Sequential([keras.Input((32, 32, 3)),
                            layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                            layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                            layers.Conv2D(128, 3, padding="same", activation="relu"),
                            layers.GlobalAveragePooling2D(), layers.Dense(10, activation="softmax")])
    cnn.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    cnn.fit(xtr, ytr, epochs=15, batch_size=32, verbose=0)
    _export(cnn, (32, 32, 3), work / "cnn_32.onnx")
    out.append(("cnn_32", "Conv 32/64/128 on 32x32x3, digits", "multiclass", xtr, xte, yte))

    xtr, xte, ytr, yte = breast_cancer(seed)
    tiny = keras.Sequential([keras.Input((30,)), layers.Dense(16, activation="relu"), layers.Dense(8, activation="relu"),
                             layers.Dense(1, activation="sigmoid")])
    tiny.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    tiny.fit(xtr, ytr, epochs=30, batch_size=32, verbose=0)
    _export(tiny, (30,), work / "tiny_mlp.onnx")
    out.append(("tiny_mlp", "30-16-8-1 MLP, breast cancer", "binary", xtr, xte, yte))
    return out


def table(name: str, desc: str, result) -> str:
    f = result.float32
    bs = list(f.latency_p50_ms)
    head = ["candidate", "size KiB", result.metric_name, "drop"] + [f"b={b} ms (f32 -> cand)" for b in bs] + \
           [f"speedup b={b} (noise)" for b in bs] + ["verdict"]
    rows = [["float32", f"{f.size_bytes / 1024:.0f}", f"{f.metric:.4f}", "-"] + [f"{f.latency_p50_ms[b]:.3f}" for b in bs]
            + ["1.00x" for _ in bs] + ["reference"]]
    for c in result.candidates:
        lat = {str(x.batch_size): x for x in c.latency}
        label = c.recipe if c.attempt == 1 else f"{c.recipe} retry (excl. {', '.join(c.settings.nodes_to_exclude)})"
        rows.append([label, f"{(c.size_bytes or 0) / 1024:.0f}", "-" if c.metric is None else f"{c.metric:.4f}",
                     "-" if c.metric_drop is None else f"{c.metric_drop:+.4f}"]
                    + [f"{lat[b].float32_p50_ms:.3f} -> {lat[b].candidate_p50_ms:.3f}" if b in lat else "-" for b in bs]
                    + [f"{lat[b].speedup:.2f}x (±{lat[b].noise:.2f})" if b in lat else "-" for b in bs]
                    + [("**chosen** " if c.chosen else "") + c.reason])
    for s in result.skipped:
        rows.append([f"{s.recipe} (skipped)", "-", "-", "-"] + ["-"] * (2 * len(bs)) + [s.reason])
    lines = [f"### {name}: {desc}", "", f"chosen: `{result.chosen}` -- {result.summary}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from seqdeploy.quantize import QuantizeSettings, quantize_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/seqdeploy-quantize-bench"))
    ap.add_argument("--all-recipes", action="store_true", help="also run each explicit recipe (static, dynamic, fp16)")
    ap.add_argument("--threads", type=int, default=None, help="intra_op_num_threads (default: onnxruntime's)")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    models = build_models(args.out)
    print(f"trained and exported 3 models in {time.time() - t0:.0f}s", file=sys.stderr)
    modes = ["auto"] + (["static", "dynamic", "fp16"] if args.all_recipes else [])
    for name, desc, task, xtr, xte, yte in models:
        for mode in modes:
            settings = QuantizeSettings(mode=mode, latency_rounds=args.rounds, latency_round_seconds=0.25,
                                        intra_op_num_threads=args.threads)
            t = time.time()
            r = quantize_model(args.out / f"{name}.onnx", out_dir=args.out / name / mode,
                               calibration_inputs={"x": xtr}, test_inputs={"x": xte}, test_targets=yte,
                               task=task, settings=settings)
            print(table(f"{name} [{mode}]", desc, r))
            print(f"({time.time() - t:.0f}s; {args.out / name / mode / 'quantize.json'})\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
