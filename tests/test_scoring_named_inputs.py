"""``seqdeploy predict`` on bundles of models trained elsewhere: one column per model input, by name.

A TextVectorization bundle (one string input) and a FeatureSpace bundle (string + integer + float inputs) read
CSV, JSONL and Parquet files; the predictions equal ``Predictor.predict_proba`` on the same raw values.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from seqdeploy.errors import DataError
from seqdeploy.runtime.predictor import Predictor
from seqdeploy.scoring.named_inputs import InputColumn, input_columns, parse_cell
from seqdeploy.scoring.predict import predict_file

HOSTILE = ["Good FILM!", "bad, bad acting", "", "   ", "<br />", "café déjà vu", "🎬 good 🍿", "GOOD BAD",
           "film " * 60, "never seen words", 'quoted "film", comma']
FEATURES = {"age": [50.0, 61.5, 33.0, 70.0], "cp": [1, 3, 0, 4], "sex": [0, 1, 1, 0],
            "thal": ["normal", "weird", "", "fixed"]}


def write(path, rows: list[dict]) -> None:
    """``rows`` as CSV (with an id column), JSONL or Parquet, by suffix."""
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["id", *rows[0]])
            w.writeheader()
            w.writerows({"id": i, **r} for i, r in enumerate(rows))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": i, **r}) + "\n" for i, r in enumerate(rows)), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{"id": i, **r} for i, r in enumerate(rows)]), path)


def read_probs(path) -> np.ndarray:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return np.asarray([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_text_vectorization_bundle_reads_the_text_column(string_bundles, tmp_path, suffix):
    p = Predictor.from_bundle(string_bundles["text"])
    src = tmp_path / f"rows{suffix}"
    write(src, [{"text": t} for t in HOSTILE])
    out = tmp_path / "preds.csv"
    res = predict_file(p, src, out)
    assert res.rows == len(HOSTILE)
    want = p.predict_proba(np.asarray(HOSTILE, dtype=object))
    np.testing.assert_allclose(read_probs(out), want, atol=1e-6)
    # the strings reached the graph as they are: empty and whitespace-only rows score like themselves
    assert not np.allclose(want[0], want[2])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_two_kinds_of_inputs_are_read_by_name(string_bundles, tmp_path, suffix):
    p = Predictor.from_bundle(string_bundles["features"])
    rows = [dict(zip(FEATURES, vals)) for vals in zip(*FEATURES.values())]
    src = tmp_path / f"rows{suffix}"
    write(src, [dict(reversed(list(r.items()))) for r in rows])  # column order differs from the model's
    out = tmp_path / "preds.csv"
    predict_file(p, src, out, keep=["id"] if suffix == ".parquet" else None)
    raw = {"age": np.asarray(FEATURES["age"], np.float32).reshape(-1, 1),
           "cp": np.asarray(FEATURES["cp"], np.int32).reshape(-1, 1),
           "sex": np.asarray(FEATURES["sex"], np.int32).reshape(-1, 1),
           "thal": np.asarray(FEATURES["thal"], dtype=object).reshape(-1, 1)}
    np.testing.assert_allclose(read_probs(out), p.predict_proba(raw), atol=1e-6)


def test_a_missing_input_column_is_named(string_bundles, tmp_path):
    p = Predictor.from_bundle(string_bundles["features"])
    src = tmp_path / "rows.csv"
    write(src, [{"age": 1, "cp": 1, "sex": 0}])
    with pytest.raises(DataError, match=r"no column\(s\) \['thal'\].*'thal' \(text\)"):
        predict_file(p, src, tmp_path / "out.csv")


def test_a_number_column_holding_words_names_line_and_column(string_bundles, tmp_path):
    p = Predictor.from_bundle(string_bundles["features"])
    src = tmp_path / "rows.csv"
    write(src, [{"age": 1, "cp": 1, "sex": 0, "thal": "x"}, {"age": "old", "cp": 1, "sex": 0, "thal": "x"}])
    with pytest.raises(DataError, match=r"line 3 column 'age' = 'old' is not a number"):
        predict_file(p, src, tmp_path / "out.csv")


def test_cells_keep_text_as_is_and_parse_numbers():
    text, num = InputColumn("t", True, ()), InputColumn("n", False, (1,))
    assert parse_cell(text, "  ") == ("  ", None)
    assert parse_cell(num, " 2.5 ") == (2.5, None)
    assert "not a number" in parse_cell(num, "x")[1]
    assert "expected a string" in parse_cell(text, None)[1]
    assert "finite" in parse_cell(num, float("nan"))[1]


def test_single_numeric_input_keeps_the_older_layouts(string_bundles):
    from dataclasses import replace

    from seqdeploy.runtime.manifest import load_manifest

    assert input_columns(load_manifest(string_bundles["text"]))[0].text
    m = load_manifest(string_bundles["features"])
    assert [(c.name, c.text) for c in input_columns(m)] == [("age", False), ("cp", False), ("sex", False),
                                                            ("thal", True)]
    dep = replace(m.deployment, portable=replace(m.portable, inputs=m.portable.inputs[:1]))
    only_age = replace(m, inputs=m.inputs[:1], artifacts=(dep,))
    assert input_columns(only_age) is None
