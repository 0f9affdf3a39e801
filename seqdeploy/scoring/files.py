"""Single CSV / JSONL / NPY files scored line by line, predictions as CSV or JSONL.

The original streaming path of ``seqdeploy predict``: it needs only the runtime
(numpy + onnxruntime), no pyarrow. :func:`predict_file` sends everything else
(Parquet, directories, globs, kept columns, skipped rows) to
:mod:`seqdeploy.scoring.tables`. Lines are read by :mod:`seqdeploy.io.text`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np

from seqdeploy.errors import InputValidationError
from seqdeploy.io.text import NOT_JSON, NOT_UTF8, BadInput, CsvRows, JsonlRows
from seqdeploy.runtime.manifest import Manifest, NoPreprocessing, Scale, Standardize, Tokenize, Window
from seqdeploy.runtime.predictor import DEFAULT_BATCH_SIZE, Predictor, numeric_array, short_list
from seqdeploy.scoring.named_inputs import assemble, describe, input_columns, missing_columns, parse_cell, rows_in

BAD_ROW_MODES = ("fail", "skip")


@dataclass(frozen=True)
class PredictFileResult:
    """What :func:`predict_file` did: rows scored, where they went, how fast.

    ``skipped`` rows (bad inputs set aside with ``on_bad_row="skip"``) are listed
    with their file, row and reason in ``skipped_output``.
    """

    bundle: str
    artifact: str
    input: str
    output: str | None
    format: str
    rows: int
    seconds: float
    rows_per_second: float
    files: int = 1
    skipped: int = 0
    skipped_output: str | None = None
    engine: str = "local"


def predict_simple_file(predictor: "Predictor", src: Path, output: Any, bs: int, progress: Any) -> PredictFileResult:
    """One CSV / JSONL / NPY file to CSV or JSONL (a path or a text stream), read line by line."""
    import contextlib
    import time

    from seqdeploy.atomic import atomic_path
    from seqdeploy.errors import DataError, InputFileNotFound, UsageError

    if not src.is_file():
        raise InputFileNotFound(f"input {src} does not exist (expected a .csv, .npy or .jsonl file)")
    kind = src.suffix.lower()
    out_is_path = output is not None and isinstance(output, (str, os.PathLike))
    fmt = "csv"
    if out_is_path:
        suffix = Path(output).suffix.lower()  # type: ignore[arg-type]
        if suffix not in (".csv", ".jsonl", ".ndjson"):
            raise UsageError(f"output {output} has suffix {suffix or '(none)'!r} (expected .csv or .jsonl)")
        fmt = "csv" if suffix == ".csv" else "jsonl"
    writer = _PredictionWriter(predictor, fmt)
    t0 = time.perf_counter()
    rows = 0
    with contextlib.ExitStack() as stack:
        if out_is_path:
            tmp = stack.enter_context(atomic_path(output))  # type: ignore[arg-type]
            stream = stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
        else:
            import sys

            stream = output if output is not None else sys.stdout
        for chunk, done, total in _read_chunks(predictor, src, kind, bs, DataError):
            try:
                preds, probs, extras = predict_chunk_outputs(predictor, chunk)
            except InputValidationError as exc:
                raise InputValidationError(f"{src}: {locate_bad_row(predictor, chunk, rows, exc)}") from None
            writer.write(stream, preds, probs, extras)
            rows += len(preds)
            if progress is not None:
                progress(done, total)
        if rows == 0:
            raise DataError(f"{src} has no data rows (expected at least one sample after the header)")
        stream.flush()
    secs = time.perf_counter() - t0
    return PredictFileResult(predictor.info.bundle, predictor.info.artifact, str(src),
                             str(output) if out_is_path else None, fmt, rows, round(secs, 4),
                             round(rows / secs, 1) if secs > 0 else 0.0)


def class_names(manifest: Manifest) -> list[str] | None:
    """Names of the probability columns: the labels, else class ids as text; None for regression."""
    if manifest.task == "regression":
        return None
    if manifest.labels:
        return list(manifest.labels)
    k = _last_dim(manifest)
    if manifest.task == "binary":
        return ["0", "1"]
    return [str(i) for i in range(k)] if k else None


def _last_dim(manifest: Manifest) -> int | None:
    shape = manifest.outputs[0].shape if manifest.outputs else ()
    return shape[-1] if shape and isinstance(shape[-1], int) else None


def labels_from_proba(manifest: Manifest, probs: np.ndarray) -> np.ndarray:
    """Labels (or class ids) from ``predict_proba`` output, by the rule ``Predictor.predict`` applies."""
    ids = (probs[:, 1] >= 0.5).astype(np.int64) if manifest.task == "binary" else np.argmax(probs, axis=1)
    return np.asarray(manifest.labels)[ids] if manifest.labels else ids


def predict_chunk(predictor: "Predictor", raw: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(predictions, probabilities or None)`` for raw rows, one model run (public Predictor API only)."""
    if predictor.manifest.task == "regression":
        return np.asarray(predictor.predict(raw)), None
    probs = np.asarray(predictor.predict_proba(raw))
    return labels_from_proba(predictor.manifest, probs), probs


def further_columns(predictor: "Predictor") -> dict[str, tuple[str, ...]]:
    """The columns a several-output model's further outputs are written to, per output: ``<name>`` for one value
    per row, ``<name>_<j>`` for several (row-major); an output with a variable axis besides the batch is left out."""
    shapes = {t.name: t.shape for t in predictor.manifest.outputs}
    cols: dict[str, tuple[str, ...]] = {}
    for name in predictor.further_outputs:
        tail = list(shapes.get(name, ())[1:])
        if not all(isinstance(d, int) for d in tail):
            continue
        k = int(np.prod(tail)) if tail else 1
        cols[name] = (name,) if k == 1 else tuple(f"{name}_{j}" for j in range(k))
    return cols


def predict_chunk_outputs(predictor: "Predictor", raw: Any) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """:func:`predict_chunk` plus the further outputs of a several-output model (``{name: (rows, width)}``, the
    outputs :func:`further_columns` lists), from the same single run."""
    further = further_columns(predictor)
    if not further:
        preds, probs = predict_chunk(predictor, raw)
        return preds, probs, {}
    ans = predictor.answers(raw)
    n = len(next(iter(ans.values())))
    extras = {name: np.asarray(ans[name]).reshape(n, -1) for name in further}
    if predictor.manifest.task == "regression":
        return np.asarray(ans["prediction"], np.float64), None, extras
    probs = np.asarray(ans["probabilities"], np.float64)
    return labels_from_proba(predictor.manifest, probs), probs, extras


_ROW_RE = re.compile(r"\brow (\d+)\b")


def locate_bad_row(predictor: "Predictor", chunk: Any, offset: int, exc: Exception) -> str:
    """The chunk's error message with the row number counted from the start of the file.

    The runtime numbers rows within the chunk it was given; the chunk starts at
    ``offset``. A message without a row number gets the first row that fails alone.
    """
    msg = str(exc)
    if offset == 0:
        return msg
    m = _ROW_RE.search(msg)
    if m:
        return msg[:m.start()] + f"row {int(m.group(1)) + offset}" + msg[m.end():]
    n = rows_in(chunk) if isinstance(chunk, dict) else len(chunk)
    for i in range(n):
        one = {k: v[i:i + 1] for k, v in chunk.items()} if isinstance(chunk, dict) else chunk[i:i + 1]
        try:
            predict_chunk(predictor, one)
        except InputValidationError as one:
            return f"row {offset + i}: {one}"
    return msg


class _PredictionWriter:
    """CSV: ``prediction[,p_<label>...]``; JSONL: ``{"prediction": ..., "probabilities": {...}}``."""

    def __init__(self, predictor: "Predictor", fmt: str):
        self.fmt = fmt
        m = predictor.manifest
        self.header_done = False
        self.class_names: list[str] | None = class_names(m)
        self.further = further_columns(predictor)

    def write(self, stream: Any, preds: np.ndarray, probs: np.ndarray | None,
              extras: dict[str, np.ndarray] | None = None) -> None:
        import csv
        import json

        if probs is not None and self.class_names is None:
            self.class_names = [str(i) for i in range(probs.shape[1])]
        more = [_cell_values(extras[name]) for name in self.further] if extras else []
        if self.fmt == "csv":
            w = csv.writer(stream, lineterminator="\n")
            if not self.header_done:
                if probs is not None:
                    head = ["prediction", *[f"p_{c}" for c in self.class_names or []]]
                elif preds.ndim == 2:
                    head = [f"prediction_{j}" for j in range(preds.shape[1])]
                else:
                    head = ["prediction"]
                w.writerow(head + [c for cols in self.further.values() for c in cols])
                self.header_done = True
            # .tolist() first: formatting numpy scalars one by one is ~10x slower than Python floats
            if probs is not None:
                rows = [[p, *pr] for p, pr in zip(preds.tolist(), np.round(probs, 7).tolist())]
            elif preds.ndim == 2:
                rows = preds.astype(np.float64).tolist()
            else:
                rows = [[v] for v in preds.astype(np.float64).tolist()]
            for values in more:
                for row, v in zip(rows, values):
                    row.extend(v)
            w.writerows(rows)
        else:
            names = self.class_names or []
            values = preds.tolist() if preds.dtype.kind in "UOi" else preds.astype(np.float64).tolist()
            if probs is None:
                objs = [{"prediction": v} for v in values]
            else:
                objs = [{"prediction": v, "probabilities": dict(zip(names, pr))}
                        for v, pr in zip(values, np.round(probs, 7).tolist())]
            for name, vals in zip(self.further, more):
                one = len(self.further[name]) == 1
                for obj, v in zip(objs, vals):
                    obj[name] = v[0] if one else v
            stream.write("\n".join(json.dumps(o) for o in objs) + "\n")


def _cell_values(a: np.ndarray) -> list[list[Any]]:
    """Rows of one further output as Python values (floats rounded like probabilities; strings as text)."""
    if a.dtype.kind in "biu":
        return a.tolist()
    if a.dtype.kind == "f":
        return np.round(a.astype(np.float64), 7).tolist()
    return [[str(v) for v in row] for row in a.tolist()]


def _read_chunks(predictor: "Predictor", src: Path, kind: str, bs: int, DataError: type) -> Iterable[tuple[Any, int, int]]:
    pre = predictor.manifest.preprocessing
    if kind == ".npy":
        try:
            arr = np.load(src, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{src} is not a readable .npy array ({exc}); save it with np.save (numeric or "
                            f"fixed-width string dtype, no objects)") from None
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise DataError(f"{src} holds an array of shape {arr.shape} (expected at least one row)")
        for s in range(0, arr.shape[0], bs):
            chunk = np.asarray(arr[s:s + bs])
            if isinstance(pre, Tokenize):
                if chunk.dtype.kind not in "US":
                    raise DataError(f"{src} has dtype {chunk.dtype} (expected strings for a text model)")
                chunk = chunk.astype(str).tolist()
            yield chunk, min(s + bs, arr.shape[0]), arr.shape[0]
        return
    try:
        if kind == ".csv":
            yield from _csv_chunks(predictor, src, CsvRows(src), bs, DataError)
        else:
            yield from _jsonl_chunks(predictor, src, JsonlRows(src, objects=False), bs, DataError)
    except BadInput as exc:
        if exc.kind == NOT_JSON:
            raise DataError(f"{src} line {exc.line} is not valid JSON ({exc.detail}); expected one JSON object per "
                            f"line") from None
        if exc.kind == NOT_UTF8:
            raise DataError(f"{src}: line {exc.line} is not UTF-8 text ({exc.detail}); save the file as UTF-8") \
                from None
        raise DataError(f"{src}: {exc.reason()}") from None


def _flat_size(predictor: "Predictor") -> int | None:
    pre = predictor.manifest.preprocessing
    if isinstance(pre, Window):
        return pre.window
    if isinstance(pre, Scale):
        return math.prod(pre.raw_shape)
    shape = _model_shape(predictor)
    return math.prod(shape) if all(isinstance(d, int) for d in shape) else None


def _model_shape(predictor: "Predictor") -> tuple[Any, ...]:
    """Shape of the (first) model input without the batch axis, from the manifest."""
    return tuple(predictor.manifest.inputs[0].shape[1:])


def _reshape_flat(predictor: "Predictor", x: np.ndarray) -> np.ndarray:
    pre = predictor.manifest.preprocessing
    if isinstance(pre, NoPreprocessing):
        shape = _model_shape(predictor)
        if all(isinstance(d, int) for d in shape):
            return x.reshape((x.shape[0], *shape))
    return x


def _csv_chunks(predictor: "Predictor", src: Path, counter: CsvRows, bs: int, DataError: type) -> Iterable[tuple[Any, int, int]]:
    pre = predictor.manifest.preprocessing
    total = counter.total
    reader = iter(counter)
    header = next(reader, None)
    if header is None:
        raise DataError(f"{src} is empty (expected a header row and data rows)")
    header = [h.strip() for h in header]
    named = input_columns(predictor.manifest)
    if named is not None:
        yield from _named_csv_chunks(named, src, header, reader, counter, bs, DataError)
        return
    if isinstance(pre, Tokenize):
        if "text" not in header:
            raise DataError(f"{src} has columns {header[:10]} but no 'text' column (expected a header with a "
                            f"'text' column holding the raw strings)")
        col = header.index("text")
        buf: list[Any] = []
        for row in reader:
            if not row:
                continue
            if col >= len(row):
                raise DataError(f"{src} line {counter.line}: {len(row)} fields (expected a 'text' value in "
                                f"column {col + 1})")
            buf.append(row[col])
            if len(buf) >= bs:
                yield buf, counter.done, total
                buf = []
        if buf:
            yield buf, counter.done, total
        return
    if isinstance(pre, Standardize):
        missing = [f for f in pre.feature_names if f not in header]
        if missing:
            raise InputValidationError(
                f"{src} is missing feature column(s) {short_list(missing)} (header has {short_list(header)}; expected the "
                f"training feature names {short_list(pre.feature_names)}; extra columns such as ids are ignored)")
        cols = [header.index(f) for f in pre.feature_names]
        names = list(pre.feature_names)
    else:
        width = _flat_size(predictor)
        try:
            first_values = [float(h) for h in header]
        except ValueError:
            first_values = None
        if width is not None and len(header) != width:
            raise DataError(f"{src} has {len(header)} columns (expected {width} numeric columns: one raw value each)")
        cols = list(range(len(header)))
        names = header
        if first_values is not None:  # no header: the first line is data
            pending = [first_values]
        else:
            pending = []
    rows: list[list[float]] = [] if isinstance(pre, Standardize) else pending
    need = max(cols) + 1
    for row in reader:
        if not row:
            continue
        if len(row) < need:
            raise DataError(f"{src} line {counter.line}: {len(row)} fields (expected {len(header)} as in the header)")
        vals = []
        for c in cols:
            cell = row[c].strip()
            try:
                vals.append(float(cell))
            except ValueError:
                what = "is empty (a missing value)" if not cell else f"= {cell!r} is not a number"
                raise DataError(f"{src} line {counter.line} column {names[cols.index(c)]!r} {what}; "
                                f"impute or drop such rows before predicting") from None
        rows.append(vals)
        if len(rows) >= bs:
            yield _reshape_flat(predictor, np.asarray(rows, dtype=np.float64)), counter.done, total
            rows = []
    if rows:
        yield _reshape_flat(predictor, np.asarray(rows, dtype=np.float64)), counter.done, total


def _named_csv_chunks(named: Any, src: Path, header: list[str], reader: Any, counter: CsvRows, bs: int,
                      DataError: type) -> Iterable[tuple[Any, int, int]]:
    """One column per model input, by input name (models trained elsewhere taking strings or several inputs)."""
    missing = missing_columns(named, header)
    if missing:
        raise DataError(f"{src} has columns {short_list(header)} but no column(s) {short_list(missing)} (expected one "
                        f"column per model input: {describe(named)}; extra columns such as ids are ignored)")
    cols = [(c, header.index(c.name)) for c in named]
    for c, _ in cols:
        if not c.scalar:
            raise DataError(f"{src}: model input {c.name!r} takes {'x'.join(map(str, c.shape))} values per row, "
                            f"which a CSV cell cannot hold (expected a JSONL or Parquet file with a list per row)")
    buf: dict[str, list[Any]] = {c.name: [] for c, _ in cols}
    n = 0
    for row in reader:
        if not row:
            continue
        if len(row) < len(header):
            raise DataError(f"{src} line {counter.line}: {len(row)} fields (expected {len(header)} as in the header)")
        for c, j in cols:
            value, reason = parse_cell(c, row[j])
            if reason is not None:
                raise DataError(f"{src} line {counter.line} {reason}; fix or drop such rows before predicting")
            buf[c.name].append(value)
        n += 1
        if n >= bs:
            yield assemble(named, buf), counter.done, counter.total
            buf = {c.name: [] for c, _ in cols}
            n = 0
    if n:
        yield assemble(named, buf), counter.done, counter.total


def _named_jsonl_chunks(named: Any, src: Path, counter: JsonlRows, bs: int,
                        DataError: type) -> Iterable[tuple[Any, int, int]]:
    """One key per model input, by input name."""
    buf: dict[str, list[Any]] = {c.name: [] for c in named}
    n = 0
    for _, obj in counter:
        if isinstance(obj, str) and len(named) == 1 and named[0].text:  # bare JSON strings for one text input
            obj = {named[0].name: obj}
        if not isinstance(obj, dict):
            raise DataError(f"{src} line {counter.line}: {type(obj).__name__} (expected an object with one key per "
                            f"model input: {describe(named)})")
        missing = missing_columns(named, list(obj))
        if missing:
            raise DataError(f"{src} line {counter.line}: keys {short_list(list(obj))} but no {short_list(missing)} "
                            f"(expected one key per model input: {describe(named)})")
        for c in named:
            value, reason = parse_cell(c, obj[c.name])
            if reason is not None:
                raise DataError(f"{src} line {counter.line} {reason.replace('column', 'key', 1)}; fix or drop such "
                                f"rows before predicting")
            buf[c.name].append(value)
        n += 1
        if n >= bs:
            yield assemble(named, buf), counter.done, counter.total
            buf = {c.name: [] for c in named}
            n = 0
    if n:
        yield assemble(named, buf), counter.done, counter.total


def _jsonl_chunks(predictor: "Predictor", src: Path, counter: JsonlRows, bs: int, DataError: type) -> Iterable[tuple[Any, int, int]]:
    pre = predictor.manifest.preprocessing
    named = input_columns(predictor.manifest)
    if named is not None:
        yield from _named_jsonl_chunks(named, src, counter, bs, DataError)
        return
    total = counter.total
    buf: list[Any] = []
    for _, obj in counter:
        if isinstance(pre, Tokenize):
            if isinstance(obj, dict):
                if "text" not in obj:
                    raise DataError(f"{src} line {counter.line}: keys {list(obj)[:10]} (expected a 'text' key)")
                obj = obj["text"]
            if not isinstance(obj, str):
                raise DataError(f"{src} line {counter.line}: {type(obj).__name__} (expected {{\"text\": \"...\"}})")
        elif isinstance(pre, Standardize):
            if isinstance(obj, list):
                obj = dict(zip(pre.feature_names, obj)) if len(obj) == len(pre.feature_names) else obj
            if not isinstance(obj, dict):
                raise DataError(f"{src} line {counter.line}: {type(obj).__name__} (expected an object keyed by "
                                f"feature name, e.g. {{{pre.feature_names[0]!r}: 1.0, ...}})")
            missing = [f for f in pre.feature_names if f not in obj]
            if missing:
                raise InputValidationError(f"{src} line {counter.line} is missing feature(s) {short_list(missing)} "
                                           f"(expected keys {short_list(pre.feature_names)})")
        else:
            names = predictor.raw_input_names
            if isinstance(obj, dict) and "input" not in obj and all(n in obj for n in names):
                buf.append({n: obj[n] for n in names})  # one key per model input (models without preprocessing)
                if len(buf) >= bs:
                    yield _jsonl_batch(predictor, buf), counter.done, total
                    buf = []
                continue
            if isinstance(obj, dict):
                if "input" not in obj:
                    raise DataError(f"{src} line {counter.line}: keys {list(obj)[:10]} (expected an 'input' key, "
                                    f"one key per model input {list(names)}, or a bare JSON list)")
                obj = obj["input"]
            if not isinstance(obj, list):
                raise DataError(f"{src} line {counter.line}: {type(obj).__name__} (expected a list of numbers)")
        buf.append(obj)
        if len(buf) >= bs:
            yield _jsonl_batch(predictor, buf), counter.done, total
            buf = []
    if buf:
        yield _jsonl_batch(predictor, buf), counter.done, total


def _jsonl_batch(predictor: "Predictor", buf: list[Any]) -> Any:
    pre = predictor.manifest.preprocessing
    if isinstance(pre, (Tokenize, Standardize)):
        return buf
    if buf and isinstance(buf[0], dict):
        return {n: _stack_cells([row[n] for row in buf]) for n in buf[0]}
    return numeric_array(buf, "rows of numbers of equal length")


def _stack_cells(cells: list[Any]) -> np.ndarray:
    """One input's cells as an array: strings as text, sequences of different lengths right-padded with 0."""
    if all(isinstance(c, str) for c in cells):
        return np.asarray(cells, dtype=object)
    if all(isinstance(c, list) and (not c or not isinstance(c[0], list)) for c in cells):
        longest = max(len(c) for c in cells)
        if any(len(c) != longest for c in cells):
            cells = [c + [0] * (longest - len(c)) for c in cells]
    return np.asarray(cells)
