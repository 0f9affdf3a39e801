"""`seqdeploy predict --engine ray`: a real local Ray (num_cpus=2), started once for these tests.

The Ray output is compared row for row with the local engine: 200k rows of the
seed spec and 20k texts of the sentiment spec (both trained briefly), and the
tiny hand-built bundle for the faults (killed actor, bad rows, refused overwrite).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
ray = pytest.importorskip("ray")
import pyarrow.parquet as pq  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from seqdeploy.app.cli import app  # noqa: E402
from seqdeploy.scoring.ray import KILL_ONCE_ENV, pack_bundle, unpack_bundle  # noqa: E402
from seqdeploy.runtime.predictor import Predictor  # noqa: E402
from test_manifest import build_bundle, sample_raw  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
FEATURES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("ray_bundles"), "binary")


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _read_parts(path: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(path.glob("part-*.parquet"))])


def _tiny_rows(directory: Path, n: int, bad: tuple[int, ...] = ()) -> np.ndarray:
    """``n`` raw rows of the tiny binary bundle in two Parquet files (id, customer, a-d); NaN at ``bad``."""
    raw = sample_raw("binary", n=n, seed=21)
    c = raw[:, 2].copy()
    c[list(bad)] = np.nan
    t = pa.table({"id": np.arange(n), "customer": [f"c{i}" for i in range(n)], "a": raw[:, 0], "b": raw[:, 1],
                  "c": c, "d": raw[:, 3]})
    directory.mkdir(parents=True, exist_ok=True)
    half = n // 2
    pq.write_table(t.slice(0, half), directory / "part1.parquet", row_group_size=5000)
    pq.write_table(t.slice(half), directory / "part2.parquet", row_group_size=5000)
    return raw


def test_bundle_ships_as_bytes_and_is_checked(tiny, tmp_path):
    payload = pack_bundle(tiny)
    assert "manifest.json" in payload.files and "model.onnx" in payload.files
    root = unpack_bundle(payload, tmp_path / "w")
    assert Predictor.from_bundle(root).predict(sample_raw("binary", 5)).tolist() == \
        Predictor.from_bundle(tiny).predict(sample_raw("binary", 5)).tolist()
    from dataclasses import replace

    from seqdeploy.errors import IntegrityError

    bad = replace(payload, files={**payload.files, "manifest.json": payload.files["manifest.json"] + b" "})
    with pytest.raises(IntegrityError, match="manifest.json has sha256"):
        unpack_bundle(bad, tmp_path / "x")
    corrupt = replace(payload, files={**payload.files, "model.onnx": payload.files["model.onnx"][:-1] + b"\0"})
    with pytest.raises(IntegrityError, match="model.onnx"):  # the worker's load checks every file
        Predictor.from_bundle(unpack_bundle(corrupt, tmp_path / "y"))


def test_predict_dataset_on_any_ray_dataset(local_ray, tiny):
    """The library call: a Dataset from memory (no file or row columns) in, a lazy Dataset of predictions out."""
    from seqdeploy.scoring.ray import predict_dataset

    raw = sample_raw("binary", n=3000, seed=22)
    table = pa.table({"key": [f"k{i}" for i in range(3000)], **{f: raw[:, j] for j, f in enumerate(FEATURES)}})
    ds = predict_dataset(ray.data.from_arrow(table), tiny, keep="key", batch_size=500)
    out = pa.concat_tables([ray.get(r) for r in ds.to_arrow_refs()])
    order = np.argsort([int(k[1:]) for k in out.column("key").to_pylist()])
    assert out.num_rows == 3000 and out.column_names == ["prediction", "p_neg", "p_pos", "key"]
    assert np.asarray(out.column("prediction").to_pylist())[order].tolist() == \
        Predictor.from_bundle(tiny).predict(raw).tolist()


def test_ray_killed_actor_retried_rows_once_in_order(local_ray, tiny, tmp_path, monkeypatch):
    raw = _tiny_rows(tmp_path / "rows", 30_000)
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    res = _invoke("predict", tiny, "-i", tmp_path / "rows", "-o", tmp_path / "out", "--engine", "ray",
                  "--actors", 2, "--batch-size", 2000, "--keep", "id,customer", "--json")
    assert res.exit_code == 0, res.output
    assert marker.exists()  # an actor process really died mid-run
    summary = json.loads(res.stdout)
    assert summary["rows"] == 30_000 and summary["actors"] == 2 and summary["files"] == 2
    assert summary["engine"] == "ray" and summary["rows_per_second"] > 0
    out = _read_parts(tmp_path / "out")
    assert out.column("id").to_pylist() == list(range(30_000))  # every row exactly once, in input order
    assert out.column("customer")[29_999].as_py() == "c29999"
    p = Predictor.from_bundle(tiny)
    assert out.column("prediction").to_pylist() == p.predict(raw).tolist()
    np.testing.assert_allclose(out.column("p_pos").to_numpy(), p.predict_proba(raw)[:, 1], rtol=1e-6)
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_ray_bad_rows_fail_then_skip_then_refuse_overwrite(local_ray, tiny, tmp_path):
    raw = _tiny_rows(tmp_path / "rows", 12_000, bad=(3, 9_500))
    # a third file, JSONL, with a line that is not JSON (integers where the Parquet files have floats)
    (tmp_path / "rows" / "part3.jsonl").write_text(
        '{"id": 12000, "customer": "x", "a": 1, "b": 2, "c": 3, "d": 4}\n{"id": 12001, "a": \n'
        '{"id": 12002, "customer": "y", "a": 1, "b": 2, "c": 3, "d": 5}\n')
    res = _invoke("predict", tiny, "-i", tmp_path / "rows", "-o", tmp_path / "out", "--engine", "ray",
                  "--actors", 1)
    assert res.exit_code == 2, res.output
    msg = " ".join(res.stderr.split())
    assert msg.count("error:") == 1 and "Traceback" not in res.output, msg
    # batches run in parallel: the run stops at whichever bad row a worker meets first
    assert (f"{tmp_path / 'rows' / 'part1.parquet'} row 3: column 'c' = nan" in msg
            or f"{tmp_path / 'rows' / 'part2.parquet'} row 3500: column 'c' = nan" in msg
            or f"{tmp_path / 'rows' / 'part3.jsonl'} row 1: line 2 is not valid JSON" in msg), msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows"]  # nothing that looks like an output

    res = _invoke("predict", tiny, "-i", tmp_path / "rows", "-o", tmp_path / "out", "--engine", "ray",
                  "--actors", 2, "--on-bad-row", "skip", "--keep", "id", "--json", "-b", 1000)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["skipped"] == 3 and summary["rows"] == 12_000 and summary["files"] == 3
    side = [json.loads(x) for x in (tmp_path / "out" / "_skipped.jsonl").read_text().splitlines()]
    assert [(Path(s["file"]).name, s["row"]) for s in side] == [("part1.parquet", 3), ("part2.parquet", 3_500),
                                                                ("part3.jsonl", 1)]
    assert side[1]["values"]["id"] == 9_500 and "nan" in side[1]["reason"]
    assert side[2]["reason"].startswith("line 2 is not valid JSON")
    out = _read_parts(tmp_path / "out")
    good = [i for i in range(12_000) if i not in (3, 9_500)]
    assert out.column("id").to_pylist() == good + [12_000, 12_002]
    p = Predictor.from_bundle(tiny)
    want = p.predict(np.vstack([raw[good], [[1, 2, 3, 4], [1, 2, 3, 5]]])).tolist()
    assert out.column("prediction").to_pylist() == want

    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    res = _invoke("predict", tiny, "-i", tmp_path / "rows", "-o", tmp_path / "out", "--engine", "ray")
    assert res.exit_code == 2 and "already exists" in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    from seqdeploy.scoring.ray import predict_files_ray
    from seqdeploy.errors import UsageError

    with pytest.raises(UsageError, match="already exists"):  # the library refuses too
        predict_files_ray(tiny, tmp_path / "rows", tmp_path / "out")


# --------------------------------------------------------------------------- the seed specs


@pytest.fixture(scope="module")
def seed_bundle(trained_mlp_run, tmp_path_factory) -> Path:
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.bundle.write import write_bundle_manifest

    run = tmp_path_factory.mktemp("ray_seed") / "run"
    shutil.copytree(trained_mlp_run, run)
    export_onnx(run)
    write_bundle_manifest(run)
    return run


@pytest.fixture(scope="module")
def sentiment_bundle(tmp_path_factory) -> Path:
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.train.local import train

    run = tmp_path_factory.mktemp("ray_sentiment") / "run"
    train(REPO / "models" / "sentiment_lstm.toml", out=run, epochs=2)
    export_onnx(run)
    write_bundle_manifest(run)
    return run


def _local_vs_ray(bundle: Path, src: Path, tmp_path: Path, keep: str, batch: int) -> tuple[pa.Table, pa.Table]:
    res = _invoke("predict", bundle, "-i", src, "-o", tmp_path / "local.parquet", "--keep", keep, "--json")
    assert res.exit_code == 0, res.output
    res = _invoke("predict", bundle, "-i", src, "-o", tmp_path / "ray", "--keep", keep, "--engine", "ray",
                  "--actors", 2, "-b", batch, "--json")
    assert res.exit_code == 0, res.output
    return pq.read_table(tmp_path / "local.parquet"), _read_parts(tmp_path / "ray")


def _assert_same(local: pa.Table, distributed: pa.Table) -> None:
    assert local.column_names == distributed.column_names
    assert local.num_rows == distributed.num_rows
    for name in local.column_names:
        a, b = local.column(name), distributed.column(name)
        if pa.types.is_floating(a.type):
            np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-6, atol=1e-7)
        else:
            assert a.to_pylist() == b.to_pylist(), name


def test_seed_spec_200k_rows_ray_equals_local(local_ray, seed_bundle, tmp_path):
    from seqdeploy.data import load_run_splits
    from seqdeploy.runtime.manifest import load_manifest

    names = list(load_manifest(seed_bundle).preprocessing.feature_names)
    base = np.asarray(load_run_splits(seed_bundle).raw_test, dtype=np.float64)
    rng = np.random.default_rng(0)
    n = 200_000
    raw = base[rng.integers(0, len(base), n)] * rng.normal(1.0, 0.05, size=(n, base.shape[1]))
    cols = {"id": np.arange(n), "customer": [f"c{i % 997}" for i in range(n)]}
    cols.update({f: raw[:, j] for j, f in enumerate(names)})
    table = pa.table(cols)
    src = tmp_path / "rows"
    src.mkdir()
    for k in range(4):
        pq.write_table(table.slice(k * 50_000, 50_000), src / f"rows-{k}.parquet", row_group_size=20_000)
    local, distributed = _local_vs_ray(seed_bundle, src, tmp_path, "id,customer", 8192)
    _assert_same(local, distributed)
    assert distributed.column("id").to_pylist() == list(range(n))
    p = Predictor.from_bundle(seed_bundle)
    assert distributed.column("prediction").to_pylist() == p.predict(raw).tolist()


def test_sentiment_20k_texts_ray_equals_local(local_ray, sentiment_bundle, tmp_path):
    from seqdeploy.data import load_run_splits

    base = [str(t) for t in load_run_splits(sentiment_bundle).raw_test]
    rng = np.random.default_rng(1)
    n = 20_000
    texts = [base[i] + ("" if j == 0 else " really") for i, j in zip(rng.integers(0, len(base), n),
                                                                       rng.integers(0, 3, n))]
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"review_id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    local, distributed = _local_vs_ray(sentiment_bundle, src, tmp_path, "review_id", 2048)
    _assert_same(local, distributed)
    assert distributed.column("review_id").to_pylist() == [f"r{i}" for i in range(n)]
    assert distributed.column("prediction").to_pylist() == \
        Predictor.from_bundle(sentiment_bundle).predict(texts).tolist()
    assert os.path.exists(tmp_path / "ray" / "_SUCCESS")
