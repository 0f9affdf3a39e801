"""StringLookup / IntegerLookup / Discretization -> ONNX: exact against Keras; hashing refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

WORDS = ["paris", "tokyo", "lima", "paris", "oslo", "É"]
STRINGS = np.array([["paris", "atlantis"], ["", "É"], ["é", "PARIS"], ["😀", "oslo"], ["   ", "tokyo"]], dtype=object)
INTS = np.array([[5, 0], [-4, 12], [9, 7], [123456789, -1]], dtype=np.int64)


def _run(frag, x):
    import onnxruntime as ort

    from seqdeploy.export.layers.lookup import fragment_model

    model = fragment_model(frag, {"x": x.dtype}, "y")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _check(layer, build, inputs):
    frag = build(layer, "x", "y")
    assert not frag.needs_extensions
    for x in inputs:
        want, got = np.asarray(layer(x)), _run(frag, x)
        if want.dtype.kind in "SO":
            want = want.astype(str).astype(object)
        assert got.dtype == want.dtype and got.shape == want.shape, (x.shape, got.shape, want.shape)
        np.testing.assert_array_equal(got, want)


MODES = ["int", "one_hot", "multi_hot", "count", "tf_idf"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("special", [{}, {"mask_token": ""}, {"mask_token": "[MASK]", "oov_token": "?"}])
def test_string_lookup_equals_keras(mode, special):
    import keras

    from seqdeploy.export.layers.lookup import build_string_lookup

    layer = keras.layers.StringLookup(output_mode=mode, **special)
    layer.adapt(WORDS)
    # vector, one column, several columns (one_hot keeps the column axis there, as Keras does)
    _check(layer, build_string_lookup, [STRINGS[:, 0], STRINGS[:, :1], STRINGS])


def test_string_lookup_pad_to_max_tokens_and_invert():
    import keras

    from seqdeploy.export.layers.lookup import build_string_lookup

    padded = keras.layers.StringLookup(output_mode="multi_hot", max_tokens=12, pad_to_max_tokens=True)
    padded.adapt(WORDS)
    _check(padded, build_string_lookup, [STRINGS])
    inverse = keras.layers.StringLookup(vocabulary=["a", "b", "c"], invert=True, mask_token="[M]")
    _check(inverse, build_string_lookup, [np.array([[0, 1, 2], [3, 4, 99], [-1, 2, 2]], np.int64)])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("special", [{}, {"mask_token": 0}, {"num_oov_indices": 3, "mask_token": 0},
                                     {"num_oov_indices": 2}])
def test_integer_lookup_equals_keras_with_floormod_oov_buckets(mode, special):
    import keras

    from seqdeploy.export.layers.lookup import build_integer_lookup

    layer = keras.layers.IntegerLookup(output_mode=mode, **special)
    layer.adapt(np.array([5, 7, 7, 9, 12]))
    _check(layer, build_integer_lookup, [INTS[:, 0], INTS[:, :1], INTS, INTS.astype(np.int32)])


def test_integer_lookup_invert():
    import keras

    from seqdeploy.export.layers.lookup import build_integer_lookup

    layer = keras.layers.IntegerLookup(vocabulary=[10, 20, 30], invert=True)
    _check(layer, build_integer_lookup, [np.array([[0, 1, 2, 3, 4, -1]], np.int64)])


@pytest.mark.parametrize("mode", ["int", "one_hot", "multi_hot", "count"])
def test_discretization_equals_keras_including_nan_and_infinities(mode):
    import keras

    from seqdeploy.export.layers.lookup import build_discretization

    layer = keras.layers.Discretization(bin_boundaries=[0.0, 1.5, 3.0], output_mode=mode)
    edges = np.array([[-1.0, 0.0, np.nan, 1.5, 2.0, 3.0, np.inf, -np.inf, np.nextafter(1.5, 0, dtype=np.float32)]],
                     np.float32)
    _check(layer, build_discretization, [edges, edges.T, edges[0, :2], np.array([[1, 2, 3]], np.int64)])


def test_hashed_oov_buckets_hashing_and_zero_oov_are_refused_with_the_reason():
    import keras

    from seqdeploy.errors import UnsupportedLayerError
    from seqdeploy.export.layers.lookup import build_hashing, build_integer_lookup, build_string_lookup

    buckets = keras.layers.StringLookup(vocabulary=["a"], num_oov_indices=3, name="cities")
    with pytest.raises(UnsupportedLayerError, match="layer 'cities' \\(StringLookup\\): num_oov_indices=3 .*Fingerprint64"):
        build_string_lookup(buckets, "x", "y")
    farm = keras.layers.IntegerLookup(vocabulary=[1], num_oov_indices=2, oov_method="farmhash", name="zips")
    with pytest.raises(UnsupportedLayerError, match="layer 'zips'.*oov_method='floormod'"):
        build_integer_lookup(farm, "x", "y")
    with pytest.raises(UnsupportedLayerError, match="layer 'h' \\(Hashing\\) hashes its inputs with SipHash"):
        build_hashing(keras.layers.Hashing(num_bins=4, salt=7, name="h"), "x", "y")
    strict = keras.layers.StringLookup(vocabulary=["a"], num_oov_indices=0, name="strict")
    with pytest.raises(UnsupportedLayerError, match="layer 'strict'.*num_oov_indices=0"):
        build_string_lookup(strict, "x", "y")


def test_feature_space_style_model_exports_and_matches_keras(tmp_path):
    """string + integer + numeric inputs: StringLookup, IntegerLookup, Normalization, Discretization ->
    CategoryEncoding, concatenated; Normalization and CategoryEncoding are tf2onnx's, the rest native."""
    import keras
    import onnx
    import onnxruntime as ort

    from seqdeploy.export.convert import export_onnx

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    city = keras.layers.StringLookup(output_mode="one_hot", name="city_lookup")
    city.adapt(np.array(WORDS))
    zips = keras.layers.IntegerLookup(output_mode="multi_hot", name="zip_lookup")
    zips.adapt(np.array([75001, 10001, 15001, 75001]))
    age = keras.layers.Normalization(axis=None, name="age_norm")
    age.adapt(rng.normal(40, 10, 50).astype("float32"))
    bins = keras.layers.Discretization(num_bins=4, name="income_bins")
    bins.adapt(rng.normal(50, 20, 200).astype("float32"))
    inputs = [keras.Input(shape=(1,), dtype="string", name="city"), keras.Input(shape=(1,), dtype="int64", name="zip"),
              keras.Input(shape=(1,), dtype="float32", name="age"), keras.Input(shape=(1,), dtype="float32", name="income")]
    parts = [city(inputs[0]), zips(inputs[1]), age(inputs[2]),
             keras.layers.CategoryEncoding(num_tokens=4, output_mode="one_hot")(bins(inputs[3]))]
    x = keras.layers.Concatenate()([keras.layers.Activation("linear", dtype="float32")(p) for p in parts])
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(8, "relu")(x)))
    model.save(tmp_path / "fs.keras")

    res = export_onnx(tmp_path / "fs.keras")
    assert not res.needs_extensions
    assert sorted(n.split(":")[0] for n in res.native_layers) == ["city_lookup", "income_bins", "zip_lookup"]
    feeds = {"city": np.array([["paris"], ["atlantis"], [""], ["PARIS"], ["😀"]], object),
             "zip": np.array([[75001], [0], [-5], [10001], [123456789]], np.int64),
             "age": np.array([[40], [-3], [1e4], [0], [99]], np.float32),
             "income": np.array([[50], [np.nan], [-np.inf], [1e9], [49.9]], np.float32)}
    got = ort.InferenceSession(onnx.load(res.onnx_path).SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    want = np.asarray(model([feeds[i.name] for i in model.inputs]))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_a_model_ending_in_an_inverted_lookup_exports_its_strings(tmp_path):
    """A string graph output (StringLookup(invert=True) last) goes through the graph cleanup's exactness probe."""
    import keras

    from seqdeploy.export.convert import export_onnx
    from seqdeploy.runtime.session import make_session

    inp = keras.Input((3,), dtype="int64", name="ids")
    model = keras.Model(inp, keras.layers.StringLookup(vocabulary=["a", "b", "c"], invert=True, name="inv")(inp))
    model.save(tmp_path / "m.keras")
    export_onnx(tmp_path / "m.keras", out=tmp_path / "m.onnx")
    x = np.array([[0, 1, 3], [2, 2, 1]], np.int64)
    got = make_session(str(tmp_path / "m.onnx")).run(None, {"ids": x})[0]
    assert got.astype(str).tolist() == np.asarray(model(x)).astype(str).tolist() == [["[UNK]", "a", "c"], ["b", "b", "a"]]
