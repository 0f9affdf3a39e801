"""seqdeploy.data.stream: training tables read in two streaming passes (fit, batches)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from seqdeploy.data import stream  # noqa: E402
from seqdeploy.errors import BadDataFile, DataError, InputFileNotFound  # noqa: E402
from seqdeploy.spec import DataSpec  # noqa: E402


def _rows(n: int, seed: int = 0, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)) * np.arange(1, k + 1) + 5
    y = (x[:, 0] + rng.normal(size=n) > 5).astype(np.int64)
    return x, y


def _write_parquet(d: Path, x: np.ndarray, y: np.ndarray, parts: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(np.array_split(np.arange(len(x)), parts)):
        cols = {f"f{j}": x[idx, j] for j in range(x.shape[1])}
        pq.write_table(pa.table({**cols, "y": y[idx]}), d / f"part-{i:02d}.parquet")
    return d


def _data(path, **kw) -> DataSpec:
    return DataSpec(source="parquet", path=Path(path), target="y", task="binary", **kw)


def test_fit_matches_the_in_memory_statistics_of_the_training_rows(tmp_path):
    x, y = _rows(3000)
    d = _write_parquet(tmp_path / "t", x, y, parts=5)
    plan = stream.fit_stream(_data(d), seed=7, validation_split=0.25)
    part = stream.split_of(stream.row_hash(x, [], np.asarray([str(v) for v in y], dtype=object), 7), 0.2, 0.25)
    fit_rows = x[part != 2]
    assert plan.counts == {"train": int((part == 0).sum()), "val": int((part == 1).sum()),
                           "test": int((part == 2).sum())}
    assert abs(plan.counts["test"] / 3000 - 0.2) < 0.03
    np.testing.assert_allclose(plan.preprocessing["mean"], fit_rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(plan.preprocessing["std"], fit_rows.std(axis=0), rtol=1e-10)
    assert plan.labels == ("0", "1") and plan.preprocessing["kind"] == "standardize"


def test_split_is_the_same_whatever_the_files_and_their_order(tmp_path):
    x, y = _rows(1200, seed=1)
    a = stream.fit_stream(_data(_write_parquet(tmp_path / "a", x, y, parts=2)), seed=3)
    order = np.random.default_rng(0).permutation(len(x))
    b = stream.fit_stream(_data(_write_parquet(tmp_path / "b", x[order], y[order], parts=7)), seed=3)
    assert a.counts == b.counts
    np.testing.assert_allclose(a.preprocessing["mean"], b.preprocessing["mean"], rtol=1e-12)
    c = stream.fit_stream(_data(tmp_path / "a"), seed=4)  # another seed: another split
    assert c.counts != a.counts


def test_batches_cover_each_part_once_and_shards_add_up(tmp_path):
    x, y = _rows(2000, seed=2)
    plan = stream.fit_stream(_data(_write_parquet(tmp_path / "t", x, y, parts=4)), seed=0, validation_split=0.1)
    got = list(stream.batches(plan, "train", 64, shuffle_rows=500, seed=1))
    assert all(len(b[0]) == 64 for b in got[:-1]) and got[0][0].shape[1] == 3 and got[0][0].dtype == np.float32
    xs = np.concatenate([b[0] for b in got])
    assert len(xs) == plan.counts["train"]
    plain = np.concatenate([b[0] for b in stream.batches(plan, "train", 64)])
    assert not np.array_equal(xs, plain)  # shuffled ...
    np.testing.assert_array_equal(np.sort(xs, axis=0), np.sort(plain, axis=0))  # ... the same rows
    shards = [plan.files[:2], plan.files[2:]]
    n = sum(len(b[0]) for s in shards for b in stream.batches(plan, "train", 100, files=s))
    assert n == plan.counts["train"]
    assert sum(len(b[1]) for b in stream.batches(plan, "test", 100)) == plan.counts["test"]


def test_csv_directory_with_a_categorical_column(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        lines = ["a,colour,y"] + [f"{rng.normal():.4f},{['red', 'blue', 'green'][j % 3]},{j % 2}" for j in range(60)]
        (d / f"p{i}.csv").write_text("\n".join(lines) + "\n")
    plan = stream.fit_stream(DataSpec(source="csv", path=d, target="y", task="binary"), seed=0)
    assert plan.categorical == ("colour",) and plan.preprocessing["kind"] == "categorical"
    assert sorted(plan.preprocessing["vocabularies"][0]) == ["blue", "green", "red"]
    assert any("categorical" in n for n in plan.notes)
    x, _ = next(stream.batches(plan, "train", 500))
    assert x.shape[1] == 1 + 4  # one numeric feature + one-hot of 3 values and the OOV bucket


def test_a_corrupt_file_is_named_or_skipped(tmp_path):
    x, y = _rows(600)
    d = _write_parquet(tmp_path / "t", x, y, parts=3)
    (d / "part-01.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(BadDataFile) as err:
        stream.fit_stream(_data(d), seed=0)
    assert err.value.file.endswith("part-01.parquet") and "not a readable Parquet file" in str(err.value)
    assert "\n" not in str(err.value)
    plan = stream.fit_stream(_data(d, skip_bad_files=True), seed=0)
    assert [Path(f.path).name for f in plan.files] == ["part-00.parquet", "part-02.parquet"]
    assert sum(plan.counts.values()) == 400 and "part-01.parquet" in plan.notes[-1]


def test_schema_drift_text_in_a_number_column_and_an_empty_directory(tmp_path):
    x, y = _rows(300)
    d = _write_parquet(tmp_path / "t", x, y, parts=2)
    pq.write_table(pa.table({"f0": x[:5, 0], "f1": x[:5, 1], "y": y[:5]}), d / "part-09.parquet")
    with pytest.raises(BadDataFile, match=r"part-09.parquet: column\(s\) \['f2'\] missing"):
        stream.fit_stream(_data(d), seed=0)
    c = tmp_path / "c"
    c.mkdir()
    (c / "a.csv").write_text("a,y\n" + "1,0\n2,1\n" * 10)
    (c / "b.csv").write_text("a,y\n1,0\n2,1\nabc,1\n")
    with pytest.raises(BadDataFile) as err:
        stream.fit_stream(DataSpec(source="csv", path=c, target="y", task="binary", categorical=()), seed=0)
    assert str(err.value).startswith(f"{c / 'b.csv'}: row 2, column 'a': 'abc' is not a number")
    assert err.value.row == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileNotFound, match="holds no"):
        stream.fit_stream(_data(tmp_path / "empty"), seed=0)


def test_train_cli_exit_2_and_skip_bad_files(tmp_path):
    from typer.testing import CliRunner

    from seqdeploy.app.cli import app

    x, y = _rows(400)
    d = _write_parquet(tmp_path / "t", x, y, parts=2)
    (d / "part-01.parquet").write_bytes(b"garbage")
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\n[data]\nsource = "parquet"\npath = "t"\ntarget = "y"\ntask = "binary"\n'
                    '[fit]\nepochs = 1\nbatch_size = 64\n[compile]\noptimizer = "adam"\nloss = "binary_crossentropy"\n'
                    'metrics = ["accuracy"]\n[[layers]]\ntype = "Dense"\nunits = 1\nactivation = "sigmoid"\n')
    res = CliRunner().invoke(app, ["train", str(spec), "--out", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 2 and "part-01.parquet" in res.output and "not a readable Parquet file" in res.output
    res = CliRunner().invoke(app, ["train", str(spec), "--out", str(tmp_path / "run"), "--json", "--skip-bad-files"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["data"]["n_train"] + info["data"]["n_val"] + info["data"]["n_test"] == 200
    assert "part-01.parquet" in info["data"]["notes"][-1]
    # later stages read a sample, re-using the recorded preprocessing (no second fit)
    from seqdeploy.data import load_run_splits

    splits = load_run_splits(tmp_path / "run")
    assert splits.preprocessing == info["preprocessing"] and len(splits.x_test) == info["data"]["n_test"]


def test_small_single_files_stay_in_memory(tmp_path):
    x, y = _rows(50)
    d = _write_parquet(tmp_path / "t", x, y, parts=1)
    assert not stream.wants_stream(_data(d / "part-00.parquet"))
    assert stream.wants_stream(_data(d)) and stream.wants_stream(_data(tmp_path / "t" / "*.parquet"))
    assert not stream.wants_stream(dataclasses.replace(_data(d), text="f0"))
    with pytest.raises(DataError):
        stream.fit_stream(dataclasses.replace(_data(d), task="regression", target=None), seed=0)


def test_regression_target_statistics_and_standardised_batches(tmp_path):
    x, _ = _rows(1500, seed=5)
    t = x @ np.array([2.0, -1.0, 0.5]) + 10
    d = tmp_path / "r"
    d.mkdir()
    for i, idx in enumerate(np.array_split(np.arange(len(x)), 3)):
        pq.write_table(pa.table({"f0": x[idx, 0], "f1": x[idx, 1], "f2": x[idx, 2], "y": t[idx]}), d / f"{i}.parquet")
    plan = stream.fit_stream(DataSpec(source="parquet", path=d, target="y", task="regression"), seed=1)
    part = stream.split_of(stream.row_hash(x, [], t, 1), 0.2, 0.0)
    pre = plan.preprocessing
    assert pre["target_mean"] == pytest.approx(t[part != 2].mean(), rel=1e-12)
    assert pre["target_std"] == pytest.approx(t[part != 2].std(), rel=1e-10)
    ys = np.concatenate([b[1] for b in stream.batches(plan, "train", 256)])
    assert ys.dtype == np.float32 and abs(float(ys.mean())) < 1e-3 and abs(float(ys.std()) - 1) < 1e-3


def test_a_bad_jsonl_line_names_its_row(tmp_path):
    d = tmp_path / "j"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps({"a": i, "y": i % 2}) + "\n" for i in range(20)))
    (d / "b.jsonl").write_text('{"a": 1, "y": 0}\n{"a": 2, "y": 1}\nnot json\n')
    with pytest.raises(BadDataFile) as err:
        stream.fit_stream(DataSpec(source="jsonl", path=d, target="y", task="binary"), seed=0)
    assert str(err.value).startswith(f"{d / 'b.jsonl'}: row 2: line 3 is not valid JSON") and err.value.row == 2


@pytest.mark.slow
def test_pipeline_exports_and_verifies_a_streamed_run_from_a_sample(tmp_path):
    from seqdeploy.app.pipeline import run_pipeline

    x, y = _rows(12000, seed=3)
    _write_parquet(tmp_path / "t", x, y, parts=3)
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\n[data]\nsource = "parquet"\npath = "t"\ntarget = "y"\ntask = "binary"\n'
                    '[fit]\nepochs = 1\nbatch_size = 512\n[compile]\noptimizer = "adam"\nloss = "binary_crossentropy"\n'
                    'metrics = ["accuracy"]\n[[layers]]\ntype = "Dense"\nunits = 8\nactivation = "relu"\n'
                    '[[layers]]\ntype = "Dense"\nunits = 1\nactivation = "sigmoid"\n')
    res = run_pipeline(spec, out=tmp_path / "run", stages="train,export,verify")
    assert [s.status for s in res.stages][:3] == ["ran", "ran", "ran"]
    verify = json.loads((tmp_path / "run" / "verify.json").read_text())
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["data"]["n_test"] > stream.SAMPLE_ROWS  # verify read a sample, not every test row
    assert verify["samples"] <= stream.SAMPLE_ROWS and verify["passed"] is True


def test_a_spec_is_fitted_once_per_process_until_its_files_change(tmp_path, monkeypatch):
    from seqdeploy.data import load_spec_data, load_spec_splits
    from seqdeploy.spec import load_spec

    x, y = _rows(500)
    d = _write_parquet(tmp_path / "t", x, y, parts=2)
    spec_path = tmp_path / "s.toml"
    spec_path.write_text('name = "s"\n[data]\nsource = "parquet"\npath = "t"\ntarget = "y"\ntask = "binary"\n'
                         '[compile]\noptimizer = "adam"\nloss = "binary_crossentropy"\n'
                         '[[layers]]\ntype = "Dense"\nunits = 1\n')
    spec = load_spec(spec_path)
    calls = []
    real = stream.fit_stream
    monkeypatch.setattr(stream, "fit_stream", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = load_spec_splits(spec)  # what a pipeline's stage key reads
    splits, plan = load_spec_data(spec)  # what training reads
    assert len(calls) == 1 and plan is not None and splits.fingerprint == first.fingerprint
    assert len(splits.x_test) == plan.counts["test"]  # fewer test rows than the sample size: all of them
    pq.write_table(pa.table({"f0": x[:9, 0], "f1": x[:9, 1], "f2": x[:9, 2], "y": y[:9]}), d / "part-05.parquet")
    again, _ = load_spec_data(spec)
    assert len(calls) == 2 and again.fingerprint != first.fingerprint
