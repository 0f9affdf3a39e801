"""seqdeploy.precision: one precision type and one artifact naming rule for manifest, verify, bench and quantize."""

from __future__ import annotations

import numpy as np
import pytest

from seqdeploy.precision import (
    FLOAT32, FP16, INT8_DYNAMIC, INT8_QGEMM, INT8_STATIC, artifact_name, is_portable_file, precision_of, precision_of_file,
    precision_of_graph,
)


def test_three_spellings_of_each_precision():
    assert [(p.name, p.label, p.numeric) for p in (FLOAT32, INT8_STATIC, INT8_DYNAMIC, INT8_QGEMM, FP16)] == [
        ("float32", "fp32", "float32"), ("int8-static", "int8-static", "int8"),
        ("int8-dynamic", "int8-dynamic", "int8"), ("int8-qgemm", "int8-qgemm", "int8"), ("fp16", "fp16", "float16")]
    for alias, want in (("fp32", FLOAT32), (None, FLOAT32), ("float16", FP16), ("FP16", FP16),
                        ("int8-static", INT8_STATIC), ("int8-dynamic-retry", INT8_DYNAMIC),
                        ("int8-qgemm", INT8_QGEMM)):
        assert precision_of(alias) is want
    other = precision_of("int4-weight")  # a future recipe's precision resolves to itself
    assert (other.name, other.label, other.artifact) == ("int4-weight", "int4-weight", "model.int4-weight.onnx")
    assert precision_of("int8-per-row").numeric == "int8"


def test_artifact_naming_rule_round_trips():
    for p in (FLOAT32, INT8_STATIC, INT8_DYNAMIC, INT8_QGEMM, FP16):
        assert precision_of_file(artifact_name(p)) is p
        assert precision_of_file(f"some/dir/{p.artifact}") is p
    assert artifact_name(None) == "model.onnx" and artifact_name("fp16") == "model.fp16.onnx"
    assert is_portable_file("model.int8-dynamic.portable.onnx") and not is_portable_file("model.int8-dynamic.onnx")
    assert precision_of_file("model.portable.onnx") is FLOAT32  # a portable graph is not a precision


def test_manifest_and_verify_read_the_same_precision_from_graphs(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime.quantization")
    from onnx import TensorProto, helper, numpy_helper

    from seqdeploy.bundle.write import _precision_of
    from seqdeploy.quantize import DynamicInt8Settings, Float16Settings, QGemmInt8Settings, build_candidate
    from seqdeploy.verify.parity import artifact_precision

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = tmp_path / "model.onnx"
    onnx.save(m, str(src))
    build_candidate("int8-dynamic", src, tmp_path / "model.int8-dynamic.onnx", DynamicInt8Settings(), None)
    build_candidate("fp16", src, tmp_path / "model.fp16.onnx", Float16Settings(), None)
    calib = {"x": np.random.default_rng(1).standard_normal((32, 8)).astype(np.float32)}
    build_candidate("int8-qgemm", src, tmp_path / "model.int8-qgemm.onnx", QGemmInt8Settings(), calib)
    for file, want in (("model.onnx", FLOAT32), ("model.int8-dynamic.onnx", INT8_DYNAMIC), ("model.fp16.onnx", FP16),
                       ("model.int8-qgemm.onnx", INT8_QGEMM)):
        model = onnx.load(str(tmp_path / file))
        assert precision_of_graph(model) is want
        assert _precision_of(None, model) == want.name  # the manifest's precision
        assert artifact_precision(tmp_path / file) == want.numeric  # verify.json's artifact_precision
