"""seqdeploy.preprocess: every kind's numpy ``apply`` equals its ONNX nodes; records round-trip; inputs checked."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seqdeploy.errors import BundleError, InputValidationError
from seqdeploy.bundle.portable import build_portable, build_preprocessing
from seqdeploy.verify.portable import HOSTILE_TEXTS, tokenizer_ids
from seqdeploy.preprocess import (
    KINDS,
    Categorical,
    NoPreprocessing,
    Scale,
    Standardize,
    Tokenize,
    Window,
    from_record,
    task_outputs,
)

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


def run_graph(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def onnx_apply(kind, raw, model_dtype, model_shape):
    return run_graph(build_preprocessing(kind, model_dtype, model_shape), {kind.raw_name: raw})[0]


def test_every_kind_is_registered_and_round_trips():
    kinds = [Standardize(("a", "b"), (1.0, 2.0), (0.5, 4.0)), Scale(0.25, 1.0, (2, 3), "uint8", (3, 2)),
             Window(4, 10.0, 2.0), Tokenize(("<pad>", "<oov>", "good"), 5), NoPreprocessing(),
             Categorical(("a",), (1.0,), (2.0,), ("plan", "region"), (("pro", "basic"), ("eu",)), "onehot")]
    # the optional fields of the bring-your-own-data sources round-trip too
    kinds += [Standardize(("a",), (1.0,), (0.5,), 10.0, 4.0), Tokenize(("<pad>", "<oov>", "good"), 5, column="review"),
              Scale(1 / 255, 0.0, (4, 5, 3), "uint8", (4, 5, 3), "bilinear", "white"),
              Categorical((), (), (), ("plan",), (("pro",),), "index", 3.0, 2.0)]
    assert set(KINDS) == {k.kind for k in kinds}
    for k in kinds:
        assert from_record(k.to_record()) == k
        assert k.to_record()["kind"] == k.kind


@pytest.mark.parametrize("record, match", [
    ({"kind": "standardize", "feature_names": ["a"], "mean": [0.0], "std": [0.0]}, "std > 0"),
    ({"kind": "standardize", "feature_names": ["a", "a"], "mean": [0, 0], "std": [1, 1]}, "duplicates"),
    ({"kind": "scale", "scale": 1.0, "offset": 0.0, "raw_shape": [2], "raw_dtype": "int16"}, "raw_dtype"),
    ({"kind": "scale", "scale": 1.0, "offset": 0.0, "raw_shape": [4], "model_shape": [3]}, "model_shape"),
    ({"kind": "tokenize", "vocabulary": ["<pad>", "<oov>", "a", "a"], "sequence_length": 3}, "duplicate"),
    ({"kind": "tokenize", "vocabulary": ["<pad>", "<oov>"], "sequence_length": 3, "padding": "left"}, "right"),
    ({"kind": "tokenize", "vocabulary": ["<pad>", "<oov>"], "sequence_length": 3, "token_pattern": "("}, "regex"),
    ({"kind": "window", "window": 0, "mean": 0.0, "std": 1.0}, "window"),
    ({"kind": "bogus"}, "expected one of standardize"),
    ({"kind": "standardize", "feature_names": ["a"], "mean": [0], "std": [1], "target_mean": 1, "target_std": 0},
     "target_std"),
    ({"kind": "scale", "scale": 1.0, "offset": 0.0, "raw_shape": [2, 2], "raw_dtype": "uint8", "resize": "cubic",
      "alpha": "white"}, "resize"),
    ({"kind": "scale", "scale": 1.0, "offset": 0.0, "raw_shape": [2, 2], "resize": "nearest", "alpha": "white"},
     "uint8"),
    ({"kind": "categorical", "feature_names": ["a"], "mean": [0], "std": [1], "categorical_names": ["a"],
      "vocabularies": [["x"]]}, "unique"),
    ({"kind": "categorical", "categorical_names": ["p"], "vocabularies": [[]]}, "vocabularies"),
    ({"kind": "categorical", "categorical_names": ["p"], "vocabularies": [["x"]], "encoding": "hash"}, "encoding"),
])
def test_bad_records_name_the_field(record, match):
    with pytest.raises(BundleError, match=match):
        from_record(record)


def test_legacy_token_pattern_upgraded():
    k = from_record({"kind": "tokenize", "vocabulary": ["<pad>", "<oov>", "good"], "sequence_length": 4,
                     "lowercase": True, "token_pattern": "[a-z0-9']+"})
    assert k.token_pattern == "[A-Za-z0-9']+"
    assert k.apply(k.coerce(["GOOD good, Good!"])).tolist() == [[2, 2, 2, 0]]


# --------------------------------------------------------------------------- numpy == ONNX, per kind


@settings(**SETTINGS)
@given(st.data())
def test_standardize_numpy_equals_onnx(data):
    f = data.draw(st.integers(1, 6))
    mean = data.draw(st.lists(finite32, min_size=f, max_size=f))
    std = data.draw(st.lists(st.floats(0.0009765625, 1024.0, width=32), min_size=f, max_size=f))
    k = Standardize(tuple(f"c{i}" for i in range(f)), tuple(mean), tuple(std))
    raw = data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 9)), f), elements=finite32))
    np.testing.assert_array_equal(onnx_apply(k, raw, np.float32, (f,)), k.apply(raw))


@settings(**SETTINGS)
@given(st.data())
def test_scale_numpy_equals_onnx(data):
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    raw_dtype = data.draw(st.sampled_from(["float32", "uint8"]))
    k = Scale(data.draw(st.floats(0.0009765625, 8.0, width=32)), data.draw(st.sampled_from([0.0, -1.0, 0.5])), shape, raw_dtype)
    n = data.draw(st.integers(1, 5))
    elems = st.integers(0, 255) if raw_dtype == "uint8" else finite32
    raw = data.draw(hnp.arrays(np.dtype(raw_dtype), (n, *shape), elements=elems))
    model_shape = (*shape, 1)
    got = onnx_apply(k, raw, np.float32, model_shape)
    np.testing.assert_array_equal(got, k.apply(raw, np.float32, model_shape))
    assert got.shape == (n, *model_shape)


@settings(**SETTINGS)
@given(st.data())
def test_window_numpy_equals_onnx_and_postprocess_too(data):
    w = data.draw(st.integers(1, 16))
    k = Window(w, data.draw(finite32), data.draw(st.floats(0.0078125, 1024.0, width=32)))
    raw = data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 6)), w), elements=finite32))
    np.testing.assert_array_equal(onnx_apply(k, raw, np.float32, (w, 1)), k.apply(raw))
    # de-normalisation: the regression head of the portable graph equals task_outputs
    got = run_graph(build_portable(_first_column_model(w), k, "regression", None), {"window": raw})[0]
    seen = k.apply(raw, np.float32, (w,))[:, :1]  # what the model saw: its output is the first column
    assert got.shape == (len(raw),)
    np.testing.assert_array_equal(got, task_outputs(seen, "regression", None, k)["prediction"])


def _first_column_model(w):
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])
    consts = [numpy_helper.from_array(np.asarray(v, np.int64), n) for n, v in
              (("s", [0]), ("e", [1]), ("a", [1]))]
    g = helper.make_graph([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])], "first", [x], [y],
                          initializer=consts)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


words = st.sampled_from(["good", "bad", "movie", "don't", "it's", "the", "a", "1984", "café", "naïve", "GOOD",
                         "Bad", "ÉCOLE", "İ", "\u212a", "ß", "😀", "日本", "...", "!!", "'", "-", "\t", "\n", " "])
texts = st.one_of(st.text(max_size=60), st.lists(words, max_size=30).map("".join),
                  st.lists(words, max_size=30).map(" ".join))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts, min_size=1, max_size=60), st.integers(1, 12), st.booleans())
def test_tokenizer_in_graph_equals_python(batch, length, lowercase):
    vocab = ("<pad>", "<oov>", "good", "bad", "movie", "don't", "it's", "the", "1984", "caf", "GOOD", "'")
    k = Tokenize(vocab, length, lowercase)
    np.testing.assert_array_equal(tokenizer_ids(k, batch), k.apply(k.coerce(batch), np.int64))


def test_tokenizer_hostile_strings_and_thousands_of_sentences():
    rng = np.random.default_rng(0)
    pool = ["good", "BAD", "movie", "don't", "café", "😀", "...", "x" * 40, "İ", "\u212a", "1984", "'", "\t"]
    corpus = list(HOSTILE_TEXTS) + [" ".join(rng.choice(pool, size=rng.integers(0, 40))) for _ in range(3000)]
    vocab = ("<pad>", "<oov>", "good", "bad", "movie", "don't", "1984", "caf", "x" * 40)
    for length in (1, 8, 64):
        k = Tokenize(vocab, length)
        np.testing.assert_array_equal(tokenizer_ids(k, corpus), k.apply(k.coerce(corpus), np.int64))


def test_tokenizer_definition():
    k = Tokenize(("<pad>", "<oov>", "good", "movie", "don't"), 6)
    # tokens are ASCII letter/digit/apostrophe runs, ASCII-lowercased; anything else separates; OOV = 1
    assert k.tokens("A GOOD-movie, DON'T!! café İ") == ["a", "good", "movie", "don't", "caf"]
    assert k.apply(k.coerce(["A GOOD-movie, DON'T!! café", ""])).tolist() == [[1, 2, 3, 4, 1, 0], [0] * 6]


# --------------------------------------------------------------------------- task outputs


def _identity_model(units):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", units])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", units])
    m = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@settings(**SETTINGS)
@given(st.data())
def test_task_outputs_numpy_equals_onnx(data):
    units = data.draw(st.sampled_from([1, 2, 3, 7]))
    task = "binary" if units == 1 else data.draw(st.sampled_from(["multiclass", "regression"]))
    named = data.draw(st.booleans())
    n_classes = 2 if units == 1 else units
    labels = [f"class {i}" for i in range(n_classes)] if named else None
    # values on the threshold and ties in the argmax included
    y = data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 8)), units),
                             elements=st.sampled_from([0.0, 0.25, 0.5, 0.5, 0.75, 1.0, 1e-8])))
    model = build_portable(_identity_model(units), NoPreprocessing(), task, labels)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": y})))
    want = task_outputs(y, task, labels, NoPreprocessing())
    assert set(got) == set(want)
    for name, v in want.items():
        if v.dtype == object:
            assert got[name].tolist() == v.tolist()
        else:
            np.testing.assert_array_equal(got[name], v)
            assert got[name].dtype == v.dtype


# --------------------------------------------------------------------------- input checks (coerce)


@pytest.mark.parametrize("kind, raw, match", [
    (Standardize(("a", "b", "c"), (0, 0, 0), (1, 1, 1)), [[1.0, 2.0]], r"shape \(1, 2\) .expected \(n, 3\).*2 values"),
    (Standardize(("a", "b"), (0, 0), (1, 1)), [[1.0, float("nan")]], "row 0 contains nan"),
    (Standardize(("a", "b"), (0, 0), (1, 1)), [[1e300, 0.0]], "overflows float32"),
    (Standardize(("a", "b"), (0, 0), (1, 1)), [{"a": 1.0}], "missing feature 'b'"),
    (Tokenize(("<pad>", "<oov>"), 3), ["ok", 3], "item 1 is int"),
    (Tokenize(("<pad>", "<oov>"), 3), "just one string", "wrap it in a list"),
    (Tokenize(("<pad>", "<oov>"), 3), [], "empty list"),
    (Scale(1.0, 0.0, (2, 2), "uint8"), np.full((1, 2, 2), 300), "pixel value 300 .expected integers 0..255"),
    (Scale(1.0, 0.0, (2, 2), "uint8"), np.full((1, 2, 2), 1.5), "pixel value 1.5"),
    (Scale(1.0, 0.0, (2, 2)), np.zeros((1, 3, 3)), r"expected \(n, 2, 2\) or \(n, 4\)"),
    (Window(3, 0.0, 1.0), [[1.0, 2.0]], r"expected \(n, 3\)"),
])
def test_bad_raw_inputs_are_one_line_errors(kind, raw, match):
    with pytest.raises(InputValidationError, match=match) as info:
        kind.coerce(raw)
    assert "\n" not in str(info.value)


def test_uint8_pixels_accepted_as_ints_or_uint8():
    k = Scale(1 / 255, 0.0, (2, 2), "uint8")
    a = k.coerce(np.array([[[0, 255], [3, 4]]]))
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(k.coerce(a.astype(np.uint8)), a)


# --------------------------------------------------------------------------- bring-your-own-data kinds


cat_values = st.sampled_from(["pro", "basic", "free", "", "Pro", "é", "😀", "0", "1", "unseen", " pro"])


@settings(**SETTINGS)
@given(st.data())
def test_categorical_numpy_equals_onnx(data):
    f = data.draw(st.integers(0, 3))
    c = data.draw(st.integers(1, 3))
    encoding = data.draw(st.sampled_from(["onehot", "index"]))
    vocabs = tuple(tuple(dict.fromkeys(data.draw(st.lists(cat_values, min_size=1, max_size=5)))) for _ in range(c))
    k = Categorical(tuple(f"x{i}" for i in range(f)), tuple(data.draw(st.lists(finite32, min_size=f, max_size=f))),
                    tuple(data.draw(st.lists(st.floats(0.0009765625, 1024.0, width=32), min_size=f, max_size=f))),
                    tuple(f"c{j}" for j in range(c)), vocabs, encoding)
    n = data.draw(st.integers(1, 7))
    x = data.draw(hnp.arrays(np.float32, (n, f), elements=finite32))
    cats = np.asarray(data.draw(st.lists(st.lists(cat_values, min_size=c, max_size=c), min_size=n, max_size=n)),
                      dtype=object).reshape(n, c)
    raw = k.coerce({"features": x, "categories": cats})
    got = run_graph(build_preprocessing(k, np.float32, (k.width,)), k.feeds(raw))[0]
    want = k.apply(raw)
    assert want.shape == (n, k.width)
    np.testing.assert_array_equal(got, want)
    # the definition: unseen values are id 0 (OOV), the one-hot block has the OOV column first
    ids = k.ids(cats)
    for j, vocab in enumerate(vocabs):
        assert [ids[i, j] == 0 for i in range(n)] == [v not in vocab for v in cats[:, j].tolist()]
    assert sum(k.oov_counts(raw).values()) == int((ids == 0).sum())


def test_categorical_fit_uses_training_values_by_frequency_and_reads_rows_dataframes_and_records():
    import pandas as pd

    cats = np.asarray([["pro"], ["basic"], ["pro"], ["free"], ["basic"], ["pro"]], dtype=object)
    k = Categorical.fit(np.arange(6.0).reshape(6, 1), ["age"], cats, ["plan"])
    assert k.vocabularies == (("pro", "basic", "free"),) and k.width == 1 + 4
    rows = [{"age": 3, "plan": "basic", "id": 9}, {"age": 1.5, "plan": "enterprise"}]
    a = k.apply(k.coerce(rows))
    np.testing.assert_array_equal(a[:, 1:], [[0, 0, 1, 0], [1, 0, 0, 0]])  # enterprise -> OOV
    np.testing.assert_allclose(a[:, 0], (np.float32([3, 1.5]) - np.float32(2.5)) / np.float32(np.std(np.arange(6.0))))
    np.testing.assert_array_equal(k.apply(k.coerce(pd.DataFrame(rows))), a)
    structured = k.coerce(rows)
    np.testing.assert_array_equal(k.apply(k.coerce(structured)), a)
    assert k.oov_counts(structured) == {"plan": 1}
    # integer categories are their digits
    k2 = Categorical.fit(np.zeros((3, 0)), [], np.asarray([["1"], ["2"], ["1"]], dtype=object), ["zone"])
    assert k2.apply(k2.coerce([{"zone": 2}, {"zone": 2.0}, {"zone": "1"}])).tolist() == [[0, 0, 1], [0, 0, 1], [0, 1, 0]]


@pytest.mark.parametrize("rows, match", [
    ([{"age": 1.0}], "row 0 is missing column 'plan'"),
    ([{"age": "old", "plan": "pro"}], "row 0 column 'age' = 'old' is not a number"),
    ([{"age": 1.0, "plan": None}], "row 0 column 'plan' = None"),
    ([{"age": float("nan"), "plan": "pro"}], "row 0 contains nan"),
    ({"age": 1.0, "plan": "pro"}, "wrap a single row in a list"),
    ([], "non-empty list"),
])
def test_categorical_bad_rows_are_one_line_errors(rows, match):
    k = Categorical(("age",), (0.0,), (1.0,), ("plan",), (("pro",),))
    with pytest.raises(InputValidationError, match=match) as info:
        k.coerce(rows)
    assert "\n" not in str(info.value)


@settings(**SETTINGS)
@given(st.data())
def test_scaled_regression_target_postprocess_numpy_equals_onnx(data):
    f = data.draw(st.integers(1, 4))
    t_mean, t_std = data.draw(finite32), data.draw(st.floats(0.0078125, 1024.0, width=32))
    kinds = [Standardize(tuple(f"c{i}" for i in range(f)), (0.0,) * f, (1.0,) * f, t_mean, t_std),
             Categorical(tuple(f"c{i}" for i in range(f - 1)), (0.0,) * (f - 1), (1.0,) * (f - 1), ("p",), (("a",),),
                         "index", t_mean, t_std)]
    y = data.draw(hnp.arrays(np.float32, (data.draw(st.integers(1, 6)), 1), elements=finite32))
    for k in kinds:
        want = task_outputs(y, "regression", None, k)["prediction"]
        np.testing.assert_array_equal(want, y[:, 0] * np.float32(t_std) + np.float32(t_mean))
        assert k.target_scale == t_std
        # the post-processing alone: the same nodes the portable graph appends after the model
        from seqdeploy.bundle.portable import GraphBuilder

        g = GraphBuilder("post")
        k.postprocess_onnx(g, "y", "prediction")
        from onnx import TensorProto, helper

        graph = helper.make_graph(g.nodes, "post", [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
                                  [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["n", 1])],
                                  initializer=g.initializers)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        np.testing.assert_array_equal(run_graph(m, {"y": y})[0][:, 0], want)
