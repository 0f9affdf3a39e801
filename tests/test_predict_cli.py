"""`seqdeploy predict` / `seqdeploy inspect`, and the Python example that embeds a bundle (Node and the
browser: test_node_client.py, test_web.py)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seqdeploy.app.cli import app
from seqdeploy.runtime.predictor import Predictor
from test_manifest import build_bundle, sample_raw

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_bundles")
    return {k: build_bundle(root, k) for k in ("binary", "text", "window", "multiclass")}


def _csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# --------------------------------------------------------------------------- predict


def test_predict_csv_to_csv_matches_predictor(bundles, tmp_path):
    raw = sample_raw("binary", n=50)
    src = _csv(tmp_path / "in.csv", ["id", "d", "c", "b", "a", "target"],  # other order + extra columns
               [[i, r[3], r[2], r[1], r[0], "x"] for i, r in enumerate(raw)])
    out = tmp_path / "preds.csv"
    res = _invoke("predict", bundles["binary"], "--input", src, "--output", out, "--batch-size", 7)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out)))
    p = Predictor.from_bundle(bundles["binary"])
    assert [r["prediction"] for r in rows] == p.predict(raw).tolist()
    np.testing.assert_allclose([float(r["p_pos"]) for r in rows], p.predict_proba(raw)[:, 1], rtol=1e-5)


def test_predict_npy_to_jsonl_with_json_summary(bundles, tmp_path):
    raw = sample_raw("window", n=30)
    np.save(tmp_path / "in.npy", raw)
    out = tmp_path / "preds.jsonl"
    res = _invoke("predict", bundles["window"], "-i", tmp_path / "in.npy", "-o", out, "--json", "-b", 4)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["rows"] == 30 and summary["format"] == "jsonl" and summary["artifact"] == "model.onnx"
    got = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    np.testing.assert_allclose(got, Predictor.from_bundle(bundles["window"]).predict(raw), rtol=1e-6)


def test_predict_jsonl_text_to_stdout(bundles, tmp_path):
    texts = sample_raw("text", n=12)
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)) + "\n\n")
    res = _invoke("predict", bundles["text"], "--input", src)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["prediction"] for r in rows] == Predictor.from_bundle(bundles["text"]).predict(texts).tolist()


def test_predict_jsonl_rows_keyed_by_feature(bundles, tmp_path):
    raw = sample_raw("multiclass", n=5)
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(dict(zip(["x1", "x2", "x3"], map(float, r)))) for r in raw))
    res = _invoke("predict", bundles["multiclass"], "--input", src, "--output", tmp_path / "o.csv")
    assert res.exit_code == 0, res.output
    assert len(list(csv.DictReader(open(tmp_path / "o.csv")))) == 5


def test_predict_text_csv(bundles, tmp_path):
    src = _csv(tmp_path / "t.csv", ["id", "text"], [[1, "good film"], [2, 'awful, "bad" plot']])
    res = _invoke("predict", bundles["text"], "--input", src)
    assert res.exit_code == 0, res.output
    assert len(res.stdout.strip().splitlines()) == 3


@pytest.mark.parametrize("content, match", [
    ("id,a,b,d\n1,1,2,3\n", r"missing feature column\(s\) \['c'\]"),
    ("a,b,c,d\n1,2,,4\n", "line 2 column 'c' is empty"),
    ("a,b,c,d\n1,2,x,4\n", "line 2 column 'c' = 'x' is not a number"),
    ("a,b,c,d\n1,2,nan,4\n", "row 0 contains nan"),
    ("a,b,c,d\n", "no data rows"),
    ("", "is empty"),
])
def test_predict_bad_csv_exit_2(bundles, tmp_path, content, match):
    src = tmp_path / "bad.csv"
    src.write_text(content)
    out = tmp_path / "never.csv"
    res = _invoke("predict", bundles["binary"], "--input", src, "--output", out)
    assert res.exit_code == 2
    assert " ".join(res.stderr.split()).count("error:") == 1
    import re

    assert re.search(match, " ".join(res.stderr.split())), res.stderr
    assert "Traceback" not in res.output
    assert not out.exists()  # atomic: no half-written predictions


def test_predict_usage_errors(bundles, tmp_path):
    np.save(tmp_path / "x.npy", sample_raw("binary"))
    for args, match in [
        (("--input", tmp_path / "nope.csv"), "does not exist"),
        (("--input", tmp_path / "x.npy", "--output", tmp_path / "o.parquet"), "expected .csv or .jsonl"),
        (("--input", tmp_path / "x.npy", "--json"), "add --output"),
        (("--input", tmp_path / "x.npy", "--artifact", "int2"), "'int2' is not in this bundle"),
    ]:
        res = _invoke("predict", bundles["binary"], *args)
        assert res.exit_code == 2, (args, res.output)
        assert match in " ".join(res.stderr.split()), res.stderr
    res = _invoke("predict", tmp_path / "no_bundle", "--input", tmp_path / "x.npy")
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_predict_tampered_bundle_exit_2(bundles, tmp_path):
    run = shutil.copytree(bundles["binary"], tmp_path / "copy")
    with open(run / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    np.save(tmp_path / "x.npy", sample_raw("binary"))
    res = _invoke("predict", run, "--input", tmp_path / "x.npy")
    assert res.exit_code == 2 and "model.onnx has" in res.stderr


def test_predict_cli_never_imports_tensorflow(bundles, tmp_path):
    np.save(tmp_path / "x.npy", sample_raw("binary", n=3))
    code = (
        "import sys\n"
        f"sys.argv = ['seqdeploy', 'predict', {str(bundles['binary'])!r}, '--input', {str(tmp_path / 'x.npy')!r}, "
        f"'--output', {str(tmp_path / 'o.csv')!r}]\n"
        "from seqdeploy.app.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TF-LOADED' if 'tensorflow' in sys.modules else 'TF-ABSENT', code)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["TF-ABSENT", "0"], out.stderr
    assert len((tmp_path / "o.csv").read_text().splitlines()) == 4


# --------------------------------------------------------------------------- inspect


def test_inspect_bundle_and_onnx(bundles):
    res = _invoke("inspect", bundles["binary"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stderr.split())
    assert "tiny_binary" in text and "model.onnx" in text and "[batch, 4]" in text and "MatMulx1" in text
    res = _invoke("inspect", bundles["text"] / "model.onnx", "--json")
    assert res.exit_code == 0
    info = json.loads(res.stdout)["models"][0]
    assert info["op_counts"]["Gather"] == 1 and info["inputs"][0]["dtype"] == "int32"
    res = _invoke("inspect", bundles["text"] / "nope.onnx")
    assert res.exit_code == 2


# --------------------------------------------------------------------------- examples


def _load_serve():
    spec = importlib.util.spec_from_file_location("serve_example", REPO / "examples/python_app/serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_python_app_serves_predictions(bundles):
    from http.server import ThreadingHTTPServer

    serve = _load_serve()
    p = Predictor.from_bundle(bundles["binary"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), serve.make_handler(p))
    server.RequestHandlerClass.log_message = lambda *a: None
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body):
        req = urllib.request.Request(base + "/predict", data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        raw = sample_raw("binary", n=3)
        rows = [dict(zip("abcd", map(float, r))) for r in raw]
        status, body = post({"inputs": rows, "probabilities": True})
        assert status == 200 and body["predictions"] == p.predict(raw).tolist()
        np.testing.assert_allclose(body["probabilities"], p.predict_proba(raw))
        status, body = post({"inputs": [{"a": 1, "b": 2, "c": 3}]})
        assert status == 400 and "missing feature 'd'" in body["error"]
        with urllib.request.urlopen(base + "/health", timeout=10) as r:
            assert json.loads(r.read())["status"] == "ok"
    finally:
        server.shutdown()
        server.server_close()


def test_serve_example_imports_no_toolchain():
    code = (f"import runpy, sys; runpy.run_path({str(REPO / 'examples/python_app/serve.py')!r}, run_name='x'); "
            "print(sorted(m for m in ('tensorflow', 'onnx', 'typer', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("name, content", [
    ("h.csv", "t0,t1,t2,t3\n1,2,3,4\n50,60,70,80\n"),
    ("noheader.csv", "1,2,3,4\n50,60,70,80\n"),
    ("rows.jsonl", '[1,2,3,4]\n{"input": [50,60,70,80]}\n'),
])
def test_predict_window_inputs(bundles, tmp_path, name, content):
    (tmp_path / name).write_text(content)
    res = _invoke("predict", bundles["window"], "--input", tmp_path / name)
    assert res.exit_code == 0, res.output
    got = [float(v) for v in res.stdout.split()[1:]]
    want = Predictor.from_bundle(bundles["window"]).predict(np.array([[1, 2, 3, 4], [50, 60, 70, 80]]))
    np.testing.assert_allclose(got, want, rtol=1e-9)
