"""Writing tables for batch scoring (input discovery and Arrow batches from Parquet / CSV / JSONL are
:mod:`seqdeploy.io`, re-exported here): output sinks (Parquet, CSV, JSONL, a directory of parts with ``_SUCCESS``),
staged output directories and the side file of skipped rows. Scoring itself is :mod:`seqdeploy.scoring.tables`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from seqdeploy.errors import DataError, UsageError
from seqdeploy.io.arrow import (  # noqa: F401  (the readers live in seqdeploy.io; re-exported for scoring)
    ERROR_COLUMN,
    FILE_COLUMN,
    ROW_COLUMN,
    csv_batches as _csv_batches,
    file_columns,
    first as _first,
    iter_batches,
    jsonl_batches as _jsonl_batches,
    jsonl_table as _jsonl_table,
    parquet_batches as _parquet_batches,
    parquet_rows as _parquet_rows,
    short as _short,
)
from seqdeploy.io.inputs import INPUT_FORMATS, InputFile, resolve_inputs  # noqa: F401
from seqdeploy.runtime.manifest import Manifest
from seqdeploy.scoring.files import class_names

SUCCESS_MARKER = "_SUCCESS"
SKIPPED_NAME = "_skipped.jsonl"
ROW_GROUP_ROWS = 65_536  # rows per Parquet row group the local engine writes
_LIST_COLUMNS = ("input",)  # a list-of-numbers column holding one raw sample per row (besides the input's name)


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
