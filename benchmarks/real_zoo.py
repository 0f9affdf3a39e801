"""Real-model zoo: keras-io architectures at realistic small sizes, the deployed artifact side by side with
LiteRT, OpenVINO and Keras; writes benchmarks/REAL_ZOO.md and benchmarks/real_zoo.png.

Usage:
    .venv/bin/python benchmarks/real_zoo.py                      # every model, batch 1 and 32, 1 and 2 threads
    .venv/bin/python benchmarks/real_zoo.py --only fcn_timeseries,mnist_convnet --threads 1 --duration 2
    .venv/bin/python benchmarks/real_zoo.py --render-only         # rewrite REAL_ZOO.md from the saved bench.json

The models (keras-io examples, Keras code; no downloads): an Xception-like CNN with residual separable
convs on 48x48x3, the FCN time-series classifier (Conv1D+BN x3, GAP) on 500 steps, the Transformer
classifier (MultiHeadAttention, custom TokenAndPositionEmbedding/TransformerBlock, 200 ids), a 2-layer
BiLSTM on 200 ids, a GRU forecaster (120 steps x 7 features), the MNIST convnet, a FeatureSpace-like
numeric MLP, and "Text classification from scratch" end to end: raw strings (``Input(shape=(1,),
dtype="string")``) through TextVectorization(20000 tokens, 500 ids, default standardize) into an
Embedding + Conv1D x2 classifier (its ONNX graph uses onnxruntime-extensions string ops, so LiteRT needs
Select TF ops and OpenVINO cannot read it; ``text_cnn_ids`` is its numeric part alone, the same weights,
for the peers). Each learns a fixed teacher on synthetic rows (class templates + noise, sentiment tokens,
a nonlinear function; see the data generators) until the float model is confident; the quantize gate's
task targets are the float model's own answers on the test rows (so its metric drop is the int8 model's
disagreement).

Each run directory (benchmarks/work/real_zoo/NAME) is a bundle: model.keras, train.json, model.onnx from
seqdeploy.export.convert.export_onnx (the graph fixes and the graph optimization included), quantize.json
from seqdeploy.quantize (gated int8 per model) and manifest.json. Runners: the deployed artifact through
Predictor.run (``deployed:*``), the float32 deployed graph too when int8 was chosen, ORT fp32
(session.run), LiteRT fp32 / int8-dynamic / int8 (from_keras_model, ai_edge_litert Interpreter),
OpenVINO (the bundle's float32 ONNX, LATENCY hint) and Keras's direct call, timed by seqdeploy.bench's
harness: answers checked against Keras first, interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "real_zoo"
REPORT = HERE / "REAL_ZOO.md"
PLOT = HERE / "real_zoo.png"
LAYERS = HERE / "real_zoo_layers.py"
BEFORE = HERE / "work" / "real_zoo_before"  # bench.json/prepare.json of a run without the graph cleanup (--save-before)
PEER_FAMILIES = ("tflite", "openvino")


@dataclass(frozen=True)
class ZooModel:
    name: str
    what: str
    build: Callable[[], Any]
    data: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]  # (inputs, the teacher's labels)
    task: str  # "multiclass" | "binary" | "regression"
    input_name: str
    steps: int = 100  # training batches of 32 (one epoch over fresh teacher rows)
    epochs: int = 1
    lr: float = 1e-3
    train: Callable[..., Any] | None = None  # custom training (string models: adapt, train the ids part, assemble)
    derive: str | None = None  # built from another zoo model's trained run instead of trained (its numeric part)


# ----------------------------------------------------------------------------- the models (keras-io code)


def xception_48() -> Any:
    """keras-io "Image classification from scratch" (make_model), entry flow narrowed for 48x48x3, 5 classes."""
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous = x
    for size in (64, 128):
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(size, 1, strides=2, padding="same")(previous)
        x = layers.add([x, residual])
        previous = x
    x = layers.SeparableConv2D(256, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.25)(x)
    outputs = layers.Dense(5, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="xception_48")


def fcn_timeseries() -> Any:
    """keras-io "Timeseries classification from scratch" (FordA): Conv1D(64,3)+BN+ReLU x3, GAP, softmax 2."""
    import keras
    from keras import layers

    inp = keras.Input((500, 1), name="series")
    x = inp
    for _ in range(3):
        x = layers.Conv1D(64, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling1D()(x)
    out = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out, name="fcn_timeseries")


def transformer_text() -> Any:
    """keras-io "Text classification with Transformer": vocab 20000, 200 ids, embed 32, 2 heads, ff 32."""
    import keras
    from keras import layers

    import runpy

    ns = runpy.run_path(str(LAYERS))
    inp = keras.Input((200,), dtype="int32", name="tokens")
    x = ns["TokenAndPositionEmbedding"](200, 20000, 32)(inp)
    x = ns["TransformerBlock"](32, 2, 32)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    out = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out, name="transformer_text")


def bilstm_ids() -> Any:
    """keras-io "Bidirectional LSTM on IMDB": Embedding(20000,128), BiLSTM(64) x2, sigmoid; 200 ids."""
    import keras
    from keras import layers

    inp = keras.Input((200,), dtype="int32", name="tokens")
    x = layers.Embedding(20000, 128)(inp)
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(64))(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out, name="bilstm_ids")


def gru_forecaster() -> Any:
    """keras-io "Timeseries forecasting for weather prediction" with a GRU(32): 120 steps x 7 features -> 1."""
    import keras
    from keras import layers

    inp = keras.Input((120, 7), name="series")
    x = layers.GRU(32)(inp)
    out = layers.Dense(1)(x)
    return keras.Model(inp, out, name="gru_forecaster")


def mnist_convnet() -> Any:
    """keras-io "Simple MNIST convnet": Conv2D(32)+pool, Conv2D(64)+pool, Flatten, Dropout, softmax 10."""
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, kernel_size=(3, 3), activation="relu")(inp)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Conv2D(64, kernel_size=(3, 3), activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out, name="mnist_convnet")


def featurespace_mlp() -> Any:
    """keras-io "Structured data classification with FeatureSpace" after encoding: 41 numeric features
    (normalized numbers + one-hot/hashed categories), Dense(32, relu), Dropout(0.5), sigmoid."""
    import keras
    from keras import layers

    inp = keras.Input((41,), name="features")
    x = layers.Dense(32, activation="relu")(inp)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out, name="featurespace_mlp")


TEXT_LEN = 500  # the text model's output_sequence_length (keras-io: 500)


def text_cnn_core() -> Any:
    """The ids -> probability part of keras-io "Text classification from scratch": Embedding(20000,128), Dropout,
    Conv1D(128,7,strides=3,relu) x2, GlobalMaxPooling1D, Dense(128,relu), Dropout, sigmoid (500 ids, as the
    vectorizer pads them)."""
    import keras
    from keras import layers

    inp = keras.Input((TEXT_LEN,), dtype="int64", name="token_ids")
    x = layers.Embedding(20000, 128)(inp)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv1D(128, 7, padding="valid", activation="relu", strides=3)(x)
    x = layers.Conv1D(128, 7, padding="valid", activation="relu", strides=3)(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(1, activation="sigmoid", name="predictions")(x)
    return keras.Model(inp, out, name="text_cnn_core")


def train_text_cnn(x_fit: np.ndarray, y_fit: np.ndarray, z: "ZooModel") -> tuple[Any, dict]:
    """keras-io's recipe: adapt TextVectorization on the raw texts, train the ids model on the vectorized texts,
    then the end-to-end model on raw strings: ``Input(shape=(1,), dtype="string")`` -> vectorize -> the ids model."""
    import keras
    from keras import layers

    vectorize = layers.TextVectorization(max_tokens=20000, output_mode="int", output_sequence_length=TEXT_LEN,
                                         name="text_vectorization")  # default standardize: lower + strip punctuation
    vectorize.adapt(x_fit.reshape(-1))
    core = text_cnn_core()
    core.compile(keras.optimizers.Adam(z.lr), "binary_crossentropy", metrics=["accuracy"])
    ids = np.asarray(vectorize(x_fit.reshape(-1, 1)))
    hist = core.fit(ids, y_fit, batch_size=32, epochs=z.epochs, verbose=0)
    inp = keras.Input(shape=(1,), dtype="string", name="text")
    return keras.Model(inp, core(vectorize(inp)), name="text_cnn"), hist.history


# ----------------------------------------------------------------------------- learnable synthetic data (teachers)
# Each generator returns (inputs, labels from a fixed teacher); the teacher is fixed by its own seed, the rows by
# the caller's generator. The quantize gate's targets are still the float model's own answers on the test rows.

POS_WORDS = ("great", "excellent", "wonderful", "loved", "superb", "brilliant", "enjoyable", "moving", "funny",
             "beautiful", "masterpiece", "charming")
NEG_WORDS = ("awful", "terrible", "boring", "hated", "dull", "worst", "bad", "painful", "weak", "stupid", "mess",
             "waste")
PLAIN_WORDS = tuple(f"{a}{b}" for a in ("mo", "fi", "ac", "pl", "sc", "ch", "di", "st", "ca", "ti", "ro", "se",
                                        "ma", "ne", "lo", "vi") for b in ("vie", "lm", "tor", "ot", "ene", "ara",
                                                                           "rect", "ory", "mera", "me", "le", "ries",
                                                                           "ker", "ver", "ng", "ew"))
SENT_IDS = (np.arange(1, 41), np.arange(41, 81))  # the id models' positive and negative tokens


def _majority(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive count, negative count, label): one side 2-5 times, the other 0-1."""
    major, minor = rng.integers(2, 6, n), rng.integers(0, 2, n)
    pos = rng.random(n) < 0.5
    return np.where(pos, major, minor), np.where(pos, minor, major), pos.astype(np.int64)


def review_texts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Movie-review-like texts (capitals, punctuation, ``<br />``); label = more positive than negative words."""
    npos, nneg, y = _majority(rng, n)
    texts = []
    for p, q in zip(npos, nneg):
        words = list(rng.choice(PLAIN_WORDS, rng.integers(30, 200))) + list(rng.choice(POS_WORDS, p)) + \
            list(rng.choice(NEG_WORDS, q))
        rng.shuffle(words)
        out = []
        for w in words:
            w = str(w)
            if rng.random() < 0.1:
                w = w.capitalize() if rng.random() < 0.7 else w.upper()
            if rng.random() < 0.08:
                w += str(rng.choice([",", ".", "!", "?", "...", ";", ")"]))
            out.append(w)
            if rng.random() < 0.02:
                out.append("<br /><br />")
        texts.append(" ".join(out))
    return np.asarray(texts).reshape(-1, 1), y.astype(np.float32)


def token_ids(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """200 ids of 20000; label = more ids from the positive set than from the negative set."""
    x = rng.integers(81, 20000, size=(n, 200))
    npos, nneg, y = _majority(rng, n)
    for i in range(n):
        at = rng.choice(200, npos[i] + nneg[i], replace=False)
        x[i, at] = np.concatenate([rng.choice(SENT_IDS[0], npos[i]), rng.choice(SENT_IDS[1], nneg[i])])
    return x.astype(np.int32), y


def _templates(k: int, coarse: tuple[int, ...], scale: int) -> np.ndarray:
    t = np.random.default_rng(1234).uniform(-1, 1, (k, *coarse))
    for ax in (1, 2):
        t = np.repeat(t, scale, axis=ax)
    return t


def images_48(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """5 classes: a coarse 6x6x3 colour pattern per class (upsampled to 48x48) + noise, pixels 0..255."""
    y = rng.integers(0, 5, n)
    x = 127.5 + 60 * _templates(5, (6, 6, 3), 8)[y] + 45 * rng.standard_normal((n, 48, 48, 3))
    return np.clip(x, 0, 255).astype(np.float32), y


def digits_28(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """10 classes: a coarse 7x7 pattern per class (upsampled to 28x28) + noise, pixels 0..1."""
    y = rng.integers(0, 10, n)
    x = 0.5 + 0.3 * _templates(10, (7, 7, 1), 4)[y] + 0.25 * rng.standard_normal((n, 28, 28, 1))
    return np.clip(x, 0, 1).astype(np.float32), y


def series_500(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """2 classes: a sine of period 40 or 25 steps (random phase and amplitude) + noise, 500 steps."""
    y = rng.integers(0, 2, n)
    t = np.arange(500)
    period = np.where(y == 0, 40.0, 25.0)[:, None]
    x = rng.uniform(0.5, 1.5, (n, 1)) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi, (n, 1)))
    return (x + 0.8 * rng.standard_normal((n, 500)))[..., None].astype(np.float32), y


def weather_120(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """7 AR(1) features over 120 steps; target = a fixed nonlinear function of the recent past."""
    e = rng.standard_normal((n, 120, 7))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    for t in range(1, 120):
        x[:, t] = 0.9 * x[:, t - 1] + 0.45 * e[:, t]
    y = 0.8 * x[:, -1, 0] + 0.5 * x[:, -24:, 1].mean(1) - 0.4 * np.tanh(x[:, -1, 2] * x[:, -1, 3])
    return x.astype(np.float32), y.astype(np.float32)


def features_41(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """41 numeric features; label = sign of a fixed linear function plus one interaction."""
    w = np.random.default_rng(4321).standard_normal(41) / np.sqrt(41)
    x = rng.standard_normal((n, 41))
    return x.astype(np.float32), ((x @ w + 0.5 * x[:, 0] * x[:, 1]) > 0).astype(np.int64)


ZOO = (
    ZooModel("xception_48", "Xception-like CNN, residual separable convs, 48x48x3", xception_48, images_48,
             "multiclass", "image", steps=300),  # BatchNormalization's moving statistics need the steps
    ZooModel("fcn_timeseries", "FCN time-series (Conv1D+BN x3, GAP), 500 steps", fcn_timeseries, series_500,
             "multiclass", "series", steps=400),
    ZooModel("transformer_text", "Transformer classifier (MHA, LayerNorm, custom embedding), 200 ids",
             transformer_text, token_ids, "multiclass", "tokens", steps=200, lr=2e-3),
    ZooModel("bilstm_ids", "BiLSTM(64) x2 on 200 ids", bilstm_ids, token_ids, "binary", "tokens", steps=200, lr=2e-3),
    ZooModel("gru_forecaster", "GRU(32) forecaster, 120 steps x 7", gru_forecaster, weather_120, "regression",
             "series", steps=150, lr=2e-3),
    ZooModel("mnist_convnet", "MNIST convnet (keras-io sizes)", mnist_convnet, digits_28, "multiclass", "image",
             steps=60),
    ZooModel("featurespace_mlp", "FeatureSpace-like numeric MLP (41 -> 32 -> 1)", featurespace_mlp, features_41,
             "binary", "features", steps=500, lr=3e-3),
    ZooModel("text_cnn", "keras-io text classification from scratch: raw strings -> TextVectorization(20000, 500) "
             "-> Embedding(128), Conv1D(128,7,s3) x2, GlobalMaxPool, Dense", lambda: None, review_texts, "binary",
             "text", steps=200, epochs=2, lr=2e-3, train=train_text_cnn),
    ZooModel("text_cnn_ids", "text_cnn's numeric part (500 vectorized ids -> probability), the same weights",
             text_cnn_core, review_texts, "binary", "token_ids", derive="text_cnn"),
)


# ----------------------------------------------------------------------------- build: train, export, quantize


def _is_text(x: np.ndarray) -> bool:
    return x.dtype.kind in "OUS"


def load_data(run: Path) -> dict[str, np.ndarray]:
    """data.npz with text columns as object arrays of str (what Keras, onnxruntime and Predictor take)."""
    d = np.load(run / "data.npz")
    return {k: (d[k].astype(object) if d[k].dtype.kind == "U" else d[k]) for k in d.files}


def keras_predict(model: Any, x: np.ndarray) -> np.ndarray:
    if _is_text(x):  # Model.predict refuses numpy strings; the direct call takes a string tensor
        import tensorflow as tf

        return np.concatenate([np.asarray(model(tf.constant(x[i:i + 64].astype(str)), training=False))
                               for i in range(0, len(x), 64)])
    return np.asarray(model.predict(x, batch_size=64, verbose=0))


def _targets(task: str, p: np.ndarray) -> np.ndarray:
    """The float model's own answers: labels (classification) or values (regression)."""
    if task == "multiclass":
        return p.argmax(-1)
    if task == "binary":
        return (p.reshape(-1) > 0.5).astype(np.int64)
    return p.reshape(len(p), -1)[:, 0]


def teacher_score(task: str, p: np.ndarray, y: np.ndarray) -> float:
    """How well the float model learned the teacher on fresh rows: accuracy, or R^2 for regression."""
    if task == "regression":
        p = p.reshape(len(p), -1)[:, 0]
        return float(1.0 - np.mean((p - y) ** 2) / np.var(y))
    return float(np.mean(_targets(task, p) == np.asarray(y).astype(np.int64)))


def prepare(z: ZooModel, run: Path, *, steps: int | None, quantize: bool, fresh: bool, reexport: bool,
            say: Callable[[str], None]) -> dict:
    """Train on the teacher's synthetic data (unless model.keras is there), export, quantize (gated), write the
    bundle; return what was done. ``reexport`` keeps the trained model and its data, redoing the rest."""
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.export.convert import export_onnx

    t_prep = time.perf_counter()
    trained = (run / "model.keras").is_file() and (run / "data.npz").is_file() and (run / "train.json").is_file()
    if not fresh and not reexport and trained and (run / "manifest.json").is_file():
        return json.loads((run / "prepare.json").read_text()) if (run / "prepare.json").is_file() else {"cached": True}
    run.mkdir(parents=True, exist_ok=True)
    keep = {"model.keras", "data.npz", "train.json", "training.json", "litert.json"} if (trained and not fresh) else set()
    for old in run.glob("*"):
        if old.is_file() and old.name not in keep and not (keep and old.name.startswith("litert.")):
            old.unlink()
    if not keep:
        say(f"{z.name}: train" if z.derive is None else f"{z.name}: derive from {z.derive}")
        (derive_model if z.derive else train_model)(z, run, steps)
    done: dict[str, Any] = json.loads((run / "training.json").read_text()) if (run / "training.json").is_file() else {}
    say(f"{z.name}: export")
    t0 = time.perf_counter()
    exp = export_onnx(run)
    done["export_s"] = round(time.perf_counter() - t0, 1)
    done["onnx_nodes"] = sum(exp.op_counts.values())
    done["ops"] = dict(sorted(exp.op_counts.items(), key=lambda kv: -kv[1]))
    d = load_data(run)
    x_train, x_test, y_test = d["x_train"], d["x_test"], d["y_test"]
    write_bundle_manifest(run)
    if quantize:
        from seqdeploy.app.pipeline_keras import quantize_skip_reason
        from seqdeploy.quantize.core import quantize_model
        from seqdeploy.quantize.settings import QuantizeSettings

        skip = quantize_skip_reason(run)
        t0 = time.perf_counter()
        if skip is not None:
            done["quantize"] = {"skip_reason": skip}
        else:
            say(f"{z.name}: quantize (gated)")
            try:
                q = quantize_model(run / "model.onnx", out_dir=run, calibration_inputs={z.input_name: x_train},
                                   test_inputs={z.input_name: x_test}, test_targets=y_test, task=z.task,
                                   settings=QuantizeSettings(latency_batch_sizes=(1, 32), intra_op_num_threads=1))
                done["quantize"] = {"chosen": q.chosen, "candidates": [
                    {"recipe": c.recipe, "accepted": c.chosen, "qualified": c.qualified, "reason": c.reason,
                     "metric_drop": c.metric_drop, "speedup": {lat.batch_size: lat.speedup for lat in c.latency}}
                    for c in q.candidates],
                    "skipped": [str(s) for s in getattr(q, "skipped", ())]}
            except Exception as exc:  # report it; the float32 artifact stays deployed
                done["quantize"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        done["quantize_s"] = round(time.perf_counter() - t0, 1)
        write_bundle_manifest(run)
    # the whole stage: data, training, export, quantize (a kept model's training time counted from training.json)
    done["prepare_s"] = round(time.perf_counter() - t_prep + (done.get("train_s", 0.0) if keep else 0.0), 1)
    (run / "prepare.json").write_text(json.dumps(done, default=str))
    return done


def _write_run(z: ZooModel, run: Path, model: Any, x_train: np.ndarray, x_test: np.ndarray, y_teacher: np.ndarray,
               training: dict) -> None:
    """model.keras, data.npz (gate targets = the float model's answers), train.json and training.json."""
    import keras

    model.save(run / "model.keras")
    p_test = keras_predict(model, x_test)
    training["teacher_test"] = round(teacher_score(z.task, p_test, y_teacher), 4)
    np.savez(run / "data.npz", x_train=x_train, x_test=x_test, y_test=_targets(z.task, p_test), y_teacher=y_teacher)
    n_out = int(model.outputs[0].shape[-1])
    shape = [None, *[int(d) for d in model.inputs[0].shape[1:]]]
    labels = None if z.task == "regression" else ([f"class_{i}" for i in range(n_out)] if z.task == "multiclass"
                                                  else ["negative", "positive"])
    (run / "train.json").write_text(json.dumps({
        "spec_name": z.name, "task": z.task, "labels": labels, "target_name": None, "seed": 0,
        "input": {"name": z.input_name, "shape": shape, "dtype": "object" if _is_text(x_test) else str(x_test.dtype)},
        "preprocessing": {"kind": "none"}, "versions": {"keras": keras.__version__}}))
    (run / "training.json").write_text(json.dumps(training))


def settle_batchnorm(model: Any, x: np.ndarray, y: np.ndarray, loss: str, steps: int = 60) -> None:
    """BatchNormalization's moving statistics lag the weights after a short training (momentum 0.99): the
    inference-mode model then answers one class. A few batches with the weights frozen (learning rate 0) and a
    fast momentum settle them on the final weights, as a long training would."""
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.9
    model.compile(keras.optimizers.SGD(learning_rate=0.0), loss)
    n = min(len(x), 32 * steps)
    model.fit(x[:n], y[:n], batch_size=32, epochs=1, verbose=0)
    for bn, m in zip(bns, saved):
        bn.momentum = m


def train_model(z: ZooModel, run: Path, steps: int | None) -> None:
    """Build, train on the teacher's rows (``steps`` batches of 32 per epoch), save the run's files."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    steps = steps or z.steps
    x_fit, y_fit = z.data(rng, 32 * steps)
    t0 = time.perf_counter()
    if z.train is not None:
        model, hist = z.train(x_fit, y_fit, z)
    else:
        model = z.build()
        loss = {"multiclass": "sparse_categorical_crossentropy", "binary": "binary_crossentropy",
                "regression": "mse"}[z.task]
        model.compile(keras.optimizers.Adam(z.lr), loss, metrics=[] if z.task == "regression" else ["accuracy"])
        hist = model.fit(x_fit, y_fit, batch_size=32, epochs=z.epochs, verbose=0).history
        settle_batchnorm(model, x_fit, y_fit, loss)
    training = {"train_s": round(time.perf_counter() - t0, 1), "train_steps": steps * z.epochs,
                "train_metric": round(float(hist["accuracy" if "accuracy" in hist else "loss"][-1]), 4),
                "train_metric_name": "accuracy" if "accuracy" in hist else "mse"}
    x_train, _ = z.data(rng, 256)
    x_test, y_teacher = z.data(rng, 256)
    _write_run(z, run, model, x_train, x_test, y_teacher, training)


def derive_model(z: ZooModel, run: Path, steps: int | None) -> None:
    """The numeric part of a trained string model: its nested ids model, fed the rows its vectorizer makes."""
    import keras

    src = WORK / str(z.derive)
    if not (src / "model.keras").is_file():
        train_model(next(m for m in ZOO if m.name == z.derive), src, steps)
    full = keras.saving.load_model(src / "model.keras")
    vectorize = next(layer for layer in full.layers if isinstance(layer, keras.layers.TextVectorization))
    core = next(layer for layer in full.layers if isinstance(layer, keras.Model))
    d = load_data(src)
    ids = {k: np.asarray(vectorize(d[k].astype(str))).astype(np.int64) for k in ("x_train", "x_test")}
    training = json.loads((src / "training.json").read_text()) | {"derived_from": z.derive, "train_s": 0.0}
    _write_run(z, run, core, ids["x_train"], ids["x_test"], d["y_teacher"], training)


# ----------------------------------------------------------------------------- bench


class CapiFloor:
    """The floor of an onnxruntime call: a C-level ``RunWithBinding`` of the same graph (seqdeploy.runtime.ort_capi,
    buffers bound once; per call only the input copy in, the run and the output copy out)."""

    family = "floor"
    deployed = False
    threads_apply = True

    def __init__(self, path: Path, precision: str, text: bool = False):
        self.path, self.precision, self.text = path, precision, text
        self.name = f"capi-floor:{precision}"
        self.artifact, self.artifact_bytes = str(path), path.stat().st_size
        self.notes = ["C API RunWithBinding on the deployed graph (seqdeploy.runtime.ort_capi): the per-call floor"]
        self._cs: Any = None
        self._bound: Any = None

    def prepare(self, threads: int) -> None:
        from seqdeploy.runtime.ort_capi import CapiSession

        if self.text:
            raise RuntimeError("the C API floor binds numeric tensors only (seqdeploy.runtime.ort_capi has no string "
                               "tensors or custom-op libraries); this graph takes strings: its numeric part's floor "
                               "is in the text_cnn_ids row")

        self._cs = CapiSession(self.path.read_bytes(), intra_op_num_threads=threads)
        self._batch = None

    def set_batch(self, batch: int) -> str | None:
        self._bound, self._batch = None, batch
        return None

    def infer(self, feeds: Any) -> list[np.ndarray]:
        xs = [np.ascontiguousarray(feeds[n]).astype(t, copy=False) for n, t in zip(self._cs.input_names, self._cs.input_types)]
        if self._bound is None:
            outs = self._cs.run(xs)
            self._ins = [np.empty_like(x) for x in xs]
            self._outs = [np.empty_like(o) for o in outs]
            self._bound = self._cs.bind(self._ins, self._outs)
            return outs
        for buf, x in zip(self._ins, xs):
            np.copyto(buf, x)
        self._bound()
        return [o.copy() for o in self._outs]

    def close(self) -> None:
        self._bound = None
        if self._cs is not None:
            self._cs.close()
        self._cs = None


def litert_models(run: Path, rep: np.ndarray, say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, str]]:
    """LiteRT conversions of run/model.keras, cached beside it (litert.json + litert.PRECISION.tflite); a string
    model gets fp32 and int8-dynamic only (full-integer int8 calibrates on numeric rows)."""
    from seqdeploy.atomic import sha256_file
    from seqdeploy.bench.runners.tflite import TfliteModel, convert_tflite

    key = sha256_file(run / "model.keras")
    meta_path = run / "litert.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("keras_sha256") == key:
            models = {p: TfliteModel((run / f"litert.{p}.tflite").read_bytes(), p, m["fixed_batch"], m["convert_s"],
                                     tuple(m["notes"])) for p, m in meta["models"].items()}
            return models, meta["errors"]
    text = _is_text(rep)
    precisions = ("fp32", "int8-dynamic") if text else ("fp32", "int8-dynamic", "int8")
    say(f"{run.name}: LiteRT conversion ({', '.join(precisions)})")
    models, errors = convert_tflite(run / "model.keras", precisions, None if text else rep, preload=(LAYERS,))
    if text:
        errors["int8"] = "not attempted: full-integer int8 calibrates on numeric rows and this model's input is text"
    for p, m in models.items():
        (run / f"litert.{p}.tflite").write_bytes(m.content)
    meta_path.write_text(json.dumps({"keras_sha256": key, "errors": errors, "models": {
        p: {"fixed_batch": m.fixed_batch, "convert_s": m.convert_s, "notes": list(m.notes)} for p, m in models.items()}}))
    return models, errors


def bench_one(z: ZooModel, run: Path, *, batches: tuple[int, ...], threads: tuple[int, ...], duration: float,
              say: Callable[[str], None]) -> dict:
    from seqdeploy.bench import StopRule, run_bench
    from seqdeploy.bench.discover import BenchData, resolve_target
    from seqdeploy.bench.runners.keras import KerasRunner, KerasSource
    from seqdeploy.bench.runners.onnxruntime import DeployedRunner, OrtRunner
    from seqdeploy.bench.runners.openvino import OpenvinoRunner
    from seqdeploy.bench.runners.tflite import TfliteRunner

    d = load_data(run)
    data = BenchData("synthetic", z.input_name, d["x_test"], d["x_train"])
    tgt = resolve_target(run)
    dep_prec, dep_path = next((p, a) for p, a in tgt.artifacts if tgt.deployed and a.resolve() == tgt.deployed.resolve())
    runners: list[Any] = [DeployedRunner(dep_path, dep_prec, bundle=run), CapiFloor(dep_path, dep_prec, text=_is_text(d["x_test"]))]
    if dep_prec != "fp32":
        runners.append(DeployedRunner(run / "model.onnx", "fp32", bundle=run))
    runners += [OrtRunner(run / "model.onnx", "fp32"), KerasRunner(KerasSource(run / "model.keras"), "direct"),
                OpenvinoRunner(run / "model.onnx")]
    models, errors = litert_models(run, d["x_train"][:200], say)
    runners += [TfliteRunner(models[p]) for p in ("fp32", "int8-dynamic", "int8") if p in models]
    say(f"{z.name}: bench {len(runners)} runners")
    res = run_bench(run, batches=batches, threads=threads, runners=runners, data=data,
                    rule=StopRule(duration_s=duration, warmup_s=0.2))
    out = res.to_json()
    out["litert_errors"] = errors
    (run / "zoo_bench.json").write_text(json.dumps(out, default=str))
    return out


# ----------------------------------------------------------------------------- report


def _fmt(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us" if us >= 100 else f"{us:.1f} us"


def _one_line(why: str, limit: int = 300) -> str:
    """An error as one Markdown line: whitespace collapsed, OpenVINO's report cut to its summary."""
    why = " ".join(str(why).split())
    if "Summary:" in why:  # OpenVINO: "... Model wasn't fully converted. Summary: -- No conversion rule found for ..."
        head, _, tail = why.partition("Summary:")
        why = head.split(":")[0] + ": " + tail.strip(" -")
    return why[:limit] + ("..." if len(why) > limit else "")


def summarize(bench: dict, batch: int, threads: int) -> dict:
    """p50 per runner, the best agreeing peer, and the deployed/peer ratio at (batch, threads)."""
    fam = {r["name"]: r["family"] for r in bench["runners"]}
    rows = [m for m in bench["results"] if m["batch"] == batch and m["threads"] == threads]
    ok = {m["runner"]: m["latency"]["p50_us"] for m in rows if m["status"] == "ok"}
    bad = {m["runner"]: m["reason"] for m in rows if m["status"] != "ok"}
    deployed = next((r["name"] for r in bench["runners"] if r["deployed"]), None)
    floor = next((v for n, v in ok.items() if fam.get(n) == "floor"), None)
    dep_fp32 = "deployed:fp32" if "deployed:fp32" in ok and deployed != "deployed:fp32" else None
    peers = {n: v for n, v in ok.items() if fam.get(n) in PEER_FAMILIES}
    best = min(peers, key=peers.get) if peers else None

    def best_of(family: str) -> tuple[str | None, float | None]:
        mine = {n: v for n, v in ok.items() if fam.get(n) == family}
        n = min(mine, key=mine.get) if mine else None
        return n, (mine[n] if n else None)

    return {"deployed": deployed, "deployed_us": ok.get(deployed), "deployed_fp32_us": ok.get(dep_fp32) if dep_fp32 else None,
            "ort_us": ok.get("ort:fp32"), "floor_us": floor, "keras_us": ok.get("keras:direct"), "litert": best_of("tflite"),
            "openvino": best_of("openvino"), "best_peer": best, "best_peer_us": peers.get(best) if best else None,
            "ratio": (peers[best] / ok[deployed]) if best and ok.get(deployed) else None, "errors": bad,
            "floor_ratio": (peers[best] / floor) if best and floor else None,
            "deployed_floor": (ok[deployed] / floor) if floor and ok.get(deployed) else None}


FLOOR_GOAL = 1.1  # the deployed artifact's p50 over the C-level floor, where a peer beats even the floor
OVERHEAD = WORK / "ort_overhead.json"  # onnxruntime's fixed cost per call and per node, measured by this script


def measure_overhead(repeats: int = 4000) -> dict:
    """onnxruntime's own fixed cost on this machine, through the C API (buffers bound once, 1 thread): one call of an
    Identity graph, and per node (a chain of 32 Adds on one float, minus the Identity call)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from seqdeploy.runtime.ort_capi import CapiSession

    def graph(n_add: int) -> bytes:
        nodes = [helper.make_node("Identity", ["x"], ["t0"])]
        nodes += [helper.make_node("Add", [f"t{i}", "one"], [f"t{i + 1}"]) for i in range(n_add)]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info(f"t{n_add}", TensorProto.FLOAT, [1, 1])],
                              [numpy_helper.from_array(np.ones((1, 1), np.float32), "one")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m.SerializeToString()

    p50 = {}
    sessions = {k: CapiSession(graph(k), intra_op_num_threads=1) for k in (0, 32)}
    # bound once, like the C API floor runner: per call only the run itself
    bound = {k: s.bind([np.ones((1, 1), np.float32)], [np.empty((1, 1), np.float32)]) for k, s in sessions.items()}
    times: dict[int, list[float]] = {0: [], 32: []}
    for b in bound.values():
        b()
    for _ in range(repeats):
        for k, b in bound.items():
            t = time.perf_counter()
            b()
            times[k].append(time.perf_counter() - t)
    for k, v in times.items():
        p50[k] = float(np.median(v)) * 1e6
    return {"call_us": round(p50[0], 3), "node_us": round(max(p50[32] - p50[0], 0.0) / 32, 3)}


def goal_status(s: dict, nodes: int | None = None, overhead: dict | None = None) -> str:
    """``met``: deployed no slower than the best agreeing peer; ``met (floor)``: the peer is faster than even a
    C-level onnxruntime Run of the same graph (peer/floor < 1), the deployed call is within 1.1x of that floor and
    the gap to the peer is no more than onnxruntime's own fixed cost for a call of a graph this size (one call +
    ``nodes`` x per-node cost, :func:`measure_overhead`): the per-call floor, not the kernels, is what loses;
    else ``missed`` (``-`` without an agreeing peer or a deployed time)."""
    ratio, fr, df = s["ratio"], s["floor_ratio"], s["deployed_floor"]
    if ratio is None:
        return "-"
    if ratio >= 1.0:
        return "met"
    if fr is not None and fr < 1.0 and df is not None and df <= FLOOR_GOAL and nodes and overhead:
        fixed = overhead["call_us"] + overhead["node_us"] * nodes
        if s["deployed_us"] - s["best_peer_us"] <= fixed:
            return "met (floor)"
    return "missed"


def render(names: list[str], batches: tuple[int, ...], threads: tuple[int, ...], cpu: dict, versions: dict,
           wall_s: float | None) -> str:
    benches = {n: json.loads((WORK / n / "zoo_bench.json").read_text()) for n in names if (WORK / n / "zoo_bench.json").is_file()}
    preps = {n: json.loads((WORK / n / "prepare.json").read_text()) for n in names if (WORK / n / "prepare.json").is_file()}
    whats = {z.name: z.what for z in ZOO}
    overhead = json.loads(OVERHEAD.read_text()) if OVERHEAD.is_file() else None

    def nodes_of(n: str) -> int | None:
        return preps.get(n, {}).get("onnx_nodes")

    flags = ", ".join(k for k, v in cpu.get("flags", {}).items() if v)
    lines = ["# Real-model zoo: the deployed artifact vs LiteRT, OpenVINO and Keras", "",
             "Regenerated by `benchmarks/real_zoo.py` (do not edit). keras-io architectures at realistic small sizes, "
             "trained on a fixed teacher's synthetic data; see the script's docstring for the models and runners.", "",
             f"- CPU (as `python -m seqdeploy doctor` reports it): {cpu.get('model')}, {cpu.get('logical_cores')} logical cores; "
             f"flags: {flags}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
             "- `deployed` = the bundle's deployed artifact (the quantize gate's choice, else model.onnx) through "
             "`Predictor.run`; `deployed fp32` = the float32 graph the same way when int8 was chosen; `ORT fp32` = "
             "plain `session.run`; LiteRT best of fp32 / int8-dynamic / int8 (from_keras_model, ai_edge_litert "
             "Interpreter); OpenVINO on the bundle's float32 ONNX (LATENCY hint, static batch); Keras = "
             "`model(x, training=False)`.",
             "- every runner's answers are checked against Keras on the same inputs before timing (fp32: 1e-3 x output "
             "scale + 1e-4; int8: 0.25 x scale + 0.01); a runner that disagrees is listed under the table, not timed.",
             "- `C API floor` = the deployed graph through onnxruntime's C API (`RunWithBinding`, buffers bound once): "
             "what one onnxruntime call costs at least; `peer/floor` says whether the graph itself could win "
             "where the Python per-call path does not, `deployed/floor` how far the deployed call is from that floor.",
             "- p50 of interleaved rounds (seqdeploy.bench.timing.run_interleaved); `peer/deployed` = best agreeing "
             "peer's p50 / deployed p50 (>= 1.00 means the deployed artifact is at least as fast: the goal)."
             + (f" Wall time {wall_s / 60:.1f} min." if wall_s else ""),
             "- the machine is a shared 2-core VM: batch-32 calls (tens of ms) get few samples per runner in the "
             "time budget and the load of other work moves them between runs; read batch 1 first and batch 32 as "
             "indicative.",
             "- training: every model learns a fixed teacher on synthetic rows (class templates + noise for images and "
             "series, sentiment tokens for ids and texts, a nonlinear function for the forecaster and the MLP); the "
             "Models table gives the last-epoch training metric and the float model's score against the teacher on "
             "fresh test rows.", ""]
    goal_lines = []
    for th in threads:
        for b in batches:
            st = [goal_status(summarize(benches[n], b, th), nodes_of(n), overhead) for n in names if n in benches]
            goal_lines.append(f"batch {b}/{th} thread{'s' if th > 1 else ''}: {st.count('met')} met, "
                              f"{st.count('met (floor)')} met (floor), {st.count('missed')} missed "
                              f"of {len([g for g in st if g != '-'])}")
    oh = (f" (measured here: {overhead['call_us']:.2f} us per call + {overhead['node_us']:.2f} us per node)"
          if overhead else "")
    lines += ["**Goal**: deployed no slower than the best agreeing peer (`met`); where onnxruntime's own per-call "
              "floor makes that impossible (the peer is faster than even the C API floor, peer/floor < 1, and the "
              "gap to the peer is within onnxruntime's fixed cost for a call of that many nodes" + oh + "), the "
              f"deployed artifact within {FLOOR_GOAL}x of that floor (`met (floor)`). "
              + "; ".join(goal_lines) + ".", ""]
    for th in threads:
        for b in batches:
            lines += [f"## batch {b}, {th} thread{'s' if th > 1 else ''}", "",
                      "| model | deployed | deployed fp32 | ORT fp32 | C API floor | LiteRT best | OpenVINO | Keras | peer/deployed | peer/floor | deployed/floor | goal |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            notes = []
            for n in names:
                if n not in benches:
                    lines.append(f"| {n} | not measured | | | | | | | | | | |")
                    continue
                s = summarize(benches[n], b, th)
                lit_n, lit_v = s["litert"]
                ov_n, ov_v = s["openvino"]
                ratio = s["ratio"]
                goal = goal_status(s, nodes_of(n), overhead)
                dep = f"{_fmt(s['deployed_us'])} ({(s['deployed'] or '').split(':')[-1]})"
                lit = _fmt(lit_v) + (" (" + lit_n.split(":")[-1] + ")" if lit_n else "")
                fr, df = s["floor_ratio"], s["deployed_floor"]
                lines.append(f"| {n} | {dep} | {_fmt(s['deployed_fp32_us'])} | {_fmt(s['ort_us'])} | {_fmt(s['floor_us'])} | "
                             f"{lit} | {_fmt(ov_v)} | "
                             f"{_fmt(s['keras_us'])} | {f'{ratio:.2f}x' if ratio else '-'} | {f'{fr:.2f}x' if fr else '-'} | "
                             f"{f'{df:.2f}x' if df else '-'} | {goal} |")
                for r, why in s["errors"].items():
                    notes.append(f"- {n} `{r}`: {_one_line(why)}")
                if benches[n].get("litert_errors") and th == threads[0] and b == batches[0]:
                    for p, why in benches[n]["litert_errors"].items():
                        notes.append(f"- {n} LiteRT {p} not converted: {_one_line(why)}")
            lines += [""] + (["Not timed (error or disagreement with Keras):", ""] + notes + [""] if notes else [])
    before = {n: (json.loads((BEFORE / n / "zoo_bench.json").read_text()), json.loads((BEFORE / n / "prepare.json").read_text()))
              for n in names if (BEFORE / n / "zoo_bench.json").is_file() and (BEFORE / n / "prepare.json").is_file()}
    if before:
        th = threads[0]
        note = BEFORE / "NOTE.md"  # what the saved 'before' run was, when it was not the plain export
        what = (note.read_text().strip() if note.is_file()
                else "The same trained models exported without and with the cleanup")
        lines += ["## The graph cleanup (seqdeploy/export/optimize.py): before and after", "",
                  f"{what}, 1 thread, separate runs (p50; "
                  f"machine load differs between runs: compare within a row with care).", "",
                  "| model | nodes before | nodes after | ORT fp32 b1 before | after | ORT fp32 b32 before | after "
                  "| deployed b1 before | after | deployed b32 before | after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, (bb, bp) in before.items():
            if n not in benches:
                continue
            row = [n, str(bp.get("onnx_nodes", "-")), str(preps.get(n, {}).get("onnx_nodes", "-"))]
            for key in ("ort_us", "deployed_us"):
                for b in batches:
                    row += [_fmt(summarize(bb, b, th)[key]), _fmt(summarize(benches[n], b, th)[key])]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Models, training, graphs and the int8 gate", "",
              "| model | what | trained | vs teacher (test) | prepare | ONNX nodes | top ops | int8 gate chose | candidates |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        p = preps.get(n, {})
        ops = ", ".join(f"{k} {v}" for k, v in list(p.get("ops", {}).items())[:6])
        q = p.get("quantize", {})
        cands = "; ".join(f"{c['recipe']}: {'chosen' if c.get('accepted') else 'qualified' if c.get('qualified') else 'rejected'}"
                          + f" ({str(c.get('reason'))[:110]})" for c in q.get("candidates", [])) \
            or q.get("error") or (f"skipped: {q['skip_reason']}" if q.get("skip_reason") else "-")
        trained = (f"{p['train_steps']} steps, {p.get('train_metric_name')} {p['train_metric']:.3g}"
                   + (f" (of {p['derived_from']})" if p.get("derived_from") else "")) if "train_steps" in p else "-"
        teacher = "-" if "teacher_test" not in p else (
            f"R^2 {p['teacher_test']:.3f}" if p.get("train_metric_name") == "mse" else f"acc {p['teacher_test']:.3f}")
        prep = f"{p['prepare_s']:.0f} s" if "prepare_s" in p else "-"
        lines.append(f"| {n} | {whats.get(n, '')} | {trained} | {teacher} | {prep} | {p.get('onnx_nodes', '-')} | {ops} | "
                     f"{q.get('chosen') or 'float32 kept'} | {cands} |")
    lines += ["", f"![peer/deployed p50 ratio per model]({PLOT.name})", ""]
    return "\n".join(lines)


def plot(names: list[str], batches: tuple[int, ...], threads: tuple[int, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = {n: json.loads((WORK / n / "zoo_bench.json").read_text()) for n in names if (WORK / n / "zoo_bench.json").is_file()}
    names = [n for n in names if n in benches]
    combos = [(b, th) for th in threads for b in batches]
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(names)), 4.5))
    w = 0.8 / max(1, len(combos))
    for k, (b, th) in enumerate(combos):
        vals = [summarize(benches[n], b, th)["ratio"] or np.nan for n in names]
        ax.bar(np.arange(len(names)) + k * w - 0.4 + w / 2, vals, w, label=f"batch {b}, {th} thread{'s' if th > 1 else ''}")
    ax.axhline(1.0, color="k", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel("best agreeing peer p50 / deployed p50")
    ax.set_title("Deployed artifact vs best of LiteRT / OpenVINO (>= 1: deployed at least as fast)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--duration", type=float, default=3.0, help="timing budget per (batch, threads), seconds")
    ap.add_argument("--steps", type=int, default=None, help="training batches per epoch (default: per model)")
    ap.add_argument("--no-quantize", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="rebuild the run directories (train again)")
    ap.add_argument("--reexport", action="store_true", help="keep the trained models, export and quantize again")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--save-before", action="store_true",
                    help="copy this run's bench.json/prepare.json to work/real_zoo_before (the 'before' columns)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from seqdeploy.bench.harness import cpu_info, versions

    batches = tuple(int(b) for b in args.batch.split(","))
    threads = tuple(int(t) for t in args.threads.split(","))
    names = [z.name for z in ZOO]
    if args.only:
        wanted = args.only.split(",")
        bad = [w for w in wanted if w not in names]
        if bad:
            ap.error(f"unknown model(s) {bad} (expected some of {names})")
        names = wanted
    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    t0 = time.perf_counter()
    if not args.render_only:
        import runpy

        runpy.run_path(str(LAYERS))  # register the custom layers before any model.keras loads
        for z in ZOO:
            if z.name not in names:
                continue
            run = WORK / z.name
            try:
                say(f"{z.name}: prepare")
                prepare(z, run, steps=args.steps, quantize=not args.no_quantize, fresh=args.fresh,
                        reexport=args.reexport, say=say)
                bench_one(z, run, batches=batches, threads=threads, duration=args.duration, say=say)
            except Exception:
                traceback.print_exc()
                say(f"{z.name}: FAILED (see the traceback)")
    if not args.render_only or not OVERHEAD.is_file():
        say("onnxruntime's fixed cost per call and per node (C API)")
        OVERHEAD.parent.mkdir(parents=True, exist_ok=True)
        OVERHEAD.write_text(json.dumps(measure_overhead()))
    all_names = [z.name for z in ZOO if (WORK / z.name / "zoo_bench.json").is_file()]
    if args.save_before:
        import shutil

        for n in all_names:
            (BEFORE / n).mkdir(parents=True, exist_ok=True)
            for f in ("zoo_bench.json", "prepare.json"):
                shutil.copy2(WORK / n / f, BEFORE / n / f)
    REPORT.write_text(render(all_names, batches, threads, cpu_info(), versions(),
                             None if args.render_only else time.perf_counter() - t0))
    plot(all_names, batches, threads)
    say(f"wrote {REPORT} and {PLOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
