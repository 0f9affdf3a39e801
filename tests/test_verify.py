from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seqdeploy.app.cli import app
from seqdeploy.errors import CheckFailed, VerifyInputError
from seqdeploy.verify.parity import parse_tolerances, verify_models, verify_run

runner = CliRunner()


@pytest.fixture(scope="module")
def exported_run(trained_mlp_run, tmp_path_factory) -> Path:
    from seqdeploy.export.convert import export_onnx

    run = tmp_path_factory.mktemp("verify") / "run"
    shutil.copytree(trained_mlp_run, run)
    export_onnx(run)
    return run


def test_verify_passes_and_writes_report_and_golden(exported_run):
    res = runner.invoke(app, ["verify", str(exported_run), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["passed"] and result["max_abs_error"] < 1e-4 and result["label_agreement"] == 1.0
    assert {1, 7, 65} <= set(result["batch_sizes"])  # 1, small odd, odd > training batch
    kinds = {f["kind"].split("[")[0] for f in result["feeds"]}
    assert {"real", "random", "edge:zeros", "edge:train-min", "edge:train-max"} <= kinds
    report = json.loads((exported_run / "verify.json").read_text())
    assert report["passed"] and report["artifact_precision"] == "float32"
    golden = np.load(exported_run / "golden.npz")
    assert golden["raw"].shape == (5, 30) and golden["input__features"].shape == (5, 30)
    out_key = next(k for k in golden.files if k.startswith("output__"))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported_run / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"features": golden["input__features"]})[0]
    np.testing.assert_allclose(got, golden[out_key], atol=1e-5)
    gj = json.loads((exported_run / "golden.json").read_text())
    assert gj[out_key]["shape"] == [5, 1] and gj["raw"]["dtype"] == "float32"


def _corrupt_weight(src: Path, dst: Path, delta: float = 3.0) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    arr = numpy_helper.to_array(init).copy()
    arr[0, :] += delta
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(dst))


def test_a_corrupted_weight_fails_with_exit_1_naming_the_output(exported_run, tmp_path):
    bad = tmp_path / "bad.onnx"
    _corrupt_weight(exported_run / "model.onnx", bad)
    res = runner.invoke(app, ["verify", str(exported_run), "--onnx", str(bad)])
    assert res.exit_code == 1, res.output
    assert "values not close enough" in res.output and "max abs error" in res.output
    with pytest.raises(CheckFailed) as info:
        verify_run(exported_run, onnx_path=bad, write=False)
    result = info.value.result
    assert not result.passed and result.outputs[0].elements_over_tolerance > 0
    assert result.outputs[0].name in str(info.value) and result.max_abs_error > 1e-3


def test_a_fixed_batch_axis_is_caught(exported_run, tmp_path):
    import onnx

    model = onnx.load(str(exported_run / "model.onnx"))
    for vi in list(model.graph.input) + list(model.graph.output):
        d = vi.type.tensor_type.shape.dim[0]
        d.Clear()
        d.dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    with pytest.raises(CheckFailed) as info:
        verify_run(exported_run, onnx_path=fixed, write=False)
    text = " ".join(info.value.result.failures)
    assert "batch" in text and "rejected" in text
    assert any(not f.ok for f in info.value.result.feeds) and any(f.ok for f in info.value.result.feeds)


def test_mismatched_pair_and_missing_data_and_nan_inputs_exit_2(exported_run, tmp_path):
    import keras

    other = keras.Sequential([keras.Input((10,), name="features"), keras.layers.Dense(1, activation="sigmoid")])
    other.save(tmp_path / "other.keras")
    x = np.zeros((4, 10), np.float32)
    np.save(tmp_path / "x.npy", x)
    res = runner.invoke(app, ["verify", "--keras", str(tmp_path / "other.keras"), "--onnx",
                              str(exported_run / "model.onnx"), "--data", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "mismatched pair" in res.output and "Traceback" not in res.output

    shutil.copy(exported_run / "model.onnx", tmp_path / "m.onnx")  # no --data: generated numeric inputs
    res = runner.invoke(app, ["verify", "--keras", str(exported_run / "model.keras"), "--onnx",
                              str(tmp_path / "m.onnx"), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["samples"] == 0
    assert (tmp_path / "m.verify.json").is_file()  # beside the ONNX file
    (tmp_path / "m.verify.json").unlink()  # the ONNX file as the argument reads the same
    res = runner.invoke(app, ["verify", str(tmp_path / "m.onnx"), "--keras", str(exported_run / "model.keras"), "--json"])
    assert res.exit_code == 0 and (tmp_path / "m.verify.json").is_file()

    nan = np.ones((4, 30), np.float32)
    nan[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    res = runner.invoke(app, ["verify", "--keras", str(exported_run / "model.keras"), "--onnx",
                              str(exported_run / "model.onnx"), "--data", str(tmp_path / "nan.npy")])
    assert res.exit_code == 2 and "NaN" in res.output

    res = runner.invoke(app, ["verify", str(tmp_path / "no_such_run")])
    assert res.exit_code == 2


def test_verify_outside_a_run_dir(exported_run, tmp_path):
    from seqdeploy.data import load_run_splits

    x = load_run_splits(exported_run).x_test
    np.save(tmp_path / "x.npy", x)
    shutil.copy(exported_run / "model.onnx", tmp_path / "m.onnx")
    res = runner.invoke(app, ["verify", "--keras", str(exported_run / "model.keras"), "--onnx",
                              str(tmp_path / "m.onnx"), "--data", str(tmp_path / "x.npy"), "--samples", "20",
                              "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report" / "verify.json").exists() and not (tmp_path / "verify.json").exists()


def test_pair_mode_never_damages_a_bundle(exported_run, tmp_path):
    """verify --keras/--onnx on a bundle's own files: the bundle stays byte-identical, or is refreshed and loads."""
    from seqdeploy.data import load_run_splits
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.runtime.predictor import Predictor

    bundle = tmp_path / "bundle"
    shutil.copytree(exported_run, bundle)
    write_bundle_manifest(bundle)
    np.save(tmp_path / "x.npy", load_run_splits(bundle).x_test)
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    pair = ["verify", "--keras", str(bundle / "model.keras"), "--onnx", str(bundle / "model.onnx"),
            "--data", str(tmp_path / "x.npy"), "--samples", "20"]
    res = runner.invoke(app, pair + ["--out", str(tmp_path / "elsewhere")])
    assert res.exit_code == 0, res.output
    np.save(tmp_path / "raw.npy", load_run_splits(bundle).raw_test)
    for cmd in (["inspect", str(bundle)], ["predict", str(bundle), "--input", str(tmp_path / "raw.npy"),
                                            "--output", str(tmp_path / "pred.csv")]):
        res = runner.invoke(app, cmd)  # the other commands that read a bundle
        assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before
    res = runner.invoke(app, pair + ["--out", str(bundle)])  # into the bundle: refreshed consistently
    assert res.exit_code == 0, res.output
    p = Predictor.from_bundle(bundle)
    assert len(p.predict(load_run_splits(bundle).raw_test)) > 0


def test_nonfinite_outputs_are_a_failure_of_their_own(tmp_path):
    import keras

    from seqdeploy.export.convert import export_onnx

    model = keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2)])
    model.layers[-1].set_weights([np.full((3, 2), 3e38, np.float32), np.zeros(2, np.float32)])
    model.save(tmp_path / "big.keras")
    export_onnx(tmp_path / "big.keras", out=tmp_path / "big.onnx")
    x = np.ones((6, 3), np.float32)
    with pytest.raises(CheckFailed) as info:
        verify_models(tmp_path / "big.keras", tmp_path / "big.onnx", real_inputs=x)
    assert any("non-finite" in f for f in info.value.result.failures)
    assert info.value.result.outputs[0].nonfinite_onnx > 0


def test_tolerance_parsing():
    assert parse_tolerances(["1e-3", "out=0.5"], "atol") == (1e-3, {"out": 0.5})
    with pytest.raises(VerifyInputError, match="expected a number"):
        parse_tolerances(["abc"], "atol")
    with pytest.raises(VerifyInputError, match=">= 0"):
        parse_tolerances(["-1"], "rtol")


def test_per_output_tolerance_decides_a_small_difference(exported_run, tmp_path):
    from seqdeploy.verify.parity import Tolerance

    slightly = tmp_path / "slightly.onnx"
    _corrupt_weight(exported_run / "model.onnx", slightly, delta=2e-3)
    with pytest.raises(CheckFailed) as info:
        verify_run(exported_run, onnx_path=slightly, write=False)
    out = info.value.result.outputs[0]
    assert out.elements_over_tolerance > 0 and 1e-4 < out.min_passing_atol < 1e-1
    ok = verify_run(exported_run, onnx_path=slightly, write=False,
                    per_output={out.name: Tolerance(atol=out.min_passing_atol * 1.01, rtol=out.rtol)})
    assert ok.passed and ok.outputs[0].elements_over_tolerance == 0


def test_manifest_carries_verification_only_for_the_verified_bytes(exported_run, tmp_path):
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.bundle.write import write_bundle_manifest

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    verify_run(run)
    assert write_bundle_manifest(run).verification is not None
    export_onnx(run, opset=15)  # different bytes: the old verify.json no longer speaks for them
    assert write_bundle_manifest(run).verification is None
    verify_run(run)
    assert write_bundle_manifest(run).verification.passed


def test_left_padding_and_holes_are_checked_for_masked_recurrent_models(tmp_path):
    import keras

    from seqdeploy.export.convert import export_onnx

    keras.utils.set_random_seed(0)
    masked = keras.Sequential([keras.Input((6,), dtype="int32", name="tokens"),
                               keras.layers.Embedding(20, 4, mask_zero=True), keras.layers.LSTM(5),
                               keras.layers.Dense(1, activation="sigmoid")])
    masked.save(tmp_path / "masked.keras")
    export_onnx(tmp_path / "masked.keras", out=tmp_path / "masked.onnx")
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, size=(10, 6)).astype(np.int32)
    x[:, 4:] = 0  # right-padded, as the tokenizer makes them
    result = verify_models(tmp_path / "masked.keras", tmp_path / "masked.onnx", real_inputs=x, vocabulary_size=20)
    assert result.passed and result.warnings == ()
    assert {"edge:left-padded", "edge:holes"} <= {f.kind for f in result.feeds}
