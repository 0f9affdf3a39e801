"""Functional models export with native recurrent ops, Keras names, no Loop, and match Keras.

Shapes covered: several inputs and outputs, a shared Embedding, a shared LSTM (two
calls), residual Add around a Dense, Concatenate of LSTM and Conv1D branches, a
nested Sequential, masks flowing through all of it (token inputs are fed left-padded,
with holes and with an all-padding row, as well as right-padded).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ATOL = 1e-5
T, VOCAB = 6, 25


def _L():
    import keras

    return keras.layers


def multi_input_two_outputs():
    import keras

    L = _L()
    num = keras.Input((4,), name="numbers")
    series = keras.Input((T, 3), name="series")
    h = L.Concatenate()([L.Dense(4, activation="relu")(num), L.GRU(5, name="series_gru")(series)])
    return keras.Model([num, series], [L.Dense(1, activation="sigmoid", name="prob")(h), L.Dense(2, name="aux")(h)],
                       name="multi_io"), {"GRU": 1}


def shared_embedding():
    import keras

    L = _L()
    a, b = keras.Input((T,), dtype="int32", name="question"), keras.Input((T,), dtype="int32", name="answer")
    emb = L.Embedding(VOCAB, 4, mask_zero=True, name="shared_emb")
    h = L.Concatenate()([L.LSTM(5, name="q_lstm")(emb(a)), L.GRU(5, name="a_gru")(emb(b))])
    return keras.Model([a, b], L.Dense(3, activation="softmax", name="match")(h), name="shared_emb"), \
        {"LSTM": 1, "GRU": 1}


def shared_lstm_two_calls():
    import keras

    L = _L()
    a, b = keras.Input((T, 3), name="left"), keras.Input((T, 3), name="right")
    enc = L.LSTM(4, name="siamese")
    d = L.Subtract()([enc(a), enc(b)])
    return keras.Model([a, b], L.Dense(1, name="distance")(d), name="siamese"), {"LSTM": 2}


def residual_dense():
    import keras

    L = _L()
    x = keras.Input((T,), dtype="int32", name="tokens")
    h = L.Embedding(VOCAB, 6, mask_zero=True)(x)
    s = L.LSTM(6, return_sequences=True, name="enc")(h)
    r = L.Add()([s, L.Dense(6, activation="tanh")(s)])  # residual; Add passes the mask on
    y = L.GRU(4, go_backwards=True, name="dec")(r)
    return keras.Model(x, L.Dense(2, name="logits")(y), name="residual"), {"LSTM": 1, "GRU": 1}


def lstm_and_conv_branches():
    import keras

    L = _L()
    x = keras.Input((T, 3), name="window")
    rnn = L.Bidirectional(L.LSTM(4), name="bi")(x)
    conv = L.GlobalMaxPooling1D()(L.Conv1D(5, 3, padding="same", activation="relu")(x))
    h = L.Concatenate()([rnn, conv])
    return keras.Model(x, L.Dense(1, name="forecast")(h), name="branches"), {"LSTM": 1}


def nested_sequential():
    import keras

    L = _L()
    inner = keras.Sequential([keras.Input((T,), dtype="int32"), L.Embedding(VOCAB, 4, mask_zero=True),
                              L.Bidirectional(L.GRU(3, return_sequences=True)), L.SimpleRNN(3)], name="encoder")
    x = keras.Input((T,), dtype="int32", name="text")
    extra = keras.Input((2,), name="meta")
    h = L.Concatenate()([inner(x), extra])
    return keras.Model([x, extra], L.Dense(2, activation="softmax", name="label")(h), name="nested"), \
        {"GRU": 1, "RNN": 1}


def masked_pooling_two_heads():
    import keras

    L = _L()
    x = keras.Input((T,), dtype="int32", name="tokens")
    seq = L.GRU(5, return_sequences=True, name="gru_seq")(L.Embedding(VOCAB, 4, mask_zero=True)(x))
    pooled = L.GlobalAveragePooling1D()(seq)  # masked mean
    last = L.SimpleRNN(3, name="rnn_last")(seq)
    h = L.Concatenate()([pooled, last])
    return keras.Model(x, [L.Dense(3, activation="softmax", name="cls")(h), L.Dense(1, name="score")(h)],
                       name="two_heads"), {"GRU": 1, "RNN": 1}


def sequence_tagger():
    import keras

    L = _L()
    x = keras.Input((T,), dtype="int32", name="tokens")
    s = L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum")(L.Embedding(VOCAB, 3, mask_zero=True)(x))
    tags = L.TimeDistributed(L.Dense(3, activation="softmax"), name="tags")(s)
    summary = L.Dense(1, activation="sigmoid", name="sentence")(L.GRU(2, name="summary_gru")(s))
    return keras.Model(x, [tags, summary], name="tagger"), {"LSTM": 1, "GRU": 1}


def masking_two_inputs():
    import keras

    L = _L()
    series = keras.Input((T, 2), name="readings")
    static = keras.Input((3,), name="static")
    h = L.SimpleRNN(4, return_sequences=True, go_backwards=True)(L.Masking(0.0)(series))
    h = L.LSTM(3, name="lstm_after_backwards")(h)
    out = L.Dense(1, name="risk")(L.Concatenate()([h, L.Dense(2)(static)]))
    return keras.Model([series, static], out, name="masking_io"), {"RNN": 1, "LSTM": 1}


MODELS = [multi_input_two_outputs, shared_embedding, shared_lstm_two_calls, residual_dense, lstm_and_conv_branches,
          nested_sequential, masked_pooling_two_heads, sequence_tagger, masking_two_inputs]


def _feeds(model, seed: int = 0) -> list[list[np.ndarray]]:
    """Two batches per model: one right-padded, one left-padded / holed / all-padding for token inputs
    (and zeroed steps for float sequences)."""
    rng = np.random.RandomState(seed)
    batches = []
    for style in ("right", "mixed"):
        xs = []
        for inp in model.inputs:
            shape = (5, *inp.shape[1:])
            if "int" in str(inp.dtype):
                ids = rng.randint(1, VOCAB, shape)
                t = np.arange(shape[1])[None, :]
                lengths = np.array([6, 4, 1, 0, 3])[:, None]
                if style == "right":
                    ids = np.where(t < lengths, ids, 0)
                else:
                    ids = np.where(t >= shape[1] - lengths, ids, 0)  # left padding
                    ids[1] = np.where(rng.rand(shape[1]) < 0.4, 0, rng.randint(1, VOCAB, shape[1]))  # holes
                xs.append(ids.astype("int32"))
            else:
                x = rng.randn(*shape).astype("float32")
                if len(shape) == 3 and style == "mixed":
                    x[rng.rand(*shape[:2]) < 0.3] = 0.0
                    x[3] = 0.0
                xs.append(x)
        batches.append(xs)
    return batches


def _seeded(model):
    rng = np.random.RandomState(1)
    for w in model.trainable_weights:
        w.assign(rng.normal(0.0, 0.4, tuple(w.shape)).astype("float32"))
    return model


@pytest.mark.parametrize("build", MODELS, ids=[m.__name__ for m in MODELS])
def test_functional_model_exports_natively_and_matches_keras(build):
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, keras_input_names, keras_output_names, op_counts

    keras.utils.set_random_seed(0)
    model, native = build()
    _seeded(model)
    conv = convert_model(model)
    ops = op_counts(conv.model)
    assert "Loop" not in ops and "Scan" not in ops, ops
    assert {op: ops.get(op, 0) for op in native} == native, ops
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    assert in_names == keras_input_names(model) and out_names == keras_output_names(model)
    assert all(i.shape[0] == "batch" for i in sess.get_inputs())
    for xs in _feeds(model):
        want = model(xs[0] if len(xs) == 1 else xs, training=False)
        want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
        got = sess.run(None, dict(zip(in_names, xs)))
        assert len(got) == len(want)
        for name, g, w in zip(out_names, got, want):
            assert g.shape == w.shape, name
            np.testing.assert_allclose(g, w, atol=ATOL, err_msg=f"{model.name}:{name}")


def test_names_come_from_the_keras_model():
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    model, _ = shared_embedding()
    conv = convert_model(model)
    assert [i.name for i in conv.model.graph.input] == ["question", "answer"]
    assert [o.name for o in conv.model.graph.output] == ["match"]
    assert sorted(d.split(":")[0] for d in conv.native_recurrent) == ["a_gru", "q_lstm"]


def test_shared_recurrent_layer_gets_one_native_node_per_call():
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    model, _ = shared_lstm_two_calls()
    conv = convert_model(model)
    lstm_nodes = [n.name for n in conv.model.graph.node if n.op_type == "LSTM"]
    assert len(lstm_nodes) == 2 and len(set(lstm_nodes)) == 2
    assert conv.native_recurrent == ("siamese: LSTM", "siamese: LSTM")
