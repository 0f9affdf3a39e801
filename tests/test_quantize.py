"""Tests for seqdeploy.quantize and `seqdeploy quantize`: behaviour, never timing.

Models are built with onnx.helper (no TensorFlow), and latency is injected
wherever a decision depends on it, so every assertion is deterministic.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import seqdeploy.quantize as q  # noqa: E402
import seqdeploy.quantize.core as qcore  # noqa: E402  (the flow: where the gate's measurements are looked up)
from seqdeploy.errors import InputFileNotFound, ModelLoadError, QuantizeError  # noqa: E402

FAST = dict(latency_rounds=2, latency_round_seconds=0.0, latency_warmup=1, latency_min_calls=2,
            latency_batch_sizes=(1, 8), calibration_samples=64)


# --------------------------------------------------------------------------- fixtures


def _mlp(path: Path, *, n_in=16, hidden=32, n_out=3, head="softmax", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((n_in, hidden)) / np.sqrt(n_in)).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((hidden, n_out)) / np.sqrt(hidden)).astype(np.float32)
    last = {"softmax": helper.make_node("Softmax", ["z"], ["y"], name="head/Softmax", axis=-1),
            "sigmoid": helper.make_node("Sigmoid", ["z"], ["y"], name="head/Sigmoid"),
            "linear": helper.make_node("Identity", ["z"], ["y"], name="head/Identity")}[head]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h0"], name="dense/MatMul"),
         helper.make_node("Add", ["h0", "b1"], ["h1"], name="dense/BiasAdd"),
         helper.make_node("Relu", ["h1"], ["h"], name="dense/Relu"),
         helper.make_node("MatMul", ["h", "w2"], ["z"], name="dense_1/MatMul"),
         last],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _data(path: Path, n=96, n_in=16, task="multiclass", seed=1):
    """Inputs plus targets that the float32 model gets right (its own predictions)."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).standard_normal((n, n_in)).astype(np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    if task == "multiclass":
        y = out.argmax(1)
    elif task == "binary":
        y = (out[:, 0] >= 0.5).astype(np.int64)
    else:
        y = out + 0.1
    return x, y


@pytest.fixture
def mlp(tmp_path):
    path = _mlp(tmp_path / "model.onnx")
    x, y = _data(path)
    return path, x, y


def _fake_latency(speedup: float, noise: float = 0.01):
    def fake(float_sess, cand_sess, feeds, batch_size, settings):
        return q.LatencyComparison(batch_size, 1.0, 1.0 / speedup, speedup, noise, settings.latency_rounds, 3)
    return fake


def _run(path, x, y, tmp_path, task="multiclass", **kw):
    settings = q.QuantizeSettings(**{**FAST, **kw})
    return q.quantize_model(path, out_dir=tmp_path / "out", calibration_inputs={"x": x}, test_inputs={"x": x},
                            test_targets=y, task=task, settings=settings)


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("kw, fragment", [
    ({"max_metric_drop": -0.01}, "max_metric_drop = -0.01"),
    ({"max_metric_drop": float("nan")}, "max_metric_drop"),
    ({"mode": "int4"}, "mode = 'int4'"),
    ({"calibration_method": "kl"}, "calibration_method = 'kl'"),
    ({"calibration_samples": 0}, "calibration_samples = 0"),
    ({"latency_batch_sizes": ()}, "latency_batch_sizes"),
    ({"latency_batch_sizes": (1, 0)}, "latency_batch_sizes"),
    ({"latency_rounds": 1}, "latency_rounds = 1"),
    ({"static": q.DynamicInt8Settings()}, "expected a StaticInt8Settings"),
])
def test_settings_validation(kw, fragment):
    with pytest.raises(QuantizeError, match="expected") as info:
        q.QuantizeSettings(**kw)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_recipe_settings_are_typed_and_derived():
    s = q.QuantizeSettings(calibration_samples=32, calibration_method="entropy", per_channel=False, reduce_range=False)
    assert s.static_settings() == q.StaticInt8Settings(calibration_samples=32, calibration_method="entropy", per_channel=False,
                                                       pad_input_channels=q.default_pad_input_channels(),
                                                       unfold_input_conv=q.default_pad_input_channels())
    assert s.dynamic_settings().per_channel is False
    assert q.QuantizeSettings().static_settings().per_channel is True
    assert q.Float16Settings().keep_io_types is True
    explicit = q.StaticInt8Settings(calibration_method="percentile", percentile=99.9)
    assert q.QuantizeSettings(static=explicit).static_settings() is explicit
    with pytest.raises(QuantizeError, match="percentile"):
        q.StaticInt8Settings(percentile=10)
    with pytest.raises(QuantizeError, match="nodes_to_exclude"):
        q.DynamicInt8Settings(nodes_to_exclude=["a"])  # a list, not a tuple


# --------------------------------------------------------------------------- metrics


def test_metrics():
    assert q.compute_metric("binary", np.array([[0.2], [0.7], [0.5]]), np.array([0, 0, 1])).value == pytest.approx(2 / 3)
    scores = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert q.compute_metric("multiclass", scores, np.array([1, 1])).value == 0.5
    assert q.compute_metric("multiclass", scores, np.array([[0, 1], [1, 0]])).value == 1.0  # one-hot targets
    reg = q.compute_metric("regression", np.array([[1.0], [3.0]]), np.array([2.0, 3.0]))
    assert (reg.name, reg.value, reg.rmse) == ("mae", 0.5, pytest.approx(np.sqrt(0.5)))
    assert q.metric_drop("multiclass", 0.95, 0.93) == pytest.approx(0.02)
    assert q.metric_drop("regression", 2.0, 2.2) == pytest.approx(0.1)  # relative MAE increase
    assert q.metric_drop("regression", 2.0, 1.8) == pytest.approx(-0.1)  # improvement is negative
    with pytest.raises(QuantizeError, match="binary task"):
        q.compute_metric("binary", scores, np.array([0, 1]))
    with pytest.raises(QuantizeError, match="targets"):
        q.compute_metric("binary", np.array([[0.2]]), np.array([0, 1]))


# --------------------------------------------------------------------------- gate and choice


def _lat(b, speedup, noise=0.02):
    return q.LatencyComparison(b, 1.0, 1.0 / speedup, speedup, noise, 5, 10)


def test_gate_qualifies_only_when_accurate_and_clearly_faster_everywhere():
    s = q.QuantizeSettings(max_metric_drop=0.01, min_speedup=0.05, noise_multiplier=1.0)
    ok, reason = q.gate(0.005, [_lat(1, 2.0), _lat(64, 3.0)], s)
    assert ok and reason.startswith("qualified")
    ok, reason = q.gate(0.02, [_lat(1, 2.0), _lat(64, 3.0)], s)
    assert not ok and "metric drop 0.0200 > budget 0.0100" in reason
    ok, reason = q.gate(0.0, [_lat(1, 0.8), _lat(64, 3.0)], s)
    assert not ok and "slower than float32 at b=1" in reason
    ok, reason = q.gate(0.0, [_lat(1, 1.03), _lat(64, 3.0)], s)  # below the 5 % floor
    assert not ok and "not clearly faster" in reason and "b=1" in reason
    ok, reason = q.gate(0.0, [_lat(1, 1.3, noise=0.4), _lat(64, 3.0)], s)  # gain within the noise
    assert not ok and "noise 0.400" in reason
    ok, reason = q.gate(0.0, [_lat(1, 2.0)], s)
    assert not ok and "no latency measured at batch 64" in reason
    ok, _ = q.gate(0.0, [_lat(1, 2.0), _lat(64, 3.0)], q.QuantizeSettings(max_metric_drop=0.0))
    assert ok  # a zero budget accepts an exact match


def _cand(recipe, speeds, qualified=True):
    return q.Candidate(recipe, 1, q.QuantizeSettings().recipe_settings(recipe), None, 1, 0.9, None, 0.0,
                       tuple(_lat(b, s) for b, s in zip((1, 64), speeds)), qualified, False, "")


def test_choose_fastest_qualified():
    a, b, c = _cand("int8-static", (2.0, 3.0)), _cand("int8-dynamic", (4.0, 2.0)), _cand("fp16", (9.0, 9.0), qualified=False)
    assert q.choose_candidate([a, b, c]) is b  # geometric mean: sqrt(8) > sqrt(6); c is faster but not qualified
    assert q.choose_candidate([a, _cand("int8-dynamic", (1.2, 1.2))]) is a
    assert q.choose_candidate([c]) is None


def test_plan_follows_op_mix():
    assert q.plan_recipes({"Conv": 3, "MatMul": 1}, "auto")[0] == ["int8-static"]
    assert q.plan_recipes({"MatMul": 3}, "auto")[0] == ["int8-static", "int8-dynamic", "int8-qgemm"]
    assert q.plan_recipes({"LSTM": 1}, "auto")[0] == ["int8-dynamic"]
    run, skipped = q.plan_recipes({"Add": 1}, "auto")
    assert run == [] or run == ["fp16"]
    assert {s.recipe for s in skipped} >= {"int8-static", "int8-dynamic", "int8-qgemm"}
    assert q.plan_recipes({"Conv": 1}, "dynamic")[0] == ["int8-dynamic"]  # explicit modes are obeyed


# --------------------------------------------------------------------------- recipes


def test_recipes_produce_the_expected_ops(mlp, tmp_path):
    path, x, _ = mlp
    q.build_candidate("int8-static", path, tmp_path / "s.onnx", q.StaticInt8Settings(calibration_samples=32), {"x": x})
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(tmp_path / "s.onnx")
    q.build_candidate("int8-dynamic", path, tmp_path / "d.onnx", q.DynamicInt8Settings(), None)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= _ops(tmp_path / "d.onnx")
    q.build_candidate("int8-static", path, tmp_path / "p.onnx",
                      q.StaticInt8Settings(calibration_method="percentile", calibration_samples=32), {"x": x})
    assert "QuantizeLinear" in _ops(tmp_path / "p.onnx")


def test_fp16_keeps_float32_io(mlp, tmp_path):
    import onnxruntime as ort

    path, x, _ = mlp
    q.build_candidate("fp16", path, tmp_path / "h.onnx", q.Float16Settings(), None)
    m = onnx.load(str(tmp_path / "h.onnx"))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer)
    out = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert out.dtype == np.float32


def test_already_quantized_models_are_refused(mlp, tmp_path):
    path, x, y = mlp
    q.build_candidate("int8-dynamic", path, tmp_path / "d.onnx", q.DynamicInt8Settings(), None)
    q.build_candidate("fp16", path, tmp_path / "h.onnx", q.Float16Settings(keep_io_types=False), None)
    q.build_candidate("int8-static", path, tmp_path / "s.onnx", q.StaticInt8Settings(calibration_samples=16), {"x": x})
    for bad, what in (("d.onnx", "DynamicQuantizeLinear"), ("s.onnx", "QuantizeLinear"), ("h.onnx", "float16")):
        with pytest.raises(QuantizeError, match=what) as info:
            _run(tmp_path / bad, x, y, tmp_path)
        assert "expected a float32 model" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_clear_errors(mlp, tmp_path):
    path, x, y = mlp
    with pytest.raises(QuantizeError, match="no calibration data"):
        q.quantize_model(path, out_dir=tmp_path, calibration_inputs=None, test_inputs={"x": x}, test_targets=y,
                         task="multiclass", settings=q.QuantizeSettings(mode="static", **FAST))
    with pytest.raises(QuantizeError, match=r"do not match the model inputs \['x'\]"):
        q.quantize_model(
            path, out_dir=tmp_path, calibration_inputs={"x": x}, test_inputs={"features": x}, test_targets=y,
            task="multiclass", settings=q.QuantizeSettings(**FAST))
    with pytest.raises(QuantizeError, match="one target per test row"):
        _run(path, x, y[:5], tmp_path)
    with pytest.raises(QuantizeError, match="task = 'ranking'"):
        _run(path, x, y, tmp_path, task="ranking")
    with pytest.raises(InputFileNotFound, match="no such ONNX model"):
        _run(tmp_path / "missing.onnx", x, y, tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        _run(tmp_path / "junk.onnx", x, y, tmp_path)


# --------------------------------------------------------------------------- the whole flow


def test_nothing_qualifies_leaves_no_artifact(mlp, tmp_path, monkeypatch):
    path, x, y = mlp
    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(0.7))
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.int8-static.onnx").write_bytes(b"stale from an older run")
    r = _run(path, x, y, tmp_path, mode="auto", max_metric_drop=0.5)
    assert r.chosen is None and "float32 model.onnx stays" in r.summary
    assert [c.recipe for c in r.candidates] == ["int8-static", "int8-dynamic", "int8-qgemm"]
    assert all(not c.qualified and "slower than float32" in c.reason and c.path is None for c in r.candidates)
    assert sorted(p.name for p in out.iterdir()) == ["quantize.json"]  # stale artifact removed, temp files gone
    assert r.removed_stale == ("model.int8-static.onnx",)
    data = json.loads((out / "quantize.json").read_text())
    assert data["chosen"] is None


def test_chosen_candidate_and_json_schema(mlp, tmp_path, monkeypatch):
    path, x, y = mlp
    speeds = iter([3.0, 3.0, 2.0, 2.0, 2.5, 2.5])  # static (b=1, b=8) faster than dynamic and qgemm
    monkeypatch.setattr(qcore, "measure_latency", lambda f, c, feeds, b, s: _fake_latency(next(speeds))(f, c, feeds, b, s))
    r = _run(path, x, y, tmp_path, max_metric_drop=0.5)
    assert r.chosen == "model.int8-static.onnx" and r.chosen_recipe == "int8-static"
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["model.int8-static.onnx", "quantize.json"]
    assert "QuantizeLinear" in _ops(out / "model.int8-static.onnx")
    data = json.loads((out / "quantize.json").read_text())
    assert {"chosen", "metric_name", "float32", "candidates", "skipped", "task", "max_metric_drop"} <= set(data)
    assert data["chosen"] == "model.int8-static.onnx" and data["metric_name"] == "accuracy"
    assert data["float32"]["metric"] == 1.0 and set(data["float32"]["latency_p50_ms"]) == {"1", "8"}
    for c in data["candidates"]:
        assert {"recipe", "settings", "path", "size_bytes", "metric", "metric_drop", "latency", "qualified", "chosen", "reason"} <= set(c)
        assert c["size_bytes"] > 0
        for lat in c["latency"]:
            assert {"batch_size", "float32_p50_ms", "candidate_p50_ms", "speedup", "noise"} <= set(lat)
    static, dynamic, qgemm = data["candidates"]
    assert static["chosen"] and static["path"] == "model.int8-static.onnx" and static["settings"]["calibration_method"] == "minmax"
    for other in (dynamic, qgemm):
        assert not other["chosen"] and other["qualified"] and other["path"] is None
        assert "slower than int8-static" in other["reason"]


def test_real_latency_measurement_runs(mlp, tmp_path):
    path, x, y = mlp
    r = _run(path, x, y, tmp_path, mode="dynamic", task="multiclass")
    c = r.candidates[0]  # a retry (nodes left in float32) may follow when accuracy dropped
    assert [lat.batch_size for lat in c.latency] == [1, 8]
    assert all(lat.float32_p50_ms > 0 and lat.candidate_p50_ms > 0 and lat.noise >= 0 for lat in c.latency)
    assert any(x.chosen for x in r.candidates) == (r.chosen is not None)


def test_regression_and_binary_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(2.0))
    reg = _mlp(tmp_path / "reg.onnx", n_out=1, head="linear")
    x, y = _data(reg, task="regression")
    r = _run(reg, x, y, tmp_path, task="regression", mode="dynamic", max_metric_drop=0.5)
    assert r.metric_name == "mae" and r.float32.rmse is not None and r.candidates[0].rmse is not None
    assert "relative MAE increase" in r.metric_drop_definition
    binary = _mlp(tmp_path / "bin.onnx", n_out=1, head="sigmoid")
    x, y = _data(binary, task="binary")
    r = _run(binary, x, y, tmp_path, task="binary", mode="static", max_metric_drop=0.5)
    assert r.metric_name == "accuracy" and r.float32.metric == 1.0


def test_accuracy_loss_triggers_diagnosis_and_retry(mlp, tmp_path, monkeypatch):
    path, x, y = mlp
    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(2.0))
    drops = iter([0.5])  # the first attempt loses 50 points, the retry none
    real = q.metric_drop
    monkeypatch.setattr(qcore, "metric_drop", lambda task, f, c: next(drops, None) or real(task, f, c))
    r = _run(path, x, y, tmp_path, mode="static", exclude_worst_layers=1, max_metric_drop=0.2)
    first, retry = r.candidates
    assert (first.attempt, retry.attempt) == (1, 2)
    assert not first.qualified and "> budget" in first.reason
    assert first.worst_layers and first.worst_layers[0].op_type in {"MatMul", "Add", "Relu", "Softmax"}
    assert all(np.isfinite(d.sqnr_db) for d in first.worst_layers)
    assert retry.settings.nodes_to_exclude == (first.worst_layers[0].node,)
    assert retry.chosen and r.chosen == "model.int8-static.onnx"
    data = json.loads((tmp_path / "out" / "quantize.json").read_text())
    assert data["candidates"][1]["settings"]["nodes_to_exclude"] == [first.worst_layers[0].node]


def test_diagnose_layers_on_dynamic_model(mlp, tmp_path):
    path, x, _ = mlp
    q.build_candidate("int8-dynamic", path, tmp_path / "d.onnx", q.DynamicInt8Settings(), None)
    layers = q.diagnose_layers(path, tmp_path / "d.onnx", {"x": x[:16]}, op_types=frozenset({"MatMul"}))
    assert {d.node for d in layers} == {"dense/MatMul", "dense_1/MatMul"}
    assert all(0 < d.sqnr_db < 100 for d in layers)


def test_preprocess_failure_is_a_warning(mlp, tmp_path, monkeypatch):
    import onnxruntime.quantization.shape_inference as si

    path, x, y = mlp
    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(2.0))

    def broken(*a, **k):
        raise RuntimeError("symbolic shape inference exploded")

    monkeypatch.setattr(si, "quant_pre_process", broken)
    r = _run(path, x, y, tmp_path, mode="dynamic", max_metric_drop=0.5)
    assert any("quant_pre_process failed" in w for w in r.warnings)
    assert r.chosen == "model.int8-dynamic.onnx"


# --------------------------------------------------------------------------- run dir + CLI


def _fake_data_module(monkeypatch, x, y, task="multiclass"):
    mod = types.ModuleType("seqdeploy.data")
    splits = types.SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y, input_name="x", task=task, labels=None)
    mod.load_run_splits = lambda run_dir: splits
    monkeypatch.setitem(sys.modules, "seqdeploy.data", mod)


def test_quantize_run_uses_the_run_splits(mlp, tmp_path, monkeypatch):
    path, x, y = mlp
    _fake_data_module(monkeypatch, x, y)
    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(2.0))
    r = q.quantize_run(path.parent, q.QuantizeSettings(mode="dynamic", max_metric_drop=0.5, **FAST))
    assert r.chosen == "model.int8-dynamic.onnx" and (path.parent / "model.int8-dynamic.onnx").exists()
    with pytest.raises(InputFileNotFound, match="seqdeploy export"):
        q.quantize_run(tmp_path / "nope")


def _cli(args):
    from typer.testing import CliRunner

    from seqdeploy.app.cli import app

    return CliRunner().invoke(app, args)


def test_cli_exit_codes_and_json(mlp, monkeypatch):
    path, x, y = mlp
    run_dir = str(path.parent)
    _fake_data_module(monkeypatch, x, y)

    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(2.5))
    res = _cli(["quantize", run_dir, "--mode", "dynamic", "--max-metric-drop", "0.5", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["chosen"] == "model.int8-dynamic.onnx"

    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(0.5))
    res = _cli(["quantize", run_dir, "--json"])  # auto: nothing qualifies is not an error
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["chosen"] is None
    res = _cli(["quantize", run_dir, "--mode", "static", "--json"])  # explicit mode failing the gate
    assert res.exit_code == 1
    assert json.loads(res.stdout)["candidates"][0]["qualified"] is False
    res = _cli(["quantize", run_dir, "--mode", "static"])
    assert res.exit_code == 1 and "FAILED" in res.output

    assert _cli(["quantize", run_dir, "--max-metric-drop", "-1"]).exit_code == 2
    assert _cli(["quantize", run_dir, "--mode", "int3"]).exit_code == 2
    res = _cli(["quantize", str(path.parent / "missing-run")])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_reduce_range_defaults_to_the_cpu():
    from seqdeploy.quantize import QuantizeSettings, default_reduce_range

    assert default_reduce_range("flags\t: fpu avx2 fma\n") is True
    assert default_reduce_range("flags\t: fpu avx2 avx512_vnni\n") is False
    assert default_reduce_range("flags\t: fpu avx2 avx_vnni\n") is False
    assert default_reduce_range("") is False  # unknown CPU: keep onnxruntime's default
    assert QuantizeSettings(reduce_range=True).static_settings().reduce_range is True
    assert QuantizeSettings(reduce_range=False).dynamic_settings().reduce_range is False
    auto = QuantizeSettings().static_settings().reduce_range
    assert auto is default_reduce_range()


# --------------------------------------------------------------------------- the recipe registry


def test_recipes_are_a_registry_and_a_new_one_is_one_class(mlp, tmp_path, monkeypatch):
    import shutil
    from dataclasses import dataclass

    from seqdeploy.precision import precision_of
    from seqdeploy.quantize import recipes as reg

    assert list(reg.recipes()) == ["int8-static", "int8-dynamic", "int8-qgemm", "fp16"]
    assert q.RECIPE_FILES == {"int8-static": "model.int8-static.onnx", "int8-dynamic": "model.int8-dynamic.onnx",
                              "int8-qgemm": "model.int8-qgemm.onnx", "fp16": "model.fp16.onnx"}
    assert {r.precision.numeric for r in reg.recipes().values()} == {"int8", "float16"}

    @dataclass(frozen=True)
    class CopySettings:
        nodes_to_exclude: tuple[str, ...] = ()

    class Copy(reg.Recipe):  # what a new recipe module holds
        name, mode, precision, settings_type, order = "copy-test", "copy", precision_of("copy-test"), CopySettings, 90

        def skip_reason(self, op_counts, cpu_flags):
            return None if op_counts.get("MatMul") else "no MatMul"

        def build(self, src, dst, settings, calibration, seed=0):
            shutil.copyfile(src, dst)

    monkeypatch.setitem(reg._RECIPES, "copy-test", Copy())
    assert "copy" in q.modes() and q.plan_recipes({"Relu": 1}, "auto", cpu=frozenset())[1][-1].reason == "no MatMul"
    path, x, y = mlp
    monkeypatch.setattr(qcore, "measure_latency", _fake_latency(2.0))
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.int8-dynamic.onnx").write_bytes(b"stale")
    r = _run(path, x, y, tmp_path, mode="copy", max_metric_drop=0.0)
    assert r.chosen == "model.copy-test.onnx" and r.candidates[0].metric_drop == 0.0  # a copy loses nothing
    assert sorted(p.name for p in out.iterdir()) == ["model.copy-test.onnx", "quantize.json"]
    assert r.removed_stale == ("model.int8-dynamic.onnx",)
    assert q.read_record(out).chosen == "model.copy-test.onnx" and q.read_record(out).kept == (("model.copy-test.onnx", "copy-test"),)


def test_a_new_recipe_brings_its_precision_settings_keyword_and_cli_help(monkeypatch):
    """What one new recipe module declares is all it takes: the precision is known by name and file name,
    QuantizeSettings takes its mode and a full settings object under its override_field, the CLI help lists it."""
    from dataclasses import dataclass

    from typer.testing import CliRunner

    import seqdeploy.precision as prec
    from seqdeploy.app.cli import app
    from seqdeploy.quantize import recipes as reg

    reg.recipes()  # the built-in recipes first, then a registry and precision table this test may change
    monkeypatch.setattr(prec, "KNOWN", dict(prec.KNOWN))
    monkeypatch.setattr(reg._REGISTRY, "entries", dict(reg._REGISTRY.entries))

    @dataclass(frozen=True)
    class Int4Settings:
        block_size: int = 32

    int4 = prec.Precision("int4-weight", "int4w", "int4")

    @reg.register
    class Int4Weight(reg.Recipe):  # what the new module holds
        name, mode, precision, settings_type, override_field, order = "int4-weight", "int4", int4, Int4Settings, "int4", 95

        def build(self, src, dst, settings, calibration, seed=0):
            raise NotImplementedError

    assert prec.precision_of("int4-weight") is int4 and prec.precision_of_file("model.int4-weight.onnx") is int4
    assert reg.get_recipe("int4-weight").artifact == "model.int4-weight.onnx" and "int4" in q.modes()
    s = q.QuantizeSettings(mode="int4", int4=Int4Settings(block_size=64), per_channel=False)
    assert s.int4.block_size == 64 and s.int4_settings() is s.int4 and s.recipe_settings("int4-weight") is s.int4
    assert s.static is None and s.static_settings().per_channel is False  # the built-in ones unchanged
    assert q.QuantizeSettings().int4_settings() == Int4Settings()
    assert q.QuantizeSettings(overrides={"int4-weight": Int4Settings(8)}).int4.block_size == 8
    with pytest.raises(QuantizeError, match="int4 = .*expected a Int4Settings"):
        q.QuantizeSettings(int4=q.Float16Settings())
    with pytest.raises(TypeError, match="int5"):
        q.QuantizeSettings(int5=Int4Settings())
    res = CliRunner().invoke(app, ["quantize", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "mode: static, dynamic, qgemm, fp16, int4." in " ".join(res.output.replace("│", " ").split())


def test_static_calibration_arguments_follow_the_settings():
    """One builder of quantize_static's calibration arguments for every static recipe."""
    from onnxruntime.quantization import CalibrationMethod

    from seqdeploy.quantize.feeds import static_calibration

    rows = {"x": np.arange(100 * 3, dtype=np.float32).reshape(100, 3)}
    got = static_calibration(q.StaticInt8Settings(calibration_method="percentile", percentile=99.9,
                                                  calibration_samples=10, calibration_batch_size=4), rows, seed=0)
    assert got["calibrate_method"] == CalibrationMethod.Percentile and got["extra_options"] == {"CalibPercentile": 99.9}
    batches = []
    while (b := got["calibration_data_reader"].get_next()) is not None:
        batches.append(b["x"])
    assert [len(b) for b in batches] == [4, 4, 2]  # 10 sampled rows in batches of 4
    assert len({tuple(r) for b in batches for r in b}) == 10
    plain = static_calibration(q.StaticInt8Settings(), rows, seed=0)
    assert plain["calibrate_method"] == CalibrationMethod.MinMax and plain["extra_options"] is None


def test_preprocess_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference saves sym_shape_infer_temp.onnx into the current directory when it
    gives up; preprocess runs it elsewhere, falls back, and says so."""
    import onnx
    from onnx import TensorProto, helper
    from onnxruntime.tools import symbolic_shape_infer

    from seqdeploy.quantize.graph import preprocess

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)

    def gives_up(model, *args, **kwargs):
        onnx.save_model(model, "sym_shape_infer_temp.onnx", save_as_external_data=True)
        raise Exception("Incomplete symbolic shape inference")

    monkeypatch.setattr(symbolic_shape_infer.SymbolicShapeInference, "infer_shapes", staticmethod(gives_up))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out, warnings = preprocess(src, tmp_path / "pre.onnx")
    assert list(work.iterdir()) == []
    assert out == (tmp_path / "pre.onnx").resolve() and out.is_file()
    assert len(warnings) == 1 and "retrying without symbolic shape inference" in warnings[0]
