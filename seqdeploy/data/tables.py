"""User tables: CSV, JSONL and Parquet (numeric, categorical and text columns) and NPZ arrays."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from seqdeploy.errors import DataError, InputFileNotFound
from seqdeploy.io.text import NOT_JSON, NOT_OBJECT, NOT_UTF8, BadInput, CsvRows, JsonlRows
from seqdeploy.preprocess import TOKEN_PATTERN, Categorical, Tokenize
from seqdeploy.spec import DataSpec

from seqdeploy.data.common import (
    TEXT_AS_CATEGORICAL, Splits, _check_enough, _check_finite, _encode_target, _fingerprint, _mostly_text,
    _split_indices, _tabular, spec_features,
)


def read_csv_table(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Read a CSV file into (header, rows) with clear errors for empty/ragged files."""
    path = Path(path)
    if not path.exists():
        raise InputFileNotFound(f"data file {str(path)!r} does not exist; check [data] path in the spec")
    header, rows, _ = _read_csv(path)
    return header, rows


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, line number of each row) of a UTF-8 CSV file."""
    reader = CsvRows(path)
    lines: list[int] = []
    rows = []
    try:
        it = iter(reader)
        header = next(it, None)
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{path}: empty file; expected a header row of column names and data rows")
        header = [h.strip() for h in header]
        for row in it:
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: line {reader.line} has {len(row)} fields, the header has "
                                f"{len(header)}; fix the row or the header")
            rows.append(row)
            lines.append(reader.line)
    except BadInput as exc:
        raise _bad_input(exc, "the CSV") from None
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column names {dupes}; column names must be unique")
    if not rows:
        raise DataError(f"{path}: header only, no data rows; expected at least a few rows")
    return header, rows, lines


def _bad_input(exc: BadInput, what: str) -> DataError:
    """A reader's complaint worded for training data."""
    if exc.kind == NOT_UTF8:
        return DataError(f"{exc.path}: not UTF-8 text ({exc.detail} at line {exc.line}); save {what} as UTF-8")
    if exc.kind == NOT_JSON:
        return DataError(f"{exc.path}: line {exc.line} is not valid JSON ({exc.detail}); expected one JSON object "
                         "per line")
    if exc.kind == NOT_OBJECT:
        return DataError(f"{exc.path}: line {exc.line} holds {exc.detail} (expected a JSON object keyed by column "
                         "name)")
    return exc


def read_table(path: str | Path, fmt: str) -> tuple[list[str], list[list[Any]], list[str]]:
    """A CSV / JSONL / Parquet table as ``(header, rows, where)``; ``where[i]`` names row i ("line 7", "row 6").

    CSV cells are strings; JSONL and Parquet cells keep their JSON / Arrow types.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileNotFound(f"data file {str(path)!r} does not exist; check [data] path in the spec")
    if fmt == "csv":
        header, rows, lines = _read_csv(path)
        return header, rows, [f"line {n}" for n in lines]
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "parquet":
        try:
            from seqdeploy.io.arrow import parquet_table
        except ModuleNotFoundError:
            raise DataError(f"{path}: reading Parquet needs pyarrow; install it with: pip install "
                            "'seqdeploy[distributed]'") from None
        table = parquet_table(path)
        header = list(table.column_names)
        cols = [table.column(c).to_pylist() for c in header]
        rows = [list(r) for r in zip(*cols)]
        if not rows:
            raise DataError(f"{path}: no data rows; expected at least a few rows")
        return header, rows, [f"row {i}" for i in range(len(rows))]
    raise DataError(f"{path}: unknown table format {fmt!r} (expected csv, jsonl or parquet)")


def _read_jsonl(path: Path) -> tuple[list[str], list[list[Any]], list[str]]:
    header: list[str] | None = None
    rows, where = [], []
    try:
        for n, obj in JsonlRows(path):
            if header is None:
                header = list(obj)
            missing = [h for h in header if h not in obj]
            if missing:
                raise DataError(f"{path}: line {n} lacks key(s) {missing} that the first line has; give every line "
                                "the same keys")
            rows.append([obj[h] for h in header])
            where.append(f"line {n}")
    except BadInput as exc:
        raise _bad_input(exc, "the file") from None
    if header is None:
        raise DataError(f"{path}: empty file; expected one JSON object per line")
    return header, rows, where


def table_source(data: DataSpec, seed: int) -> Splits:
    """A CSV / JSONL / Parquet table: numeric (+ categorical) feature columns, or one text column."""
    assert data.path is not None and data.target is not None and data.task is not None
    from seqdeploy.data import stream

    if stream.wants_stream(data):  # a directory, a glob or a large file: fit in one pass, keep a sample
        return stream.sample_splits(stream.fitted(data, seed=seed))
    header, rows, where = read_table(data.path, data.source)
    if data.target not in header:
        raise DataError(f"{data.path}: target column {data.target!r} not found; columns are {header}")
    ti = header.index(data.target)
    target = [_cell_text(row[ti]) for row in rows]
    if data.text is not None:
        return _text_table(data, seed, header, rows, where, target)
    features, categorical = spec_features(data, data.path, header)
    cols = [header.index(f) for f in features]
    notes: list[str] = []
    if categorical is None:
        categorical = [f for f, ci in zip(features, cols) if _mostly_text([row[ci] for row in rows])]
        if categorical:
            notes.append(TEXT_AS_CATEGORICAL.format(categorical))
    numeric = [f for f in features if f not in categorical]
    x = np.empty((len(rows), len(numeric)), dtype=np.float64)
    for c, name in enumerate(numeric):
        ci = header.index(name)
        for r, row in enumerate(rows):
            x[r, c] = _number(row[ci], data.path, where[r], name)
    y, labels = _encode_target(target, data.task, str(data.path))
    source = f"{data.source}:{Path(data.path).name}"
    target_name = data.target if data.task == "regression" else None
    if not categorical:
        splits = _tabular(x, y, [re.sub(r"\W+", "_", f) for f in numeric], data.task, labels, data, seed,
                          source=source, target_name=target_name)
        return dataclasses.replace(splits, notes=tuple(notes))
    cats = np.empty((len(rows), len(categorical)), dtype=object)
    for c, name in enumerate(categorical):
        ci = header.index(name)
        for r, row in enumerate(rows):
            cats[r, c] = _category_cell(row[ci], data.path, where[r], name)
    _check_finite(x, source) if x.size else None
    _check_enough(len(rows), source)
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y if data.task != "regression" else None)
    kind = Categorical.fit(x[tr], numeric, cats[tr], categorical, data.encoding)
    y_model = y
    if data.task == "regression":
        kind = kind.with_target(y[tr])
        y_model = ((y - kind.target_mean) / kind.target_std).astype(np.float32)
    width = max((len(v) for c in cats.T for v in c.tolist()), default=1) or 1
    raw = np.empty(len(rows), dtype=[("features", np.float32, (len(numeric),)),
                                     ("categories", f"<U{width}", (len(categorical),))])
    raw["features"] = x.astype(np.float32)
    raw["categories"] = cats.astype(str)
    xm = kind.apply(raw)
    return Splits(x_train=xm[tr], y_train=y_model[tr], x_test=xm[te], y_test=y_model[te], raw_test=raw[te],
                  input_name="features", task=data.task, labels=labels, target_name=target_name,
                  preprocessing=kind.to_record(), fingerprint=_fingerprint(source, x, cats.astype(str), y),
                  source=source, notes=tuple(notes))


def _text_table(data: DataSpec, seed: int, header: list[str], rows: list[list[Any]], where: list[str],
                target: list[str]) -> Splits:
    col = data.text
    if col not in header:
        raise DataError(f"{data.path}: text column {col!r} not found; columns are {header}; set [data] text to the "
                        "column holding the texts")
    if col == data.target:
        raise DataError(f"{data.path}: text = target = {col!r}; the text column and the label column must differ")
    ci = header.index(col)
    texts = []
    for r, row in enumerate(rows):
        v = row[ci]
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise DataError(f"{data.path}: {where[r]}, column {col!r}: {v!r:.40} is not text (expected a string)")
        texts.append(v)
    if not any(t.strip() for t in texts):
        raise DataError(f"{data.path}: text column {col!r} is empty in all {len(texts)} rows; expected texts to "
                        "learn from (check [data] text names the right column)")
    y, labels = _encode_target(target, data.task, str(data.path))
    _check_enough(len(y), str(data.path))
    raw = np.asarray(texts, dtype=object)
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y)
    kind = Tokenize.fit(list(raw[tr]), data.vocabulary_size, data.sequence_length, data.lowercase,
                        data.token_pattern or TOKEN_PATTERN)
    if len(kind.vocabulary) <= 2:
        raise DataError(f"{data.path}: text column {col!r} has no tokens in the training rows (token pattern "
                        f"{kind.token_pattern!r}); check the column or set [data] token_pattern")
    kind = dataclasses.replace(kind, column=col)
    x = kind.apply(raw)
    source = f"{data.source}:{Path(data.path).name}"
    return Splits(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
                  raw_test=np.asarray(raw[te], dtype=str), input_name="tokens", task=data.task, labels=labels,
                  target_name=None, preprocessing=kind.to_record(),
                  fingerprint=_fingerprint(source, np.asarray(texts, dtype=str), y), source=source)


def _cell_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "" if v is None else str(v).strip()


def _number(v: Any, path: Any, where: str, name: str) -> float:
    if isinstance(v, bool) or v is None or (isinstance(v, str) and not v.strip()):
        what = "is empty (a missing value)" if v is None or isinstance(v, str) else f"{v!r} is not a number"
        raise DataError(f"{path}: {where}, column {name!r}: {what}; impute or drop such rows before training")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {where}, column {name!r}: {str(v)[:40]!r} is not a number; feature columns must be "
                        "numeric (or list the column in [data] categorical)") from None


def _category_cell(v: Any, path: Any, where: str, name: str) -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or isinstance(v, (list, dict)):
        raise DataError(f"{path}: {where}, column {name!r}: {v!r:.40} is not a category (expected text or an "
                        "integer)")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def npz_source(data: DataSpec, seed: int) -> Splits:
    assert data.path is not None and data.task is not None
    if not Path(data.path).exists():
        raise InputFileNotFound(f"data file {str(data.path)!r} does not exist; check [data] path in the spec")
    try:
        with np.load(data.path, allow_pickle=False) as npz:
            if "x" not in npz or "y" not in npz:
                raise DataError(f"{data.path}: expected arrays named 'x' and 'y', found {list(npz.keys())}")
            x, y_raw = npz["x"], npz["y"]
    except (ValueError, OSError) as exc:
        raise DataError(f"{data.path}: not a readable .npz file ({exc})") from None
    if len(x) != len(y_raw):
        raise DataError(f"{data.path}: x has {len(x)} rows but y has {len(y_raw)}; they must match")
    if x.dtype.kind not in "fiu":
        raise DataError(f"{data.path}: x has dtype {x.dtype}; expected numbers")
    _check_finite(x, str(data.path))
    y, labels = _encode_target(list(y_raw), data.task, str(data.path))
    _check_enough(len(y), str(data.path))
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y if data.task != "regression" else None)
    xm = x.astype(np.int32 if x.dtype.kind in "iu" else np.float32)
    return Splits(x_train=xm[tr], y_train=y[tr], x_test=xm[te], y_test=y[te], raw_test=xm[te],
                  input_name="inputs", task=data.task, labels=labels, target_name=None,
                  preprocessing={"kind": "none"}, fingerprint=_fingerprint("npz", x, y), source="npz")
