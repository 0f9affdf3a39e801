"""seqdeploy.bundle.portable: the deployment graph beside every artifact, what Predictor runs, kept in step with its source."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from seqdeploy.runtime.manifest import load_manifest
from seqdeploy.bundle.write import write_bundle_manifest
from seqdeploy.bundle.portable import portable_name
from seqdeploy.runtime.predictor import Predictor
from test_manifest import KINDS, build_bundle, reference, sample_raw

RAW_INPUT = {"binary": "features", "multiclass": "features", "text": "text", "window": "window"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("portable")
    return {k: build_bundle(root, k, quantize=(k == "binary"), chosen="model.int8-dynamic.onnx" if k == "binary"
                            else None) for k in KINDS}


def test_names():
    assert portable_name("model.onnx") == "model.portable.onnx"
    assert portable_name("model.int8-dynamic.onnx") == "model.int8-dynamic.portable.onnx"


@pytest.mark.parametrize("kind", KINDS)
def test_portable_graph_in_plain_onnxruntime_answers_like_the_reference(bundles, kind):
    run = bundles[kind]
    m = load_manifest(run)
    assert m.portable is not None and m.portable.file == portable_name(m.deployment_artifact)
    assert [t.name for t in m.portable.inputs] == [RAW_INPUT[kind]]
    sess = ort.InferenceSession(str(run / m.portable.file), providers=["CPUExecutionProvider"])
    raw = sample_raw(kind, n=11)
    feed = np.asarray(raw, dtype=object) if kind == "text" else np.asarray(raw, np.float32)
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {RAW_INPUT[kind]: feed})))
    _, expected = reference(kind, raw)
    if kind == "window":
        assert list(out) == ["prediction"] and out["prediction"].shape == (11,)
        np.testing.assert_allclose(out["prediction"], expected, rtol=1e-5, atol=1e-4)
        return
    assert list(out) == ["probabilities", "class_id", "label"]
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-6)
    ids = (expected[:, 1] >= 0.5).astype(int) if kind != "multiclass" else expected.argmax(1)
    np.testing.assert_array_equal(out["class_id"], ids)
    np.testing.assert_array_equal(out["label"], np.asarray(m.labels)[ids])


def test_every_artifact_is_wrapped_and_the_quantized_one_deploys(bundles):
    run = bundles["binary"]
    m = load_manifest(run)
    assert m.deployment_artifact == "model.int8-dynamic.onnx"
    assert {a.file: a.portable.file for a in m.artifacts} == {
        "model.onnx": "model.portable.onnx", "model.int8-dynamic.onnx": "model.int8-dynamic.portable.onnx",
        "model.fp16.onnx": "model.fp16.portable.onnx"}
    p = Predictor.from_bundle(run)
    assert p.info.graph == "portable" and p.info.graph_file == "model.int8-dynamic.portable.onnx"
    assert Predictor.from_bundle(run, artifact="fp16").info.graph_file == "model.fp16.portable.onnx"


@pytest.mark.parametrize("kind", KINDS)
def test_predictor_portable_equals_numpy_path(bundles, kind):
    raw = sample_raw(kind, n=17)
    portable = Predictor.from_bundle(bundles[kind])
    numpy_path = Predictor.from_bundle(bundles[kind], graph="model-ready")
    assert portable.info.graph == "portable" and numpy_path.info.graph == "model-ready"
    # bit for bit, except where standardisation is folded into the first layer's weights (float32 rounding)
    folded = kind in ("binary", "multiclass")
    same = (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)) if folded else \
        np.testing.assert_array_equal
    if kind == "window":
        same(portable.predict(raw), numpy_path.predict(raw))
    else:
        np.testing.assert_array_equal(portable.predict(raw), numpy_path.predict(raw))
        same(portable.predict_proba(raw), numpy_path.predict_proba(raw))
    a, b = portable.answers(raw), numpy_path.answers(raw)
    assert set(a) == set(b)
    for k in a:
        if b[k].dtype.kind == "f":
            same(a[k], b[k])
        else:
            np.testing.assert_array_equal(np.asarray(a[k]).astype(b[k].dtype), b[k])


def test_portable_file_rebuilt_when_its_source_or_record_changes(tmp_path):
    run = build_bundle(tmp_path, "binary")
    first = (run / "model.portable.onnx").read_bytes()
    write_bundle_manifest(run)
    assert (run / "model.portable.onnx").read_bytes() == first  # current: left alone
    train = json.loads((run / "train.json").read_text())
    train["labels"] = ["no", "yes"]
    (run / "train.json").write_text(json.dumps(train))
    write_bundle_manifest(run)
    assert Predictor.from_bundle(run).predict(sample_raw("binary", n=3)).tolist()[0] in ("no", "yes")
    model = onnx.load(str(run / "model.onnx"))
    model.doc_string = "re-exported"
    onnx.save(model, str(run / "model.onnx"))
    m = write_bundle_manifest(run)
    meta = {p.key: p.value for p in onnx.load(str(run / m.portable.file)).metadata_props}
    assert meta["seqdeploy.bundle.portable.source_sha256"] == m.deployment.sha256


def test_stale_portable_files_are_removed(tmp_path):
    run = build_bundle(tmp_path, "binary", quantize=True)
    assert (run / "model.fp16.portable.onnx").exists()
    (run / "model.fp16.onnx").unlink()
    q = json.loads((run / "quantize.json").read_text())
    q["candidates"] = [c for c in q["candidates"] if c.get("recipe") != "fp16"]
    (run / "quantize.json").write_text(json.dumps(q))
    write_bundle_manifest(run)
    assert not (run / "model.fp16.portable.onnx").exists()


def test_bundle_without_portable_graph_still_loads_and_predicts(tmp_path):
    """A schema-1 manifest (written before portable graphs) runs the model-ready file with numpy preprocessing."""
    run = build_bundle(tmp_path, "text")
    m = json.loads((run / "manifest.json").read_text())
    m["schema_version"] = 1
    for a in m["artifacts"]:
        a.pop("portable", None)
    (run / "manifest.json").write_text(json.dumps(m))
    for f in run.glob("*.portable.onnx"):
        f.unlink()
    p = Predictor.from_bundle(run)
    assert p.info.graph == "model-ready"
    raw = sample_raw("text", n=6)
    _, expected = reference("text", raw)
    np.testing.assert_allclose(p.predict_proba(raw), expected, atol=1e-6)


def test_tampered_portable_graph_refused(tmp_path):
    from seqdeploy.errors import IntegrityError

    run = build_bundle(tmp_path, "binary")
    with open(run / "model.portable.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IntegrityError, match="model.portable.onnx"):
        Predictor.from_bundle(run)


@pytest.mark.parametrize("kind, raw, match", [
    ("binary", [[1.0, 2.0, 3.0]], r"expected \(n, 4\).*3 values"),
    ("binary", [[1.0, 2.0, float("nan"), 4.0]], "row 0 contains nan"),
    ("text", ["fine", 42], "item 1 is int"),
    ("text", np.zeros((2, 3)), "expected a 1-D list of strings"),
    ("window", np.full((1, 4), np.inf), "row 0 contains inf"),
])
def test_bad_raw_rows_are_one_line_errors_never_answers(bundles, kind, raw, match):
    from seqdeploy.errors import InputValidationError

    p = Predictor.from_bundle(bundles[kind])
    with pytest.raises(InputValidationError, match=match) as info:
        p.predict(raw)
    assert "\n" not in str(info.value)


def test_folded_standardisation_has_no_preprocessing_nodes_and_same_answers(bundles):
    from seqdeploy.bundle.portable import build_portable
    from seqdeploy.preprocess import from_record

    run = bundles["multiclass"]
    train = json.loads((run / "train.json").read_text())
    pre = from_record(train["preprocessing"])
    model = onnx.load(str(run / "model.onnx"))
    plain = build_portable(model, pre, "multiclass", train["labels"], fold=False)
    folded = build_portable(model, pre, "multiclass", train["labels"], fold=True)
    assert {"Sub", "Div"} <= {n.op_type for n in plain.graph.node}
    assert not {"Sub", "Div"} & {n.op_type for n in folded.graph.node}
    raw = np.asarray(sample_raw("multiclass", n=50), np.float32)
    a, b = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"features": raw}) for m in (plain, folded))
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    np.testing.assert_array_equal(a[2], b[2])


def test_library_stages_keep_the_bundle_in_step(trained_mlp_run, tmp_path):
    """export_onnx refreshes the manifest and portable graphs itself; verify_run is a check that leaves the
    manifest to its caller, whose refresh then carries the verification and the golden files."""
    import shutil

    from seqdeploy.bundle.write import refresh_bundle_manifest
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.verify.parity import verify_run

    run = tmp_path / "run"
    shutil.copytree(trained_mlp_run, run, ignore=shutil.ignore_patterns("*.onnx", "manifest.json", "verify.json"))
    export_onnx(run)
    m = load_manifest(run)
    assert m.portable is not None and m.verification is None
    before = (run / "manifest.json").read_bytes()
    verify_run(run, samples=20)
    assert (run / "manifest.json").read_bytes() == before  # the check wrote its report, not the manifest
    refresh_bundle_manifest(run)
    m = load_manifest(run)
    assert m.verification is not None and m.verification.passed
    assert "golden_portable.json" in {f.file for f in m.files}
    assert Predictor.from_bundle(run).info.graph == "portable"


