"""``seqdeploy predict`` on the files people hold: image folders, text columns, categorical columns.

* Image bundles (a ``scale`` record with an image loader): ``--input`` is an
  image file or a folder (searched recursively, sorted; hidden files left
  out). Each file is read by the loader training used
  (:class:`seqdeploy.preprocess.image_files.ImageLoader`: Pillow, EXIF
  orientation, alpha rule, the recorded resize filter) and the uint8 pixels go
  to the portable graph. One output row per file: ``path``, ``prediction``,
  ``p_<class>``. A file that is not a readable image stops the run with its
  path, or is skipped and counted with ``on_bad_row="skip"``.
* Text bundles trained on a table column read the same column (or ``text``)
  of a CSV / JSONL / Parquet file, or of every such file in a folder (sorted).
* Categorical bundles read their numeric and categorical columns by name;
  values never seen in training go to the out-of-vocabulary bucket and are
  counted per column (``oov_counts`` in the result).

Outputs: CSV (default, or stdout), JSONL or Parquet (needs pyarrow), with kept
columns (``keep``) copied after the predictions. Needs Pillow for images and
pyarrow for Parquet; otherwise only the runtime.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from seqdeploy.errors import DataError, InputFileNotFound, InputValidationError, UsageError
from seqdeploy.io.text import NOT_JSON, NOT_OBJECT, NOT_PARQUET, NOT_UTF8, BadInput, CsvRows, JsonlRows
from seqdeploy.preprocess import Categorical, Scale, Tokenize
from seqdeploy.runtime.predictor import DEFAULT_BATCH_SIZE
from seqdeploy.scoring.files import PredictFileResult, class_names, locate_bad_row, predict_chunk

TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet", ".pq", ".npy")


@dataclass(frozen=True)
class ByoPredictResult(PredictFileResult):
    """:class:`PredictFileResult` plus what only these inputs have: OOV counts and skipped files."""

    oov_counts: dict[str, int] | None = None
    skipped_files: tuple[str, ...] = field(default_factory=tuple)


def handles(predictor: Any, input_path: str | os.PathLike) -> bool:
    """True when this module scores ``input_path`` for ``predictor`` (else the table scoring does)."""
    pre = predictor.pre
    p = Path(input_path)
    if isinstance(pre, Scale) and pre.resize is not None:
        from seqdeploy.preprocess.image_files import IMAGE_SUFFIXES

        return p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES
    if isinstance(pre, Categorical):
        return True
    if isinstance(pre, Tokenize) and pre.column not in (None, "text"):
        return p.is_dir() or (p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
    return False


def predict_byo(predictor: Any, input_path: str | os.PathLike, output: str | os.PathLike | Any | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, progress: Any = None, *, keep: str | Sequence[str] | None = None,
                on_bad_row: str = "fail", overwrite: bool = False) -> ByoPredictResult:
    """Score image files or table rows (see the module docstring) and write one row per input."""
    src = Path(input_path)
    if not src.exists():
        raise InputFileNotFound(f"input {src} does not exist (expected an image folder or file, or a .csv, .jsonl, "
                                f".parquet or .npy table)")
    out_is_path = output is not None and isinstance(output, (str, os.PathLike))
    fmt = "csv"
    if out_is_path:
        suffix = Path(output).suffix.lower()  # type: ignore[arg-type]
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}.get(suffix, "")
        if not fmt:
            raise UsageError(f"output {output} has suffix {suffix or '(none)'!r} (expected .csv, .jsonl or .parquet)")
        if Path(output).exists() and not overwrite:  # type: ignore[arg-type]
            raise UsageError(f"output {output} already exists (expected a new path); choose another output path "
                             f"or allow overwriting it")
    pre = predictor.pre
    t0 = time.perf_counter()
    writer = _Writer(fmt, class_names(predictor.manifest))
    oov: dict[str, int] | None = {c: 0 for c in pre.categorical_names} if isinstance(pre, Categorical) else None
    skipped: list[str] = []
    rows = files = 0
    with contextlib.ExitStack() as stack:
        if out_is_path:
            from seqdeploy.atomic import atomic_path

            tmp = stack.enter_context(atomic_path(output))  # type: ignore[arg-type]
            stream = stack.enter_context(open(tmp, "wb" if fmt == "parquet" else "w", encoding=None if fmt ==
                                              "parquet" else "utf-8", newline=None if fmt == "parquet" else ""))
        else:
            stream = output if output is not None else sys.stdout
        if isinstance(pre, Scale):
            batches = _image_batches(predictor, src, batch_size, on_bad_row, skipped)
        else:
            batches = (b for f in _table_files(src) for b in _table_batches(predictor, f, batch_size, keep))
        for lead, raw, where, offset, done, total in batches:
            try:
                preds, probs = predict_chunk(predictor, raw)
            except InputValidationError as exc:
                raise InputValidationError(f"{where}: {locate_bad_row(predictor, raw, offset, exc)}") from None
            if oov is not None:
                for k, v in pre.oov_counts(pre.coerce(raw)).items():
                    oov[k] += v
            writer.add(stream, lead, preds, probs)
            rows += len(preds)
            if progress is not None:
                progress(done, total)
        if rows == 0:
            raise DataError(f"{src} has nothing to score (expected at least one image or data row)")
        writer.close(stream)
    secs = time.perf_counter() - t0
    files = len(set(writer.sources))
    return ByoPredictResult(predictor.info.bundle, predictor.info.artifact, str(src),
                            str(output) if out_is_path else None, fmt, rows, round(secs, 4),
                            round(rows / secs, 1) if secs > 0 else 0.0, files=files, skipped=len(skipped),
                            oov_counts=oov, skipped_files=tuple(skipped))


# --------------------------------------------------------------------------- images


def _image_batches(predictor: Any, src: Path, bs: int, on_bad_row: str,
                   skipped: list[str]) -> Iterator[tuple[dict[str, list[Any]], Any, str, int, int]]:
    try:
        from seqdeploy.preprocess.image_files import BadImage, ImageLoader, list_images
    except ModuleNotFoundError:  # pragma: no cover - PIL is imported lazily inside the loader
        raise
    try:
        import PIL  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError("scoring image files needs Pillow, which is not installed; install it with: "
                         "pip install 'seqdeploy[images]'") from None
    loader = ImageLoader.from_scale(predictor.pre)
    files = list_images(src) if src.is_dir() else [src]
    if not files:
        raise InputFileNotFound(f"input folder {src} holds no files (expected PNG/JPEG/BMP/GIF images)")
    paths: list[str] = []
    pixels: list[np.ndarray] = []
    for i, f in enumerate(files):
        try:
            pixels.append(loader.load(f))
            paths.append(str(f))
        except BadImage as exc:
            if on_bad_row != "skip":
                raise DataError(f"{exc.path}: {exc.reason}; remove or fix the file, or skip bad files") from None
            skipped.append(exc.path)
        if len(pixels) >= bs or (i == len(files) - 1 and pixels):
            yield {"path": paths}, np.stack(pixels), str(src), 0, i + 1, len(files)
            paths, pixels = [], []


# --------------------------------------------------------------------------- tables


def _table_batches(predictor: Any, src: Path, bs: int,
                   keep: str | Sequence[str] | None) -> Iterator[tuple[dict[str, list[Any]], Any, str, int, int]]:
    pre = predictor.pre
    suffix = src.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise UsageError(f"input {src} has suffix {suffix or '(none)'!r} (expected .csv, .jsonl, .parquet or .npy "
                         f"files for this bundle)")
    if suffix == ".npy":
        arr = np.load(src, allow_pickle=False)
        if arr.ndim == 0 or len(arr) == 0:
            raise DataError(f"{src} holds an array of shape {arr.shape} (expected at least one row)")
        if keep:
            raise UsageError(f"input {src} is an array: there are no columns to keep")
        for s in range(0, len(arr), bs):
            chunk = arr[s:s + bs]
            yield {"__file": [str(src)]}, (chunk.astype(str).tolist() if isinstance(pre, Tokenize) else chunk), \
                str(src), s, min(s + bs, len(arr)), len(arr)
        return
    header, rows = _rows(src, suffix)
    if isinstance(pre, Tokenize):
        col = pre.column if pre.column in header else "text" if "text" in header else None
        if col is None:
            raise DataError(f"{src} has columns {header[:10]} but not the text column {pre.column!r} (expected the "
                            f"column the model was trained on, or one named 'text')")
        need = [col]
    else:
        missing = [c for c in pre.columns if c not in header]
        if missing:
            raise DataError(f"{src} is missing column(s) {missing} (columns: {header[:10]}; expected the training "
                            f"columns {list(pre.columns)}; extra columns such as ids are ignored)")
        need = list(pre.columns)
    kept = _keep(keep, header, src)
    total = len(rows)
    for s in range(0, total, bs):
        chunk = rows[s:s + bs]
        lead = {k: [r.get(k) for _, r in chunk] for k in kept}
        if isinstance(pre, Tokenize):
            raw = []
            for where, r in chunk:
                v = r.get(col)
                if not isinstance(v, str):
                    raise DataError(f"{src} {where}, column {col!r}: {v!r:.40} (expected a string)")
                raw.append(v)
        else:
            raw = [{c: r.get(c) for c in need} for _, r in chunk]
        yield {**lead, "__file": [str(src)]}, raw, str(src), s, min(s + bs, total), total


def _table_files(src: Path) -> list[Path]:
    """The table files an input names: the file, or every table file under a folder (sorted; names starting
    with ``_`` or ``.`` left out)."""
    if not src.is_dir():
        return [src]
    found = [f for f in sorted(src.rglob("*")) if f.is_file() and f.suffix.lower() in TABLE_SUFFIXES
             and not any(part.startswith(("_", ".")) for part in f.relative_to(src).parts)]
    if not found:
        raise InputFileNotFound(f"input folder {src} holds no {', '.join(TABLE_SUFFIXES)} files")
    return found


def _rows(src: Path, suffix: str) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """``(header, [(where, row dict)])`` of a CSV / JSONL / Parquet file, with one-line errors."""
    try:
        if suffix in (".parquet", ".pq"):
            try:
                from seqdeploy.io.arrow import parquet_table
            except ModuleNotFoundError:
                raise UsageError("Parquet input needs pyarrow; install it with: pip install "
                                 "'seqdeploy[distributed]'") from None
            table = parquet_table(src)
            return list(table.column_names), [(f"row {i}", r) for i, r in enumerate(table.to_pylist())]
        if suffix == ".csv":
            reader = CsvRows(src)
            it = iter(reader)
            header = [h.strip() for h in next(it, [])]
            if not header:
                raise DataError(f"{src} is empty (expected a header row and data rows)")
            out = []
            for row in it:
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{src} line {reader.line}: {len(row)} fields (expected {len(header)} as in the "
                                    f"header)")
                out.append((f"line {reader.line}", dict(zip(header, row))))
            return header, out
        out, first = [], None
        for n, obj in JsonlRows(src):
            first = first or list(obj)
            out.append((f"line {n}", obj))
        return first or [], out
    except BadInput as exc:
        if exc.kind == NOT_UTF8:
            raise DataError(f"{src}: line {exc.line} is not UTF-8 text ({exc.detail}); save the file as UTF-8") \
                from None
        if exc.kind == NOT_JSON:
            raise DataError(f"{src} line {exc.line} is not valid JSON ({exc.detail}); expected one JSON object per "
                            "line") from None
        if exc.kind == NOT_OBJECT:
            raise DataError(f"{src} line {exc.line}: {exc.detail} (expected a JSON object keyed by column name)") \
                from None
        if exc.kind == NOT_PARQUET:
            raise DataError(f"{src} is not a readable Parquet file ({exc.detail})") from None
        raise DataError(f"{src}: {exc.reason()}") from None


def _keep(keep: str | Sequence[str] | None, header: list[str], src: Path) -> list[str]:
    if not keep:
        return []
    names = header if keep == "all" else [k.strip() for k in (keep.split(",") if isinstance(keep, str) else keep)
                                          if k.strip()]
    unknown = [k for k in names if k not in header]
    if unknown:
        raise DataError(f"{src} has no column(s) {unknown} to keep (columns: {header[:10]})")
    return names


# --------------------------------------------------------------------------- output


class _Writer:
    """Lead columns (path / kept columns), ``prediction`` and ``p_<class>`` as CSV, JSONL or Parquet."""

    def __init__(self, fmt: str, classes: list[str] | None):
        self.fmt = fmt
        self.classes = classes
        self.header: list[str] | None = None
        self.table: list[dict[str, Any]] = []
        self.sources: list[str] = []

    def add(self, stream: Any, lead: dict[str, list[Any]], preds: np.ndarray, probs: np.ndarray | None) -> None:
        self.sources += [str(p) for p in lead.pop("__file", lead.get("path", []))]
        values = preds.tolist() if preds.dtype.kind in "UOi" else preds.astype(np.float64).tolist()
        names = self.classes or ([str(i) for i in range(probs.shape[1])] if probs is not None else [])
        records = []
        for i, v in enumerate(values):
            rec: dict[str, Any] = {k: col[i] for k, col in lead.items()}
            if "prediction" in rec:
                raise DataError("a kept column is named 'prediction'; rename it first")
            rec["prediction"] = v
            if probs is not None:
                rec.update({f"p_{c}": p for c, p in zip(names, np.round(probs[i], 7).tolist())})
            records.append(rec)
        if self.fmt == "parquet":
            self.table += records
        elif self.fmt == "jsonl":
            stream.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        else:
            w = csv.writer(stream, lineterminator="\n")
            if self.header is None:
                self.header = list(records[0]) if records else []
                w.writerow(self.header)
            w.writerows([r.get(k) for k in self.header] for r in records)

    def close(self, stream: Any) -> None:
        if self.fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ModuleNotFoundError:
                raise UsageError("Parquet output needs pyarrow; install it with: pip install "
                                 "'seqdeploy[distributed]'") from None
            pq.write_table(pa.Table.from_pylist(self.table), stream)
        stream.flush()
