"""Local table scoring: Parquet / CSV / JSONL files, directories and globs in; Parquet, CSV, JSONL out.

Tiny hand-built bundles (no TensorFlow); every prediction is compared with Predictor.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")  # the distributed extra
import pyarrow.parquet as pq  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from seqdeploy.app.cli import app  # noqa: E402
from seqdeploy.runtime.predictor import Predictor  # noqa: E402
from seqdeploy.scoring import labels_from_proba, predict_file  # noqa: E402
from seqdeploy.scoring.tables import iter_batches, resolve_inputs  # noqa: E402
from test_manifest import build_bundle, sample_raw  # noqa: E402

runner = CliRunner()
FEATURES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring_bundles")
    return {k: build_bundle(root, k) for k in ("binary", "text", "window", "multiclass")}


@pytest.fixture(scope="module")
def binary(bundles):
    return Predictor.from_bundle(bundles["binary"])


def _table(raw: np.ndarray, start: int = 0) -> pa.Table:
    n = len(raw)
    cols = {"id": pa.array(np.arange(start, start + n)), "customer": [f"c{start + i}" for i in range(n)]}
    cols.update({f: raw[:, j] for j, f in enumerate(FEATURES)})
    return pa.table(cols)


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _read_dir(path: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(path.glob("part-*.parquet"))])


def test_parquet_to_parquet_keeps_columns_in_input_order(binary, bundles, tmp_path):
    raw = sample_raw("binary", n=2500, seed=4)
    pq.write_table(_table(raw), tmp_path / "in.parquet", row_group_size=700)
    res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.parquet", "-o", tmp_path / "out.parquet",
                  "--keep", "id,customer", "-b", 333, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["rows"] == 2500 and summary["format"] == "parquet" and summary["files"] == 1
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names == ["prediction", "p_neg", "p_pos", "id", "customer"]
    assert out.column("prediction").to_pylist() == binary.predict(raw).tolist()
    np.testing.assert_allclose(out.column("p_pos").to_numpy(), binary.predict_proba(raw)[:, 1], rtol=1e-6)
    assert out.column("id").to_pylist() == list(range(2500))
    assert out.column("customer").to_pylist()[-1] == "c2499"


def test_directory_of_mixed_files_to_parquet_parts(binary, bundles, tmp_path):
    raw = sample_raw("binary", n=900, seed=5)
    src = tmp_path / "rows"
    (src / "sub").mkdir(parents=True)
    pq.write_table(_table(raw[:400]), src / "a.parquet")
    with open(src / "b.csv", "w", newline="") as fh:  # other column order, extra column
        w = csv.writer(fh)
        w.writerow(["d", "c", "id", "b", "a", "customer", "extra"])
        w.writerows([[r[3], r[2], 400 + i, r[1], r[0], f"c{400 + i}", "x"] for i, r in enumerate(raw[400:700])])
    (src / "sub" / "c.jsonl").write_text("".join(
        json.dumps({"id": 700 + i, "customer": f"c{700 + i}", **dict(zip(FEATURES, map(float, r)))}) + "\n"
        for i, r in enumerate(raw[700:])))
    (src / "_SUCCESS").write_text("")  # markers and hidden files are not inputs
    (src / ".hidden.csv").write_text("junk")
    assert [Path(f.path).name for f in resolve_inputs(src)] == ["a.parquet", "b.csv", "c.jsonl"]
    res = _invoke("predict", bundles["binary"], "-i", src, "-o", tmp_path / "preds", "--keep", "id", "-b", 128,
                  "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"] == 3
    out_dir = tmp_path / "preds"
    assert (out_dir / "_SUCCESS").exists()
    out = _read_dir(out_dir)
    assert out.num_rows == 900
    assert [int(v) for v in out.column("id").to_pylist()] == list(range(900))  # CSV keeps text: "400"
    assert out.column("prediction").to_pylist() == binary.predict(raw).tolist()
    # a glob picks the same files
    res = _invoke("predict", bundles["binary"], "-i", f"{src}/**/*.*", "-o", tmp_path / "g.parquet")
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "g.parquet").column("prediction").to_pylist() == binary.predict(raw).tolist()


def test_keep_all_to_csv_and_jsonl(binary, bundles, tmp_path):
    raw = sample_raw("binary", n=40, seed=6)
    pq.write_table(_table(raw), tmp_path / "in.parquet")
    res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.parquet", "-o", tmp_path / "o.csv",
                  "--keep", "all")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert list(rows[0]) == ["prediction", "p_neg", "p_pos", "id", "customer", *FEATURES]
    assert [r["prediction"] for r in rows] == binary.predict(raw).tolist()
    assert [int(r["id"]) for r in rows] == list(range(40))
    res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.parquet", "-o", tmp_path / "o.jsonl",
                  "--keep", "customer")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert lines[3]["customer"] == "c3" and set(lines[3]["probabilities"]) == {"neg", "pos"}
    np.testing.assert_allclose([x["probabilities"]["pos"] for x in lines], binary.predict_proba(raw)[:, 1],
                               atol=1e-7)


def test_text_and_window_tables(bundles, tmp_path):
    texts = sample_raw("text", n=300, seed=2)
    pq.write_table(pa.table({"text": texts, "id": list(range(300))}), tmp_path / "t.parquet")
    res = _invoke("predict", bundles["text"], "-i", tmp_path / "t.parquet", "-o", tmp_path / "t_out.parquet",
                  "-b", 64)
    assert res.exit_code == 0, res.output
    got = pq.read_table(tmp_path / "t_out.parquet").column("prediction").to_pylist()
    assert got == Predictor.from_bundle(bundles["text"]).predict(texts).tolist()
    windows = sample_raw("window", n=50, seed=2)
    pq.write_table(pa.table({"input": windows.tolist(), "when": list(range(50))}), tmp_path / "w.parquet")
    res = _invoke("predict", bundles["window"], "-i", tmp_path / "w.parquet", "-o", tmp_path / "w_out.parquet",
                  "--keep", "when")
    assert res.exit_code == 0, res.output
    out = pq.read_table(tmp_path / "w_out.parquet")
    np.testing.assert_allclose(out.column("prediction").to_numpy(),
                               Predictor.from_bundle(bundles["window"]).predict(windows), rtol=1e-6)


def _with_bad_rows(raw: np.ndarray) -> pa.Table:
    t = _table(raw)
    c = raw[:, 2].copy()
    c[[5, 1234]] = np.nan
    return t.set_column(t.column_names.index("c"), "c", pa.array(c))


def test_bad_row_fail_names_file_and_row_and_leaves_nothing(bundles, tmp_path):
    raw = sample_raw("binary", n=1500, seed=7)
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(_table(raw[:1000]), src / "a.parquet")
    pq.write_table(_with_bad_rows(raw[:1500]).slice(1000), src / "b.parquet")  # global row 1234 -> b.parquet row 234
    res = _invoke("predict", bundles["binary"], "-i", src, "-o", tmp_path / "out", "-b", 100)
    assert res.exit_code == 2
    msg = " ".join(res.stderr.split())
    assert msg.count("error:") == 1 and "Traceback" not in res.output
    assert f"{src / 'b.parquet'} row 234: column 'c' = nan" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output, no staged temporary


def test_bad_row_skip_writes_side_file(binary, bundles, tmp_path):
    raw = sample_raw("binary", n=1500, seed=7)
    t = _with_bad_rows(raw)
    strings = t.set_column(t.column_names.index("a"), "a",
                           pa.array(["oops" if i == 77 else repr(float(v)) for i, v in enumerate(raw[:, 0])]))
    pq.write_table(strings, tmp_path / "in.parquet")
    res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.parquet", "-o", tmp_path / "out.parquet",
                  "--keep", "id", "--on-bad-row", "skip", "--json", "-b", 500)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["skipped"] == 3 and summary["rows"] == 1497
    side = [json.loads(x) for x in Path(summary["skipped_output"]).read_text().splitlines()]
    assert Path(summary["skipped_output"]).name == "out.skipped.jsonl"
    assert [s["row"] for s in side] == [5, 77, 1234]
    assert "'oops' is not a number" in side[1]["reason"] and side[1]["values"]["id"] == 77
    assert all(s["file"] == str(tmp_path / "in.parquet") for s in side)
    out = pq.read_table(tmp_path / "out.parquet")
    good = np.array([i for i in range(1500) if i not in (5, 77, 1234)])
    assert out.column("id").to_pylist() == good.tolist()
    assert out.column("prediction").to_pylist() == binary.predict(raw[good]).tolist()


def test_unparsable_jsonl_lines_are_bad_rows(binary, bundles, tmp_path):
    raw = sample_raw("binary", n=6, seed=13)
    lines = [json.dumps({"id": i, **dict(zip(FEATURES, map(float, r)))}) for i, r in enumerate(raw)]
    lines[2] = '{"id": 2, "a": 1.0,'  # cut short
    lines[4] = "[1, 2, 3, 4]"
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.jsonl", "-o", tmp_path / "o.parquet",
                  "--keep", "id", "--on-bad-row", "skip")
    assert res.exit_code == 0, res.output
    side = [json.loads(x) for x in (tmp_path / "o.skipped.jsonl").read_text().splitlines()]
    assert [(s["row"], s["reason"].split(" (")[0]) for s in side] == [(2, "line 3 is not valid JSON"),
                                                                       (4, "line 5 holds list")]
    out = pq.read_table(tmp_path / "o.parquet")
    assert out.column("id").to_pylist() == [0, 1, 3, 5]
    assert out.column("prediction").to_pylist() == binary.predict(raw[[0, 1, 3, 5]]).tolist()


def test_existing_output_refused_unless_overwrite(bundles, tmp_path):
    raw = sample_raw("binary", n=20, seed=8)
    pq.write_table(_table(raw), tmp_path / "in.parquet")
    for out in (tmp_path / "o.parquet", tmp_path / "o.csv", tmp_path / "odir"):
        res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.parquet", "-o", out)
        assert res.exit_code == 0, res.output
        before = sorted(p.name for p in tmp_path.iterdir())
        res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.parquet", "-o", out)
        assert res.exit_code == 2 and "already exists" in res.stderr and "--overwrite" in res.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.parquet", "-o", out, "--overwrite")
        assert res.exit_code == 0, res.output
    assert (tmp_path / "odir" / "_SUCCESS").exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_legacy_csv_error_counts_rows_from_the_file_start(bundles, tmp_path):
    raw = sample_raw("binary", n=30, seed=9)
    lines = ["a,b,c,d"] + [",".join(map(str, r)) for r in raw]
    lines[1 + 23] = lines[1 + 23].replace(lines[1 + 23].split(",")[2], "nan", 1)
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.csv", "-b", 10)
    assert res.exit_code == 2 and "row 23 contains nan" in " ".join(res.stderr.split()), res.stderr


def test_labels_from_proba_is_the_predictors_rule(bundles):
    for kind in ("binary", "multiclass", "text"):
        p = Predictor.from_bundle(bundles[kind])
        raw = sample_raw(kind, n=200, seed=10)
        assert labels_from_proba(p.manifest, p.predict_proba(raw)).tolist() == p.predict(raw).tolist()


def test_streaming_reads_bounded_batches(tmp_path):
    raw = sample_raw("binary", n=5000, seed=11)
    pq.write_table(_table(raw), tmp_path / "in.parquet", row_group_size=3000)
    f = resolve_inputs(tmp_path / "in.parquet")[0]
    sizes, starts = [], []
    for table, row0 in iter_batches(f, ["id", "a"], 512):
        sizes.append(table.num_rows)
        starts.append(row0)
        assert table.column("id")[0].as_py() == row0
    assert max(sizes) <= 512 and sum(sizes) == 5000 and starts == sorted(starts)


def test_usage_errors(bundles, tmp_path):
    raw = sample_raw("binary", n=5)
    pq.write_table(_table(raw), tmp_path / "in.parquet")
    for args, match in [
        (("--keep", "nope"), "no column(s) ['nope'] to keep"),
        (("--on-bad-row", "ignore"), "expected fail or skip"),
        (("--engine", "spark"), "expected local or ray"),
        (("--actors", 2), "need --engine ray"),
        (("-o", tmp_path / "x.txt"), "expected .parquet, .csv, .jsonl or a directory"),
    ]:
        res = _invoke("predict", bundles["binary"], "-i", tmp_path / "in.parquet", *args)
        assert res.exit_code == 2, (args, res.output)
        assert match in " ".join(res.stderr.split()), (args, res.stderr)
    res = _invoke("predict", bundles["binary"], "-i", f"{tmp_path}/*.nothing", "-o", tmp_path / "o.parquet")
    assert res.exit_code == 2 and "matches no" in res.stderr
    with pytest.raises(Exception, match="on_bad_row"):
        predict_file(Predictor.from_bundle(bundles["binary"]), tmp_path / "in.parquet", None, on_bad_row="maybe")


def test_local_engine_memory_stays_flat(binary, tmp_path):
    """Arrow memory while scoring does not grow with the rows read: one input row group, one output row group."""
    raw = sample_raw("binary", n=300_000, seed=12)
    table = _table(raw)
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=20_000)
    full = table.nbytes
    del table
    base = pa.total_allocated_bytes()
    peaks = []
    res = predict_file(binary, tmp_path / "big.parquet", tmp_path / "out.parquet", 2_000, keep="id",
                       progress=lambda done, total: peaks.append(pa.total_allocated_bytes() - base))
    assert res.rows == 300_000 and len(peaks) == 150
    first, last = max(peaks[:50]), max(peaks[100:])  # after 100k rows vs after 300k rows
    assert last <= first * 1.1 + 500_000, (first, last)
    assert max(peaks) < full, (max(peaks), full)
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    assert meta.num_rows == 300_000 and meta.num_row_groups == 5  # 65,536-row groups, not one per batch


def test_killed_run_leaves_nothing_that_looks_complete(bundles, tmp_path):
    """SIGKILL in the middle of a directory output: no target, only a hidden staging directory without _SUCCESS."""
    import signal
    import subprocess
    import sys
    import time

    raw = sample_raw("binary", n=400_000, seed=14)
    pq.write_table(_table(raw), tmp_path / "big.parquet", row_group_size=10_000)
    out = tmp_path / "preds"
    proc = subprocess.Popen([sys.executable, "-m", "seqdeploy", "predict", str(bundles["binary"]), "-i",
                             str(tmp_path / "big.parquet"), "-o", str(out), "-b", "50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        staged = []
        while time.monotonic() < deadline and proc.poll() is None:
            staged = [p for p in tmp_path.glob(".preds.tmp-*") if any(p.glob("part-*.parquet"))]
            if staged:
                break
            time.sleep(0.05)
        assert staged and proc.poll() is None, "the run finished before it could be killed; use more rows"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    assert not (staged[0] / "_SUCCESS").exists()
    res = _invoke("predict", bundles["binary"], "-i", tmp_path / "big.parquet", "-o", out, "-b", 4096)
    assert res.exit_code == 0, res.output  # the leftover staging directory does not block a rerun
    assert (out / "_SUCCESS").exists() and _read_dir(out).num_rows == 400_000
