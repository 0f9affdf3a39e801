"""The graph cleanup after export is exact (answers like Keras within 1e-5 of the output scale) and does
what it says: native 1-D convs, BatchNorm folded, static shape arithmetic folded, LayerNorm fused."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from seqdeploy.export.optimize import EXACT_RTOL, optimize_model
from seqdeploy.export.rewrites import fold_static_shapes, native_conv1d, remove_dead_nodes
from seqdeploy.export.rewrites_attention import collapse_transposes, hoist_scalar_mul


def _ort(model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _randomize(model, seed: int = 1) -> None:
    """Non-trivial weights and BatchNorm statistics (an untrained BatchNorm is the identity)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        a = np.asarray(v)
        if "variance" in v.path:
            v.assign(rng.uniform(0.5, 1.5, a.shape).astype(a.dtype))
        elif a.dtype.kind == "f":
            v.assign((a + rng.normal(0, 0.2, a.shape)).astype(a.dtype))


def _exact(keras_model, proto, x) -> None:
    ref = np.asarray(keras_model(x, training=False))
    got = _ort(proto, x)
    assert np.max(np.abs(got - ref)) <= EXACT_RTOL * np.max(np.abs(ref))


def test_conv1d_batchnorm_exports_as_native_1d_conv_with_batchnorm_folded(monkeypatch):
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((40, 2))
    x = inp
    for _ in range(2):
        x = keras.layers.Conv1D(8, 3, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    _randomize(model)
    import seqdeploy.export.optimize as optimize

    monkeypatch.setattr(optimize, "SPEED_CHECK_S", 0.05)  # timed (injected times: a test decides nothing by timing)
    monkeypatch.setattr(optimize, "time_batch1", lambda a, b, feeds, budget: (12.0, 9.5))
    conv = convert_model(model)
    proto = conv.model
    gc = conv.graph_cleanup  # what export.json records
    assert gc["rewrites"]["native_conv1d"] == 2 and gc["nodes_after"] < gc["nodes_before"] and gc["kept_exported_graph"] is None
    assert (gc["batch1_us_exported"], gc["batch1_us_cleaned"]) == (12.0, 9.5)
    ops = Counter(n.op_type for n in proto.graph.node)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    inits = {i.name: list(i.dims) for i in proto.graph.initializer}
    assert len(convs) == 2 and all(len(inits[c.input[1]]) == 3 for c in convs)  # [out, in, k]: 1-D kernels
    assert ops["Mul"] == 0 and ops["Squeeze"] <= 1  # BatchNorm folded; only GAP's squeeze is left
    _exact(model, proto, np.random.default_rng(2).standard_normal((5, 40, 2)).astype(np.float32))


def test_transformer_block_folds_shapes_and_fuses_layer_norm():
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 8))
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(inp, inp)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(inp + att)
    x = keras.layers.Dense(8, activation="relu")(x)  # a Dense on 3-D: TF's Tensordot
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    _randomize(model)
    proto = convert_model(model).model
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["LayerNormalization"] == 1
    assert ops["Shape"] == 0 and ops["ReduceProd"] == 0  # the static shapes are constants now
    prod = {o: n for n in proto.graph.node for o in n.output}
    cons = {i: n for n in proto.graph.node for i in n.input}
    tensordot = [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and getattr(prod.get(n.input[0]), "op_type", "") == "Reshape"
                 and getattr(cons.get(n.output[0]), "op_type", "") == "Reshape"]
    assert not tensordot  # no Tensordot flattening left around each Dense (rows_as_2d flattens the block once)
    _exact(model, proto, np.random.default_rng(3).standard_normal((4, 6, 8)).astype(np.float32))


def _shape_graph():
    """x[N, 4, 3] -> Reshape(x, Concat(Shape(x)[0], [12])) -> Relu: a target rebuilt from the batch at run time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Concat", ["n", "twelve"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "i0"),
             numpy_helper.from_array(np.array([12], np.int64), "twelve")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 12])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_fold_static_shapes_turns_a_batch_dependent_target_into_a_constant():
    from onnx import numpy_helper

    m = _shape_graph()
    x = np.random.default_rng(0).standard_normal((5, 4, 3)).astype(np.float32)
    before = _ort(m, x)
    assert fold_static_shapes(m) == 1
    assert [n.op_type for n in m.graph.node] == ["Reshape", "Relu"]
    target = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}[m.graph.node[0].input[1]]
    assert target.tolist() == [-1, 12]
    assert np.array_equal(_ort(m, x), before) and _ort(m, x[:1]).shape == (1, 12)


def test_a_pass_that_changes_an_answer_is_not_kept():
    from onnx import numpy_helper

    def wrong(model) -> int:  # "folds" the Reshape and silently scales the output
        fold_static_shapes(model)
        model.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
        relu = model.graph.node[-1]
        relu.output[0] = "r2"
        from onnx import helper

        model.graph.node.append(helper.make_node("Mul", ["r2", "two"], ["y"]))
        return 1

    m = _shape_graph()
    opt, report = optimize_model(m, passes=(("wrong", wrong), ("native_conv1d", native_conv1d)))
    assert report.applied == {"wrong": 0, "native_conv1d": 0}
    assert opt is not m and [n.op_type for n in opt.graph.node] == [n.op_type for n in m.graph.node]
    opt, report = optimize_model(m, passes=(("fold", fold_static_shapes),))
    assert report.applied == {"fold": 1} and report.nodes_after == 2 and report.max_abs_diff == 0.0


def test_remove_dead_nodes_keeps_what_outputs_need():
    m = _shape_graph()
    from onnx import helper

    m.graph.node.append(helper.make_node("Neg", ["x"], ["unused"]))
    assert remove_dead_nodes(m) == 1 and len(m.graph.node) == 5


@pytest.mark.parametrize("dims", [["batch", "seq", 3]])
def test_a_dynamic_axis_besides_the_batch_leaves_the_graph_alone(dims):
    m = _shape_graph()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = dims[1]
    opt, report = optimize_model(m)
    assert opt is m and report.kept_original and "dynamic axis" in report.kept_original


def _graph(nodes, inits, x_shape, y_shape):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_collapse_transposes_keeps_rows_contiguous():
    """x[N,4,2,3] -> Transpose(0,2,3,1) -> Reshape[-1,3,4] -> Transpose(0,2,1): the innermost axis moved, then
    moved back; one Transpose(0,2,1,3) + Reshape[-1,4,3] gives the same tensor."""
    from onnx import helper

    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "r"], ["u"]),
             helper.make_node("Transpose", ["u"], ["y"], perm=[0, 2, 1])]
    m = _graph(nodes, {"r": np.array([-1, 3, 4], np.int64)}, ["batch", 4, 2, 3], [None, 4, 3])
    x = np.random.default_rng(0).standard_normal((5, 4, 2, 3)).astype(np.float32)
    before = _ort(m, x)
    assert collapse_transposes(m) == 1
    assert [(n.op_type, list(n.attribute[0].ints) if n.attribute else None) for n in m.graph.node] == [
        ("Transpose", [0, 2, 1, 3]), ("Reshape", None)]
    assert np.array_equal(_ort(m, x), before)


def test_hoist_scalar_mul_moves_the_scale_next_to_its_matmul():
    from onnx import helper

    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("Reshape", ["m", "r"], ["u"]),
             helper.make_node("Mul", ["u", "s"], ["y"])]
    inits = {"w": np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32),
             "r": np.array([-1, 2, 2], np.int64), "s": np.array(0.25, np.float32)}
    m = _graph(nodes, inits, ["batch", 3], [None, 2, 2])
    x = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    before = _ort(m, x)
    assert hoist_scalar_mul(m) == 1
    assert [n.op_type for n in m.graph.node] == ["MatMul", "Mul", "Reshape"]
    assert np.array_equal(_ort(m, x), before)


def test_self_attention_becomes_one_attention_node_and_residual_adds_stay_out_of_skip_layer_norm():
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 8))
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(inp, inp)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(inp + att)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    _randomize(model)
    proto = convert_model(model).model
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Attention"] == 1 and ops["Softmax"] == 0 and ops["Transpose"] == 0  # the whole attention in one kernel
    att_node = next(n for n in proto.graph.node if n.op_type == "Attention")
    assert att_node.domain == "com.microsoft" and {a.name: a.i for a in att_node.attribute}["num_heads"] == 2
    ln = next(n for n in proto.graph.node if n.op_type == "LayerNormalization")
    assert next(n for n in proto.graph.node if ln.input[0] in n.output).op_type == "Sum"
    _exact(model, proto, np.random.default_rng(3).standard_normal((4, 6, 8)).astype(np.float32))


def test_embedding_ids_go_to_gather_directly_and_negative_ids_still_wrap():
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(11, 4)(inp))
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    proto = convert_model(model).model
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Gather"] == 1 and ops["Less"] == 0 and ops["Not"] == 0
    ids = np.array([[0, 3, -1, -11, 10], [5, -4, 2, 1, 0]], np.int32)
    _exact(model, proto, ids)


def test_rescaling_folds_into_the_first_conv_and_a_repeated_relu_is_dropped():
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inp)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)  # zero padding: the scale still folds exactly
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    _randomize(model)
    proto = convert_model(model).model
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Mul"] == 0 and ops["Relu"] == 1
    assert ops["Add"] <= 1  # only the Dense bias: Rescaling's zero offset is gone
    x = np.random.default_rng(3).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    _exact(model, proto, x)


def test_a_cleanup_that_measures_slower_is_dropped_and_a_faster_one_records_both_times(monkeypatch):
    import seqdeploy.export.optimize as optimize

    m = _shape_graph()
    monkeypatch.setattr(optimize, "SPEED_CHECK_S", 0.05)  # the suite turns the timing off; this test injects times
    monkeypatch.setattr(optimize, "time_batch1", lambda a, b, feeds, budget: (10.0, 10.0 * (1 + optimize.SLOWER_MARGIN) + 0.5))
    opt, report = optimize_model(m, passes=(("fold", fold_static_shapes),))
    assert opt is m and report.nodes_after == report.nodes_before
    assert "measured slower at batch 1 (11.5 us vs 10.0 us)" in report.kept_original
    monkeypatch.setattr(optimize, "time_batch1", lambda a, b, feeds, budget: (10.0, 10.9))  # within the margin: kept
    opt, report = optimize_model(m, passes=(("fold", fold_static_shapes),))
    assert opt is not m and report.kept_original is None and (report.us_before, report.us_after) == (10.0, 10.9)


def test_the_batch1_timing_runs_both_graphs_as_the_runtime_loads_them():
    from seqdeploy.export.optimize import time_batch1
    from seqdeploy.export.rewrites import probe_feeds

    m = _shape_graph()
    opt, _ = optimize_model(m, passes=(("fold", fold_static_shapes),), speed_check_s=0)
    before, after = time_batch1(m, opt, probe_feeds(m, 1), 0.05)
    assert 0 < before < 1e4 and 0 < after < 1e4


def test_a_one_channel_series_reaches_its_conv_through_one_transpose():
    import keras

    from seqdeploy.export.convert import convert_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 1))
    x = keras.layers.Conv1D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv1D(4, 3)(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling1D()(x))
    _randomize(model)
    proto = convert_model(model).model
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:2] == ["Transpose", "Conv"] and "Unsqueeze" not in ops and "Reshape" not in ops
    first = proto.graph.node[0]
    assert first.input[0] == proto.graph.input[0].name and list(first.attribute[0].ints) == [0, 2, 1]
    _exact(model, proto, np.random.default_rng(3).standard_normal((4, 16, 1)).astype(np.float32))


def _one_channel_graph(target):
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["xr"], name="to_nchw"),
             helper.make_node("Conv", ["xr", "w"], ["y"], name="conv")]
    return _graph(nodes, {"shape": np.array(target, np.int64), "w": rng.standard_normal((3, 1, 2, 2)).astype(np.float32)},
                  ["batch", 4, 6, 1], ["batch", 3, None, None])


def test_single_channel_transpose_is_exact_and_only_where_the_reshape_moves_no_data():
    from seqdeploy.export.rewrites_conv import single_channel_transpose

    x = np.random.default_rng(1).standard_normal((3, 4, 6, 1)).astype(np.float32)
    m = _one_channel_graph([-1, 1, 4, 6])  # NHWC -> NCHW with C = 1: the same bytes
    ref = _ort(m, x)
    assert single_channel_transpose(m) == 1
    assert [n.op_type for n in m.graph.node] == ["Transpose", "Conv"] and "shape" not in {i.name for i in m.graph.initializer}
    np.testing.assert_array_equal(_ort(m, x), ref)
    other = _one_channel_graph([-1, 1, 6, 4])  # a real reshape (H and W change): not a transpose, left alone
    assert single_channel_transpose(other) == 0 and [n.op_type for n in other.graph.node] == ["Reshape", "Conv"]
