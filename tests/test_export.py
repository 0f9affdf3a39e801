"""Units of `seqdeploy.export.convert` / `seqdeploy.export.layers.recurrent_onnx` and the `seqdeploy export` command.

The layer-by-layer numerical coverage lives in test_export_coverage.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from seqdeploy.errors import (  # noqa: E402
    InputFileNotFound,
    ModelLoadError,
    OpsetError,
    SeqdeployError,
    UnsupportedLayerError,
)

# --------------------------------------------------------------------------- fixtures (local on purpose)


def _seeded_weights(model, seed: int = 1) -> None:
    rng = np.random.RandomState(seed)
    for w in model.trainable_weights:
        w.assign(rng.normal(0.0, 0.4, tuple(w.shape)).astype("float32"))


def _tokens(batch: int, length: int = 7, vocab: int = 30) -> np.ndarray:
    """Right-padded token ids (0 = pad), lengths length, length-2, ..."""
    rng = np.random.RandomState(batch)
    x = rng.randint(1, vocab, (batch, length)).astype("int32")
    for i in range(batch):
        x[i, max(1, length - 2 * i):] = 0
    return x


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A run directory, a Functional model, a Lambda model, a legacy .h5 and a non-model file."""
    import keras

    L = keras.layers
    root = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    seq = keras.Sequential(
        [keras.Input((7,), dtype="int32", name="tokens"), L.Embedding(30, 4, mask_zero=True), L.GRU(6, name="gru"),
         L.Dense(3, activation="softmax")],
        name="txt",
    )
    _seeded_weights(seq)
    run = root / "run"
    run.mkdir()
    seq.save(run / "model.keras")
    (run / "train.json").write_text(json.dumps({
        "spec_name": "txt", "task": "multiclass", "labels": ["a", "b", "c"],
        "preprocessing": {"kind": "tokenize", "vocabulary": ["<pad>", "<oov>", "hi"], "sequence_length": 7},
    }))
    seq.save(root / "legacy.h5")

    a = keras.Input((4,), name="num feats")
    b = keras.Input((5, 3), name="series")
    h = L.Concatenate()([L.Dense(4)(a), L.GRU(4, name="func_gru")(b)])
    func = keras.Model([a, b], [L.Dense(1, activation="sigmoid", name="prob")(h), L.Dense(2, name="aux")(h)])
    func.save(root / "func.keras")

    lam = keras.Sequential([keras.Input((3,)), L.Lambda(lambda x: x * 2.0, name="double_it"), L.Dense(2)])
    lam.save(root / "lam.keras")

    (root / "notes.keras").write_text("not a zip file")
    (root / "model.txt").write_text("hello")
    return {"run": run, "seq": run / "model.keras", "h5": root / "legacy.h5", "func": root / "func.keras",
            "lambda": root / "lam.keras", "bad": root / "notes.keras", "txt": root / "model.txt", "root": root}


def _session(path_or_proto):
    import onnxruntime as ort

    data = path_or_proto.SerializeToString() if hasattr(path_or_proto, "SerializeToString") else str(path_or_proto)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- import hygiene


def test_importing_export_does_not_import_tensorflow():
    code = "import sys, seqdeploy.export.convert, seqdeploy.export.layers.recurrent_onnx, seqdeploy.app.commands.export; " \
           "print(any(m in sys.modules for m in ('tensorflow', 'tf2onnx', 'onnx', 'keras')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- naming / graph fixes


@pytest.mark.parametrize("raw,want", [("input layer:0", "input_layer_0"), ("tokens", "tokens"),
                                      ("0day", "tensor_0day"), ("///", "tensor"), ("dense/Sigmoid", "dense_Sigmoid")])
def test_sanitize_name(raw, want):
    from seqdeploy.export.convert import sanitize_name

    assert sanitize_name(raw) == want


def _tiny_model(nodes, inputs, outputs, inits=(), opset=17):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_fix_erfc_replaces_erfc_by_one_minus_erf():
    from onnx import TensorProto, checker, helper

    from seqdeploy.export.convert import fix_erfc, op_counts

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    model = _tiny_model([helper.make_node("Erfc", ["x"], ["y"], name="dense/Gelu/Erfc")], [x], [y])
    assert fix_erfc(model) == 1
    checker.check_model(model)
    assert "Erfc" not in op_counts(model) and op_counts(model)["Erf"] == 1
    xs = np.array([[-2.0, 0.0, 0.7]], np.float32)
    (got,) = _session(model).run(None, {"x": xs})
    np.testing.assert_allclose(got, [[math.erfc(v) for v in xs[0]]], atol=1e-6)
    assert fix_erfc(model) == 0  # idempotent


def _affine_model(scale, shift, *, pool=True, c=4, x_channels=None, const_shape=None):
    """Conv -> Relu -> Mul(s) -> Add(b) [-> MaxPool] (an inference BatchNormalization after an activation)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shape = const_shape or (1, c, 1, 1)
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.asarray(scale, np.float32).reshape(shape), "s"),
             numpy_helper.from_array(np.asarray(shift, np.float32).reshape(shape), "b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["m"], name="bn/mul"), helper.make_node("Add", ["m", "b"], ["a"])]
    out = "a"
    if pool:
        nodes.append(helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
        out = "p"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", x_channels or 3, 8, 8])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", c, None, None])
    return _tiny_model(nodes, [x], [y], inits)


@pytest.mark.parametrize("scale, pool, moved", [([0.5, 2.0, 14.0, 35.0], True, True),
                                                ([0.5, -2.0, 1.0, 3.0], True, False),
                                                ([0.5, 2.0, 1.0, 3.0], False, False)])
def test_fold_channel_affine_is_exact(scale, pool, moved):
    """A per-channel Mul+Add becomes one depthwise 1x1 Conv (MaxPool in front when every scale > 0): the
    same numbers bit for bit, at every optimisation level onnxruntime may run it."""
    import onnxruntime as ort
    from onnx import checker

    from seqdeploy.export.convert import op_counts
    from seqdeploy.export.fixes import fold_channel_affine

    model = _affine_model(scale, [0.1, -0.2, 0.3, 0.0], pool=pool)
    before = model.SerializeToString()
    assert fold_channel_affine(model) == 1
    checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert "Mul" not in ops and "Add" not in ops and op_counts(model)["Conv"] == 2
    assert (ops.index("MaxPool") < ops.index("Conv", 1)) == moved if pool else "MaxPool" not in ops
    assert {i.name for i in model.graph.initializer} == {"w", "bn_mul/dw_scale", "bn_mul/dw_shift"}
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32) * 3
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        want, got = (ort.InferenceSession(m, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                     for m in (before, model.SerializeToString()))
        np.testing.assert_array_equal(got, want)
    assert fold_channel_affine(model) == 0  # nothing left to fold


def test_fold_channel_affine_leaves_other_shapes_alone():
    from seqdeploy.export.fixes import fold_channel_affine

    # constants of shape [C] (channels-last broadcasting), and an x whose channel axis is 1 (broadcast up to C)
    assert fold_channel_affine(_affine_model([1.0] * 4, [0.0] * 4, const_shape=(4,))) == 0
    from onnx import TensorProto, helper, numpy_helper

    s = numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), "s")
    b = numpy_helper.from_array(np.zeros((1, 4, 1, 1), np.float32), "b")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])
    y = helper.make_tensor_value_info("a", TensorProto.FLOAT, None)
    model = _tiny_model([helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"])],
                        [x], [y], [s, b])
    assert fold_channel_affine(model) == 0


def test_name_batch_axis_renames_unk_dims_everywhere():
    from onnx import TensorProto, helper

    from seqdeploy.export.convert import name_batch_axis

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__7", "unk__8", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__7", 3])
    mid = helper.make_tensor_value_info("mid", TensorProto.FLOAT, ["unk__7", "unk__9", 3])
    model = _tiny_model([helper.make_node("ReduceMax", ["x"], ["mid"], axes=[1], keepdims=0),
                         helper.make_node("Identity", ["mid"], ["y"])], [x], [y])
    model.graph.value_info.append(mid)
    name_batch_axis(model)
    dims = lambda vi: [d.dim_param or (d.dim_value or None) for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(model.graph.input[0]) == ["batch", None, 3]
    assert dims(model.graph.output[0]) == ["batch", 3]
    assert dims(model.graph.value_info[0]) == ["batch", None, 3]


def test_rename_io_moves_internal_clashes_aside():
    from onnx import TensorProto, helper

    from seqdeploy.export.convert import rename_io

    x = helper.make_tensor_value_info("in:0", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("Identity:0", TensorProto.FLOAT, [1])
    model = _tiny_model([helper.make_node("Neg", ["in:0"], ["prob"]), helper.make_node("Neg", ["prob"], ["Identity:0"])],
                        [x], [y])
    rename_io(model, ["features"], ["prob"])
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["prob"]
    (got,) = _session(model).run(None, {"features": np.array([2.0], np.float32)})
    assert got.tolist() == [2.0]


def test_check_opset_support_names_the_op_and_the_fix():
    from onnx import TensorProto, helper

    from seqdeploy.export.convert import check_opset_support

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4)
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="sequential/layer_norm/ln")
    model = _tiny_model([node], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [scale],
                        opset=16)
    with pytest.raises(OpsetError, match=r"layer 'layer_norm'.*LayerNormalization.*opset 17.*but opset 16 was requested"):
        check_opset_support(model, 16, ["layer_norm"])
    check_opset_support(model, 17, ["layer_norm"])  # fine at 17


def test_check_opset_support_refuses_non_onnx_ops_by_layer():
    from onnx import TensorProto, helper

    from seqdeploy.export.convert import check_opset_support

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    model = _tiny_model([helper.make_node("Erfc", ["x"], ["y"], name="model/my_gelu/Erfc")], [x],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    with pytest.raises(UnsupportedLayerError, match="layer 'my_gelu'.*'Erfc'"):
        check_opset_support(model, 17, ["my_gelu", "dense"])


def test_check_runtime_loadable_reports_the_layer():
    from onnx import TensorProto, helper

    from seqdeploy.export.convert import check_runtime_loadable

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    model = _tiny_model([helper.make_node("FancyOp", ["x"], ["y"], name="seq/custom_block/FancyOp", domain="com.acme")],
                        [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model.opset_import.append(helper.make_opsetid("com.acme", 1))
    with pytest.raises(UnsupportedLayerError, match="custom_block") as info:
        check_runtime_loadable(model, ["custom_block"])
    assert "Traceback" not in str(info.value)


def test_fold_time_distributed_handles_dynamic_time():
    import keras
    import tensorflow as tf

    from seqdeploy.export.convert import fold_time_distributed

    keras.utils.set_random_seed(0)
    td = keras.layers.TimeDistributed(keras.layers.Dense(3, activation="tanh"))
    x = np.random.RandomState(0).randn(2, 5, 4).astype("float32")
    want = np.asarray(td(x))
    fn = tf.function(lambda t: fold_time_distributed(td, t), input_signature=[tf.TensorSpec([None, None, 4])])
    got = fn(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, None, 3]


# --------------------------------------------------------------------------- native recurrent builder


def _run_native(layer, x, mask=None):
    """Build only the recurrent node(s) for ``layer`` and run them in onnxruntime."""
    from onnx import TensorProto, helper

    from seqdeploy.export.layers.recurrent_onnx import build_recurrent, recurrent_spec

    spec = recurrent_spec(layer)
    built = build_recurrent(spec, "x", prefix=layer.name, mask="mask" if mask is not None else None)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", x.shape[1], x.shape[2]])]
    if mask is not None:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", x.shape[1]]))
    nodes = list(built.nodes) + [helper.make_node("Identity", [built.output], ["y"])]
    model = _tiny_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                        built.initializers)
    feed = {"x": x} if mask is None else {"x": x, "mask": mask}
    return _session(model).run(None, feed)[0], model


def _keras_layer(build, shape=(6, 3)):
    import keras

    keras.utils.set_random_seed(0)
    layer = build(keras.layers)
    model = keras.Sequential([keras.Input(shape), layer])
    _seeded_weights(model)
    return layer


@pytest.mark.parametrize("build,op", [
    (lambda L: L.GRU(5, return_sequences=True, reset_after=True), "GRU"),
    (lambda L: L.GRU(5, reset_after=False), "GRU"),
    (lambda L: L.SimpleRNN(5, return_sequences=True), "RNN"),
    (lambda L: L.LSTM(5, go_backwards=True, return_sequences=True), "LSTM"),
    (lambda L: L.GRU(5, go_backwards=True), "GRU"),
    (lambda L: L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="concat"), "GRU"),
    (lambda L: L.Bidirectional(L.LSTM(4), merge_mode="sum"), "LSTM"),
    (lambda L: L.Bidirectional(L.SimpleRNN(4, return_sequences=True), merge_mode="ave"), "RNN"),
    (lambda L: L.Bidirectional(L.GRU(4), merge_mode="mul"), "GRU"),
    (lambda L: L.LSTM(5, use_bias=False, activation="relu", recurrent_activation="hard_sigmoid"), "LSTM"),
], ids=["gru_reset_after", "gru_reset_before", "simple_rnn_seq", "lstm_backwards_seq", "gru_backwards",
        "bi_gru_concat_seq", "bi_lstm_sum", "bi_rnn_ave_seq", "bi_gru_mul", "lstm_nobias_activations"])
def test_native_recurrent_matches_keras(build, op):
    from seqdeploy.export.convert import op_counts

    layer = _keras_layer(build)
    x = np.random.RandomState(3).randn(4, 6, 3).astype("float32")
    got, model = _run_native(layer, x)
    np.testing.assert_allclose(got, np.asarray(layer(x)), atol=1e-5)
    assert op_counts(model)[op] == 1


def test_gru_reset_after_maps_to_linear_before_reset():
    from seqdeploy.export.layers.recurrent_onnx import recurrent_spec

    assert recurrent_spec(_keras_layer(lambda L: L.GRU(3, reset_after=True))).linear_before_reset == 1
    assert recurrent_spec(_keras_layer(lambda L: L.GRU(3, reset_after=False))).linear_before_reset == 0


def test_lstm_gate_order_is_reordered_to_onnx_iofc():
    from seqdeploy.export.layers.recurrent_onnx import _reorder

    units = 2
    keras_order = np.concatenate([np.full(units, g) for g in (1, 2, 3, 4)])  # i f c o
    assert _reorder(keras_order, "LSTM", units).tolist() == [1, 1, 4, 4, 2, 2, 3, 3]  # i o f c
    assert _reorder(keras_order[:6], "GRU", units).tolist() == keras_order[:6].tolist()


def test_masked_lstm_sequences_repeat_last_output_like_keras():
    """Keras (zero_output_for_mask=False) copies the last valid output to padded steps; ONNX writes zeros."""
    layer = _keras_layer(lambda L: L.LSTM(4, return_sequences=True))
    x = np.random.RandomState(0).randn(3, 6, 3).astype("float32")
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5], bool)
    want = np.asarray(layer(x, mask=mask))
    got, _ = _run_native(layer, x, mask)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got[1, 5], got[1, 3], atol=1e-6)  # copied, not zero


@pytest.mark.parametrize("build", [
    lambda L: L.Bidirectional(L.GRU(4, return_sequences=True)),
    lambda L: L.SimpleRNN(4, return_sequences=True, go_backwards=True),
    lambda L: L.GRU(4, go_backwards=True),
    lambda L: L.Bidirectional(L.LSTM(4), merge_mode="ave"),
], ids=["bi_gru_seq", "rnn_backwards_seq", "gru_backwards_last", "bi_lstm_ave_last"])
def test_masked_variants_match_keras(build):
    layer = _keras_layer(build)
    x = np.random.RandomState(1).randn(3, 6, 3).astype("float32")
    mask = np.array([[1] * 6, [1] * 3 + [0] * 3, [0] * 6], bool)  # includes an all-padding row
    want = np.asarray(layer(x, mask=mask))
    got, _ = _run_native(layer, x, mask)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_not_native_layers_fall_back_to_tf2onnx_with_a_warning():
    import keras

    from seqdeploy.export.convert import convert_model, loop_and_contrib_warnings, op_counts

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4, activation="selu", name="odd_gru")])
    conv = convert_model(model)
    assert conv.native_recurrent == ()
    assert any("odd_gru" in n and "selu" in n for n in conv.notes)
    assert op_counts(conv.model).get("Loop") == 1
    warnings = loop_and_contrib_warnings(conv.model, ["odd_gru"])
    assert len(warnings) == 1 and "layer 'odd_gru'" in warnings[0] and "Loop" in warnings[0]
    x = np.random.RandomState(0).randn(2, 5, 3).astype("float32")
    sess = _session(conv.model)
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], np.asarray(model(x)), atol=1e-5)


# --------------------------------------------------------------------------- loading


def test_load_missing_file(tmp_path):
    from seqdeploy.export.convert import load_keras_model

    with pytest.raises(InputFileNotFound, match="nope.keras"):
        load_keras_model(tmp_path / "nope.keras")


def test_load_not_a_model(files):
    from seqdeploy.export.convert import load_keras_model

    with pytest.raises(ModelLoadError, match="not a saved Keras model"):
        load_keras_model(files["bad"])
    with pytest.raises(ModelLoadError, match=r"unsupported model file type '\.txt'"):
        load_keras_model(files["txt"])


def test_lambda_refused_by_name_unless_unsafe(files):
    from seqdeploy.export.convert import load_keras_model

    with pytest.raises(ModelLoadError, match=r"Lambda layer 'double_it'.*unsafe=True"):
        load_keras_model(files["lambda"])
    model = load_keras_model(files["lambda"], unsafe=True)
    assert any(type(lay).__name__ == "Lambda" for lay in model.layers)


def test_legacy_h5_loads_and_exports(files, tmp_path):
    from seqdeploy.export.convert import export_onnx

    result = export_onnx(files["h5"], out=tmp_path / "legacy.onnx")
    assert result.onnx_path.is_file() and result.report_path.name == "legacy.export.json"
    assert result.native_recurrent == ("gru: GRU",)


# --------------------------------------------------------------------------- export_onnx


@pytest.fixture(scope="module")
def run_export(files):
    from seqdeploy.export.convert import export_onnx

    return export_onnx(files["run"])


def test_export_run_dir_writes_model_and_report(run_export, files):
    r = run_export
    assert r.onnx_path == files["run"] / "model.onnx" and r.onnx_path.is_file()
    assert r.report_path == files["run"] / "export.json"
    report = json.loads(r.report_path.read_text())
    assert report["opset"] == 17 and report["ir_version"] == r.ir_version
    assert report["op_counts"]["GRU"] == 1 and "Loop" not in report["op_counts"]
    assert report["warnings"] == [] and report["size_bytes"] == r.onnx_path.stat().st_size
    assert report["seconds"] > 0
    assert r.strategy == "tf2onnx+native" and r.native_recurrent == ("gru: GRU",)
    assert any("'gru'" in n and "any padding pattern" in n for n in r.notes)


def test_export_names_and_batch_axis(run_export):
    import onnx

    r = run_export
    assert [(t.name, t.shape, t.dtype) for t in r.inputs] == [("tokens", ("batch", 7), "int32")]
    assert [(t.name, t.shape, t.dtype) for t in r.outputs] == [("output_0", ("batch", 3), "float32")]
    model = onnx.load(r.onnx_path)
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            assert not d.dim_param.startswith("unk__"), vi.name


def test_export_metadata(run_export, files):
    import onnx

    from seqdeploy import __version__
    from seqdeploy.atomic import sha256_file

    meta = {p.key: p.value for p in onnx.load(run_export.onnx_path).metadata_props}
    assert meta["seqdeploy_version"] == __version__
    assert meta["source_sha256"] == sha256_file(files["seq"])
    for key in ("keras_version", "tensorflow_version", "tf2onnx_version"):
        assert meta[key]
    assert meta["task"] == "multiclass"
    assert json.loads(meta["labels"]) == ["a", "b", "c"]
    assert json.loads(meta["preprocessing"])["kind"] == "tokenize"


def test_exported_run_matches_keras_at_two_batch_sizes(run_export, files):
    from seqdeploy.export.convert import load_keras_model

    model = load_keras_model(files["seq"])
    sess = _session(run_export.onnx_path)
    for batch in (1, 4):
        x = _tokens(batch)
        np.testing.assert_allclose(sess.run(None, {"tokens": x})[0], np.asarray(model(x)), atol=1e-5)


def test_functional_multi_input_with_native_gru(files, tmp_path):
    from seqdeploy.export.convert import export_onnx, load_keras_model

    r = export_onnx(files["func"], out=tmp_path)
    assert r.onnx_path == tmp_path / "func.onnx" and r.strategy == "tf2onnx+native"
    assert [(t.name, t.shape) for t in r.inputs] == [("num_feats", ("batch", 4)), ("series", ("batch", 5, 3))]
    assert [t.name for t in r.outputs] == ["prob", "aux"]
    assert r.native_recurrent == ("func_gru: GRU",) and r.warnings == () and "Loop" not in r.op_counts
    model = load_keras_model(files["func"])
    rng = np.random.RandomState(0)
    a, b = rng.randn(3, 4).astype("float32"), rng.randn(3, 5, 3).astype("float32")
    got = _session(r.onnx_path).run(None, {"num_feats": a, "series": b})
    for g, w in zip(got, model([a, b])):
        np.testing.assert_allclose(g, np.asarray(w), atol=1e-5)


def test_opset_out_of_range_writes_nothing(files, tmp_path):
    from seqdeploy.export.convert import export_onnx

    for bad in (9, 12, 19, 30):
        with pytest.raises(OpsetError, match=rf"opset {bad} is outside the supported range 13-18"):
            export_onnx(files["seq"], out=tmp_path / "m.onnx", opset=bad)
    assert not list(tmp_path.iterdir())


def test_explicit_opset_is_used(files, tmp_path):
    import onnx

    from seqdeploy.export.convert import export_onnx

    r = export_onnx(files["seq"], out=tmp_path / "m13.onnx", opset=13)
    model = onnx.load(r.onnx_path)
    assert r.opset == 13 and {o.domain: o.version for o in model.opset_import}[""] == 13


def test_failure_leaves_previous_model_untouched(files, tmp_path, monkeypatch):
    import seqdeploy.export.convert as ex

    out = tmp_path / "keep.onnx"
    out.write_bytes(b"previous good model")

    def boom(*a, **k):
        raise UnsupportedLayerError("layer 'x': cannot convert")

    monkeypatch.setattr(ex, "convert_model", boom)
    with pytest.raises(UnsupportedLayerError):
        ex.export_onnx(files["seq"], out=out)
    assert out.read_bytes() == b"previous good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]  # no temp files, no report


def test_run_dir_without_model(tmp_path):
    from seqdeploy.export.convert import export_onnx

    with pytest.raises(InputFileNotFound, match="without model.keras"):
        export_onnx(tmp_path)


def test_errors_are_seqdeploy_errors_with_builtin_bases():
    assert issubclass(OpsetError, ValueError) and issubclass(OpsetError, SeqdeployError)
    assert issubclass(InputFileNotFound, FileNotFoundError)


# --------------------------------------------------------------------------- CLI


def _cli(*args):
    from typer.testing import CliRunner

    from seqdeploy.app.cli import app

    return CliRunner().invoke(app, ["export", *map(str, args)])


def test_cli_json_prints_only_the_result(files, tmp_path):
    res = _cli(files["seq"], "--onnx", "--out", tmp_path / "cli.onnx", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["onnx_path"] == str(tmp_path / "cli.onnx")
    assert data["inputs"][0] == {"name": "tokens", "shape": ["batch", 7], "dtype": "int32"}
    assert data["op_counts"]["GRU"] == 1


def test_cli_table(files, tmp_path):
    res = _cli(files["seq"], "--out", tmp_path / "t.onnx")
    assert res.exit_code == 0, res.output
    assert "tokens" in res.output and "[batch, 7]" in res.output and "GRU" in res.output


@pytest.mark.parametrize("args,message", [
    (["missing.keras"], "no such file"),
    (["{lambda}"], "Lambda layer 'double_it'"),
    (["{bad}"], "not a saved Keras model"),
    (["{seq}", "--opset", "99"], "outside the supported range"),
])
def test_cli_user_errors_exit_2_without_traceback(files, tmp_path, args, message):
    args = [a.format(**{k: v for k, v in files.items()}) if "{" in a else (tmp_path / a if a.endswith(".keras") else a)
            for a in args]
    res = _cli(*args, "--out", tmp_path / "x.onnx")
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.onnx").exists()


def test_cli_unsafe_allows_lambda(files, tmp_path):
    res = _cli(files["lambda"], "--unsafe", "--out", tmp_path / "lam.onnx", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["op_counts"]["Mul"] == 1


@pytest.mark.parametrize("layer", ["Hashing", "StringLookup"])
def test_hashing_preprocessing_layers_are_refused_naming_the_layer(tmp_path, layer):
    """FarmHash / SipHash buckets have no ONNX form: a one-line refusal (exit 2) naming the layer and why."""
    import keras
    from typer.testing import CliRunner

    from seqdeploy.app.cli import app

    if layer == "Hashing":
        lookup = keras.layers.Hashing(num_bins=20, name="my_vectorizer")
        why = "(Hashing) hashes its inputs with FarmHash Fingerprint64"
    else:
        lookup = keras.layers.StringLookup(vocabulary=["a", "b"], num_oov_indices=2, name="my_vectorizer")
        why = "(StringLookup): num_oov_indices=2 hashes unseen keys into OOV buckets with FarmHash Fingerprint64"
    model = keras.Sequential([keras.Input((2,), dtype="string"), lookup, keras.layers.Embedding(20, 3),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.save(tmp_path / "m.keras")
    res = CliRunner().invoke(app, ["export", str(tmp_path / "m.keras"), "--onnx"])
    assert res.exit_code == 2, res.output
    assert f"layer 'my_vectorizer' {why}" in " ".join(res.output.split())
    assert "Traceback" not in res.output and not (tmp_path / "m.onnx").exists()


def test_adapted_normalization_and_rescaling_export_and_match_keras(tmp_path):
    """An adapted Normalization keeps its statistics in eager tensors: they must become constants, not inputs."""
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import export_onnx

    x = np.random.default_rng(0).normal(3, 2, size=(64, 4)).astype("float32")
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential([keras.Input((4,), name="f"), norm, keras.layers.Rescaling(0.5, offset=1.0),
                              keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "norm.keras")
    result = export_onnx(tmp_path / "norm.keras")
    sess = ort.InferenceSession(str(tmp_path / "norm.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["f"]
    np.testing.assert_allclose(sess.run(None, {"f": x})[0], np.asarray(model(x)), atol=1e-6)
    assert "Loop" not in result.op_counts
    assert type(norm.mean).__name__ != "ResourceVariable"  # the layer is left as it was
