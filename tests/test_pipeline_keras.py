"""pipeline MODEL.keras --data SAMPLE: a model trained elsewhere -> a verified, portable bundle whose portable
graph takes the model's own inputs and equals Keras on them; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from keras_zoo import sample
from seqdeploy.app.cli import app
from seqdeploy.app.pipeline import PipelineOptions

runner = CliRunner()
FAST = PipelineOptions(quantize_mode="dynamic", quantize_rounds=2, bench_batches=(1,), bench_duration=0.05,
                       tune_batches=(1,), tune_duration=0.1, bench_vs=())


def _keras_out(path: Path, layers: Path, x: dict[str, np.ndarray]) -> np.ndarray:
    from seqdeploy.export.convert import load_keras_model

    from seqdeploy.verify.feeds import input_specs

    model = load_keras_model(path, custom_objects=[layers])
    xs = [x[s.name] for s in input_specs(model)]
    return np.asarray(model(xs if len(xs) > 1 else xs[0], training=False))


def _write_jsonl(path: Path, data: dict[str, np.ndarray]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(len(next(iter(data.values())))):
            fh.write(json.dumps({k: v[i].tolist() for k, v in data.items()}) + "\n")


def _check_bundle(bundle: Path, zoo: dict, name: str, raw: dict[str, np.ndarray], labels=None) -> None:
    from seqdeploy.runtime import Predictor

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["preprocessing"]["kind"] == "none" and manifest["verification"]["passed"]
    p = Predictor.from_bundle(bundle)
    assert p.info.graph == "portable"
    assert set(p.raw_input_names) == set(raw)  # the model's own inputs
    feed = raw if len(raw) > 1 else next(iter(raw.values()))
    answers = p.answers(feed)
    want = _keras_out(zoo[name], zoo["layers"], raw)
    if "probabilities" in answers:
        assert np.abs(answers["probabilities"] - want).max() <= 1e-5
        ids = np.argmax(want, axis=1)
        np.testing.assert_array_equal(answers["class_id"], ids)
        if labels:
            np.testing.assert_array_equal(p.predict(feed), np.asarray(labels)[ids])
    else:
        assert np.abs(answers["prediction"] - want.reshape(-1)).max() <= 1e-5
        assert np.abs(p.predict(feed) - want.reshape(-1)).max() <= 1e-5
    assert not list(bundle.parent.glob(f".{bundle.name}.*"))  # no temporary directory left behind


def test_bilstm_from_csv_with_labels(keras_zoo, tmp_path):
    from seqdeploy.app.pipeline_keras import run_keras_pipeline

    ids = sample("bilstm", n=16)["ids"]
    lengths = [7 - (i % 3) for i in range(len(ids))]  # variable-length rows, written without padding
    with open(tmp_path / "sample.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["ids", "label"])
        for row, n in zip(ids, lengths):
            w.writerow([" ".join(str(v) for v in row[:n]), "b"])
    r = run_keras_pipeline(keras_zoo["bilstm"], tmp_path / "sample.csv", out=tmp_path / "bundle",
                           labels=["a", "b", "c"], target="label", options=FAST)
    assert [s.name for s in r.stages] == ["export", "verify", "bundle", "quantize", "tune", "bench"]
    print({s.name: round(s.seconds, 2) for s in r.stages})
    assert r.summary["portable"]["max_abs_error"] <= 1e-5
    q = json.loads((tmp_path / "bundle" / "quantize.json").read_text())
    assert q["task"] == "multiclass" and q["metric_name"] == "accuracy"
    padded = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        padded[i, :n] = ids[i, :n]
    _check_bundle(tmp_path / "bundle", keras_zoo, "bilstm", {"ids": padded}, labels=["a", "b", "c"])
    # predict on raw JSONL rows of any length (right-padded per batch as in the sample)
    _write_jsonl(tmp_path / "rows.jsonl", {"ids": ids[:4]})
    res = runner.invoke(app, ["predict", str(tmp_path / "bundle"), "-i", str(tmp_path / "rows.jsonl")])
    assert res.exit_code == 0, res.output
    want = np.asarray(["a", "b", "c"])[np.argmax(_keras_out(keras_zoo["bilstm"], keras_zoo["layers"],
                                                            {"ids": ids[:4]}), axis=1)]
    assert [ln.split(",")[0] for ln in res.stdout.strip().splitlines()[1:]] == list(want)


def test_two_inputs_from_jsonl_regression(keras_zoo, tmp_path):
    from seqdeploy.app.pipeline_keras import run_keras_pipeline

    data = sample("two_inputs", n=16)
    _write_jsonl(tmp_path / "sample.jsonl", data)
    r = run_keras_pipeline(keras_zoo["two_inputs"], tmp_path / "sample.jsonl", out=tmp_path / "b", options=FAST)
    assert json.loads((tmp_path / "b" / "train.json").read_text())["task"] == "regression"
    assert r.summary["verify"]["passed"]
    _check_bundle(tmp_path / "b", keras_zoo, "two_inputs", data)
    # verify BUNDLE re-checks it (golden rows + generated feeds, portable graph on the golden rows)
    res = runner.invoke(app, ["verify", str(tmp_path / "b"), "--json"])
    assert res.exit_code == 0, res.output
    v = json.loads(res.stdout)
    assert v["passed"] and v["samples"] == 5 and v["portable"]["max_abs_error"] <= 1e-5
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["verification"]["passed"]
    # served like a spec bundle: one tensor per model input
    from seqdeploy.serve.model import ServedModel

    served = ServedModel.load(tmp_path / "b")
    assert [t["name"] for t in served.metadata()["inputs"]] == ["num", "words"]
    feeds, _ = served.check_v2([("num", "FP32", data["num"][:3]), ("words", "INT32", data["words"][:3])], 64)
    want = _keras_out(keras_zoo["two_inputs"], keras_zoo["layers"], {k: v[:3] for k, v in data.items()})
    assert np.abs(served.run_v2([feeds])[0]["prediction"] - want.reshape(-1)).max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["transformer", "fcn"])
def test_cli_pipeline_on_zoo_models(keras_zoo, tmp_path, name):
    data = sample(name, n=16)
    np.savez(tmp_path / "sample.npz", **data)
    res = runner.invoke(app, ["pipeline", str(keras_zoo[name]), "--data", str(tmp_path / "sample.npz"),
                              "--out", str(tmp_path / "b"), "--custom-objects", str(keras_zoo["layers"]),
                              "--labels", "no,yes", "--bench-duration", "0.05", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["summary"]["verify"]["passed"]
    _check_bundle(tmp_path / "b", keras_zoo, name, data, labels=["no", "yes"])


def _fails(args: list[str], out: Path, *needles: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), res.output
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


def test_bad_input_is_one_line_exit_2_and_nothing_written(keras_zoo, tmp_path):
    out = tmp_path / "bundle"
    np.savez(tmp_path / "s.npz", **sample("transformer", n=4))
    with open(tmp_path / "wrong.csv", "w", encoding="utf-8") as fh:
        fh.write("text,label\nhello,1\n")
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 truncated")
    _fails(["pipeline", str(keras_zoo["transformer"]), "--data", str(tmp_path / "s.npz"), "--out", str(out)], out,
           "'TransformerBlock' (layer 'transformer_block')", "custom objects")
    _fails(["pipeline", str(keras_zoo["two_inputs"]), "--data", str(tmp_path / "wrong.csv"), "--out", str(out),
            "--target", "label"], out, "wrong.csv", "do not match the model inputs ['num', 'words']")
    _fails(["pipeline", str(tmp_path / "bad.keras"), "--data", str(tmp_path / "s.npz"), "--out", str(out)], out,
           "bad.keras", "not a saved Keras model")
    raising = tmp_path / "layers.py"
    raising.write_text("import keras\nraise ImportError('needs a GPU')\n", encoding="utf-8")
    _fails(["pipeline", str(keras_zoo["transformer"]), "--data", str(tmp_path / "s.npz"), "--out", str(out),
            "--custom-objects", str(raising)], out, "layers.py:2 raised ImportError: needs a GPU")
    _fails(["pipeline", str(keras_zoo["fcn"]), "--out", str(out)], out, "--data SAMPLE")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["pipeline", str(keras_zoo["fcn"]), "--data", str(tmp_path / "s.npz"), "--out", str(taken)])
    assert res.exit_code == 2 and "is not a bundle made from a model file" in res.output
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    _fails(["pipeline", str(keras_zoo["fcn"]), "--data", str(tmp_path / "s.npz"), "--out", str(out)], out,
           "input 'series' samples have shape [10]; the model expects [16, 1]")


def test_lambda_model_needs_unsafe(tmp_path):
    import keras

    i = keras.Input((3,), name="x")
    m = keras.Model(i, keras.layers.Lambda(lambda t: t * 2.0, name="double")(i))
    m.save(tmp_path / "lam.keras")
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.float32))
    out = tmp_path / "b"
    _fails(["pipeline", str(tmp_path / "lam.keras"), "--data", str(tmp_path / "x.npy"), "--out", str(out)], out,
           "Lambda layer 'double'", "unsafe")


def test_two_heads_dict_output_verifies_and_the_portable_graph_passes_the_second_head(tmp_path):
    """keras.Model(outputs={"kind": softmax, "price": linear}): Keras flattens a dict output by key, and so do the
    ONNX outputs; the task comes from the first ("kind"), "price" passes through the portable graph."""
    import keras

    from seqdeploy.app.pipeline_keras import run_keras_pipeline
    from seqdeploy.runtime import Predictor

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), name="features")
    h = keras.layers.Dense(16, activation="relu")(inp)
    model = keras.Model(inp, {"price": keras.layers.Dense(1, name="price")(h),
                              "kind": keras.layers.Dense(3, activation="softmax", name="kind")(h)})
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
    np.savez(tmp_path / "sample.npz", features=x)
    r = run_keras_pipeline(tmp_path / "m.keras", tmp_path / "sample.npz", out=tmp_path / "b", options=FAST)
    assert r.summary["verify"]["passed"]
    want = model(x[:5], training=False)
    got = Predictor.from_bundle(tmp_path / "b").answers(x[:5])
    assert got["probabilities"].shape == (5, 3) and np.abs(got["probabilities"] - np.asarray(want["kind"])).max() <= 1e-5
    assert np.abs(got["price"] - np.asarray(want["price"])).max() <= 1e-5
    # predict writes the further output beside the first one's columns: CSV, JSONL and Parquet alike
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write_jsonl(tmp_path / "rows.jsonl", {"features": x[:5]})
    pq.write_table(pa.table({"features": [r.tolist() for r in x[:5]]}), tmp_path / "rows.parquet")
    res = runner.invoke(app, ["predict", str(tmp_path / "b"), "-i", str(tmp_path / "rows.jsonl")])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln and not ln.startswith("ok ")]
    assert lines[0] == "prediction,p_0,p_1,p_2,price"
    csv_price = np.array([float(ln.split(",")[-1]) for ln in lines[1:]])
    assert np.abs(csv_price - np.asarray(want["price"]).reshape(-1)).max() <= 1e-5
    for out in ("o.jsonl", "o.parquet"):
        res = runner.invoke(app, ["predict", str(tmp_path / "b"), "-i", str(tmp_path / "rows.parquet"), "-o", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in (tmp_path / "o.jsonl").read_text().splitlines()]
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.column_names == ["prediction", "p_0", "p_1", "p_2", "price"]
    for got in ([r["price"] for r in rows], table.column("price").to_pylist()):
        assert np.abs(np.array(got) - np.asarray(want["price"]).reshape(-1)).max() <= 1e-5
