"""TextVectorization -> ONNX: the standalone nodes and a whole string model equal Keras on hostile strings."""

from __future__ import annotations

import re
import string

import numpy as np
import pytest

pytest.importorskip("onnxruntime_extensions")

CORPUS = ["The cat sat on the mat.", "The dog ate my homework!", "<br />A cat, a dog; a bird?", "café déjà vu 😀",
          "ÉCOLE école"]
HOSTILE = ["", "   \t\n ", "<br /><br />Hello<br />World", "ÉCOLE école Ünïcode ΣΑΣ", "😀 emoji😀 😀", "THE CAT SAT",
           "!!!...,,,---cat---", " ".join(["the cat"] * 60), "zebra quantum xylophone",
           "a\tb\nc\x0bd\x0ce\rf\x1cg\u00a0h\u3000i", "The cat sat on the mat.", "é😀"]


def custom_standardization(x):
    """keras-io's text-classification standardization."""
    import tensorflow as tf

    lowercase = tf.strings.lower(x)
    stripped_html = tf.strings.regex_replace(lowercase, "<br />", " ")
    return tf.strings.regex_replace(stripped_html, f"[{re.escape(string.punctuation)}]", "")


def _session(model):
    import onnxruntime as ort

    from seqdeploy.export.layers.lookup import extensions_library_path

    opts = ort.SessionOptions()
    opts.register_custom_ops_library(extensions_library_path())
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _standalone(layer, x):
    from seqdeploy.export.layers.lookup import fragment_model
    from seqdeploy.export.layers.text import build_text_vectorization

    frag = build_text_vectorization(layer, "text", "ids")
    return frag, _session(fragment_model(frag, {"text": object}, "ids")).run(None, {"text": x})[0]


CONFIGS = {
    "default": {},
    "lower": {"standardize": "lower"},
    "strip_punctuation": {"standardize": "strip_punctuation"},
    "no_standardize": {"standardize": None},
    "custom": {"standardize": custom_standardization},
    "character": {"split": "character"},
    "bigrams": {"ngrams": 2},
    "ngrams_1_3": {"ngrams": (1, 3)},
    "seq_len": {"output_sequence_length": 8},
    "seq_len_bigrams": {"output_sequence_length": 8, "ngrams": 2},
    "multi_hot": {"output_mode": "multi_hot"},
    "count_bigrams": {"output_mode": "count", "ngrams": 2},
    "tf_idf": {"output_mode": "tf_idf"},
    "multi_hot_padded": {"output_mode": "multi_hot", "max_tokens": 40, "pad_to_max_tokens": True},
    "no_split": {"split": None},
    "no_split_count": {"split": None, "output_mode": "count"},
    "max_tokens": {"max_tokens": 6},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_text_vectorization_nodes_equal_keras_exactly_on_hostile_strings(name):
    import keras

    tv = keras.layers.TextVectorization(**CONFIGS[name])
    tv.adapt(CORPUS)
    for shape in ((-1,), (-1, 1)):
        x = np.array(HOSTILE, dtype=object).reshape(shape)
        want = np.asarray(tv(x))
        frag, got = _standalone(tv, x)
        assert got.dtype == want.dtype and got.shape == want.shape, (shape, got.shape, want.shape)
        np.testing.assert_array_equal(got, want)
    assert frag.needs_extensions == (name != "no_standardize" or tv._split is not None)


def test_lowercasing_is_ascii_only_like_tensorflow():
    import keras

    tv = keras.layers.TextVectorization(standardize="lower", split=None, output_mode="int")
    tv.adapt(["école", "ÉCOLE", "straße"])
    x = np.array(["ÉCOLE", "École", "éCOLE", "STRASSE"], dtype=object)
    _, got = _standalone(tv, x)
    np.testing.assert_array_equal(got, np.asarray(tv(x)))
    vocab = tv.get_vocabulary()
    # "ÉCOLE" -> "École": the accented capital stays (a Unicode lowercaser would give "école")
    assert got[0] == got[1] == vocab.index("École") != vocab.index("école")


def test_unsupported_standardize_ops_are_refused_naming_the_layer_and_the_op():
    import keras
    import tensorflow as tf

    from seqdeploy.errors import UnsupportedLayerError
    from seqdeploy.export.layers.text import build_text_vectorization

    tv = keras.layers.TextVectorization(standardize=lambda x: tf.strings.strip(x), name="reviews")
    tv.adapt(CORPUS)
    with pytest.raises(UnsupportedLayerError, match="layer 'reviews' \\(TextVectorization\\).*'StringStrip'"):
        build_text_vectorization(tv, "x", "y")
    unicode_lower = keras.layers.TextVectorization(standardize=lambda x: tf.strings.lower(x, encoding="utf-8"),
                                                   name="u")
    unicode_lower.adapt(CORPUS)
    with pytest.raises(UnsupportedLayerError, match="layer 'u'.*encoding='utf-8'"):
        build_text_vectorization(unicode_lower, "x", "y")


def test_string_model_exports_and_matches_keras(tmp_path):
    """Input(string) -> TextVectorization -> Embedding -> GlobalAveragePooling1D -> Dense, through `export`."""
    import keras

    from seqdeploy.export.convert import export_onnx

    keras.utils.set_random_seed(0)
    standardize = keras.saving.register_keras_serializable("seqdeploy_tests")(custom_standardization)
    tv = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=12, standardize=standardize)
    tv.adapt(CORPUS)
    text = keras.Input(shape=(1,), dtype="string", name="review")
    x = keras.layers.Embedding(50, 8)(tv(text))
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(text, out)
    model.save(tmp_path / "m.keras")

    res = export_onnx(tmp_path / "m.keras")
    assert res.needs_extensions and res.opset_domains["ai.onnx.contrib"] == 1
    assert any(n.startswith(f"{tv.name}: ") for n in res.native_layers)
    import onnx

    x = np.array(HOSTILE, dtype=object).reshape(-1, 1)
    got = _session(onnx.load(res.onnx_path)).run(None, {"review": x})[0]
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=0, atol=1e-6)
