"""int8-static on conv nets: padding a first Conv's input channels to 4 (the VNNI int8 conv kernel's rule).

Behaviour and numbers only, never timing; models built with onnx.helper.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import seqdeploy.quantize as q  # noqa: E402
from seqdeploy.errors import QuantizeError  # noqa: E402
from seqdeploy.precision import INT8_STATIC, precision_of_graph  # noqa: E402
from seqdeploy.quantize.recipes.int8_static import pad_input_channels, unfold_input_conv  # noqa: E402


def _conv_net(path, cin=3, seed=0):
    """NHWC image -> Transpose -> Conv 3x3 (cin -> 16) + Relu -> Conv 3x3 (16 -> 16, already a multiple) -> GAP -> MatMul -> Softmax."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((16, cin, 3, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    wd = (rng.standard_normal((16, 4)) * 0.5).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["xt"], name="nchw", perm=[0, 3, 1, 2]),
         helper.make_node("Conv", ["xt", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
         helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
         helper.make_node("Flatten", ["g"], ["f"], name="flat"),
         helper.make_node("MatMul", ["f", "wd"], ["z"], name="dense"),
         helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1)],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 8, cin])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (wd, "wd"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)  # value_info for xt: the rewrite must drop the stale one
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _x(n=64, cin=3, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, cin)).astype(np.float32)


@pytest.mark.parametrize("cin, want", [(3, 4), (1, 4), (5, 8)])
def test_padding_is_exact_and_only_touches_the_input_conv(cin, want, tmp_path):
    src = _conv_net(tmp_path / "m.onnx", cin)
    model, added = pad_input_channels(onnx.load(str(src)))
    assert added == ["conv1/pad_channels"]
    onnx.checker.check_model(model, full_check=True)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert w["w1"].shape == (16, want, 3, 3) and not w["w1"][:, cin:].any()
    assert w["w2"].shape == (16, 16, 3, 3)  # already a multiple of 4: untouched
    assert w["conv1/pad_channels_E"].shape == (cin, want)
    assert [n.op_type for n in model.graph.node][:3] == ["MatMul", "Transpose", "Conv"]
    onnx.save(model, str(tmp_path / "p.onnx"))
    x = _x(cin=cin)
    np.testing.assert_allclose(_run(tmp_path / "p.onnx", x), _run(src, x), rtol=0, atol=1e-6)


def _series_net(path, cin):
    """N x T x C series -> Transpose(0, 2, 1) -> Conv1D k3 (cin -> 8) + Relu -> GAP -> Flatten."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, cin, 3)) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["xt"], name="ncw", perm=[0, 2, 1]),
         helper.make_node("Conv", ["xt", "w"], ["c"], name="conv1", pads=[1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
         helper.make_node("Flatten", ["g"], ["y"], name="flat")],
        "series", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 12, cin])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("cin, want", [(1, 4), (3, 4)])
def test_padding_a_1d_conv_is_exact(cin, want, tmp_path):
    src = _series_net(tmp_path / "s.onnx", cin)
    model, added = pad_input_channels(onnx.load(str(src)))
    assert added == ["conv1/pad_channels"]
    assert {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["w"].shape == (8, want, 3)
    onnx.save(model, str(tmp_path / "p.onnx"))
    x = np.random.default_rng(2).standard_normal((16, 12, cin)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "p.onnx", x), _run(src, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("net, cin", [(_conv_net, 1), (_series_net, 1), (_conv_net, 3)])
def test_unfolding_a_one_channel_input_conv_answers_the_same(net, cin, tmp_path):
    src = net(tmp_path / "m.onnx", cin)
    model, added = unfold_input_conv(onnx.load(str(src)))
    if cin != 1:  # several channels: left to the padding
        assert added == [] and [n.op_type for n in model.graph.node][:2] == ["Transpose", "Conv"]
        return
    assert added == ["conv1/unfold"]
    onnx.checker.check_model(model, full_check=True)
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    rank = w["conv1/unfold_E"].ndim
    taps = 9 if rank == 4 else 3
    width = -(-taps // 4) * 4
    assert w["conv1/unfold_E"].shape[:2] == (width, 1) and w["conv1/unfold_E"].sum() == taps  # one 1 per tap kernel
    assert w["w1" if rank == 4 else "w"].shape[:2] == (16 if rank == 4 else 8, width)
    assert all(d == 1 for d in w["w1" if rank == 4 else "w"].shape[2:])  # the second Conv is 1 x 1
    assert [n.op_type for n in model.graph.node][:3] == ["Transpose", "Conv", "Conv"]
    onnx.save(model, str(tmp_path / "u.onnx"))
    x = _x(cin=1) if rank == 4 else np.random.default_rng(2).standard_normal((16, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "u.onnx", x), _run(src, x), rtol=1e-5, atol=1e-6)  # sums reordered


def test_unfolded_int8_static_keeps_the_unfold_float_and_pads_nothing(tmp_path):
    src = _conv_net(tmp_path / "m.onnx", cin=1)
    x = _x(128, cin=1)
    recipe = q.get_recipe("int8-static")
    recipe.build(src, tmp_path / "u.onnx", q.StaticInt8Settings(unfold_input_conv=True, pad_input_channels=True),
                 {"x": x[:64]})
    model = onnx.load(str(tmp_path / "u.onnx"))
    unfold = next(n for n in model.graph.node if n.name == "conv1/unfold")
    assert unfold.op_type == "Conv" and unfold.input[1] == "conv1/unfold_E"  # float weights, no DequantizeLinear
    assert "MatMul" not in {n.op_type for n in model.graph.node[:3]}  # the padding left the float unfold alone
    assert precision_of_graph(model) is INT8_STATIC
    a, f = _run(tmp_path / "u.onnx", x), _run(src, x)
    assert (a.argmax(1) == f.argmax(1)).mean() >= 0.95


def test_padding_leaves_other_models_alone(tmp_path):
    src = _conv_net(tmp_path / "m.onnx", cin=4)
    model, added = pad_input_channels(onnx.load(str(src)))
    assert added == [] and [n.op_type for n in model.graph.node][0] == "Transpose"


def test_padded_int8_static_matches_the_unpadded_one(tmp_path):
    src = _conv_net(tmp_path / "m.onnx")
    x = _x(128)
    calib = {"x": x[:64]}
    recipe = q.get_recipe("int8-static")
    recipe.build(src, tmp_path / "pad.onnx", q.StaticInt8Settings(pad_input_channels=True), calib)
    recipe.build(src, tmp_path / "plain.onnx", q.StaticInt8Settings(pad_input_channels=False), calib)
    assert not list(tmp_path.glob("*.padded.onnx"))  # the float intermediate is removed
    model = onnx.load(str(tmp_path / "pad.onnx"))
    ops = [n.op_type for n in model.graph.node]
    first = next(n for n in model.graph.node if n.name == "conv1/pad_channels")
    assert first.op_type == "MatMul" and ops.count("MatMul") == 2  # the float pad + the quantized dense
    w1 = {t.name: t for t in model.graph.initializer}["w1_quantized"]
    assert w1.data_type == TensorProto.INT8 and list(w1.dims) == [16, 4, 3, 3]
    assert precision_of_graph(model) is INT8_STATIC  # the float MatMul in front does not change what the graph is
    a, b, f = _run(tmp_path / "pad.onnx", x), _run(tmp_path / "plain.onnx", x), _run(src, x)
    np.testing.assert_allclose(a, b, atol=2e-2)  # same scales: the zero channel adds nothing
    assert (a.argmax(1) == f.argmax(1)).mean() >= 0.95


@pytest.mark.parametrize("flags, machine, want", [
    ("fpu avx2 fma", "x86_64", False),
    ("fpu avx2 avx512f avx512_vnni", "x86_64", True),
    ("fpu avx2 avx_vnni", "x86_64", True),
    ("fp asimd asimddp", "aarch64", False),
])
def test_pad_input_channels_follows_the_cpu(flags, machine, want, monkeypatch):
    import platform

    import seqdeploy.cpu as doctor

    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
    assert q.default_pad_input_channels(cpuinfo) is (want if machine == "x86_64" else False)
    monkeypatch.setattr(doctor, "read_cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert q.QuantizeSettings().static_settings().pad_input_channels is want
    assert q.QuantizeSettings().static_settings().unfold_input_conv is want
    given = q.StaticInt8Settings(pad_input_channels=not want)
    assert q.QuantizeSettings(static=given).static_settings().pad_input_channels is (not want)  # given wins


@pytest.mark.parametrize("flags, want", [("fpu avx2 fma", "int8"), ("fpu avx2 avx512f avx512_vnni", "uint8")])
def test_static_activation_type_follows_the_cpu(flags, want, monkeypatch):
    import platform

    import seqdeploy.cpu as doctor

    cpuinfo = f"processor\t: 0\nflags\t\t: {flags}\n"
    assert q.default_activation_type(cpuinfo) == want
    monkeypatch.setattr(doctor, "read_cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert q.QuantizeSettings().static_settings().activation_type == want
    assert q.StaticInt8Settings(activation_type="int8").activation_type == "int8"  # given wins


def test_pad_input_channels_is_validated():
    with pytest.raises(QuantizeError, match="pad_input_channels = 'yes'"):
        q.StaticInt8Settings(pad_input_channels="yes")
