"""Tables in, predictions out: Parquet / CSV / JSONL files, directories and globs as Arrow batches.

The one scoring core of both engines: :func:`score_table` turns an Arrow table
of raw inputs into an Arrow table of predictions (plus the kept columns, in the
input's row order) and a table of the rows it set aside. The local engine
(:func:`predict_tables`) streams each file through it batch by batch; the Ray
engine (:mod:`seqdeploy.scoring.ray`) calls it inside its actors.

Output columns: ``prediction`` (the label, or the class id when the bundle has
no labels; the value in target units for regression, ``prediction_<j>`` for
several values) and, for classifiers, ``p_<class>`` (float64 probabilities),
followed by the kept input columns. Rows are numbered from 0 within their file
(the first data row is row 0, after any header).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from seqdeploy.errors import DataError, InputValidationError, UsageError
from seqdeploy.runtime.manifest import Manifest, Standardize, Tokenize
from seqdeploy.runtime.predictor import DEFAULT_BATCH_SIZE
from seqdeploy.scoring.files import PredictFileResult, class_names, further_columns, predict_chunk_outputs
from seqdeploy.scoring.named_inputs import (InputColumn, assemble, describe, input_columns, missing_columns, parse_cell,
                                           take_rows)
from seqdeploy.scoring.table_io import (  # noqa: F401  (re-exported: the Ray engine and tests use them)
    INPUT_FORMATS,
    FILE_COLUMN,
    ROW_COLUMN,
    ERROR_COLUMN,
    SUCCESS_MARKER,
    SKIPPED_NAME,
    ROW_GROUP_ROWS,
    _LIST_COLUMNS,
    InputFile,
    resolve_inputs,
    file_columns,
    _jsonable,
    iter_batches,
    _parquet_batches,
    _csv_batches,
    _jsonl_batches,
    _jsonl_table,
    output_kind,
    skipped_path,
    check_output_free,
    staged_directory,
    _TableSink,
    _csv_values,
    write_skipped,
    _parquet_rows,
    _short,
    _first,
)

# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Where a table's raw inputs are and what goes out.

    ``mode``: ``features`` (one numeric column per named feature), ``text`` (a
    string column), ``list`` (one list-of-numbers column, one sample per row) or
    ``columns`` (the numeric columns in order, for window/image/raw models) or ``inputs`` (one column per
    model input, by name, for models trained elsewhere taking strings or several inputs).
    """

    mode: str
    columns: tuple[str, ...]
    keep: tuple[str, ...]
    width: int | None
    outputs: tuple[str, ...]
    prediction_type: str = "float64"  # arrow type of the prediction column: string (labels), int64 or float64
    inputs: tuple[InputColumn, ...] = ()  # mode ``inputs``: one column per model input, by name

    @property
    def read_columns(self) -> tuple[str, ...]:
        """Every input column the scoring reads, inputs first, without duplicates."""
        return tuple(dict.fromkeys(self.columns + self.keep))


def output_columns(manifest: Manifest) -> tuple[str, ...]:
    """Prediction column names for a bundle: ``prediction`` (+ ``p_<class>`` for classifiers)."""
    names = class_names(manifest)
    if names is not None:
        return ("prediction", *(f"p_{c}" for c in names))
    shape = manifest.outputs[0].shape if manifest.outputs else ()
    k = shape[-1] if len(shape) >= 2 and isinstance(shape[-1], int) else 1
    return ("prediction",) if k == 1 else tuple(f"prediction_{j}" for j in range(k))


def parse_keep(keep: str | Sequence[str] | None) -> tuple[str, ...] | str:
    """``None`` -> ``()``; ``"all"`` stays; ``"id,customer"`` or a list -> a tuple of names."""
    if keep is None:
        return ()
    if isinstance(keep, str):
        if keep.strip() == "all":
            return "all"
        keep = [k for k in keep.split(",")]
    names = tuple(k.strip() for k in keep if k.strip())
    return names


def plan_layout(manifest: Manifest, columns: Sequence[str], keep: str | Sequence[str] | None = None,
                where: str = "the input") -> Layout:
    """Decide which columns feed the model and which are kept, from a table's column names."""
    columns = [c for c in columns if c not in (FILE_COLUMN, ROW_COLUMN, ERROR_COLUMN)]
    kept = parse_keep(keep)
    kept = tuple(columns) if kept == "all" else kept
    unknown = [k for k in kept if k not in columns]
    if unknown:
        raise DataError(f"{where} has no column(s) {_short(unknown)} to keep (columns: {_short(columns)}); "
                        f"name existing columns, or 'all'")
    outputs = output_columns(manifest)
    clash = [k for k in kept if k in outputs]
    if clash:
        raise DataError(f"{where}: kept column(s) {clash} have the names of prediction columns {list(outputs)}; "
                        f"rename those input columns first")
    ptype = "float64" if manifest.task == "regression" else ("string" if manifest.labels else "int64")
    pre = manifest.preprocessing
    named = input_columns(manifest)
    if named is not None:
        missing = missing_columns(named, columns)
        if missing:
            raise DataError(f"{where} has columns {_short(columns)} but no column(s) {_short(missing)} (expected one "
                            f"column per model input: {describe(named)}; extra columns such as ids are ignored)")
        return Layout("inputs", tuple(c.name for c in named), kept, None, outputs, ptype, named)
    if len(manifest.inputs) != 1:
        raise UsageError(f"bundle {manifest.name!r} has {len(manifest.inputs)} inputs; table scoring feeds "
                         f"single-input models only (use Predictor.predict with a dict of arrays)")
    if isinstance(pre, Standardize):
        missing = [f for f in pre.feature_names if f not in columns]
        if missing:
            raise InputValidationError(
                f"{where} is missing feature column(s) {_short(missing)} (columns: {_short(columns)}; expected the "
                f"training feature names {_short(pre.feature_names)}; extra columns such as ids are ignored)")
        return Layout("features", tuple(pre.feature_names), kept, len(pre.feature_names), outputs, ptype)
    if isinstance(pre, Tokenize):
        if "text" not in columns:
            raise DataError(f"{where} has columns {_short(columns)} but no 'text' column (expected a 'text' column "
                            f"holding the raw strings)")
        return Layout("text", ("text",), kept, None, outputs, ptype)
    raw = manifest.portable.inputs[0] if manifest.portable is not None else manifest.inputs[0]
    if raw.dtype in ("str", "object") and len(raw.shape) == 1:  # a model taking raw strings (its own lookups)
        if raw.name not in columns:
            raise DataError(f"{where} has columns {_short(columns)} but no {raw.name!r} column (expected a "
                            f"{raw.name!r} column holding the raw strings)")
        return Layout("text", (raw.name,), kept, None, outputs, ptype)
    width = _flat_width(manifest)
    for name in (*_LIST_COLUMNS, manifest.inputs[0].name):
        if name in columns:
            return Layout("list", (name,), kept, width, outputs, ptype)
    numeric = tuple(c for c in columns if c not in kept)
    if width is not None and len(numeric) != width:
        raise DataError(f"{where} has {len(numeric)} input column(s) besides the kept ones (expected {width} "
                        f"numeric columns, one raw value each, or an 'input' column holding a list of {width} "
                        f"numbers per row)")
    return Layout("columns", numeric, kept, width, outputs, ptype)


def _flat_width(manifest: Manifest) -> int | None:
    pre = manifest.preprocessing
    for attr in ("window",):
        if isinstance(getattr(pre, attr, None), int):
            return int(getattr(pre, attr))
    raw_shape = getattr(pre, "raw_shape", None)
    if raw_shape:
        return math.prod(raw_shape)
    shape = manifest.inputs[0].shape[1:]
    return math.prod(shape) if shape and all(isinstance(d, int) for d in shape) else None


# --------------------------------------------------------------------------- scoring one table


@dataclass(frozen=True)
class BadRow:
    """A row that could not be scored: its file, row number (from 0 within the file) and reason."""

    file: str
    row: int
    reason: str


def score_table(predictor: Any, table: pa.Table, layout: Layout, *, on_bad_row: str = "fail",
                file: str | None = None, row0: int = 0,
                files: Sequence[str] | None = None) -> tuple[pa.Table, pa.Table | None]:
    """Predictions for one table of raw rows: ``(scored table, skipped rows table or None)``.

    Row provenance comes from the :data:`FILE_COLUMN` / :data:`ROW_COLUMN` columns
    when present (indexes into ``files``), else from ``file`` and ``row0``. With
    ``on_bad_row="fail"`` the first bad row raises :class:`DataError` naming its
    file and row; with ``"skip"`` bad rows are left out of the scored table and
    returned (file, row, reason, values as JSON) in the second table.
    """
    n = table.num_rows
    names = table.column_names
    if FILE_COLUMN in names and ROW_COLUMN in names:
        fidx = table.column(FILE_COLUMN).to_numpy(zero_copy_only=False)
        rows = table.column(ROW_COLUMN).to_numpy(zero_copy_only=False)
        where = [str(files[i]) if files is not None else f"file {i}" for i in fidx]
    else:
        rows = np.arange(row0, row0 + n, dtype=np.int64)
        where = [file or "input"] * n
    raw, bad = extract_inputs(table, layout)
    if ERROR_COLUMN in names:  # the reader's reason beats the missing values it left behind
        for i, reason in enumerate(table.column(ERROR_COLUMN).to_pylist()):
            if reason:
                bad[i] = reason
    if on_bad_row == "fail" and bad:
        i = min(bad)
        raise DataError(f"{where[i]} row {int(rows[i])}: {bad[i]}; fix or drop the row, or score with bad rows "
                        f"skipped")
    good = np.array([i for i in range(n) if i not in bad], dtype=np.int64) if bad else np.arange(n)
    preds, probs, extras = None, None, {}
    while len(good):
        sub = _take(raw, good)
        try:
            preds, probs, extras = predict_chunk_outputs(predictor, sub)
            break
        except InputValidationError:  # find the rows the runtime refuses, one by one
            for i in good.tolist():
                try:
                    predict_chunk_outputs(predictor, _take(raw, np.array([i])))
                except InputValidationError as exc:
                    bad[i] = str(exc)
                    if on_bad_row == "fail":
                        raise DataError(f"{where[i]} row {int(rows[i])}: {_strip_row0(str(exc))}") from None
            good = np.array([i for i in good.tolist() if i not in bad], dtype=np.int64)
    out = _prediction_table(layout, preds, probs, len(good), extras, further_columns(predictor))
    for k in layout.keep:
        out = out.append_column(k, table.column(k).take(pa.array(good)))
    skipped = None
    if bad:
        idx = sorted(bad)
        values = table.select(list(layout.read_columns)).take(pa.array(idx)).to_pylist()
        skipped = pa.table({"file": [where[i] for i in idx], "row": [int(rows[i]) for i in idx],
                            "reason": [_strip_row0(bad[i]) for i in idx],
                            "values": [json.dumps(_jsonable(v), sort_keys=False) for v in values]})
    return out, skipped


def _prediction_table(layout: Layout, preds: np.ndarray | None, probs: np.ndarray | None, n: int,
                      extras: dict[str, np.ndarray] | None = None,
                      further: dict[str, tuple[str, ...]] | None = None) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    outs = layout.outputs
    if preds is None:  # every row set aside: typed empty columns
        ptype = getattr(pa, layout.prediction_type)()
        empty = {o: pa.array([], type=ptype if o == "prediction" else pa.float64()) for o in outs}
        return pa.table({**empty, **{c: pa.array([], type=pa.float64()) for cs in (further or {}).values() for c in cs}})
    if probs is not None:
        ptype = getattr(pa, layout.prediction_type)()
        cols["prediction"] = pa.array(preds.tolist() if preds.dtype.kind in "UO" else preds, type=ptype)
        for j, o in enumerate(outs[1:]):
            cols[o] = pa.array(np.ascontiguousarray(probs[:, j], dtype=np.float64))
    elif preds.ndim == 2:
        for j, o in enumerate(outs):
            cols[o] = pa.array(np.ascontiguousarray(preds[:, j], dtype=np.float64))
    else:
        cols["prediction"] = pa.array(np.asarray(preds, dtype=np.float64))
    for name, names in (further or {}).items():  # a several-output model's further outputs, one column per value
        a = (extras or {})[name]
        for j, c in enumerate(names):
            v = a[:, j]
            cols[c] = pa.array(v.astype(np.float64) if v.dtype.kind in "biuf" else v.astype(str))
    return pa.table(cols)


def _take(raw: Any, idx: np.ndarray) -> Any:
    if isinstance(raw, dict):
        return take_rows(raw, idx)
    if isinstance(raw, np.ndarray):
        return raw[idx]
    return [raw[i] for i in idx.tolist()]


def _strip_row0(msg: str) -> str:
    """A runtime message about a one-row call, without its meaningless 'row 0'."""
    return msg.replace("raw input row 0 ", "raw input ").replace("row 0 ", "")


def extract_inputs(table: pa.Table, layout: Layout) -> tuple[Any, dict[int, str]]:
    """Raw model inputs for every row of ``table`` and ``{row position: reason}`` for rows that cannot be used.

    Bad rows keep a placeholder in the returned inputs so positions stay aligned.
    """
    n = table.num_rows
    bad: dict[int, str] = {}
    if layout.mode == "inputs":
        values: dict[str, list[Any]] = {}
        for c in layout.inputs:
            cells = []
            for i, cell in enumerate(table.column(c.name).to_pylist()):
                value, reason = parse_cell(c, cell)
                if reason is not None:
                    bad.setdefault(i, reason)
                cells.append(value)
            values[c.name] = cells
        if bad:  # placeholders of the right shape keep positions aligned
            for c in layout.inputs:
                if not c.scalar:
                    good = next((v for i, v in enumerate(values[c.name]) if i not in bad), [])
                    values[c.name] = [[0.0] * len(good) if i in bad else v for i, v in enumerate(values[c.name])]
        return assemble(layout.inputs, values), bad
    if layout.mode == "text":
        col = table.column(layout.columns[0])
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            vals = col.to_pylist()
            texts = []
            for i, v in enumerate(vals):
                if not isinstance(v, str):
                    bad.setdefault(i, f"column 'text' holds {type(v).__name__} {v!r:.40} (expected a string)")
                    v = ""
                texts.append(v)
            return texts, bad
        texts = col.to_pylist()
        for i, v in enumerate(texts):
            if v is None:
                bad[i] = "column 'text' is empty (null; expected a string)"
                texts[i] = ""
        return texts, bad
    if layout.mode == "list":
        name = layout.columns[0]
        vals = table.column(name).to_pylist()
        width = layout.width
        x = np.zeros((n, width or (len(vals[0]) if vals and vals[0] else 0)), dtype=np.float64)
        for i, v in enumerate(vals):
            if not isinstance(v, (list, tuple)):
                bad[i] = f"column {name!r} holds {type(v).__name__} (expected a list of {width or 'n'} numbers)"
                continue
            if len(v) != x.shape[1]:
                bad[i] = f"column {name!r} holds {len(v)} values (expected {x.shape[1]})"
                continue
            try:
                x[i] = [float("nan") if e is None else float(e) for e in v]
            except (TypeError, ValueError):
                bad[i] = f"column {name!r} holds a value that is not a number (expected {x.shape[1]} numbers)"
                continue
            if not np.isfinite(x[i]).all():
                bad[i] = f"column {name!r} contains {x[i][~np.isfinite(x[i])][0]} (expected finite numbers)"
        return x, bad
    x = np.empty((n, len(layout.columns)), dtype=np.float64)
    for j, name in enumerate(layout.columns):
        x[:, j] = _float_column(table.column(name), name, bad)
    finite = np.isfinite(x)
    if not finite.all():
        for i in np.flatnonzero(~finite.all(axis=1)).tolist():
            if i not in bad:
                j = int(np.flatnonzero(~finite[i])[0])
                bad[i] = f"column {layout.columns[j]!r} = {x[i, j]} (expected a finite number)"
    if bad:
        x[list(bad)] = 0.0
    return x, bad


def _float_column(col: pa.ChunkedArray, name: str, bad: dict[int, str]) -> np.ndarray:
    """A column as float64 (nulls -> NaN); text cells that are not numbers become reasons in ``bad``."""
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        arr = pc.cast(col, pa.float64()) if not pa.types.is_floating(t) or t != pa.float64() else col
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        nulls = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t):
        # numbers as text (CSV): parse in Arrow; only a column with an unparsable cell goes cell by cell
        trimmed = pc.utf8_trim_whitespace(col) if not pa.types.is_null(t) else col
        empty = pc.equal(trimmed, "") if not pa.types.is_null(t) else None
        try:
            parsed = pc.cast(pc.if_else(empty, None, trimmed) if empty is not None else trimmed, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            parsed = None
        if parsed is not None:
            values = parsed.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            if parsed.null_count:
                missing = parsed.is_null().to_numpy(zero_copy_only=False)
                for i in np.flatnonzero(missing).tolist():
                    bad.setdefault(i, f"column {name!r} is empty (a missing value)")
                values = np.where(missing, np.nan, values)
            return values
        texts = col.to_pylist()
        values = np.empty(len(texts), dtype=np.float64)
        nulls = None
        for i, s in enumerate(texts):
            cell = (s or "").strip()
            try:
                values[i] = float(cell)
            except ValueError:
                values[i] = np.nan
                what = "is empty (a missing value)" if not cell else f"= {cell[:40]!r} is not a number"
                bad.setdefault(i, f"column {name!r} {what}")
        return values
    else:
        raise DataError(f"column {name!r} has type {t} (expected numbers, or text holding numbers)")
    if nulls is not None:
        for i in np.flatnonzero(nulls).tolist():
            bad.setdefault(i, f"column {name!r} is empty (null; a missing value)")
    return values


# --------------------------------------------------------------------------- the local engine


def predict_tables(predictor: Any, input_spec: str | os.PathLike, output: str | os.PathLike | Any | None, *,
                   batch_size: int = DEFAULT_BATCH_SIZE, keep: str | Sequence[str] | None = None, on_bad_row: str = "fail",
                   overwrite: bool = False, progress: Any = None) -> PredictFileResult:
    """Score every row of the input files in this process, streaming record batches (flat memory).

    See :func:`seqdeploy.scoring.predict_file` for the arguments; this is its Arrow path.
    """
    files = resolve_inputs(input_spec)
    layout = plan_layout(predictor.manifest, file_columns(files[0]), keep, where=files[0].path)
    if output is None or not isinstance(output, (str, os.PathLike)):
        if on_bad_row == "skip":
            raise UsageError("skipping bad rows needs an output path: the skipped rows are written beside it")
        kind, target = "csv-stream", None
    else:
        kind, target = output_kind(output), Path(output)
        check_output_free(target, overwrite)
        if on_bad_row == "skip" and kind != "dir":
            check_output_free(skipped_path(target), overwrite)
    t0 = time.perf_counter()
    total = sum(_parquet_rows(f) for f in files) if all(f.format == "parquet" for f in files) else None
    rows, skipped_tables, n_skipped = 0, [], 0
    with contextlib.ExitStack() as stack:
        if kind == "dir":
            work = stack.enter_context(staged_directory(target, overwrite))  # type: ignore[arg-type]
            sink = _TableSink(work, "dir", predictor.manifest)
        elif kind == "csv-stream":
            import sys

            sink = _StreamSink(output if output is not None else sys.stdout, predictor.manifest)
        else:
            from seqdeploy.atomic import atomic_path

            tmp = stack.enter_context(atomic_path(target))  # type: ignore[arg-type]
            sink = _TableSink(tmp, kind, predictor.manifest)
        stack.callback(sink.close)
        for index, f in enumerate(files):
            sink.start_file(index)
            for table, row0 in iter_batches(f, layout.read_columns, batch_size):
                out, skipped = score_table(predictor, table, layout, on_bad_row=on_bad_row, file=f.path, row0=row0)
                if out.num_rows:
                    sink.write(out)
                rows += out.num_rows
                if skipped is not None:
                    skipped_tables.append(skipped)
                    n_skipped += skipped.num_rows
                if progress is not None:
                    progress(rows + n_skipped, total)
        if rows + n_skipped == 0:
            raise DataError(f"{input_spec} has no data rows (expected at least one row)")
        if rows == 0 and kind in ("parquet", "csv", "jsonl"):
            sink.write(_prediction_table(layout, None, None, 0, further=further_columns(predictor)))
        sink.close()
        if on_bad_row == "skip":
            side = (work / SKIPPED_NAME) if kind == "dir" else skipped_path(target)  # type: ignore[arg-type]
            write_skipped(side, skipped_tables)
    secs = time.perf_counter() - t0
    side_out = None
    if on_bad_row == "skip" and target is not None:
        side_out = str(target / SKIPPED_NAME) if kind == "dir" else str(skipped_path(target))
    return PredictFileResult(predictor.info.bundle, predictor.info.artifact, os.fspath(input_spec),
                             None if target is None else str(target), "parquet" if kind == "dir" else kind.split("-")[0],
                             rows, round(secs, 4), round(rows / secs, 1) if secs > 0 else 0.0, files=len(files),
                             skipped=n_skipped, skipped_output=side_out)


class _StreamSink(_TableSink):
    def __init__(self, stream: Any, manifest: Manifest):
        super().__init__(Path("-"), "csv", manifest)
        self._out = stream
        self._header = False

    def write(self, table: pa.Table) -> None:
        import csv

        w = csv.writer(self._out, lineterminator="\n")
        if not self._header:
            w.writerow(table.column_names)
            self._header = True
        w.writerows(zip(*[_csv_values(table.column(c)) for c in table.column_names]))

    def close(self) -> None:
        self._out.flush()
