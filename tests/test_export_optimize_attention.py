"""The Transformer rewrites after attention fusion (rows_as_2d, residual_into_gemm, mean_as_matmul,
attention_per_sample) are exact, and Keras MultiHeadAttention variants the fusion does not cover (masks, cross
attention, other key/value sizes and head counts) are either rewritten exactly or left alone."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from seqdeploy.export.optimize import EXACT_RTOL


def _ort(model, feeds) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if not isinstance(feeds, dict):
        feeds = {s.get_inputs()[0].name: feeds}
    return s.run(None, feeds)


def _randomize(model, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for v in model.weights:
        a = np.asarray(v)
        if a.dtype.kind == "f":
            v.assign((a + rng.normal(0, 0.3, a.shape)).astype(a.dtype))


def _exact(keras_model, proto, feeds) -> None:
    ref = np.asarray(keras_model(feeds if not isinstance(feeds, dict) else list(feeds.values()), training=False))
    got = _ort(proto, feeds)[0]
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) <= EXACT_RTOL * np.max(np.abs(ref))


def _block(inp, x, *, heads=2, key_dim=8, value_dim=None, ff=12, **call):
    """keras-io's TransformerBlock on x (attention, residual, LayerNorm, Dense FFN on 3-D, residual, LayerNorm)."""
    import keras

    att = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim, value_dim=value_dim)(x, x, **call)
    x1 = keras.layers.LayerNormalization(epsilon=1e-6)(x + att)
    f = keras.layers.Dense(ff, activation="relu")(x1)
    f = keras.layers.Dense(x.shape[-1])(f)
    return keras.layers.LayerNormalization(epsilon=1e-6)(x1 + f)


def test_transformer_block_runs_its_dense_layers_as_gemms_with_the_residuals_inside():
    """Token + position embedding, a Transformer block, GAP and a Dense head (keras-io's text classifier, small):
    every Dense on the 3-D sequence is a Gemm, both residual Adds are read by the Gemm itself (no Add/Sum into a
    LayerNorm), GAP is a MatMul, and the graph answers like Keras at batch 1 and 4."""
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    class PositionEmbedding(keras.layers.Layer):  # keras-io's TokenAndPositionEmbedding, position part
        def build(self, shape):
            self.pos = self.add_weight(shape=tuple(shape[1:]), initializer="random_normal")

        def call(self, x):
            return x + self.pos

    inp = keras.Input((10,), dtype="int32")
    x = PositionEmbedding()(keras.layers.Embedding(50, 8)(inp))
    x = _block(inp, x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(5, activation="relu")(x)))
    _randomize(model)
    proto = convert_model(model).model
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Attention"] == 1 and ops["Gemm"] == 3 and ops["ReduceMean"] == 0 and ops["Sum"] == 0
    prod = {o: n for n in proto.graph.node for o in n.output}
    for ln in (n for n in proto.graph.node if n.op_type == "LayerNormalization"):
        assert prod[ln.input[0]].op_type == "Gemm"  # the residual Add went into the Gemm's C
    rng = np.random.default_rng(3)
    for batch in (1, 4):
        _exact(model, proto, rng.integers(0, 50, (batch, 10)).astype(np.int32))


@pytest.mark.parametrize("variant", [
    {"heads": 3, "key_dim": 4},                    # more heads, key_dim != embed
    {"heads": 2, "key_dim": 8, "value_dim": 5},     # value_dim != key_dim
    {"heads": 1, "key_dim": 16},                   # one head, key_dim > embed
])
def test_attention_variants_fuse_and_stay_exact(variant):
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((7, 8))
    x = keras.layers.GlobalAveragePooling1D()(_block(inp, inp, **variant))
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    _randomize(model)
    proto = convert_model(model).model
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Attention"] == 1 and ops["Softmax"] == 0
    rng = np.random.default_rng(4)
    for batch in (1, 3):
        _exact(model, proto, rng.standard_normal((batch, 7, 8)).astype(np.float32))


@pytest.mark.parametrize("kind", ["causal", "key_mask", "cross"])
def test_masked_and_cross_attention_are_left_unfused_and_exact(kind):
    """A causal mask, a key padding mask (Embedding mask_zero) and cross attention (query != key/value) are not
    the unmasked self-attention the fusion covers: no Attention node, and the rest still answers like Keras."""
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    if kind == "key_mask":
        inp = keras.Input((7,), dtype="int32")
        emb = keras.layers.Embedding(20, 8, mask_zero=True)(inp)
        x = keras.layers.GlobalAveragePooling1D()(_block(inp, emb))
        ids = rng.integers(1, 20, (3, 7)).astype(np.int32)
        ids[0, 4:] = 0
        ids[2, 1:] = 0
        feeds = ids
    elif kind == "cross":
        inp = keras.Input((7, 8))
        ctx = keras.layers.Dense(8)(inp[:, :3, :])
        att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, ctx)
        x = keras.layers.LayerNormalization()(inp + att)
        x = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(6, activation="relu")(x))
        feeds = rng.standard_normal((3, 7, 8)).astype(np.float32)
    else:
        inp = keras.Input((7, 8))
        x = keras.layers.GlobalAveragePooling1D()(_block(inp, inp, use_causal_mask=True))
        feeds = rng.standard_normal((3, 7, 8)).astype(np.float32)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    _randomize(model)
    proto = convert_model(model).model
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Attention"] == 0 and ops["Softmax"] >= 1
    _exact(model, proto, feeds)
    _exact(model, proto, feeds[:1])


def _attention_graph(seq: int, heads: int, dim: int = 8):
    """x [batch, seq, dim] -> com.microsoft.Attention -> y, random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((dim, 3 * dim)).astype(np.float32) * 0.5
    b = rng.standard_normal(3 * dim).astype(np.float32) * 0.1
    node = helper.make_node("Attention", ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=heads)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", seq, dim])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", seq, dim])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


def test_attention_per_sample_runs_a_large_attention_one_sample_at_a_time_above_batch_1():
    from seqdeploy.export.rewrites_block import SCAN_MIN_SCORES, attention_per_sample

    seq = 128
    assert 2 * seq * seq >= SCAN_MIN_SCORES
    m = _attention_graph(seq, heads=2)
    x = np.random.default_rng(1).standard_normal((3, seq, 8)).astype(np.float32)
    before = _ort(m, x)[0]
    assert attention_per_sample(m) == 1
    assert [n.op_type for n in m.graph.node] == ["Shape", "Gather", "Greater", "If"]  # batch 1: the plain kernel
    branches = {a.name: a.g for a in m.graph.node[-1].attribute}
    assert [n.op_type for n in branches["else_branch"].node] == ["Attention"]
    scan = branches["then_branch"].node[0]
    assert scan.op_type == "Scan" and [n.op_type for n in scan.attribute[0].g.node] == ["Unsqueeze", "Attention", "Squeeze"]
    from seqdeploy.export.rewrites import remove_dead_nodes

    remove_dead_nodes(m)  # the weights, read two subgraphs down, stay
    assert {i.name for i in m.graph.initializer} >= {"w", "b"}
    for batch in (1, 3):
        assert np.max(np.abs(_ort(m, x[:batch])[0] - before[:batch])) <= 1e-6


def test_attention_per_sample_leaves_small_or_masked_attention_alone():
    from onnx import TensorProto, helper

    from seqdeploy.export.rewrites_block import attention_per_sample

    assert attention_per_sample(_attention_graph(16, heads=2)) == 0  # 512 scores a sample: fits any cache
    m = _attention_graph(128, heads=2)
    m.graph.node[0].input.append("mask")
    m.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", 128]))
    assert attention_per_sample(m) == 0


def test_residual_into_gemm_leaves_a_residual_whose_source_cannot_take_the_bias():
    """x + Dense(x) where x is the graph input (nothing to move the bias into), and LN(y) + Dense(LN(y)) where
    LN(y) is also pooled (GAP reads the shifted tensor and cannot take the shift back): both residual Adds stay."""
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 8))
    x = keras.layers.LayerNormalization()(inp + keras.layers.Dense(8)(inp))
    y = keras.layers.LayerNormalization()(x + keras.layers.Dense(8)(x))
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling1D()(x), keras.layers.GlobalAveragePooling1D()(y)])
    model = keras.Model(inp, keras.layers.Dense(2)(pooled))
    _randomize(model)
    proto = convert_model(model).model
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Gemm"] == 2 and ops["Sum"] + ops["Add"] >= 2
    _exact(model, proto, np.random.default_rng(6).standard_normal((3, 6, 8)).astype(np.float32))
