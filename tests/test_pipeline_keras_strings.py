"""The issue's "Show": ``pipeline MODEL.keras --data sample.csv`` on string models trained elsewhere gives a bundle
whose portable graph equals Keras (<= 1e-5) on raw inputs, hostile strings included, through
``Predictor.from_bundle`` and through ``seqdeploy predict``.

* a keras-io "text classification from scratch" model (TextVectorization with a registered custom standardize
  from a custom-objects file; onnxruntime-extensions ops: quantize is skipped with the reason);
* a structured-data model taking a dict of raw features (StringLookup, IntegerLookup, Normalization,
  Discretization + CategoryEncoding; core ONNX + ai.onnx.ml: quantize runs, Node/browser can run it).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import string_zoo as zoo
from seqdeploy.app.cli import app
from seqdeploy.app.pipeline import PipelineOptions

FAST = PipelineOptions(quantize_mode="dynamic", quantize_rounds=2, bench_batches=(1,), bench_duration=0.05,
                       tune_batches=(1,), tune_duration=0.1, bench_vs=())


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return zoo.build(tmp_path_factory.mktemp("string_zoo"))


@pytest.fixture(scope="module")
def imdb_bundle(models, tmp_path_factory) -> Path:
    from seqdeploy.app.pipeline_keras import run_keras_pipeline

    out = tmp_path_factory.mktemp("bundles") / "imdb"
    r = run_keras_pipeline(models["imdb"], models["imdb_sample"], out=out, custom_objects=[models["objects"]],
                           labels=["negative", "positive"], options=FAST)
    assert r.summary["portable"]["max_abs_error"] <= 1e-5
    return out


def _keras(path: Path, x, objects: Path | None = None) -> np.ndarray:
    import keras

    if objects is not None:
        zoo.load_standardize(objects)
    return np.asarray(keras.saving.load_model(path)(x, training=False))


def _predict_cli(bundle: Path, rows: Path, out: Path) -> np.ndarray:
    res = CliRunner().invoke(app, ["predict", str(bundle), "-i", str(rows), "-o", str(out)])
    assert res.exit_code == 0, res.output
    with open(out, encoding="utf-8") as f:
        return np.asarray([[float(r["p_positive"] if "p_positive" in r else r["p_1"])] for r in csv.DictReader(f)])


def test_text_model_with_custom_standardize_equals_keras_on_hostile_strings(models, imdb_bundle, tmp_path):
    from seqdeploy.runtime import Predictor

    texts = zoo.HOSTILE + zoo.REVIEWS
    x = np.asarray(texts, dtype=object).reshape(-1, 1)
    want = _keras(models["imdb"], x, models["objects"])
    p = Predictor.from_bundle(imdb_bundle)
    assert p.info.graph == "portable" and p.raw_input_names == ("review",)
    assert np.abs(p.predict_proba(x)[:, 1:] - want).max() <= 1e-5
    np.testing.assert_array_equal(p.predict(x), np.where(want[:, 0] >= 0.5, "positive", "negative"))
    # a custom standardize with regexes needs onnxruntime-extensions: no quantization, Node/browser refuse it
    manifest = json.loads((imdb_bundle / "manifest.json").read_text())
    assert any(op.startswith("ai.onnx.contrib:") for op in manifest["contrib_ops"])
    assert [a["file"] for a in manifest["artifacts"]] == ["model.onnx"]
    # the same through seqdeploy predict, from CSV (quoted newlines, commas) and JSONL
    zoo.write_csv(tmp_path / "rows.csv", {"id": list(range(len(texts))), "review": texts})
    assert np.abs(_predict_cli(imdb_bundle, tmp_path / "rows.csv", tmp_path / "a.csv") - want).max() <= 1e-5
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"review": t}) + "\n" for t in texts), encoding="utf-8")
    assert np.abs(_predict_cli(imdb_bundle, tmp_path / "rows.jsonl", tmp_path / "b.csv") - want).max() <= 1e-5


def test_quantize_is_skipped_with_the_reason_for_extension_ops(imdb_bundle):
    from seqdeploy.app.pipeline_keras import quantize_skip_reason

    reason = quantize_skip_reason(imdb_bundle)
    assert reason is not None and "onnxruntime-extensions" in reason and "StringRegexReplace" in reason
    assert not (imdb_bundle / "quantize.json").exists()


def test_dict_of_raw_features_equals_keras_on_unseen_categories(models, tmp_path):
    from seqdeploy.app.pipeline_keras import run_keras_pipeline, quantize_skip_reason
    from seqdeploy.runtime import Predictor

    out = tmp_path / "structured"
    r = run_keras_pipeline(models["structured"], models["structured_sample"], out=out, options=FAST)
    assert r.summary["portable"]["max_abs_error"] <= 1e-5
    assert quantize_skip_reason(out) is None and (out / "quantize.json").exists()  # core + ai.onnx.ml: quantized
    h = zoo.HOSTILE_FEATURES
    raw = {"colour": np.asarray(h["colour"], dtype=object).reshape(-1, 1),
           "rooms": np.asarray(h["rooms"], np.int64).reshape(-1, 1),
           "price": np.asarray(h["price"], np.float32).reshape(-1, 1),
           "age": np.asarray(h["age"], np.float32).reshape(-1, 1)}
    want = _keras(models["structured"], raw)
    p = Predictor.from_bundle(out)
    assert set(p.raw_input_names) == set(raw)
    assert np.abs(p.predict_proba(raw)[:, 1:] - want).max() <= 1e-5
    manifest = json.loads((out / "manifest.json").read_text())
    assert not [op for op in manifest["contrib_ops"] if op.startswith("ai.onnx.contrib")]
    zoo.write_csv(tmp_path / "rows.csv", {"id": list(range(len(h["age"]))), **h})
    assert np.abs(_predict_cli(out, tmp_path / "rows.csv", tmp_path / "a.csv") - want).max() <= 1e-5


def test_quantize_is_not_skipped_for_onnxruntime_contrib_ops(monkeypatch, tmp_path):
    """Only ops that need a custom-op library (onnxruntime-extensions) stop quantization: onnxruntime's own
    ``com.microsoft`` ops (a Transformer's fused Attention) load in its quantization tools."""
    from types import SimpleNamespace

    import seqdeploy.runtime.manifest as manifest
    from seqdeploy.app.pipeline_keras import quantize_skip_reason

    ops = {"ms": ("com.microsoft:Attention", "com.microsoft:SkipLayerNormalization"),
           "mixed": ("ai.onnx.contrib:StringRegexReplace", "com.microsoft:Attention"), "none": ()}
    monkeypatch.setattr(manifest, "load_manifest", lambda bundle, check_files=True: SimpleNamespace(contrib_ops=ops[bundle]))
    assert quantize_skip_reason("ms") is None and quantize_skip_reason("none") is None
    reason = quantize_skip_reason("mixed")
    assert "ai.onnx.contrib:StringRegexReplace" in reason and "Attention" not in reason
