"""Harness tests for seqdeploy.bench: maths, ordering, stopping, schema, rendering, CLI. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seqdeploy import bench
from seqdeploy.bench import (
    Measurement,
    OrtRunner,
    RunnerInfo,
    StopRule,
    compute_speedups,
    latency_stats,
    parse_int_list,
    parse_vs,
    run_bench,
    run_interleaved,
    write_outputs,
)
from seqdeploy.errors import BenchError, InputFileNotFound, UsageError


# ----------------------------------------------------------------------------- fixtures


def _tiny_onnx(path: Path, sizes=(4, 3, 1), fixed_batch: int | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits += [numpy_helper.from_array(rng.standard_normal((a, b)).astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"B{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Sigmoid", [prev], ["y"]))
    batch = fixed_batch if fixed_batch is not None else "batch"
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, sizes[-1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_onnx(tmp_path_factory.mktemp("tiny") / "model.onnx")


FAST = StopRule(duration_s=0.05, warmup_s=0.0, slice_s=0.005)


@pytest.fixture(scope="module")
def tiny_result(tiny):
    return run_bench(tiny, batches=(1, 4), threads=(1,), vs="none", rule=FAST)


class FakeClock:
    """A clock that advances only when a fake runner 'works'."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("arr", [np.arange(1, 101, dtype=float), np.array([5.0]), np.random.default_rng(3).exponential(size=1001)])
def test_latency_stats_match_numpy(arr):
    s = latency_stats(arr * 1e-6)  # seconds in, microseconds out
    assert s.n == arr.size
    for got, q in [(s.p50_us, 50), (s.p90_us, 90), (s.p99_us, 99), (s.p999_us, 99.9)]:
        assert got == pytest.approx(np.percentile(arr, q))
    assert s.mean_us == pytest.approx(arr.mean())
    assert s.std_us == pytest.approx(arr.std(ddof=1) if arr.size > 1 else 0.0)
    assert (s.min_us, s.max_us) == (pytest.approx(arr.min()), pytest.approx(arr.max()))
    assert len(s.quantiles_us) == 101 and s.quantiles_us[50] == pytest.approx(s.p50_us)


def test_latency_stats_empty_is_an_error():
    with pytest.raises(BenchError, match="no samples"):
        latency_stats([])


def test_speedup_and_ratios():
    assert bench.speedup(100.0, 25.0) == 4.0
    assert bench.speedup(None, 1.0) is None and bench.speedup(1.0, 0.0) is None
    infos = [RunnerInfo("ort:fp32", "onnxruntime", "fp32", None, None, True, True, None),
             RunnerInfo("keras:direct", "keras", "fp32", None, None, False, False, None),
             RunnerInfo("tflite:fp32", "tflite", "fp32", None, None, False, True, None),
             RunnerInfo("tflite:int8", "tflite", "int8", None, None, False, True, None)]
    lat = {"ort:fp32": 10.0, "keras:direct": 1000.0, "tflite:fp32": 20.0, "tflite:int8": 5.0}
    ms = [Measurement(n, 1, 1, "ok", latency=latency_stats([v * 1e-6])) for n, v in lat.items()]
    ms.append(Measurement("ort:fp32", 64, 1, "skipped", reason="fixed batch"))
    out = {(m.runner, m.batch): m for m in compute_speedups(ms, infos)}
    ort = out[("ort:fp32", 1)].speedup
    assert ort["onnx_fp32"] == pytest.approx(1.0)
    assert ort["keras_direct"] == pytest.approx(100.0)
    assert ort["tflite_best"] == pytest.approx(0.5)  # best TFLite is int8 at 5 us
    assert out[("keras:direct", 1)].speedup["onnx_fp32"] == pytest.approx(0.01)
    assert all(v is None for v in out[("ort:fp32", 64)].speedup.values())


def test_output_diff():
    assert bench.output_diff([np.zeros((2, 1))], [np.ones(2)]) == 1.0
    assert bench.output_diff([np.zeros(2)], [np.zeros(3)]) is None


# ----------------------------------------------------------------------------- interleaving and stopping


def _fake_runners(clock: FakeClock, costs: list[float], log: list[int]):
    def make(i, c):
        def call():
            log.append(i)
            clock.t += c
        return call
    return [make(i, c) for i, c in enumerate(costs)]


def test_interleaving_order_round_robin():
    clock, log = FakeClock(), []
    calls = _fake_runners(clock, [1.0, 1.0, 1.0], log)
    rule = StopRule(count=4, slice_s=0.5)  # slice shorter than one call: exactly one call per slice
    samples = run_interleaved(calls, rule, clock=clock)
    assert log == [0, 1, 2] * 4
    assert [len(s) for s in samples] == [4, 4, 4]
    assert samples[0] == [1.0] * 4


def test_slices_group_fast_calls_and_alternate():
    clock, log = FakeClock(), []
    calls = _fake_runners(clock, [0.1, 0.3], log)
    run_interleaved(calls, StopRule(count=6, slice_s=0.3), clock=clock)
    # runner 0 fills a 0.3 s slice with 3 calls, runner 1 one call per slice; strictly alternating slices
    assert log[:4] == [0, 0, 0, 1]
    assert log.count(0) == 6 and log.count(1) == 6
    first_one = log.index(1)
    assert 0 in log[first_one:]  # runner 0 comes back after runner 1 (interleaved, not sequential)


def test_count_stop_is_exact():
    clock, log = FakeClock(), []
    samples = run_interleaved(_fake_runners(clock, [0.001, 0.002], log), StopRule(count=7, slice_s=1.0), clock=clock)
    assert [len(s) for s in samples] == [7, 7]


def test_duration_stop_shares_budget_fairly_and_caps_slow_runners():
    clock, log = FakeClock(), []
    # budget 3 s over 3 runners = 1 s each; the slow runner (0.4 s/call) must stop near its share
    samples = run_interleaved(_fake_runners(clock, [0.001, 0.01, 0.4], log),
                              StopRule(duration_s=3.0, slice_s=0.05, min_samples=2), clock=clock)
    spent = [sum(s) for s in samples]
    assert all(1.0 <= sp < 1.0 + 0.41 for sp in spent), spent
    assert len(samples[0]) >= 1000 and len(samples[2]) == 3


def test_duration_stop_overrun_cap_for_very_slow_runner():
    clock, log = FakeClock(), []
    # one call = 2 s, share = 0.5 s, min_samples 5 would need 10 s: max_overrun=3 stops it at 1.5 s
    samples = run_interleaved(_fake_runners(clock, [0.001, 2.0], log),
                              StopRule(duration_s=1.0, slice_s=0.01, min_samples=5, max_overrun=3.0), clock=clock)
    assert len(samples[1]) == 1
    assert sum(samples[0]) >= 0.5


def test_alternate_reverses_the_order_every_round():
    clock, log = FakeClock(), []
    run_interleaved(_fake_runners(clock, [1.0, 1.0], log), StopRule(count=3, slice_s=0.5, alternate=True), clock=clock)
    assert log == [0, 1, 1, 0, 0, 1]  # A B B A A B: neither always follows the other


def test_warm_up_min_calls_and_duration():
    clock, log = FakeClock(), []
    (call,) = _fake_runners(clock, [0.1], log)
    assert bench.warm_up(call, 0.0, clock=clock) == 3
    assert bench.warm_up(call, 1.0, clock=clock) == 10


@pytest.mark.parametrize("kwargs", [dict(duration_s=None, count=None), dict(count=0), dict(duration_s=0), dict(slice_s=0)])
def test_stop_rule_rejects_bad_values(kwargs):
    with pytest.raises(BenchError):
        StopRule(**kwargs)


# ----------------------------------------------------------------------------- parsing


def test_parse_int_list():
    assert parse_int_list("1, 8,64,8", "--batch") == (1, 8, 64)
    for bad in ("0", "a", "1,,2", "-3", ""):
        with pytest.raises(UsageError, match="--batch received"):
            parse_int_list(bad, "--batch")


def test_parse_vs():
    assert parse_vs("auto") is None and parse_vs(None) is None
    assert parse_vs("none") == ()
    assert parse_vs("tflite,keras") == ("keras", "tflite")
    assert parse_vs("openvino,keras") == ("keras", "openvino")
    with pytest.raises(UsageError, match="'onednn'"):
        parse_vs("keras,onednn")


# ----------------------------------------------------------------------------- targets


def test_resolve_target_run_dir_with_quantize_json(tmp_path):
    _tiny_onnx(tmp_path / "model.onnx")
    _tiny_onnx(tmp_path / "model.int8-static.onnx")
    _tiny_onnx(tmp_path / "model.int8-dynamic.onnx")
    (tmp_path / "quantize.json").write_text(json.dumps({"chosen": "int8-static", "candidates": [
        {"recipe": "int8-static", "path": "model.int8-static.onnx"}, {"recipe": "int8-dynamic", "path": "model.int8-dynamic.onnx"}]}))
    t = bench.resolve_target(tmp_path)
    assert [p for p, _ in t.artifacts] == ["fp32", "int8-dynamic", "int8-static"]
    assert t.deployed == (tmp_path / "model.int8-static.onnx").resolve()
    assert t.keras_path is None


def test_resolve_target_errors(tmp_path):
    with pytest.raises(InputFileNotFound, match="no such file"):
        bench.resolve_target(tmp_path / "missing")
    with pytest.raises(BenchError, match="no model.onnx"):
        bench.resolve_target(tmp_path)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BenchError, match="not an .onnx"):
        bench.resolve_target(tmp_path / "x.txt")


def test_resolve_target_reads_the_bundle_manifest(tmp_path):
    from test_manifest import build_bundle

    run = build_bundle(tmp_path, "binary", quantize=True, chosen="model.int8-dynamic.onnx")
    assert (run / "model.portable.onnx").exists() and (run / "model.int8-dynamic.portable.onnx").exists()
    t = bench.resolve_target(run)
    # the manifest's model-ready artifacts, labelled by recipe; portable graphs (raw inputs) are not artifacts
    assert [(lab, p.name) for lab, p in t.artifacts] == [
        ("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"), ("int8-dynamic", "model.int8-dynamic.onnx")]
    assert t.deployed == (run / "model.int8-dynamic.onnx").resolve() and t.notes == ()
    q = json.loads((run / "quantize.json").read_text())
    q["chosen"] = "model.fp16.onnx"  # quantize changed its mind after the manifest was written
    (run / "quantize.json").write_text(json.dumps(q))
    assert bench.resolve_target(run).deployed == (run / "model.fp16.onnx").resolve()
    assert json.loads((run / "manifest.json").read_text())["deployment_artifact"] == "model.fp16.onnx"


def test_bench_on_a_bundle_times_no_portable_graph(tmp_path):
    from test_manifest import build_bundle

    run = build_bundle(tmp_path, "binary")
    r = run_bench(run, batches=(1,), vs="none", rule=FAST)
    assert [ri.name for ri in r.runners] == ["ort:fp32", "deployed:fp32"]
    assert all(m.status == "ok" for m in r.results)
    assert "Predictor.run" in {ri.name: ri for ri in r.runners}["deployed:fp32"].notes[0]


def test_deployed_fast_paths_are_timed_side_by_side(tmp_path):
    """OrtSettings(deployed_fastpaths=...) adds the deployed artifact on each named per-call path (the zoo's
    "fast path" column); each says which path it really used and returns the plain run's numbers."""
    from test_manifest import build_bundle

    run = build_bundle(tmp_path, "binary")
    r = run_bench(run, batches=(1,), vs="none", rule=FAST,
                  settings=bench.OrtSettings(deployed_fastpaths=("capi", "run")))
    assert [ri.name for ri in r.runners] == ["ort:fp32", "deployed:fp32", "deployed-capi:fp32", "deployed-run:fp32"]
    infos = {ri.name: ri for ri in r.runners}
    assert "(iobinding fast path" in infos["deployed:fp32"].notes[0]
    assert "(run fast path" in infos["deployed-run:fp32"].notes[0]
    assert "capi" in infos["deployed-capi:fp32"].notes[0]  # "capi fast path", or the fallback and its reason
    assert all(m.status == "ok" and m.max_abs_diff == 0.0 for m in r.results)
    with pytest.raises(BenchError, match="deployed_fastpaths"):
        bench.OrtSettings(deployed_fastpaths=("turbo",))


def test_ort_settings_are_session_settings_plus_runner_fields(tmp_path):
    """The plain runners' sessions come from the runtime's factory with OrtSettings' session fields; the thread
    count is the sweep's; bench.json records every field but threads."""
    import onnxruntime as ort

    from seqdeploy.runtime.session import SessionSettings

    st = bench.OrtSettings(allow_spinning=True, graph_optimization="basic", per_call="iobinding")
    assert isinstance(st, SessionSettings)
    r = OrtRunner(_tiny_onnx(tmp_path / "m.onnx"), settings=st)
    r.prepare(2)
    so = r.session.get_session_options()
    assert so.intra_op_num_threads == 2 and so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    rec = st.to_record()
    assert "threads" not in rec and rec["per_call"] == "iobinding" and rec["graph_optimization"] == "basic"
    with pytest.raises(BenchError, match="graph_optimization = 'max'"):
        bench.OrtSettings(graph_optimization="max")
    with pytest.raises(BenchError, match="execution_mode = 'async'"):
        bench.OrtSettings(execution_mode="async")


def test_runner_families_are_a_registry(tiny, monkeypatch):
    from seqdeploy.bench import runners as reg

    assert list(reg.families()) == ["onnxruntime", "keras", "tflite", "openvino"]
    assert reg.peers() == ("keras", "tflite", "openvino")
    built = []

    class Echo(OrtRunner):
        family = "echo"

    def build(ctx):
        built.append(ctx.target.root)
        return [Echo(ctx.target.artifacts[0][1], "fp32", name="echo:fp32")]

    monkeypatch.setitem(reg._FAMILIES, "echo", reg.Family(
        "echo", "Echo", build, peer=True, order=40,
        references=(reg.Reference("echo_best", "vs Echo best", "vs Echo", "echo"),)))
    assert reg.peers() == ("keras", "tflite", "echo", "openvino") and parse_vs("echo") == ("echo",)
    r = run_bench(tiny, batches=(1,), vs="echo", rule=FAST)
    assert [ri.name for ri in r.runners] == ["ort:fp32", "deployed:fp32", "echo:fp32"] and built == [tiny.parent]
    m = r.get("ort:fp32", 1, 1)
    assert set(m.speedup) == {"onnx_fp32", "keras_direct", "tflite_best", "echo_best", "openvino_best"}
    assert m.speedup["echo_best"] == pytest.approx(r.get("echo:fp32", 1, 1).latency.p50_us / m.latency.p50_us)
    monkeypatch.setitem(reg._FAMILIES, "echo", reg.Family("echo", "Echo", build, peer=True,
                                                          available=lambda: "echo is not installed"))
    with pytest.raises(BenchError, match="echo is not installed"):
        run_bench(tiny, batches=(1,), vs="echo", rule=FAST)


def test_headline_from_bench_json():
    doc = {"runners": [{"name": "ort:fp32", "family": "onnxruntime"},
                       {"name": "deployed:int8-static", "family": "seqdeploy", "deployed": True},
                       {"name": "keras:direct", "family": "keras"}, {"name": "tflite:fp32", "family": "tflite"},
                       {"name": "tflite:int8", "family": "tflite"}],
           "results": [{"runner": n, "batch": b, "status": "ok", "latency": {"p50_us": v}}
                       for n, b, v in (("ort:fp32", 1, 10.0), ("deployed:int8-static", 1, 5.0), ("keras:direct", 1, 1000.0),
                                       ("tflite:fp32", 1, 8.0), ("tflite:int8", 1, 4.0), ("ort:fp32", 64, 1.0))]}
    h = bench.headline(doc)
    assert h["deployed_runner"] == "deployed:int8-static" and h["deployed_p50_us_b1"] == 5.0
    assert (h["onnx_fp32_p50_us_b1"], h["keras_direct_p50_us_b1"], h["tflite_best_p50_us_b1"]) == (10.0, 1000.0, 4.0)
    assert (h["speedup_vs_fp32"], h["speedup_vs_keras"], h["speedup_vs_tflite"]) == (2.0, 200.0, 0.8)
    assert bench.headline({}) == {}


def test_random_data_shapes_and_dtypes():
    d = bench.random_data("ids", ["batch", 5], np.int64)
    assert d.test.dtype == np.int64 and d.test.shape == (256, 5)
    assert d.feeds(300)["ids"].shape == (300, 5)  # tiled when fewer rows than the batch
    assert "symbolic" in bench.random_data("x", ["batch", "seq"], np.float32).note


def test_random_data_for_a_string_input_is_text():
    d = bench.random_data("review", ["batch", 1], np.object_)
    assert d.test.dtype == object and d.test.shape == (256, 1)
    cells = d.test.ravel().tolist()
    assert all(isinstance(c, str) for c in cells) and "" in cells and len(set(cells)) > 100


# ----------------------------------------------------------------------------- end to end on a tiny model


def test_run_bench_tiny_model(tiny_result):
    r = tiny_result
    assert r.target_kind == "onnx" and r.deployed_runner() == "deployed:fp32"
    assert [ri.name for ri in r.runners] == ["ort:fp32", "deployed:fp32"]
    infos = {ri.name: ri for ri in r.runners}
    assert not infos["ort:fp32"].deployed and "plain InferenceSession.run" in infos["ort:fp32"].notes[0]
    assert infos["deployed:fp32"].family == "seqdeploy" and "FastSession.run" in infos["deployed:fp32"].notes[0]
    oks = [m for m in r.results if m.status == "ok"]
    assert {(m.runner, m.batch, m.threads) for m in oks} == {(n, b, 1) for n in infos for b in (1, 4)}
    for m in oks:
        assert m.latency.n >= 1 and m.throughput_sps > 0 and m.first_inference_s > 0
        assert m.speedup["onnx_fp32"] > 0
        assert m.max_abs_diff == 0.0  # the fast path returns exactly what session.run returns
    assert all(m.speedup["onnx_fp32"] == pytest.approx(1.0) for m in oks if m.runner == "ort:fp32")


def test_deployed_runner_uses_predictor_when_a_bundle_exists(tmp_path):
    from test_manifest import build_bundle

    run = build_bundle(tmp_path, "binary")
    r = bench.DeployedRunner(run / "model.onnx", "fp32", bundle=run)
    r.prepare(1)
    assert r.set_batch(3) is None and r.via == "Predictor.run" and "Predictor.run" in r.notes[0]
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    name = r.input_specs()[0][0]
    plain = OrtRunner(run / "model.onnx")
    plain.prepare(1)
    want = plain.infer({name: x})
    for _ in range(3):  # first call plain, then the bound buffers
        got = r.infer({name: x})
        assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))
    (run / "manifest.json").write_text("{}")  # a broken bundle: same path without it, and a note saying so
    r.prepare(1)
    assert r.via == "FastSession.run" and any("Predictor.from_bundle failed" in n for n in r.notes)
    assert np.array_equal(r.infer({name: x})[0], want[0])


def test_fixed_batch_onnx_is_skipped_not_failed(tmp_path):
    p = _tiny_onnx(tmp_path / "fixed.onnx", fixed_batch=1)
    r = run_bench(p, batches=(1, 2), vs="none", rule=FAST)
    status = {m.batch: m.status for m in r.results}
    assert status == {1: "ok", 2: "skipped"}


def test_bench_json_schema(tiny_result, tmp_path):
    res = write_outputs(tiny_result, tmp_path)
    d = bench.load_result(tmp_path / "bench.json")
    assert d["schema_version"] == bench.SCHEMA_VERSION
    for key in ("target", "target_kind", "created", "data", "settings", "machine", "runners", "results", "peak_rss_mb", "files"):
        assert key in d
    assert set(d["machine"]["cpu"]["flags"]) >= {"avx2", "avx512_vnni", "amx_int8"}
    assert {"onnxruntime", "numpy"} <= set(d["machine"]["versions"])
    m = d["results"][0]
    assert {"runner", "batch", "threads", "status", "creation_s", "first_inference_s", "latency", "throughput_sps",
            "speedup", "rss_delta_mb", "max_abs_diff"} <= set(m)
    assert {"p50_us", "p90_us", "p99_us", "p999_us", "mean_us", "std_us", "n"} <= set(m["latency"])
    assert set(m["speedup"]) == {"onnx_fp32", "keras_direct", "tflite_best", "openvino_best"}
    assert d["runners"][0]["artifact_bytes"] > 0
    assert res.files["json"].endswith("bench.json")


def test_markdown_rendering(tiny_result):
    md = bench.render_markdown(tiny_result)
    lines = md.splitlines()
    header = next(ln for ln in lines if ln.startswith("| runner"))
    assert header.count("|") == len(bench.TABLE_COLUMNS) + 1
    body = [ln for ln in lines if ln.startswith("| ort:fp32 ")]
    assert len(body) == 2 and all(ln.count("|") == header.count("|") for ln in body)
    assert "1.00x" in body[0]
    deployed = [ln for ln in lines if ln.startswith("| deployed:fp32 *")]
    assert len(deployed) == 2 and all(ln.count("|") == header.count("|") for ln in deployed)


def test_png_written(tiny_result, tmp_path):
    p = bench.render_png(tiny_result, tmp_path / "b.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_does_not_pull_tensorflow():
    code = "import sys, seqdeploy.bench, seqdeploy.app.commands.bench; print(any(m in sys.modules for m in ('tensorflow', 'keras', 'onnx')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _Boom:
    """A runner whose creation fails: reported as an error row, the others still run."""

    name, family, precision, artifact, artifact_bytes, deployed, threads_apply, notes = "boom", "onnxruntime", "fp32", None, None, False, True, []

    def prepare(self, threads):
        raise RuntimeError("no")


def test_failing_runner_is_reported_not_fatal(tiny):
    data = bench.random_data("x", ["batch", 4], np.float32)
    ok = OrtRunner(tiny)
    r = run_bench(tiny, batches=(1,), vs="none", rule=FAST, runners=[ok, _Boom()], data=data)
    by = {m.runner: m for m in r.results}
    assert by["boom"].status == "error" and "RuntimeError" in by["boom"].reason
    assert by["ort:fp32"].status == "ok"


# ----------------------------------------------------------------------------- CLI


@pytest.fixture()
def cli():
    from seqdeploy.app.cli import app

    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_cli_json(cli, tiny, tmp_path):
    res = cli("bench", tiny, "--batch", "1,2", "--vs", "none", "--duration", "0.05", "--warmup", "0", "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["schema_version"] == bench.SCHEMA_VERSION and len(d["results"]) == 4  # ort:fp32 + deployed:fp32, 2 batches
    assert {p.name for p in tmp_path.iterdir()} >= {"bench.json", "bench.md", "bench.png"}


def test_cli_table_and_count(cli, tiny, tmp_path):
    res = cli("bench", tiny, "--batch", "1", "--count", "20", "--warmup", "0", "--no-files")
    assert res.exit_code == 0, res.output
    assert "ort:fp32" in res.output
    assert not (tiny.parent / "bench.json").exists()  # --no-files: nothing written


@pytest.mark.parametrize("args, match", [
    (["--batch", "0"], "--batch received 0"),
    (["--batch", "a"], "--batch received 'a'"),
    (["--threads", "0"], "--threads received 0"),
    (["--vs", "onednn"], "unknown comparison runner"),
    (["--vs", "keras"], "no model.keras"),
    (["--duration", "1", "--count", "5"], "together"),
])
def test_cli_bad_input_exit_2(cli, tiny, args, match):
    res = cli("bench", tiny, *args, "--no-files")
    assert res.exit_code == 2, res.output
    assert match in res.output


def test_cli_missing_file_exit_2(cli, tmp_path):
    res = cli("bench", tmp_path / "nope.onnx")
    assert res.exit_code == 2
    assert "no such file" in res.output


def test_cli_not_onnx_exit_2(cli, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    res = cli("bench", bad, "--no-files")
    assert res.exit_code == 2
    assert "cannot load" in res.output
