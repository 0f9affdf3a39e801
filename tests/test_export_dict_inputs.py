"""Dict-input Functional models (``keras.Model(inputs={key: Input})``) and Keras FeatureSpace in a model:
one ONNX input per key, named by the key, same answers as Keras, crosses included."""

from __future__ import annotations

import numpy as np
import pytest

from seqdeploy.errors import UnsupportedLayerError
from seqdeploy.runtime.session import ORT_TYPES, make_session

ROWS = {"age": np.array([50, 60, 40, 70, 55, 45, 80], np.float32),  # keys sorted, like the model's inputs
        "cp": np.array([1, 2, 3, 4, 1, 2, 9]),
        "sex": np.array([1, 0, 1, 0, 1, 1, 2]),
        "thal": np.array(["fixed", "normal", "reversible", "normal", "fixed", "normal", "unseen"])}


def feature_space_model(crosses: bool, mode: str = "concat"):
    """keras-io's structured-data recipe, small: FeatureSpace adapted on a tf.data dataset, its encoded
    features into Dense layers, the model taking the dict of raw features."""
    import keras
    import tensorflow as tf
    from keras.utils import FeatureSpace

    keras.utils.set_random_seed(0)
    fs = FeatureSpace(
        features={"sex": FeatureSpace.integer_categorical(num_oov_indices=1),
                  "thal": FeatureSpace.string_categorical(num_oov_indices=1),
                  "age": FeatureSpace.float_normalized(),
                  "cp": FeatureSpace.integer_categorical(num_oov_indices=1)},
        crosses=[FeatureSpace.cross(feature_names=("sex", "cp"), crossing_dim=8)] if crosses else [],
        output_mode=mode)
    fs.adapt(tf.data.Dataset.from_tensor_slices({k: v[:6] for k, v in ROWS.items()}).batch(2))
    encoded = fs.get_encoded_features()
    if mode == "dict":  # one encoded tensor per feature: concatenated here, one of them also an output
        x = keras.layers.Dense(4, activation="relu")(keras.layers.Concatenate()([encoded[k] for k in sorted(encoded)]))
        return keras.Model(inputs=fs.get_inputs(), outputs={"p": keras.layers.Dense(1, activation="sigmoid")(x),
                                                            "age_scaled": encoded["age"]})
    x = keras.layers.Dense(4, activation="relu")(encoded)
    return keras.Model(inputs=fs.get_inputs(), outputs=keras.layers.Dense(1, activation="sigmoid")(x))


def run_onnx(proto, rows: dict, every: bool = False):
    sess = make_session(proto.SerializeToString())
    feeds = {i.name: np.asarray(rows[i.name]).astype(ORT_TYPES[i.type]) for i in sess.get_inputs()}
    out = sess.run(None, feeds)
    return dict(zip([o.name for o in sess.get_outputs()], out)) if every else out[0]


def test_dict_inputs_become_one_onnx_input_per_key():
    import keras

    from seqdeploy.export.convert import convert_model

    a = keras.Input((2,), name="zeta")
    b = keras.Input((), dtype="string", name="alpha")
    s = keras.layers.StringLookup(vocabulary=["x", "y"], output_mode="one_hot")(b)
    model = keras.Model(inputs={"zeta": a, "alpha": b}, outputs=keras.layers.Dense(1)(keras.layers.Concatenate()([a, s])))
    conv = convert_model(model)
    assert sorted(i.name for i in conv.model.graph.input) == ["alpha", "zeta"]
    rows = {"zeta": np.array([[1, 2], [3, 4], [5, 6]], np.float32), "alpha": np.array(["x", "q", "y"], dtype=object)}
    want = model({"zeta": rows["zeta"], "alpha": rows["alpha"].astype(str)}).numpy()
    np.testing.assert_allclose(run_onnx(conv.model, rows), want, atol=1e-6)


def test_feature_space_model_exports_exactly():
    from seqdeploy.export.convert import convert_model

    model = feature_space_model(crosses=False)
    conv = convert_model(model)
    assert sorted(i.name for i in conv.model.graph.input) == sorted(ROWS)
    assert any("string_categorical" in n for n in conv.native_layers)
    want = model({k: v.reshape(-1, 1) for k, v in ROWS.items()}).numpy()  # the last row: unseen categories (OOV)
    np.testing.assert_allclose(run_onnx(conv.model, {k: v.reshape(-1, 1) for k, v in ROWS.items()}), want, atol=1e-6)


def test_feature_space_crosses_export_exactly_at_opset_18():
    """keras-io's FeatureSpace with crosses: HashedCrossing over the lookups' indices is TensorFlow's
    FingerprintCat64 in ONNX integer ops (BitwiseXor: opset 18, chosen because the layer needs it); a lower
    opset asked for is refused naming the layer."""
    from seqdeploy.errors import OpsetError
    from seqdeploy.export.convert import convert_model

    model = feature_space_model(crosses=True)
    conv = convert_model(model)
    assert conv.opset == 18 and any("sex_X_cp: FingerprintCat64" in n for n in conv.native_layers)
    rows = {k: v.reshape(-1, 1) for k, v in ROWS.items()}
    np.testing.assert_allclose(run_onnx(conv.model, rows), model(rows).numpy(), atol=1e-6)
    with pytest.raises(OpsetError, match=r"opset 17 is too low for layer\(s\) \['sex_X_cp'\]"):
        convert_model(model, opset=17)


def test_feature_space_dict_mode_and_dict_outputs():
    """FeatureSpace(output_mode="dict") concatenated in the model, and a model with outputs={key: tensor}:
    one ONNX output per key, named by the key."""
    from seqdeploy.export.convert import convert_model

    model = feature_space_model(crosses=False, mode="dict")
    conv = convert_model(model)
    assert [o.name for o in conv.model.graph.output] == ["age_scaled", "p"]
    rows = {k: v.reshape(-1, 1) for k, v in ROWS.items()}
    want = {k: v.numpy() for k, v in model(rows).items()}
    got = run_onnx(conv.model, rows, every=True)
    for key in ("p", "age_scaled"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-6)
