"""seqdeploy.runtime.ort_capi: the ctypes binding of onnxruntime's C API against the Python API on tiny models."""

from __future__ import annotations

import functools

import numpy as np
import onnxruntime as ort
import pytest

from seqdeploy.runtime import ort_capi
from seqdeploy.errors import OrtCapiError
from seqdeploy.runtime.predictor import make_session

# --------------------------------------------------------------------------- tiny zoo-like models (onnx.helper)


def _model(nodes, inputs, outputs, inits, opset=17):
    from onnx import helper

    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def mlp_model(dtype: str = "float32"):
    """30-16-8-1 Dense (ReLU, ReLU, sigmoid): the seed MLP's shape; float32 or float16 end to end."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    npdt, tp = (np.float16, TensorProto.FLOAT16) if dtype == "float16" else (np.float32, TensorProto.FLOAT)
    nodes, inits, x = [], [], "features"
    for i, (n_in, n_out, act) in enumerate([(30, 16, "Relu"), (16, 8, "Relu"), (8, 1, "Sigmoid")]):
        inits += [numpy_helper.from_array(rng.normal(0, 0.3, (n_in, n_out)).astype(npdt), f"W{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, n_out).astype(npdt), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]),
                  helper.make_node(act, [f"z{i}"], [f"a{i}"])]
        x = f"a{i}"
    nodes.append(helper.make_node("Identity", [x], ["probability"]))
    return _model(nodes, [helper.make_tensor_value_info("features", tp, ["batch", 30])],
                  [helper.make_tensor_value_info("probability", tp, ["batch", 1])], inits)


def conv_model():
    """8x8 one-channel images -> Conv 3x3 x8 + ReLU + MaxPool + Conv 3x3 x16 + GAP -> softmax over 10."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = lambda *s: rng.normal(0, 0.3, s).astype(np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(w(8, 1, 3, 3), "k1"), numpy_helper.from_array(w(8), "c1"),
             numpy_helper.from_array(w(16, 8, 3, 3), "k2"), numpy_helper.from_array(w(16), "c2"),
             numpy_helper.from_array(w(16, 10), "W"), numpy_helper.from_array(w(10), "b")]
    nodes = [helper.make_node("Conv", ["image", "k1", "c1"], ["h1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "k2", "c2"], ["h2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                  [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])], inits)


def lstm_model():
    """int32 token ids (batch, 10) -> embedding (Gather) -> LSTM 12 -> sigmoid; two outputs (probability, state)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    hidden, emb, vocab = 12, 6, 50
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (vocab, emb)).astype(np.float32), "E"),
             numpy_helper.from_array(rng.normal(0, 0.3, (1, 4 * hidden, emb)).astype(np.float32), "Wx"),
             numpy_helper.from_array(rng.normal(0, 0.3, (1, 4 * hidden, hidden)).astype(np.float32), "Rh"),
             numpy_helper.from_array(rng.normal(0, 0.1, (1, 8 * hidden)).astype(np.float32), "B"),
             numpy_helper.from_array(rng.normal(0, 0.3, (hidden, 1)).astype(np.float32), "Wo"),
             numpy_helper.from_array(np.zeros(1, np.float32), "bo"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes = [helper.make_node("Gather", ["E", "ids"], ["e"]),
             helper.make_node("Transpose", ["e"], ["seq"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["seq", "Wx", "Rh", "B"], ["Y", "Y_h"], hidden_size=hidden),
             helper.make_node("Squeeze", ["Y_h", "axis0"], ["state"]),
             helper.make_node("Gemm", ["state", "Wo", "bo"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["probability"])]
    return _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", 10])],
                  [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1]),
                   helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", hidden])], inits)


def two_input_model():
    """features float32 (batch, 4) and offsets int64 (batch, 4): y = features * 2 + cast(offsets)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Cast", ["offsets"], ["of"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["features", "two"], ["m"]),
             helper.make_node("Add", ["m", "of"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4]),
                          helper.make_tensor_value_info("offsets", TensorProto.INT64, ["batch", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                  [numpy_helper.from_array(np.array(2.0, np.float32), "two")])


@functools.lru_cache(maxsize=None)
def model_bytes(kind: str) -> bytes:
    """Serialized tiny model ``kind`` (mlp, mlp_fp16, conv, lstm, mlp_int8, two_inputs)."""
    if kind == "mlp_int8":
        import tempfile
        from pathlib import Path

        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d) / "m.onnx", Path(d) / "q.onnx"
            src.write_bytes(model_bytes("mlp"))
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
            return dst.read_bytes()
    build = {"mlp": mlp_model, "mlp_fp16": lambda: mlp_model("float16"), "conv": conv_model, "lstm": lstm_model,
             "two_inputs": two_input_model}[kind]
    return build().SerializeToString()


MODEL_KINDS = ("mlp", "mlp_fp16", "conv", "lstm", "mlp_int8", "two_inputs")


def sample_feeds(kind: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 100 * n)
    if kind in ("mlp", "mlp_int8"):
        return {"features": rng.standard_normal((n, 30)).astype(np.float32)}
    if kind == "mlp_fp16":
        return {"features": rng.standard_normal((n, 30)).astype(np.float16)}
    if kind == "conv":
        return {"image": rng.random((n, 1, 8, 8)).astype(np.float32)}
    if kind == "lstm":
        return {"ids": rng.integers(0, 50, (n, 10)).astype(np.int32)}
    return {"features": rng.standard_normal((n, 4)).astype(np.float32),
            "offsets": rng.integers(-5, 5, (n, 4)).astype(np.int64)}


# --------------------------------------------------------------------------- the library


def test_library_loads_the_wheels_c_library_at_its_own_api_version():
    lib = ort_capi.load_library()
    assert lib.version == ort.__version__
    assert lib.api_version == int(ort.__version__.split(".")[1])  # the library's own table, not an older one
    assert ort_capi.find_library().name.startswith(("libonnxruntime", "onnxruntime"))
    assert ort_capi.load_library() is lib  # loaded once per process


def test_missing_library_and_too_old_api_raise_with_the_reason(tmp_path):
    with pytest.raises(OrtCapiError, match="no such file"):
        ort_capi.load_library(tmp_path / "libonnxruntime.so.0")
    (tmp_path / "libonnxruntime.so.0").write_bytes(b"not a library")
    with pytest.raises(OrtCapiError, match="does not load"):
        ort_capi.load_library(tmp_path / "libonnxruntime.so.0")
    with pytest.raises(OrtCapiError, match=rf"offers OrtApi version {ort_capi.MIN_API_VERSION - 1} "
                                           rf"\(expected >= {ort_capi.MIN_API_VERSION}\)"):
        ort_capi.load_library(max_api_version=ort_capi.MIN_API_VERSION - 1)


def test_an_older_api_table_gives_the_same_results():
    old = ort_capi.load_library(max_api_version=ort_capi.MIN_API_VERSION)
    assert old.api_version == ort_capi.MIN_API_VERSION and old is not ort_capi.load_library()
    feeds = sample_feeds("mlp", 5)
    want = make_session(model_bytes("mlp")).run(None, feeds)
    got = ort_capi.CapiSession(model_bytes("mlp"), lib=old).run([feeds["features"]])
    np.testing.assert_array_equal(got[0], want[0])


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_capi_session_matches_python_session_bit_for_bit(kind):
    data = model_bytes(kind)
    py = make_session(data)
    cs = ort_capi.CapiSession(data)
    assert cs.input_names == tuple(i.name for i in py.get_inputs())
    assert cs.output_names == tuple(o.name for o in py.get_outputs())
    for n in (1, 7, 64):
        feeds = sample_feeds(kind, n)
        want = py.run(None, feeds)
        got = cs.run([feeds[name] for name in cs.input_names])
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
        ins = [feeds[name].copy() for name in cs.input_names]
        for mode in ("binding", "run"):
            outs = [np.full(w.shape, 7, w.dtype) for w in want]
            bound = cs.bind(ins, outs, mode=mode)
            for _ in range(2):
                bound()
                for o, w in zip(bound.outputs, want):
                    np.testing.assert_array_equal(o, w)


def test_session_options_are_the_runtime_defaults_and_applied():
    cs = ort_capi.CapiSession(model_bytes("mlp"))
    assert cs.options == {"intra_op_num_threads": 1, "inter_op_num_threads": 1, "execution_mode": 0,
                          "graph_optimization_level": 99, "log_severity_level": 3,
                          "config": {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}}
    # the options reach onnxruntime through the C API: it validates them
    with pytest.raises(OrtCapiError, match="SetSessionGraphOptimizationLevel failed .*not valid"):
        ort_capi.CapiSession(model_bytes("mlp"), graph_optimization_level=7)
    with pytest.raises(OrtCapiError, match="SetSessionExecutionMode failed .*not valid"):
        ort_capi.CapiSession(model_bytes("mlp"), execution_mode=5)


def test_errors_carry_onnxruntimes_message():
    with pytest.raises(OrtCapiError, match="CreateSessionFromArray failed.*protobuf"):
        ort_capi.CapiSession(b"this is not an onnx model")
    cs = ort_capi.CapiSession(model_bytes("mlp"))
    with pytest.raises(OrtCapiError, match="Run failed") as err:
        cs.run([np.zeros((2, 29), np.float32)])  # wrong feature count
    assert err.value.ort_code == 2  # ORT_INVALID_ARGUMENT
    with pytest.raises(OrtCapiError, match="dtype object"):
        cs.run([np.array([["a"] * 30], dtype=object)])
    with pytest.raises(OrtCapiError, match="bind: 1 inputs / 2 outputs"):
        cs.bind([np.zeros((1, 30), np.float32)], [np.zeros((1, 1), np.float32)] * 2)
    outs = [np.zeros((1, 1), np.float32)]
    bound = cs.bind([np.zeros((3, 30), np.float32)], outs)  # output buffer of the wrong batch size
    with pytest.raises(OrtCapiError, match="RunWithBinding failed"):
        bound()
