"""examples/node_client: raw rows (CSV lines, texts) -> portable ONNX in onnxruntime-node -> Python's answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from portable_bundles import EDGE_TEXTS, GOLDEN, long_review, write_golden
from seqdeploy.runtime.predictor import Predictor
from test_manifest import build_bundle, sample_raw

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "examples/node_client"


@pytest.fixture(scope="session")  # session scope: checked before the bundles are trained
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("NODE CLIENT NOT TESTED: `node` is not on PATH (install Node.js >= 18, then `make js`)")
    if not (CLIENT / "node_modules/onnxruntime-node/package.json").is_file():
        pytest.skip(f"NODE CLIENT NOT TESTED: onnxruntime-node is not installed in {CLIENT.relative_to(REPO)}: "
                    f"run `make js` (npm ci --ignore-scripts)")
    return exe


def run_client(node: str, bundle: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([node, str(CLIENT / "index.js"), str(bundle), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NODE_PATH": str(CLIENT / "node_modules")})


def answers(node: str, bundle: Path, *args: str, stdin: str | None = None) -> dict:
    out = run_client(node, bundle, "--json", *args, stdin=stdin)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)["outputs"]


def assert_same(got: dict, want: dict[str, np.ndarray]) -> None:
    """Labels and class ids exactly, probabilities within 1e-5 of the Python runtime."""
    assert got["label"]["data"] == [str(v) for v in want["label"]]
    assert got["class_id"]["data"] == want["class_id"].tolist()
    assert got["probabilities"]["shape"] == list(want["probabilities"].shape)
    np.testing.assert_allclose(np.reshape(got["probabilities"]["data"], want["probabilities"].shape),
                               want["probabilities"], atol=1e-5, rtol=0)


def csv_line(row) -> str:
    return ",".join(repr(float(v)) for v in row)  # float32 -> the shortest decimal that gives it back


@pytest.mark.parametrize("kind", ["tabular", "text", "int8"])
def test_check_mode_matches_golden(node, portable_bundles, kind):
    bundle = portable_bundles[kind]
    out = run_client(node, bundle, "--check")
    assert out.returncode == 0, out.stdout + out.stderr
    golden = json.loads((bundle / GOLDEN).read_text())
    n = golden["inputs"][next(iter(golden["inputs"]))]["shape"][0]
    assert f"{n} rows match {GOLDEN}" in out.stdout
    assert out.stdout.count(" ok") == len(golden["outputs"]) == 3


def test_csv_lines_give_python_labels(node, portable_bundles):
    bundle = portable_bundles["tabular"]
    p = Predictor.from_bundle(bundle)
    golden = json.loads((bundle / GOLDEN).read_text())
    raw = np.asarray(golden["inputs"]["features"]["data"], np.float32).reshape(golden["inputs"]["features"]["shape"])
    want = p.answers(raw)
    assert len(set(want["label"])) == 2, "the golden rows should cover both classes"
    # one CSV line per argument, in the manifest's feature order
    assert_same(answers(node, bundle, *[csv_line(r) for r in raw]), want)
    # a CSV file on stdin with a header in another order and an extra column: columns are picked by name
    names = p.pre.feature_names
    perm = np.random.default_rng(0).permutation(len(names))
    lines = ["id," + ",".join(names[j] for j in perm)]
    lines += [f"{i}," + csv_line(r[perm]) for i, r in enumerate(raw)]
    assert_same(answers(node, bundle, stdin="\n".join(lines) + "\n"), want)
    # the human output: one label per row, with the class names
    out = run_client(node, bundle, csv_line(raw[0]))
    assert out.returncode == 0 and out.stdout.split("\t")[0] == want["label"][0]
    assert f"{p.manifest.labels[1]}={want['probabilities'][0, 1]:.4f}" in out.stdout


def test_text_edge_cases_give_python_answers(node, portable_bundles):
    bundle = portable_bundles["text"]
    texts = ["I loved this film, the acting was great", *EDGE_TEXTS, long_review(bundle)]
    assert texts[1] == "" and len(texts[-1].split()) >= 10 * Predictor.from_bundle(bundle).pre.sequence_length
    want = Predictor.from_bundle(bundle).answers(texts)
    assert_same(answers(node, bundle, "--", *texts), want)
    # reviews on stdin, one per line
    assert_same(answers(node, bundle, stdin="\n".join(texts[2:]) + "\n"),
                Predictor.from_bundle(bundle).answers(texts[2:]))


@pytest.mark.parametrize("kind", ["window", "multiclass"])
def test_series_regression_and_multiclass_rows(node, tmp_path, kind):
    """A series window (regression: the prediction in target units) and a 3-class table, from CSV lines."""
    bundle = build_bundle(tmp_path, kind)
    raw = np.asarray(sample_raw(kind, n=6, seed=5), np.float32)
    want = Predictor.from_bundle(bundle).answers(raw)
    got = answers(node, bundle, *[csv_line(r) for r in raw])
    if kind == "window":
        assert list(got) == ["prediction"] and got["prediction"]["shape"] == [6]
        np.testing.assert_allclose(got["prediction"]["data"], want["prediction"], rtol=1e-6, atol=1e-5)
    else:
        assert_same(got, want)
    write_golden(bundle, raw)
    out = run_client(node, bundle, "--check")
    assert out.returncode == 0 and "6 rows match" in out.stdout, out.stdout + out.stderr


def test_deployment_artifact_by_default_others_by_name(node, tmp_path):
    bundle = build_bundle(tmp_path, "binary", quantize=True, chosen="model.int8-dynamic.onnx")
    raw = np.asarray(sample_raw("binary", n=3, seed=2), np.float32)
    rows = [csv_line(r) for r in raw]
    for args, file in [((), "model.int8-dynamic.portable.onnx"), (("--artifact", "fp16"), "model.fp16.portable.onnx"),
                       (("--artifact", "model.onnx"), "model.portable.onnx")]:
        out = run_client(node, bundle, "--json", *args, *rows)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert got["file"] == file
        assert_same(got["outputs"], Predictor.from_bundle(bundle, artifact=args[1] if args else None).answers(raw))
    out = run_client(node, bundle, "--artifact", "int4", rows[0])
    assert out.returncode == 2 and 'artifact "int4" is not in the manifest (it lists model.onnx' in out.stderr


def test_mismatch_tampering_and_bad_rows_are_reported(node, portable_bundles, tmp_path):
    run = shutil.copytree(portable_bundles["text"], tmp_path / "bad")
    golden = json.loads((run / GOLDEN).read_text())
    labels = golden["outputs"]["label"]["data"]
    labels[0] = "negative" if labels[0] == "positive" else "positive"
    (run / GOLDEN).write_text(json.dumps(golden))
    out = run_client(node, run, "--check")
    assert out.returncode == 1 and "MISMATCH" in out.stdout and "label: [0]" in out.stdout, out.stdout

    with open(run / "model.portable.onnx", "ab") as fh:
        fh.write(b"\0")
    out = run_client(node, run, "a review")
    assert out.returncode == 2 and "sha256" in out.stderr and "differs from the manifest" in out.stderr

    tab = portable_bundles["tabular"]
    for row, match in [("1,2,3", "row 0 has 3 values; expected 30 (mean_radius"),
                       (",".join(["1"] * 29 + ["x"]), 'row 0 value 29: "x" is not a finite number'),
                       (",".join(["1"] * 29 + ["nan"]), '"nan" is not a finite number')]:
        out = run_client(node, tab, row)
        assert out.returncode == 2 and match in out.stderr, out.stderr
        assert "    at " not in out.stderr  # a message, not a stack trace


def test_numeric_and_categorical_rows_from_a_csv(node, customers_bundle):
    """A bundle with two raw inputs (numeric features + categories): CSV rows with a header, unseen values too."""
    from portable_bundles import customer_rows, typed_customers

    run = customers_bundle
    rows = customer_rows(12)
    rows[3]["plan"] = "platinum"  # never seen in training: the out-of-vocabulary bucket
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(r[h] for h in header) for r in rows]
    got = answers(node, run, stdin="\n".join(lines) + "\n")
    assert_same(got, Predictor.from_bundle(run).answers(typed_customers(rows)))
    bad = run_client(node, run, stdin="customer,plan\nc1,basic\n")
    assert bad.returncode == 2 and "lacks column(s)" in bad.stderr and "Error:" not in bad.stderr


def test_string_lookup_model_answers_like_python(node, string_bundles):
    """A Keras model taking raw strings (StringLookup: ai.onnx.ml LabelEncoder) runs in onnxruntime-node."""
    from string_bundles import TEXTS

    bundle = string_bundles["lookup"]
    out = run_client(node, bundle, "--check")
    assert out.returncode == 0 and f"{len(TEXTS)} rows match {GOLDEN}" in out.stdout, out.stdout + out.stderr
    rows = ["red", "blue", "purple", "GREEN"]
    want = Predictor.from_bundle(bundle).answers(rows)
    assert len(set(want["probabilities"][:, 0].tolist())) >= 3, "the rows should hit different vocabulary entries"
    assert_same(answers(node, bundle, "--", *rows), want)


def test_contrib_ops_model_is_refused_with_what_to_do(node, string_bundles):
    """TextVectorization's regex ops (onnxruntime-extensions) cannot be registered in onnxruntime-node."""
    out = run_client(node, string_bundles["text"], "--check")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "model.portable.onnx cannot run here" in out.stderr and "StringRegexReplace" in out.stderr
    assert "seqdeploy serve" in out.stderr and "Python runtime" in out.stderr


def test_feature_space_bundle_with_four_raw_inputs(node, string_bundles):
    """FeatureSpace inside the model (int, string and float raw inputs, one per feature): the golden rows."""
    bundle = string_bundles["features"]
    out = run_client(node, bundle, "--check", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    got = json.loads(out.stdout)
    golden = json.loads((bundle / GOLDEN).read_text())
    assert got["ok"] and got["outputs"]["label"]["data"] == golden["outputs"]["label"]["data"]
    np.testing.assert_allclose(got["outputs"]["probabilities"]["data"], golden["outputs"]["probabilities"]["data"],
                               atol=1e-5)
