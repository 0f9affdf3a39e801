from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seqdeploy.atomic import sha256_file
from seqdeploy.app.cli import app
from seqdeploy.errors import UsageError
from seqdeploy.app.pipeline import PipelineOptions, parse_stages, run_pipeline

MODELS = Path(__file__).resolve().parent.parent / "models"
QUICK = PipelineOptions(epochs=1, quantize_rounds=3, bench_duration=0.05, bench_batches=(1, 8), tune_duration=0.1)
runner = CliRunner()


def test_parse_stages():
    assert parse_stages("bench,train") == ("train", "bench")
    with pytest.raises(UsageError, match="unknown stage"):
        parse_stages("train,deploy")


@pytest.mark.parametrize("spec", sorted(p.stem for p in MODELS.glob("*.toml")))
def test_every_spec_runs_the_whole_pipeline_and_its_bundle_loads(spec, tmp_path):
    from seqdeploy.runtime.predictor import Predictor

    opts = QUICK if spec == "breast_cancer_mlp" else PipelineOptions(
        epochs=1, quantize_rounds=3, bench_duration=0.05, bench_batches=(1,), bench_vs=("keras",),
        tune_duration=0.1, tune_batches=(1,))
    result = run_pipeline(MODELS / f"{spec}.toml", out=tmp_path / spec, options=opts)
    assert [s.status for s in result.stages] == ["ran"] * 6
    run = result.run_dir
    for f in ("model.keras", "model.onnx", "verify.json", "golden.npz", "quantize.json", "tune.json", "bench.json",
              "manifest.json", "report.md", "pipeline.json"):
        assert (run / f).exists(), f
    assert json.loads((run / "manifest.json").read_text())["runtime_settings"]["source"] == "tune.json"
    assert result.summary["verify"]["passed"] is True
    export = json.loads((run / "export.json").read_text())
    assert "Loop" not in export["op_counts"]
    # the CLI exports and verifies every spec too
    res = runner.invoke(app, ["export", str(run), "--onnx", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["op_counts"].get("Loop", 0) == 0
    res = runner.invoke(app, ["verify", str(run), "--samples", "50", "--json"])
    assert res.exit_code == 0, res.output
    # Predictor on RAW test rows == Keras on the same rows after training's preprocessing
    import keras

    from seqdeploy.data import load_run_splits

    splits = load_run_splits(run)
    raw = list(splits.raw_test) if splits.raw_test.dtype.kind == "U" else splits.raw_test
    predictor = Predictor.from_bundle(run)
    got = predictor.predict(raw)
    want = np.asarray(keras.models.load_model(run / "model.keras")(splits.x_test, training=False))
    assert len(got) == len(splits.x_test)
    if splits.task == "regression":
        rec = splits.preprocessing
        np.testing.assert_allclose(got.reshape(-1), want.reshape(-1) * rec["std"] + rec["mean"], atol=1e-3, rtol=1e-4)
    else:
        ids = (want[:, 0] >= 0.5).astype(int) if splits.task == "binary" else want.argmax(axis=1)
        np.testing.assert_array_equal(got, np.asarray(splits.labels)[ids])
    # the same raw rows through `seqdeploy predict` (text as JSONL, arrays as NPY) give the same answers
    if splits.raw_test.dtype.kind == "U":
        src = tmp_path / "rows.jsonl"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in splits.raw_test))
    else:
        src = tmp_path / "rows.npy"
        np.save(src, splits.raw_test)
    res = runner.invoke(app, ["predict", str(run), "--input", str(src), "--output", str(tmp_path / "pred.jsonl")])
    assert res.exit_code == 0, res.output
    lines = [json.loads(ln) for ln in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(lines) == len(got)
    first = [ln.get("prediction") for ln in lines]
    if splits.task == "regression":
        np.testing.assert_allclose(np.asarray(first, float), got.reshape(-1), rtol=1e-5, atol=1e-4)
    else:
        assert first == [str(g) for g in got]
    # the portable deployment graph in plain onnxruntime (a process that never imports seqdeploy) on the raw rows
    manifest = json.loads((run / "manifest.json").read_text())
    deployed = next(a for a in manifest["artifacts"] if a["file"] == manifest["deployment_artifact"])
    assert deployed["portable"]["file"].endswith(".portable.onnx")
    raw_np = splits.raw_test  # uint8 pixels and structured (several raw inputs) rows stay as they are
    if raw_np.dtype.names is None and raw_np.dtype != np.uint8:
        raw_np = np.asarray(raw_np, dtype=object if splits.task != "regression" and raw_np.dtype.kind == "U"
                            else np.float32)
    np.save(tmp_path / "raw.npy", raw_np, allow_pickle=True)
    plain = subprocess.run([sys.executable, "-c", PLAIN_ORT, str(run / deployed["portable"]["file"]),
                            str(tmp_path / "raw.npy"), str(tmp_path / "out.npz")],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    out = np.load(tmp_path / "out.npz", allow_pickle=True)
    assert "seqdeploy" not in out["modules"].tolist()
    if splits.task == "regression":
        np.testing.assert_allclose(out["prediction"], got.reshape(-1), rtol=1e-6, atol=1e-4)
    else:
        np.testing.assert_array_equal(out["label"].astype(str), got)
        np.testing.assert_allclose(out["probabilities"], predictor.predict_proba(raw), atol=1e-6)
    report = (run / "report.md").read_text()
    assert "## Verification" in report and "## Benchmark" in report and "Predictor.from_bundle" in report
    assert "## Session settings chosen" in report


# raw rows -> the portable file with nothing but numpy and onnxruntime (what any application does)
PLAIN_ORT = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
raw = np.load(sys.argv[2], allow_pickle=True)
feeds = ({i.name: np.ascontiguousarray(raw[i.name]) for i in s.get_inputs()} if raw.dtype.names
         else {s.get_inputs()[0].name: raw})
outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))
np.savez(sys.argv[3], modules=np.asarray(sorted(m.split(".")[0] for m in sys.modules)), **outs)
"""


@pytest.fixture(scope="module")
def seed_pipeline(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipe") / "seed"
    run_pipeline(MODELS / "breast_cancer_mlp.toml", out=out, options=QUICK)
    return out


def test_second_run_skips_every_stage(seed_pipeline):
    before = {p.name: sha256_file(p) for p in seed_pipeline.iterdir() if p.is_file() and p.suffix != ".md"}
    res = runner.invoke(app, ["pipeline", str(MODELS / "breast_cancer_mlp.toml"), "--out", str(seed_pipeline),
                              "--epochs", "1", "--stages", "train,export,verify", "--json"])
    assert res.exit_code == 0, res.output
    statuses = {s["name"]: s["status"] for s in json.loads(res.stdout)["stages"]}
    assert statuses == {"train": "skipped", "export": "skipped", "verify": "skipped",
                        "quantize": "not requested", "tune": "not requested", "bench": "not requested"}
    result = run_pipeline(MODELS / "breast_cancer_mlp.toml", out=seed_pipeline, options=QUICK)
    assert [s.status for s in result.stages] == ["skipped"] * 6
    assert result.seconds < 30
    assert sha256_file(seed_pipeline / "model.keras") == before["model.keras"]


def test_changed_upstream_reruns_downstream(seed_pipeline, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(seed_pipeline, run)
    run_pipeline(MODELS / "breast_cancer_mlp.toml", out=run, options=QUICK)  # settle all keys
    (run / "model.onnx").write_bytes((run / "model.onnx").read_bytes())  # same bytes: still skipped
    r1 = run_pipeline(MODELS / "breast_cancer_mlp.toml", out=run, options=QUICK, stages="train,export,verify")
    assert [s.status for s in r1.stages][:3] == ["skipped"] * 3
    (run / "model.onnx").unlink()  # a missing artifact reruns its stage and what depends on it
    r2 = run_pipeline(MODELS / "breast_cancer_mlp.toml", out=run, options=QUICK, stages="train,export,verify")
    assert [s.status for s in r2.stages][:3] == ["skipped", "ran", "skipped"] or \
        [s.status for s in r2.stages][:3] == ["skipped", "ran", "ran"]
    r3 = run_pipeline(MODELS / "breast_cancer_mlp.toml", out=run, options=QUICK, stages="train", force=True)
    assert r3.stages[0].status == "ran"


KILL_DURING_EXPORT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from seqdeploy import atomic
    from seqdeploy.export import convert as export
    from seqdeploy.app.pipeline import PipelineOptions, run_pipeline

    def killed_export(source, **kwargs):
        with atomic.atomic_path(Path(source) / "model.onnx") as tmp:
            tmp.write_bytes(b"half an onnx file")
            os.kill(os.getpid(), signal.SIGKILL)

    export.export_onnx = killed_export
    run_pipeline(sys.argv[1], out=sys.argv[2], stages="train,export", options=PipelineOptions(epochs=1))
""")


def test_sigkill_during_export_resumes_without_retraining(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_EXPORT, str(MODELS / "breast_cancer_mlp.toml"), str(run)],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (run / "model.keras").exists() and not (run / "model.onnx").exists()
    assert list(run.glob(".*.tmp*")), "the killed writer left its temporary behind"
    keras_sha = sha256_file(run / "model.keras")
    result = run_pipeline(MODELS / "breast_cancer_mlp.toml", out=run, stages="train,export",
                          options=PipelineOptions(epochs=1))
    assert [s.status for s in result.stages][:2] == ["skipped", "ran"]
    assert sha256_file(run / "model.keras") == keras_sha
    assert not list(run.glob(".*.tmp*"))
    import onnx

    onnx.checker.check_model(onnx.load(str(run / "model.onnx")))


@pytest.mark.parametrize("stage, victim", [("train", "model.keras"), ("export", "model.onnx"),
                                           ("verify", "verify.json"), ("quantize", "quantize.json"),
                                           ("tune", "tune.json"), ("bench", "bench.json")])
def test_disk_full_keeps_the_previous_good_artifacts(seed_pipeline, tmp_path, monkeypatch, stage, victim):
    import shutil

    from seqdeploy import atomic

    run = tmp_path / "run"
    shutil.copytree(seed_pipeline, run)
    before = {p.name: sha256_file(p) for p in run.iterdir() if p.is_file()}
    real_replace = os.replace

    def full_disk(src, dst, *a, **k):
        if Path(dst).name == victim:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        run_pipeline(MODELS / "breast_cancer_mlp.toml", out=run, stages=stage, force=True, options=QUICK)
    assert sha256_file(run / victim) == before[victim]
    assert not list(run.glob(".*.tmp*"))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    result = run_pipeline(MODELS / "breast_cancer_mlp.toml", out=run, stages=stage, options=QUICK)
    assert result.stages[[s.name for s in result.stages].index(stage)].status == "ran"


def test_verify_failure_stops_the_pipeline_with_exit_1(seed_pipeline, tmp_path, monkeypatch):
    import shutil

    from seqdeploy.verify import parity as verify_mod
    from seqdeploy.errors import CheckFailed

    run = tmp_path / "run"
    shutil.copytree(seed_pipeline, run)
    for f in ("quantize.json", "bench.json"):
        (run / f).unlink()
    real = verify_mod.verify_run

    def failing(run_dir, **kw):
        raise CheckFailed("ONNX output differs from Keras (1 problem(s); output_0: max abs error 0.5 > atol 0.0001)")

    monkeypatch.setattr(verify_mod, "verify_run", failing)
    res = runner.invoke(app, ["pipeline", str(MODELS / "breast_cancer_mlp.toml"), "--out", str(run), "--epochs", "1",
                              "--force"])
    assert res.exit_code == 1 and "max abs error 0.5" in res.output
    assert not (run / "quantize.json").exists() and not (run / "bench.json").exists()
    monkeypatch.setattr(verify_mod, "verify_run", real)


def test_doctor_reports_versions_and_cpu_flags():
    from seqdeploy.app.doctor import run_doctor
    from seqdeploy.cpu import cpu_flags

    report = run_doctor(cpuinfo="flags\t: fpu avx2 avx512f avx512_vnni\n")
    names = {c.name for c in report.checks}
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "protobuf", "numpy", "ml_dtypes"} <= names
    assert report.cpu_flags["avx512_vnni"] and not report.cpu_flags["amx_int8"]
    assert next(c for c in report.checks if c.name == "cpu int8").status == "ok"
    no_vnni = run_doctor(cpuinfo="flags\t: fpu avx2\n")
    assert next(c for c in no_vnni.checks if c.name == "cpu int8").status == "warn"
    assert cpu_flags("") == {k: False for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}
    res = runner.invoke(app, ["doctor", "--json"])
    assert res.exit_code in (0, 1) and json.loads(res.stdout)["checks"]
