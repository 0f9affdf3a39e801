"""Reading and writing tables for batch scoring: input discovery (files, directories, globs), Arrow batches
from Parquet / CSV / JSONL, output sinks (Parquet, CSV, JSONL, a directory of parts with ``_SUCCESS``),
staged output directories and the side file of skipped rows. Scoring itself is :mod:`seqdeploy.scoring.tables`.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from seqdeploy.errors import DataError, InputFileNotFound, UsageError
from seqdeploy.runtime.manifest import Manifest
from seqdeploy.scoring.files import class_names

INPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: Provenance columns a reader may add to a batch: the file's index in the input list and the row within it.
FILE_COLUMN = "__seqdeploy_file"
ROW_COLUMN = "__seqdeploy_row"
#: Set by a reader on rows it could not parse (a JSONL line that is not a JSON object): the reason.
ERROR_COLUMN = "__seqdeploy_error"
SUCCESS_MARKER = "_SUCCESS"
SKIPPED_NAME = "_skipped.jsonl"
ROW_GROUP_ROWS = 65_536  # rows per Parquet row group the local engine writes
_LIST_COLUMNS = ("input",)  # a list-of-numbers column holding one raw sample per row (besides the input's name)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputFile:
    """One input file: its path, format (``parquet`` | ``csv`` | ``jsonl``) and size in bytes."""

    path: str
    format: str
    size: int


def resolve_inputs(spec: str | os.PathLike) -> tuple[InputFile, ...]:
    """The files an input names: a file, a directory (recursively, sorted) or a glob pattern.

    Names starting with ``_`` or ``.`` (``_SUCCESS``, hidden temporaries) are skipped
    inside directories.

    >>> resolve_inputs("data/*.parquet")  # doctest: +SKIP
    """
    text = os.fspath(spec)
    p = Path(text)
    wanted = ", ".join(sorted(set(INPUT_FORMATS)))
    if p.is_file():
        fmt = INPUT_FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise UsageError(f"input {p} has suffix {p.suffix or '(none)'!r} (expected one of {wanted}, a "
                             f"directory of such files or a glob pattern)")
        return (InputFile(str(p), fmt, p.stat().st_size),)
    if p.is_dir():
        found = [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in INPUT_FORMATS
                 and not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts)]
        if not found:
            raise InputFileNotFound(f"input directory {p} holds no {wanted} files; put the input files there "
                                    f"or name them with a glob pattern")
    elif _glob.has_magic(text):
        found = [Path(f) for f in sorted(_glob.glob(text, recursive=True))
                 if Path(f).is_file() and Path(f).suffix.lower() in INPUT_FORMATS]
        if not found:
            raise InputFileNotFound(f"input pattern {text!r} matches no {wanted} files; check the pattern")
    else:
        raise InputFileNotFound(f"input {p} does not exist (expected a .csv, .jsonl, .npy or .parquet file, a "
                                f"directory of such files or a glob pattern)")
    return tuple(InputFile(str(f), INPUT_FORMATS[f.suffix.lower()], f.stat().st_size) for f in found)


def file_columns(f: InputFile) -> list[str]:
    """Column names of an input file (Parquet schema, CSV header, keys of the first JSONL object)."""
    if f.format == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(f.path).names)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{f.path} is not a readable Parquet file ({_first(exc)}); rewrite it with "
                            f"pyarrow or pandas to_parquet") from None
    if f.format == "csv":
        import csv

        with open(f.path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
        if not header:
            raise DataError(f"{f.path} is empty (expected a header row and data rows)")
        return [h.strip() for h in header]
    with open(f.path, encoding="utf-8-sig") as fh:
        for line in fh:
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{f.path} line 1 is not valid JSON ({exc.msg}); expected one JSON object "
                                    f"per line") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{f.path}: the first line holds {type(obj).__name__} (expected one JSON "
                                    f"object per line, keyed by column name)")
                return list(obj)
    raise DataError(f"{f.path} has no data rows (expected one JSON object per line)")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


# --------------------------------------------------------------------------- reading


def iter_batches(f: InputFile, columns: Sequence[str], batch_size: int) -> Iterator[tuple[pa.Table, int]]:
    """Stream ``(table, first row number)`` of at most ``batch_size`` rows from one file, only ``columns``.

    Parquet is read batch by batch; CSV as text columns (values are parsed by the
    scoring, so a bad cell is a bad row, not a failed file); JSONL one line at a time.
    """
    if f.format == "parquet":
        yield from _parquet_batches(f, columns, batch_size)
    elif f.format == "csv":
        yield from _csv_batches(f, columns, batch_size)
    else:
        yield from _jsonl_batches(f, columns, batch_size)


def _parquet_batches(f: InputFile, columns: Sequence[str], bs: int,
                     row_groups: Sequence[int] | None = None, row0: int = 0) -> Iterator[tuple[pa.Table, int]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f.path, pre_buffer=False)  # pre-buffering keeps the whole file in memory
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{f.path} has no column(s) {_short(missing)} (columns: {_short(pf.schema_arrow.names)}); "
                            f"every input file needs the columns of the first")
        row = row0
        for batch in pf.iter_batches(batch_size=bs, columns=list(columns), row_groups=row_groups):
            yield pa.Table.from_batches([batch]), row
            row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{f.path} is not a readable Parquet file ({_first(exc)}); rewrite it with pyarrow or "
                        f"pandas to_parquet") from None


def _csv_batches(f: InputFile, columns: Sequence[str], bs: int) -> Iterator[tuple[pa.Table, int]]:
    import pyarrow.csv as pcsv

    header = file_columns(f)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{f.path} has no column(s) {_short(missing)} (header: {_short(header)}); every input "
                        f"file needs the columns of the first")
    try:
        reader = pcsv.open_csv(
            f.path, read_options=pcsv.ReadOptions(block_size=1 << 20),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                include_columns=list(columns), strings_can_be_null=False))
        row = 0
        for batch in reader:
            for s in range(0, batch.num_rows, bs):
                part = batch.slice(s, bs)
                yield pa.Table.from_batches([part]), row
                row += part.num_rows
    except pa.ArrowInvalid as exc:
        raise DataError(f"{f.path} is not a readable CSV file ({_first(exc)}); expected a header row and the same "
                        f"number of fields on every line") from None


def _jsonl_batches(f: InputFile, columns: Sequence[str], bs: int) -> Iterator[tuple[pa.Table, int]]:
    buf: list[dict] = []
    row = 0
    with open(f.path, encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                obj = {ERROR_COLUMN: f"line {line_no} is not valid JSON ({exc.msg})"}
            if not isinstance(obj, dict):
                obj = {ERROR_COLUMN: f"line {line_no} holds {type(obj).__name__} (expected a JSON object)"}
            buf.append(obj)
            if len(buf) >= bs:
                yield _jsonl_table(buf, columns), row
                row += len(buf)
                buf = []
    if buf:
        yield _jsonl_table(buf, columns), row


def _jsonl_table(objs: list[dict], columns: Sequence[str]) -> pa.Table:
    cols = {}
    for c in columns:
        vals = [o.get(c) for o in objs]
        try:
            cols[c] = pa.array(vals)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one column: keep them as text
            cols[c] = pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in vals])
    if any(ERROR_COLUMN in o for o in objs):
        cols[ERROR_COLUMN] = pa.array([o.get(ERROR_COLUMN) for o in objs], type=pa.string())
    return pa.table(cols)


# --------------------------------------------------------------------------- writing


def output_kind(output: str | os.PathLike) -> str:
    """``parquet`` | ``csv`` | ``jsonl`` for a file output, ``dir`` for a directory of Parquet parts."""
    p = Path(output)
    suffix = p.suffix.lower()
    if os.fspath(output).endswith(("/", os.sep)) or p.is_dir() or not suffix:
        return "dir"
    kinds = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix not in kinds:
        raise UsageError(f"output {output} has suffix {suffix!r} (expected .parquet, .csv, .jsonl or a directory "
                         f"for Parquet parts)")
    return kinds[suffix]


def skipped_path(output: str | os.PathLike) -> Path:
    """Where the rows set aside go: ``<dir>/_skipped.jsonl``, or ``<name>.skipped.jsonl`` beside a file."""
    p = Path(output)
    if output_kind(output) == "dir":
        return p / SKIPPED_NAME
    return p.with_name(p.stem + ".skipped.jsonl")


def check_output_free(output: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an existing output (file or directory) unless ``overwrite``."""
    p = Path(output)
    if p.exists() and not overwrite:
        what = "directory" if p.is_dir() else "file"
        raise UsageError(f"output {what} {p} already exists (expected a new path); choose another output path "
                         f"or allow overwriting it")
    if p.is_dir() and output_kind(output) != "dir":
        raise UsageError(f"output {p} is a directory (expected a {p.suffix} file); choose another output path")


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success mark it complete and move it into place.

    The directory gets a ``_SUCCESS`` file and replaces ``target`` (an existing one
    only when ``overwrite``). On any error the temporary is removed and ``target``
    is untouched; a killed process leaves only a hidden ``.<name>.tmp-*`` directory
    without ``_SUCCESS``.
    """
    target = Path(target)
    check_output_free(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        (tmp / SUCCESS_MARKER).write_text("")
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _TableSink:
    """Writes scored tables to one file (Parquet, CSV or JSONL) or to Parquet parts in a directory."""

    def __init__(self, path: Path, kind: str, manifest: Manifest):
        self.path, self.kind = path, kind
        self.names = class_names(manifest)
        self.schema: pa.Schema | None = None
        self.writer: Any = None
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.stream: Any = None
        self.part = -1

    def start_file(self, index: int) -> None:
        """Directory outputs: one Parquet part per input file (``part-<index>.parquet``)."""
        if self.kind == "dir":
            self.close()
            self.part = index

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            try:
                table = table.cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError) as exc:
                raise DataError(f"the kept columns change type between input files or batches ({_first(exc)}); "
                                f"give every input file the same column types") from None
        if self.kind in ("parquet", "dir"):
            import pyarrow.parquet as pq

            if self.writer is None:
                target = self.path / f"part-{self.part:06d}.parquet" if self.kind == "dir" else self.path
                self.writer = pq.ParquetWriter(str(target), self.schema)
            # row groups of ROW_GROUP_ROWS rows, not one per scoring batch (readers pay per row group)
            self.pending.append(table)
            self.pending_rows += table.num_rows
            if self.pending_rows >= ROW_GROUP_ROWS:
                self._flush()
            return
        if self.stream is None:
            self.stream = open(self.path, "w", encoding="utf-8", newline="")
            if self.kind == "csv":
                import csv

                csv.writer(self.stream, lineterminator="\n").writerow(table.column_names)
        if self.kind == "csv":
            import csv

            rows = zip(*[_csv_values(table.column(c)) for c in table.column_names])
            csv.writer(self.stream, lineterminator="\n").writerows(rows)
        else:
            p_cols = [c for c in table.column_names if c.startswith("p_")] if self.names else []
            other = [c for c in table.column_names if c not in p_cols]
            for rec in table.to_pylist():
                obj = {c: rec[c] for c in other}
                if p_cols:
                    obj = {"prediction": obj.pop("prediction"),
                           "probabilities": {c[2:]: round(rec[c], 7) for c in p_cols}, **obj}
                self.stream.write(json.dumps(_jsonable(obj)) + "\n")

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
            self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.close()
            self.writer = None
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def _csv_values(col: pa.ChunkedArray) -> list[Any]:
    if pa.types.is_floating(col.type):
        return np.round(col.to_numpy(zero_copy_only=False), 7).tolist()
    return col.to_pylist()


def write_skipped(path: Path, tables: Sequence[pa.Table]) -> int:
    """Write skipped rows as JSON lines (``file``, ``row``, ``reason``, ``values``) atomically; return the count."""
    from seqdeploy.atomic import atomic_write_text

    lines = []
    for t in tables:
        for rec in t.to_pylist():
            rec["values"] = json.loads(rec["values"])
            lines.append(json.dumps(rec))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def _parquet_rows(f: InputFile) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f.path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return 0


def _short(names: Sequence[str], k: int = 6) -> str:
    names = list(names)
    return str(names) if len(names) <= k else f"[{', '.join(map(repr, names[:k]))}, ... {len(names)} in all]"


def _first(exc: BaseException) -> str:
    from seqdeploy.errors import first_line

    return first_line(exc, 300)
