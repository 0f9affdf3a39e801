"""Batch scoring of files with a bundle: CSV / JSONL / NPY in, predictions out, streamed.

What ``seqdeploy predict --input FILE`` calls; kept apart from :mod:`seqdeploy.runtime`
so that the embeddable runtime carries only what an application needs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np

from seqdeploy.errors import InputValidationError
from seqdeploy.manifest import NoPreprocessing, Scale, Standardize, Tokenize, Window
from seqdeploy.runtime import DEFAULT_BATCH_SIZE, Predictor, _numeric_array, _short

@dataclass(frozen=True)
class PredictFileResult:
    """What :func:`predict_file` did: rows scored, where they went, how fast."""

    bundle: str
    artifact: str
    input: str
    output: str | None
    format: str
    rows: int
    seconds: float
    rows_per_second: float


def predict_file(
    predictor: "Predictor",
    input_path: str | os.PathLike,
    output: str | os.PathLike | Any | None = None,
    batch_size: int | None = None,
    progress: Any = None,
) -> PredictFileResult:
    """Score a CSV / NPY / JSONL file in chunks and write predictions as CSV or JSONL.

    Memory stays flat: CSV and JSONL are read line by line, NPY is memory-mapped,
    and each chunk's predictions are written before the next chunk is read.
    ``output`` is a path (``.csv`` or ``.jsonl``, written atomically) or a
    text stream (CSV). ``progress(done, total)`` is called after each chunk
    (bytes for CSV/JSONL, rows for NPY).

    >>> predict_file(Predictor.from_bundle("runs/x"), "data.csv", "preds.jsonl")  # doctest: +SKIP
    """
    import contextlib
    import time

    from seqdeploy.atomic import atomic_path
    from seqdeploy.errors import DataError, InputFileNotFound, UsageError

    src = Path(input_path)
    if not src.is_file():
        raise InputFileNotFound(f"input {src} does not exist (expected a .csv, .npy or .jsonl file)")
    kind = src.suffix.lower()
    if kind not in (".csv", ".npy", ".jsonl", ".ndjson"):
        raise UsageError(f"input {src} has suffix {kind or '(none)'!r} (expected .csv, .npy or .jsonl)")
    bs = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise UsageError(f"batch size {batch_size!r} (expected an integer >= 1)")
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
                if predictor.manifest.task == "regression":
                    preds, probs = predictor._predict_rows(chunk, False, rows), None
                else:
                    probs = predictor._predict_rows(chunk, True, rows)
                    preds = predictor._labels_from_proba(probs)
            except InputValidationError as exc:
                raise InputValidationError(f"{src}: {exc}") from None
            writer.write(stream, preds, probs)
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


class _PredictionWriter:
    """CSV: ``prediction[,p_<label>...]``; JSONL: ``{"prediction": ..., "probabilities": {...}}``."""

    def __init__(self, predictor: "Predictor", fmt: str):
        self.fmt = fmt
        m = predictor.manifest
        self.header_done = False
        self.class_names: list[str] | None = None
        if m.task != "regression":
            k = len(m.labels) if m.labels else (2 if m.task == "binary" else None)
            self.class_names = list(m.labels) if m.labels else ([str(i) for i in range(k)] if k else None)

    def write(self, stream: Any, preds: np.ndarray, probs: np.ndarray | None) -> None:
        import csv
        import json

        if probs is not None and self.class_names is None:
            self.class_names = [str(i) for i in range(probs.shape[1])]
        if self.fmt == "csv":
            w = csv.writer(stream, lineterminator="\n")
            if not self.header_done:
                if probs is not None:
                    w.writerow(["prediction", *[f"p_{c}" for c in self.class_names or []]])
                elif preds.ndim == 2:
                    w.writerow([f"prediction_{j}" for j in range(preds.shape[1])])
                else:
                    w.writerow(["prediction"])
                self.header_done = True
            # .tolist() first: formatting numpy scalars one by one is ~10x slower than Python floats
            if probs is not None:
                w.writerows([p, *pr] for p, pr in zip(preds.tolist(), np.round(probs, 7).tolist()))
            elif preds.ndim == 2:
                w.writerows(preds.astype(np.float64).tolist())
            else:
                w.writerows([v] for v in preds.astype(np.float64).tolist())
        else:
            names = self.class_names or []
            values = preds.tolist() if preds.dtype.kind in "UOi" else preds.astype(np.float64).tolist()
            if probs is None:
                lines = [json.dumps({"prediction": v}) for v in values]
            else:
                lines = [json.dumps({"prediction": v, "probabilities": dict(zip(names, pr))})
                         for v, pr in zip(values, np.round(probs, 7).tolist())]
            stream.write("\n".join(lines) + "\n")


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
    total = src.stat().st_size
    counter = _ByteCounter(src)
    try:
        if kind == ".csv":
            yield from _csv_chunks(predictor, src, counter, bs, total, DataError)
        else:
            yield from _jsonl_chunks(predictor, src, counter, bs, total, DataError)
    finally:
        counter.close()


class _ByteCounter:
    """Yield decoded lines of a file opened in binary mode, counting bytes read (for progress)."""

    def __init__(self, path: Path):
        self.fh = open(path, "rb")
        self.done = 0
        self.line_no = 0

    def __iter__(self) -> Any:
        first = True
        for raw in self.fh:
            self.done += len(raw)
            self.line_no += 1
            text = raw.decode("utf-8-sig" if first else "utf-8")
            first = False
            yield text

    def close(self) -> None:
        self.fh.close()


def _flat_size(predictor: "Predictor") -> int | None:
    pre = predictor.manifest.preprocessing
    if isinstance(pre, Window):
        return pre.window
    if isinstance(pre, Scale):
        return math.prod(pre.raw_shape)
    shape = predictor._input_shapes[predictor.input_names[0]][1:]
    return math.prod(shape) if all(isinstance(d, int) for d in shape) else None


def _reshape_flat(predictor: "Predictor", x: np.ndarray) -> np.ndarray:
    pre = predictor.manifest.preprocessing
    if isinstance(pre, NoPreprocessing):
        shape = predictor._input_shapes[predictor.input_names[0]][1:]
        if all(isinstance(d, int) for d in shape):
            return x.reshape((x.shape[0], *shape))
    return x


def _csv_chunks(predictor: "Predictor", src: Path, counter: _ByteCounter, bs: int, total: int,
                DataError: type) -> Iterable[tuple[Any, int, int]]:
    import csv

    pre = predictor.manifest.preprocessing
    reader = csv.reader(iter(counter))
    header = next(reader, None)
    if header is None:
        raise DataError(f"{src} is empty (expected a header row and data rows)")
    header = [h.strip() for h in header]
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
                raise DataError(f"{src} line {counter.line_no}: {len(row)} fields (expected a 'text' value in "
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
                f"{src} is missing feature column(s) {_short(missing)} (header has {_short(header)}; expected the "
                f"training feature names {_short(pre.feature_names)}; extra columns such as ids are ignored)")
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
            raise DataError(f"{src} line {counter.line_no}: {len(row)} fields (expected {len(header)} as in the header)")
        vals = []
        for c in cols:
            cell = row[c].strip()
            try:
                vals.append(float(cell))
            except ValueError:
                what = "is empty (a missing value)" if not cell else f"= {cell!r} is not a number"
                raise DataError(f"{src} line {counter.line_no} column {names[cols.index(c)]!r} {what}; "
                                f"impute or drop such rows before predicting") from None
        rows.append(vals)
        if len(rows) >= bs:
            yield _reshape_flat(predictor, np.asarray(rows, dtype=np.float64)), counter.done, total
            rows = []
    if rows:
        yield _reshape_flat(predictor, np.asarray(rows, dtype=np.float64)), counter.done, total


def _jsonl_chunks(predictor: "Predictor", src: Path, counter: _ByteCounter, bs: int, total: int,
                  DataError: type) -> Iterable[tuple[Any, int, int]]:
    import json

    pre = predictor.manifest.preprocessing
    buf: list[Any] = []
    for line in counter:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{src} line {counter.line_no} is not valid JSON ({exc.msg}); expected one JSON "
                            f"object per line") from None
        if isinstance(pre, Tokenize):
            if isinstance(obj, dict):
                if "text" not in obj:
                    raise DataError(f"{src} line {counter.line_no}: keys {list(obj)[:10]} (expected a 'text' key)")
                obj = obj["text"]
            if not isinstance(obj, str):
                raise DataError(f"{src} line {counter.line_no}: {type(obj).__name__} (expected {{\"text\": \"...\"}})")
        elif isinstance(pre, Standardize):
            if isinstance(obj, list):
                obj = dict(zip(pre.feature_names, obj)) if len(obj) == len(pre.feature_names) else obj
            if not isinstance(obj, dict):
                raise DataError(f"{src} line {counter.line_no}: {type(obj).__name__} (expected an object keyed by "
                                f"feature name, e.g. {{{pre.feature_names[0]!r}: 1.0, ...}})")
            missing = [f for f in pre.feature_names if f not in obj]
            if missing:
                raise InputValidationError(f"{src} line {counter.line_no} is missing feature(s) {_short(missing)} "
                                           f"(expected keys {_short(pre.feature_names)})")
        else:
            if isinstance(obj, dict):
                if "input" not in obj:
                    raise DataError(f"{src} line {counter.line_no}: keys {list(obj)[:10]} (expected an 'input' key "
                                    f"or a bare JSON list)")
                obj = obj["input"]
            if not isinstance(obj, list):
                raise DataError(f"{src} line {counter.line_no}: {type(obj).__name__} (expected a list of numbers)")
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
    return _numeric_array(buf, "rows of numbers of equal length")
