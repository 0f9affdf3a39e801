"""Tiny string models (a Keras model taking raw text) exported and bundled, for the runtime, Node and browser tests.

``lookup``: Input(string) -> StringLookup -> Embedding -> pooling -> Dense (core ONNX + ai.onnx.ml only).
``text``: Input(string) -> TextVectorization (lowercase + punctuation strip + whitespace split: onnxruntime-extensions
``ai.onnx.contrib`` ops) -> Embedding -> pooling -> Dense.
``features``: keras-io's structured-data recipe: a FeatureSpace (integer + string categories, a normalised float)
adapted on a tf.data dataset, the model taking the dict of raw features (one ONNX input per key).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from portable_bundles import GOLDEN, tensor

COLOURS = ["red", "green", "blue"]
WORDS = ["good", "bad", "film", "acting"]
LABELS = ["no", "yes"]
TEXTS = ["Good FILM!", "bad, bad acting", "", "GREEN", "red", "unknown words here", "film? Good.", "blue"]


def keras_model(kind: str):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(), dtype="string", name="text")
    if kind == "lookup":
        x = keras.layers.StringLookup(vocabulary=COLOURS, name="colour")(inp)
        x = keras.layers.Embedding(len(COLOURS) + 1, 4)(keras.ops.expand_dims(x, -1))
    else:
        x = keras.layers.TextVectorization(max_tokens=len(WORDS) + 2, output_sequence_length=6, vocabulary=WORDS,
                                           name="vectorize")(inp)
        x = keras.layers.Embedding(len(WORDS) + 2, 4)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))


def feature_rows() -> dict[str, np.ndarray]:
    from test_export_dict_inputs import ROWS

    return {k: v.reshape(-1, 1) for k, v in ROWS.items()}


def build(root: Path, kind: str) -> Path:
    """A bundle directory: model.keras, model.onnx, train.json (preprocessing none), manifest.json, golden answers."""
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.runtime.predictor import Predictor

    run = Path(root) / f"strings_{kind}"
    run.mkdir(parents=True, exist_ok=True)
    if kind == "features":
        from test_export_dict_inputs import feature_space_model

        feature_space_model(crosses=False).save(run / "model.keras")
    else:
        keras_model(kind).save(run / "model.keras")
    export_onnx(run / "model.keras", out=run / "model.onnx")
    (run / "train.json").write_text(json.dumps({
        "spec_name": f"strings_{kind}", "task": "binary" if kind == "features" else "multiclass", "labels": LABELS,
        "target_name": None, "preprocessing": {"kind": "none"}}))
    write_bundle_manifest(run)
    p = Predictor.from_bundle(run)
    if kind == "features":
        raw = {t.name: p.pre.coerce(v, 0, np.dtype(object if t.dtype == "str" else t.dtype), v.shape[1:], t.name)
               for t, v in ((t, feature_rows()[t.name]) for t in p.manifest.portable.inputs)}
    else:
        raw = {"text": np.asarray(TEXTS, dtype=object)}
    answers = p.answers(raw if kind == "features" else raw["text"])
    (run / GOLDEN).write_text(json.dumps({"inputs": {k: tensor(v) for k, v in raw.items()},
                                          "outputs": {k: tensor(v) for k, v in answers.items()}}))
    return run
