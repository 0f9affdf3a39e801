"""String models in the runtime: custom-op libraries registered from the manifest (Predictor, serve, verify),
the bundle's record of which bindings run it, and a clear error when the library is missing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from seqdeploy.errors import BundleError
from seqdeploy.runtime import extensions
from seqdeploy.runtime.manifest import load_manifest
from seqdeploy.runtime.predictor import Predictor
from string_bundles import TEXTS

pytest.importorskip("onnxruntime_extensions")


@pytest.mark.parametrize("kind", ["lookup", "text"])
def test_predictor_answers_like_keras(string_bundles, kind):
    """TensorFlow is loaded in this process: the regex ops must still run (not return their input)."""
    import keras

    bundle = string_bundles[kind]
    want = keras.saving.load_model(bundle / "model.keras")(np.asarray(TEXTS)).numpy()
    got = Predictor.from_bundle(bundle).answers(TEXTS)
    np.testing.assert_allclose(got["probabilities"], want, atol=1e-6)
    assert got["class_id"].tolist() == want.argmax(1).tolist()
    if kind == "text":  # the vectorizer's lowercase + punctuation strip mattered: these rows differ
        assert not np.allclose(got["probabilities"][0], got["probabilities"][5])


def test_manifest_records_the_library_and_the_bindings(string_bundles):
    text, lookup = load_manifest(string_bundles["text"]), load_manifest(string_bundles["lookup"])
    assert text.custom_op_libraries == ("onnxruntime-extensions",)
    assert "ai.onnx.contrib:StringRegexReplace" in text.contrib_ops
    assert text.binding("python").runs and not text.binding("node").runs and not text.binding("web").runs
    assert "seqdeploy serve" in text.binding("node").note and "Python runtime" in text.binding("web").note
    assert lookup.custom_op_libraries == () and lookup.contrib_ops == ()
    assert all(lookup.binding(b).runs for b in ("python", "node", "web"))
    raw = json.loads((string_bundles["text"] / "manifest.json").read_text())
    assert raw["custom_op_libraries"] == ["onnxruntime-extensions"]
    assert [b["binding"] for b in raw["bindings"] if not b["runs"]] == ["node", "web"]


def test_older_manifest_without_the_fields_derives_them(string_bundles, tmp_path):
    run = shutil.copytree(string_bundles["text"], tmp_path / "old")
    data = json.loads((run / "manifest.json").read_text())
    del data["custom_op_libraries"], data["bindings"]
    (run / "manifest.json").write_text(json.dumps(data))
    m = load_manifest(run)
    assert m.custom_op_libraries == ("onnxruntime-extensions",) and not m.binding("node").runs
    assert Predictor.from_bundle(run).answers(TEXTS[:2])["label"].shape == (2,)


def test_missing_library_names_the_install(string_bundles, monkeypatch):
    lib = extensions.LIBRARIES["ai.onnx.contrib"]
    monkeypatch.setitem(extensions.LIBRARIES, "ai.onnx.contrib",
                        extensions.CustomOpLibrary(lib.domain, "seqdeploy_no_such_module", lib.package, lib.extra))
    with pytest.raises(BundleError, match=r"pip install 'seqdeploy\[strings\]'"):
        Predictor.from_bundle(string_bundles["text"])
    assert Predictor.from_bundle(string_bundles["lookup"]).answers(["red"])["label"].shape == (1,)  # not needed


def test_library_path_and_domains():
    path = extensions.extensions_library_path()
    import onnxruntime_extensions

    assert path == onnxruntime_extensions.get_library_path()
    assert extensions.domains_of(["ai.onnx.contrib:StringLower", "ai.onnx.ml:LabelEncoder", "com.microsoft:X"]) == \
        ("ai.onnx.contrib",)
    assert extensions.packages_for(["ai.onnx.ml:LabelEncoder"]) == ()
    # com.microsoft ops (quantized graphs) are built into every onnxruntime binding
    assert all(b.runs for b in extensions.binding_support(["com.microsoft:QGemm", "ai.onnx.ml:LabelEncoder"]))


def test_served_model_registers_the_library(string_bundles):
    from seqdeploy.serve.model import ServedModel

    served = ServedModel.load(string_bundles["text"])
    text = np.asarray(TEXTS, dtype=object)
    out = served.run_v2([{"text": text}])[0]
    want = Predictor.from_bundle(string_bundles["text"]).answers(TEXTS)
    np.testing.assert_allclose(out["probabilities"], want["probabilities"], atol=1e-7)


def test_verify_runs_the_contrib_graphs(string_bundles, tmp_path):
    import keras

    from seqdeploy.preprocess import NoPreprocessing
    from seqdeploy.verify.parity import onnx_runner
    from seqdeploy.verify.portable import check_portable

    bundle = string_bundles["text"]
    model = keras.saving.load_model(bundle / "model.keras")
    want = model(np.asarray(TEXTS)).numpy()
    runner = onnx_runner(bundle / "model.onnx")  # the parity check's session: libraries registered
    got = runner.session.run(None, {"text": np.asarray(TEXTS, dtype=object)})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    check = check_portable(tmp_path, bundle / "model.onnx", model, np.asarray(TEXTS, dtype=object), NoPreprocessing(),
                           "multiclass", ["no", "yes"], write_golden=False)
    assert check.passed and check.rows == len(TEXTS) and check.label_agreement == 1.0, check.failures


def test_inspect_says_where_it_runs(string_bundles):
    from typer.testing import CliRunner

    from seqdeploy.app.cli import app

    out = CliRunner().invoke(app, ["inspect", str(string_bundles["text"])], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "custom-op libraries: onnxruntime-extensions" in out.output
    assert "runs on node: no" in out.output and "runs on web: no" in out.output and "runs on python: yes" in out.output
    assert "seqdeploy serve" in out.output


def test_ray_scorer_registers_the_library_and_refuses_early_without_it(string_bundles, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("ray")
    from seqdeploy.scoring.ray import BundleScorer, pack_bundle
    from seqdeploy.scoring.tables import plan_layout

    bundle = string_bundles["text"]
    manifest = load_manifest(bundle)
    layout = plan_layout(manifest, ["id", "text"], ["id"], where="the dataset")
    scorer = BundleScorer(pack_bundle(bundle), layout)  # the actor's own Predictor, from the shipped bundle
    out = scorer(pa.table({"id": list(range(len(TEXTS))), "text": TEXTS})).to_pydict()
    want = Predictor.from_bundle(bundle).answers(TEXTS)
    assert out["prediction"] == want["label"].tolist() and out["id"] == list(range(len(TEXTS)))
    np.testing.assert_allclose(out["p_yes"], want["probabilities"][:, 1], atol=1e-6)

    lib = extensions.LIBRARIES["ai.onnx.contrib"]
    monkeypatch.setitem(extensions.LIBRARIES, "ai.onnx.contrib",
                        extensions.CustomOpLibrary(lib.domain, "seqdeploy_no_such_module", lib.package, lib.extra))
    with pytest.raises(BundleError, match=r"bundle 'strings_text' uses ai.onnx.contrib ops.*seqdeploy\[strings\]"):
        pack_bundle(bundle)  # on the driver, before any worker starts


def test_feature_space_bundle_takes_the_dict_of_raw_features(string_bundles):
    """keras-io's structured-data recipe: FeatureSpace inside the model, one raw input per feature."""
    import keras

    from string_bundles import feature_rows

    bundle = string_bundles["features"]
    m = load_manifest(bundle)
    assert sorted(t.name for t in m.portable.inputs) == ["age", "cp", "sex", "thal"] and m.custom_op_libraries == ()
    rows = feature_rows()
    want = keras.saving.load_model(bundle / "model.keras")(rows).numpy()[:, 0]
    got = Predictor.from_bundle(bundle).answers({k: v.tolist() for k, v in rows.items()})  # plain lists, per key
    np.testing.assert_allclose(got["probabilities"][:, 1], want, atol=1e-6)


def test_bench_onnxruntime_runners_register_the_library_of_a_string_graph(string_bundles):
    """``ort:fp32`` (plain session.run) and the deployed runner without a manifest load a graph with
    ``ai.onnx.contrib`` ops as an application does (the library registered) and answer like Predictor."""
    from seqdeploy.bench.runners.onnxruntime import DeployedRunner, OrtRunner, graph_libraries

    bundle = string_bundles["text"]
    assert graph_libraries(bundle / "model.onnx") == [extensions.extensions_library_path()]
    assert graph_libraries(string_bundles["lookup"] / "model.onnx") == []
    x = np.asarray(TEXTS, dtype=object).reshape(len(TEXTS), *load_manifest(bundle).inputs[0].shape[1:])
    want = next(iter(Predictor.from_bundle(bundle).run({load_manifest(bundle).inputs[0].name: x}).values()))
    for runner in (OrtRunner(bundle / "model.onnx"), DeployedRunner(bundle / "model.onnx")):
        runner.prepare(1)
        runner.set_batch(len(x))
        np.testing.assert_allclose(runner.infer({"x": x})[0], want, atol=1e-6)
        runner.close()
