"""seqdeploy.runtime.session: the one session factory (settings applied, paths and bytes, errors, the optimised-graph
cache), the settings records and the onnxruntime type-name map."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from seqdeploy.errors import BundleError, InputValidationError
from seqdeploy.runtime.session import (
    ORT_TYPES, SessionSettings, build_session_options, make_session, session_options,
)
from test_ort_capi import model_bytes, sample_feeds

LEVELS = ort.GraphOptimizationLevel


def _spin(so, scope: str = "intra") -> str:
    return so.get_session_config_entry(f"session.{scope}_op.allow_spinning")


def test_defaults_are_the_runtime_defaults():
    so = make_session(model_bytes("mlp")).get_session_options()
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (1, 1)
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == LEVELS.ORT_ENABLE_ALL
    assert _spin(so) == "0" and _spin(so, "inter") == "0"
    assert so.log_severity_level == 3
    assert session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("settings, threads, level, spin", [
    (SessionSettings(threads=2), 2, LEVELS.ORT_ENABLE_ALL, "0"),
    (SessionSettings(allow_spinning=True), 1, LEVELS.ORT_ENABLE_ALL, "1"),
    (SessionSettings(graph_optimization="basic"), 1, LEVELS.ORT_ENABLE_BASIC, "0"),
    (SessionSettings(threads=3, allow_spinning=True, graph_optimization="disable"), 3, LEVELS.ORT_DISABLE_ALL, "1"),
])
def test_settings_reach_the_session(settings, threads, level, spin):
    so = make_session(model_bytes("mlp"), settings).get_session_options()
    assert so.intra_op_num_threads == threads
    assert so.graph_optimization_level == level
    assert _spin(so) == spin and _spin(so, "inter") == "0"  # no inter-op pool in sequential mode


def test_threads_override_and_inter_op_settings():
    base = SessionSettings(threads=2, graph_optimization="extended")
    so = make_session(model_bytes("mlp"), base, threads=1).get_session_options()
    assert so.intra_op_num_threads == 1 and so.graph_optimization_level == LEVELS.ORT_ENABLE_EXTENDED
    par = SessionSettings(allow_spinning=True, inter_op_threads=2, execution_mode="parallel")
    so = make_session(model_bytes("mlp"), par, log_severity=4).get_session_options()
    assert so.inter_op_num_threads == 2 and so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert _spin(so, "inter") == "1" and so.log_severity_level == 4


def test_paths_and_bytes_give_the_same_session(tmp_path):
    data = model_bytes("two_inputs")
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    feeds = sample_feeds("two_inputs", 3)
    want = make_session(data).run(None, feeds)
    for src in (path, str(path)):
        sess = make_session(src)
        assert sess.get_providers() == ["CPUExecutionProvider"]
        for got, w in zip(sess.run(None, feeds), want):
            np.testing.assert_array_equal(got, w)


def test_bad_arguments_and_models_are_refused(tmp_path):
    with pytest.raises(InputValidationError, match=r"settings = 2 .*threads="):
        make_session(model_bytes("mlp"), 2)  # the thread count in the settings' place
    with pytest.raises(InputValidationError, match="threads = 0"):
        make_session(model_bytes("mlp"), threads=0)
    with pytest.raises(BundleError, match="cannot load model bytes"):
        make_session(b"not a model")
    with pytest.raises(BundleError, match=re.escape(str(tmp_path / "missing.onnx"))):
        make_session(tmp_path / "missing.onnx")
    with pytest.raises(Exception) as raw:  # onnxruntime's own exception, for callers that read its message
        make_session(b"not a model", wrap_errors=False)
    assert not isinstance(raw.value, BundleError) and "protobuf" in str(raw.value).lower()


def test_optimized_graph_written_and_cached(tmp_path):
    data = model_bytes("mlp")
    feeds = sample_feeds("mlp", 4)
    want = make_session(data).run(None, feeds)
    out = tmp_path / "optimized.onnx"
    make_session(data, SessionSettings(graph_optimization="basic"), optimized_model_path=out)
    assert out.stat().st_size > 0

    cache = tmp_path / "cache"
    first = make_session(data, cache_dir=cache)
    (entry,) = cache.iterdir()
    assert entry.name.startswith("model.") and entry.name.endswith(f".ort{ort.__version__}.all.onnx")
    assert first.get_session_options().graph_optimization_level == LEVELS.ORT_ENABLE_ALL
    again = make_session(data, cache_dir=cache)  # loads the cached graph with optimisations off
    assert again.get_session_options().graph_optimization_level == LEVELS.ORT_DISABLE_ALL
    np.testing.assert_allclose(again.run(None, feeds)[0], want[0], rtol=1e-6, atol=1e-7)

    entry.write_bytes(b"truncated")  # a stale entry is rebuilt, not fatal
    rebuilt = make_session(data, cache_dir=cache)
    assert rebuilt.get_session_options().graph_optimization_level == LEVELS.ORT_ENABLE_ALL
    assert entry.stat().st_size > len(b"truncated")


def test_custom_ops_libraries_are_registered():
    """A graph with an ``ai.onnx.contrib`` op loads only with its library registered."""
    ext = pytest.importorskip("onnxruntime_extensions")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("StringLower", ["text"], ["lower"], domain="ai.onnx.contrib")], "g",
                              [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
                              [helper.make_tensor_value_info("lower", TensorProto.STRING, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.contrib", 1)])
    model.ir_version = 8
    data = model.SerializeToString()
    with pytest.raises(BundleError, match="cannot load model bytes"):
        make_session(data)
    sess = make_session(data, custom_ops_libraries=[ext.get_library_path()])
    assert sess.run(None, {"text": np.array(["MiXeD"], dtype=object)})[0].tolist() == ["mixed"]


def test_records_round_trip_and_stay_readable():
    assert SessionSettings().to_record() == {"threads": 1, "allow_spinning": False, "graph_optimization": "all"}
    par = SessionSettings(threads=2, inter_op_threads=2, execution_mode="parallel")
    rec = par.to_record()
    assert rec["inter_op_threads"] == 2 and rec["execution_mode"] == "parallel"
    assert SessionSettings.from_record(rec) == par
    assert par.describe() == "2 threads, spinning off, graph all, inter-op-threads 2, execution-mode parallel"
    with pytest.raises(InputValidationError, match="sessions\\[0\\]: execution_mode = 'async'"):
        SessionSettings.from_record({"execution_mode": "async"}, "sessions[0]")
    with pytest.raises(InputValidationError, match="inter_op_threads = 0"):
        SessionSettings(inter_op_threads=0)
    assert build_session_options(par).inter_op_num_threads == 2


def test_type_map_covers_the_session_types():
    ins = {i.name: i.type for i in make_session(model_bytes("two_inputs")).get_inputs()}
    ins.update({i.name: i.type for i in make_session(model_bytes("lstm")).get_inputs()})
    for name, t in ins.items():
        assert t in ORT_TYPES, (name, t)
    assert ORT_TYPES["tensor(int32)"] is np.int32 and np.dtype(ORT_TYPES["tensor(string)"]) == np.dtype(object)
    assert {np.dtype(v).name for v in ORT_TYPES.values()} >= {"float32", "float16", "int64", "bool", "object"}


def test_one_session_construction_site():
    pkg = Path(__file__).resolve().parents[1] / "seqdeploy"
    sites = {str(p.relative_to(pkg)): len(re.findall(r"InferenceSession\(", p.read_text()))
             for p in pkg.rglob("*.py")}
    assert {k: v for k, v in sites.items() if v} == {"runtime/session.py": 1}
