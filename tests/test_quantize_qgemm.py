"""The int8-qgemm recipe: MatMul(+Add) -> Gemm, static QOperator int8, QGemm returning float32.

Behaviour only (latency is injected where the flow decides on it); models built with onnx.helper.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import seqdeploy.quantize as q  # noqa: E402
import seqdeploy.quantize.core as qcore  # noqa: E402
from seqdeploy.precision import INT8_QGEMM, precision_of, precision_of_file, precision_of_graph  # noqa: E402
from seqdeploy.quantize.recipes import RecipeDoesNotFit, get_recipe  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_quantize import FAST, _data, _fake_latency, _mlp, _ops  # noqa: E402


def _run_float(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture
def mlp(tmp_path):
    path = _mlp(tmp_path / "model.onnx")  # MatMul+Add+Relu, then a MatMul without bias, Softmax
    x, y = _data(path)
    return path, x, y


def test_graph_is_qgemm_with_float_output_and_close_to_float32(mlp, tmp_path):
    path, x, _ = mlp
    dst = tmp_path / "q.onnx"
    q.build_candidate("int8-qgemm", path, dst, q.QGemmInt8Settings(calibration_samples=64), {"x": x})
    model = onnx.load(str(dst))
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "QGemm", "QGemm", "Softmax"]  # Relu absorbed, final dequantize dropped
    assert "MatMul" not in ops and "DequantizeLinear" not in ops
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    out, ref = _run_float(dst, x), _run_float(path, x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert float(np.abs(out - ref).max()) < 0.05  # softmax probabilities; measured 0.013
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95
    assert precision_of_graph(model) is INT8_QGEMM


def test_float_output_off_keeps_the_dequantize(mlp, tmp_path):
    path, x, _ = mlp
    dst = tmp_path / "q.onnx"
    q.build_candidate("int8-qgemm", path, dst, q.QGemmInt8Settings(calibration_samples=32, float_output=False), {"x": x})
    assert "DequantizeLinear" in _ops(dst) and "QGemm" in _ops(dst)


def test_matmul_to_gemm_is_exact(mlp, tmp_path):
    from seqdeploy.quantize.recipes.int8_qgemm import matmul_to_gemm

    path, x, _ = mlp
    model, left = matmul_to_gemm(onnx.load(str(path)))
    assert left == [] and [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm", "Softmax"]
    assert [n.name for n in model.graph.node if n.op_type == "Gemm"] == ["dense/MatMul", "dense_1/MatMul"]
    onnx.save(model, str(tmp_path / "g.onnx"))
    np.testing.assert_allclose(_run_float(tmp_path / "g.onnx", x), _run_float(path, x), rtol=1e-5, atol=1e-6)


def test_quantize_writes_the_artifact_and_precision_resolves(mlp, tmp_path, monkeypatch):
    path, x, y = mlp
    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(2.0))
    r = q.quantize_model(path, out_dir=tmp_path / "out", calibration_inputs={"x": x}, test_inputs={"x": x},
                         test_targets=y, task="multiclass", settings=q.QuantizeSettings(mode="qgemm", max_metric_drop=0.5, **FAST))
    assert r.chosen == "model.int8-qgemm.onnx" and r.chosen_recipe == "int8-qgemm"
    art = tmp_path / "out" / "model.int8-qgemm.onnx"
    assert "QGemm" in _ops(art)
    assert get_recipe("int8-qgemm").artifact == "model.int8-qgemm.onnx"
    assert precision_of_file(art) is INT8_QGEMM and precision_of("int8-qgemm") is INT8_QGEMM
    assert (INT8_QGEMM.label, INT8_QGEMM.numeric) == ("int8-qgemm", "int8")
    assert q.read_record(tmp_path / "out").kept == (("model.int8-qgemm.onnx", "int8-qgemm"),)


def test_static_calibration_is_required(mlp, tmp_path):
    path, x, y = mlp
    from seqdeploy.errors import QuantizeError

    with pytest.raises(QuantizeError, match="no calibration data|calibration"):
        q.quantize_model(path, out_dir=tmp_path, calibration_inputs=None, test_inputs={"x": x}, test_targets=y,
                         task="multiclass", settings=q.QuantizeSettings(mode="qgemm", **FAST))


@pytest.mark.parametrize("counts, fragment", [
    ({"Conv": 4, "MatMul": 1, "Relu": 5}, "Conv-heavy"),
    ({"LSTM": 1, "MatMul": 1}, "recurrent"),
    ({"GRU": 2, "Gemm": 1}, "recurrent"),
    ({"Add": 2, "Relu": 1}, "no MatMul/Gemm"),
])
def test_skip_reason(counts, fragment):
    why = get_recipe("int8-qgemm").skip_reason(counts, frozenset())
    assert why is not None and fragment in why
    assert "int8-qgemm" not in q.plan_recipes(counts, "auto", cpu=frozenset())[0]


def test_skip_reason_lets_dense_stacks_through():
    r = get_recipe("int8-qgemm")
    assert r.skip_reason({"MatMul": 3, "Add": 3, "Relu": 2, "Softmax": 1}, frozenset()) is None
    assert r.skip_reason({"Gemm": 2, "Conv": 1}, frozenset()) is None  # a Conv stem before a Dense head


def _matmul_3d(path: Path) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="td/MatMul"),
                           helper.make_node("Softmax", ["h"], ["y"], name="head", axis=-1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5, 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_matmul_on_3d_inputs_does_not_fit(tmp_path, monkeypatch):
    path = _matmul_3d(tmp_path / "model.onnx")
    x = np.random.default_rng(1).standard_normal((16, 5, 8)).astype(np.float32)
    with pytest.raises(RecipeDoesNotFit, match="td/MatMul"):
        q.build_candidate("int8-qgemm", path, tmp_path / "q.onnx", q.QGemmInt8Settings(), {"x": x})
    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(2.0))
    y = np.zeros((16, 5, 4), np.float32) + 0.25
    r = q.quantize_model(path, out_dir=tmp_path / "out", calibration_inputs={"x": x}, test_inputs={"x": x},
                         test_targets=y.reshape(16, -1)[:, 0], task="regression",
                         settings=q.QuantizeSettings(mode="qgemm", **FAST))
    assert r.candidates == () and r.chosen is None
    assert [(s.recipe, "cannot become Gemm" in s.reason) for s in r.skipped] == [("int8-qgemm", True)]


@pytest.mark.parametrize("flags, want", [("fpu avx2 fma", True), ("fpu avx2 avx512f avx512_vnni", False),
                                         ("fpu avx2 avx_vnni", False)])
def test_reduce_range_follows_the_cpu(flags, want, mlp, tmp_path, monkeypatch):
    import platform

    import seqdeploy.cpu as doctor

    monkeypatch.setattr(doctor, "read_cpuinfo", lambda: f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    s = q.QuantizeSettings(calibration_samples=32).qgemm_settings()
    assert s.reduce_range is want
    assert q.QuantizeSettings(reduce_range=not want).qgemm_settings().reduce_range is (not want)  # given wins
    path, x, _ = mlp
    q.build_candidate("int8-qgemm", path, tmp_path / "q.onnx", s, {"x": x})
    model = onnx.load(str(tmp_path / "q.onnx"))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8]
    assert weights and int(max(np.abs(w.astype(np.int32)).max() for w in weights)) <= (64 if want else 127)
    if not want:
        assert int(max(np.abs(w.astype(np.int32)).max() for w in weights)) > 64  # full 8-bit range used


def test_settings_validation():
    from seqdeploy.errors import QuantizeError

    with pytest.raises(QuantizeError, match="calibration_samples = 0"):
        q.QGemmInt8Settings(calibration_samples=0)
    with pytest.raises(QuantizeError, match="expected a QGemmInt8Settings"):
        q.QuantizeSettings(qgemm=q.StaticInt8Settings())
    explicit = q.QGemmInt8Settings(calibration_method="entropy")
    assert q.QuantizeSettings(qgemm=explicit).qgemm_settings() is explicit
    assert "qgemm" in q.modes()
