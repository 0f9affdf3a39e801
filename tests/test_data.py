from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqdeploy.data import apply_preprocessing, load_dataset, read_csv_table
from seqdeploy.errors import DataError, InputFileNotFound, SeqdeployError
from seqdeploy.spec import DataSpec


def test_breast_cancer_split_and_standardisation_from_train_only():
    s = load_dataset(DataSpec(source="breast_cancer"), seed=42)
    assert s.x_train.shape == (455, 30) and s.x_test.shape == (114, 30)
    assert s.task == "binary" and s.labels == ("malignant", "benign")
    # statistics come from the training split: train is standardised exactly, test only roughly
    np.testing.assert_allclose(s.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(s.x_train.std(axis=0), 1, atol=1e-4)
    assert np.abs(s.x_test.mean(axis=0)).max() > 1e-3
    np.testing.assert_allclose(apply_preprocessing(s.preprocessing, s.raw_test), s.x_test, atol=1e-5)
    # stratified: both classes in both splits at similar rates
    assert abs(s.y_train.mean() - s.y_test.mean()) < 0.05


def test_split_is_deterministic_per_seed():
    a = load_dataset(DataSpec(source="breast_cancer"), seed=1)
    b = load_dataset(DataSpec(source="breast_cancer"), seed=1)
    c = load_dataset(DataSpec(source="breast_cancer"), seed=2)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.fingerprint == b.fingerprint == c.fingerprint  # the data, not the split
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.x_test, c.x_test)


def test_digits_images():
    s = load_dataset(DataSpec(source="digits"), seed=0)
    assert s.x_train.shape[1:] == (8, 8, 1) and s.x_train.dtype == np.float32
    assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0
    assert s.raw_test.shape[1:] == (8, 8) and s.raw_test.max() <= 16
    assert len(s.labels) == 10 and set(np.unique(s.y_train)) == set(range(10))


def test_sentiment_is_marked_synthetic_and_right_padded():
    s = load_dataset(DataSpec(source="sentiment", samples=300, sequence_length=12), seed=0)
    assert s.synthetic and s.x_train.dtype == np.int32 and s.x_train.shape[1] == 12
    vocab = s.preprocessing["vocabulary"]
    assert vocab[:2] == ["<pad>", "<oov>"]
    for row in s.x_train:  # right padding: once a 0 appears, only zeros follow
        nz = np.flatnonzero(row == 0)
        if nz.size:
            assert (row[nz[0]:] == 0).all()
    np.testing.assert_array_equal(apply_preprocessing(s.preprocessing, list(s.raw_test)), s.x_test)


def test_sunspots_windows_are_chronological():
    s = load_dataset(DataSpec(source="sunspots", window=10, test_fraction=0.2), seed=0)
    assert s.task == "regression" and s.x_train.shape[1:] == (10, 1)
    rec = s.preprocessing
    # the last training window precedes the first test window in time
    raw_first_test = s.raw_test[0]
    np.testing.assert_allclose(s.x_test[0, :, 0], (raw_first_test - rec["mean"]) / rec["std"], rtol=1e-5)
    assert len(s.x_train) + len(s.x_test) == 309 - 10


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_source_with_bom_and_string_labels(tmp_path):
    rows = "\n".join(f"{i},{i * 0.5},{'yes' if i % 2 else 'no'}" for i in range(40))
    p = tmp_path / "d.csv"
    p.write_bytes(("\ufeffa,b,label\n" + rows + "\n").encode("utf-8"))
    s = load_dataset(DataSpec(source="csv", path=p, target="label", task="binary"), seed=0)
    assert s.labels == ("no", "yes") and s.x_train.shape[1] == 2
    assert s.preprocessing["feature_names"] == ["a", "b"]


@pytest.mark.parametrize("text, target, features, message", [
    ("", "y", None, "empty file"),
    ("a,y\n", "y", None, "no data rows"),
    ("a,b\n1,2\n", "y", None, "target column 'y' not found"),
    ("a,y\n1,0\n", "y", ("a", "zz"), "feature columns \\['zz'\\] not found"),
    ("a,y\n" + "1,0\n" * 5 + "abc,1\n" + "2,1\n" * 10, "y", None, "'abc' is not a number"),
    ("a,y\n" + "1,0\n" * 5 + "nan,1\n" + "2,1\n" * 10, "y", None, "non-finite"),
    ("a,y\n1,0,3\n", "y", None, "has 3 fields"),
    ("a,y\n" + "1,0\n" * 20, "y", None, "single class"),
    ("a,a,y\n1,2,0\n", "y", None, "duplicate column"),
])
def test_csv_bad_inputs(tmp_path, text, target, features, message):
    p = _csv(tmp_path, text)
    with pytest.raises(DataError, match=message):
        load_dataset(DataSpec(source="csv", path=p, target=target, features=features, task="binary"), seed=0)


def test_csv_missing_file_and_huge_line(tmp_path):
    with pytest.raises(InputFileNotFound):
        load_dataset(DataSpec(source="csv", path=tmp_path / "nope.csv", target="y", task="binary"), seed=0)
    huge = "a,y\n" + "1,0\n2,1\n" * 10 + "0." + "0" * 2_000_000 + "1,1\n"
    s = load_dataset(DataSpec(source="csv", path=_csv(tmp_path, huge), target="y", task="binary"), seed=0)
    assert len(s.x_train) + len(s.x_test) == 21  # a 2 MB field parses
    overflow = "a,y\n" + "1,0\n2,1\n" * 10 + "9" * 400 + ",1\n"
    with pytest.raises(DataError, match="non-finite value inf at row 20"):
        load_dataset(DataSpec(source="csv", path=_csv(tmp_path, overflow, "o.csv"), target="y", task="binary"), seed=0)


def test_labels_override_must_match_class_count():
    with pytest.raises(DataError, match="3 names"):
        load_dataset(DataSpec(source="breast_cancer"), seed=0, labels=["a", "b", "c"])


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(50, 4)).astype(np.float32), y=rng.integers(0, 3, 50))
    s = load_dataset(DataSpec(source="npz", path=tmp_path / "d.npz", task="multiclass"), seed=0)
    assert s.preprocessing == {"kind": "none"} and s.labels == ("0", "1", "2")
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_dataset(DataSpec(source="npz", path=tmp_path / "bad.npz", task="binary"), seed=0)


_cell = st.one_of(st.text(max_size=6), st.integers(-3, 3).map(str), st.floats().map(str), st.just(""))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.lists(st.sampled_from(["a", "b", "y", "\ufeffy", "c d", ""]), max_size=4),
       rows=st.lists(st.lists(_cell, max_size=5), max_size=25), bom=st.booleans())
def test_random_csv_gives_splits_or_a_seqdeploy_error(tmp_path, header, rows, bom):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    p = tmp_path / "fuzz.csv"
    p.write_bytes((("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8"))
    try:
        s = load_dataset(DataSpec(source="csv", path=p, target="y", task="binary"), seed=0)
    except SeqdeployError:
        return
    assert np.isfinite(s.x_train).all() and len(s.x_train) + len(s.x_test) >= 10


def test_read_csv_table_rejects_non_utf8(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("a,y\n\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_csv_table(p)
