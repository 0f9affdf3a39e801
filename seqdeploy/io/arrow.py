"""Arrow record batches from Parquet, CSV and JSONL files (needs pyarrow: ``pip install 'seqdeploy[distributed]'``).

    >>> for table, row0 in iter_batches(resolve_inputs("rows/")[0], ["a", "b"], 65536): ...  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import pyarrow as pa

from seqdeploy.errors import DataError
from seqdeploy.io.inputs import InputFile
from seqdeploy.io.text import NOT_PARQUET, BadInput, CsvRows, JsonlRows

#: Provenance columns a reader may add to a batch: the file's index in the input list and the row within it.
FILE_COLUMN = "__seqdeploy_file"
ROW_COLUMN = "__seqdeploy_row"
#: Set by a reader on rows it could not parse (a JSONL line that is not a JSON object): the reason.
ERROR_COLUMN = "__seqdeploy_error"


def file_columns(f: InputFile) -> list[str]:
    """Column names of an input file (Parquet schema, CSV header, keys of the first JSONL object)."""
    if f.format == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(f.path).names)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{f.path} is not a readable Parquet file ({first(exc)}); rewrite it with "
                            f"pyarrow or pandas to_parquet") from None
    if f.format == "csv":
        header = next(iter(CsvRows(f.path)), None)
        if not header:
            raise DataError(f"{f.path} is empty (expected a header row and data rows)")
        return [h.strip() for h in header]
    try:
        for _, obj in JsonlRows(f.path):
            return list(obj)
    except BadInput as exc:
        if exc.kind == "json":
            raise DataError(f"{f.path} line {exc.line} is not valid JSON ({exc.detail}); expected one JSON object "
                            f"per line") from None
        if exc.kind == "object":
            raise DataError(f"{f.path}: the first line holds {exc.detail} (expected one JSON object per "
                            f"line, keyed by column name)") from None
        raise
    raise DataError(f"{f.path} has no data rows (expected one JSON object per line)")


def iter_batches(f: InputFile, columns: Sequence[str], batch_size: int) -> Iterator[tuple[pa.Table, int]]:
    """Stream ``(table, first row number)`` of at most ``batch_size`` rows from one file, only ``columns``.

    Parquet is read batch by batch; CSV as text columns (values are parsed by the
    caller, so a bad cell is a bad row, not a failed file); JSONL one line at a time.
    """
    if f.format == "parquet":
        yield from parquet_batches(f, columns, batch_size)
    elif f.format == "csv":
        yield from csv_batches(f, columns, batch_size)
    else:
        yield from jsonl_batches(f, columns, batch_size)


def parquet_batches(f: InputFile, columns: Sequence[str], bs: int,
                    row_groups: Sequence[int] | None = None, row0: int = 0) -> Iterator[tuple[pa.Table, int]]:
    """Parquet batches of one file (optionally only some row groups, numbering rows from ``row0``)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f.path, pre_buffer=False)  # pre-buffering keeps the whole file in memory
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{f.path} has no column(s) {short(missing)} (columns: {short(pf.schema_arrow.names)}); "
                            f"every input file needs the columns of the first")
        row = row0
        for batch in pf.iter_batches(batch_size=bs, columns=list(columns), row_groups=row_groups):
            yield pa.Table.from_batches([batch]), row
            row += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{f.path} is not a readable Parquet file ({first(exc)}); rewrite it with pyarrow or "
                        f"pandas to_parquet") from None


def csv_batches(f: InputFile, columns: Sequence[str], bs: int) -> Iterator[tuple[pa.Table, int]]:
    """CSV batches of one file, every column as text."""
    import pyarrow.csv as pcsv

    header = file_columns(f)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{f.path} has no column(s) {short(missing)} (header: {short(header)}); every input "
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
        raise DataError(f"{f.path} is not a readable CSV file ({first(exc)}); expected a header row and the same "
                        f"number of fields on every line") from None


def jsonl_batches(f: InputFile, columns: Sequence[str], bs: int) -> Iterator[tuple[pa.Table, int]]:
    """JSONL batches of one file; a line that is not a JSON object becomes a row with :data:`ERROR_COLUMN` set."""
    buf: list[dict] = []
    row = 0
    for _, obj in JsonlRows(f.path, keep_errors=True):
        buf.append({ERROR_COLUMN: obj.reason()} if isinstance(obj, BadInput) else obj)
        if len(buf) >= bs:
            yield jsonl_table(buf, columns), row
            row += len(buf)
            buf = []
    if buf:
        yield jsonl_table(buf, columns), row


def jsonl_table(objs: list[dict], columns: Sequence[str]) -> pa.Table:
    """An Arrow table of ``columns`` from JSON objects (a column of mixed types is kept as text)."""
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


def parquet_table(path: str | os.PathLike) -> pa.Table:
    """A whole Parquet file as one table; an unreadable file is a :class:`BadInput` (kind ``parquet``)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        raise BadInput(path, NOT_PARQUET, 0, str(exc).strip()[:200]) from None


def parquet_rows(f: InputFile) -> int:
    """Rows in a Parquet file from its footer (0 when it cannot be read)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f.path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return 0


def short(names: Sequence[str], k: int = 6) -> str:
    """A list of names shortened to its first ``k`` and a count."""
    names = list(names)
    return str(names) if len(names) <= k else f"[{', '.join(map(repr, names[:k]))}, ... {len(names)} in all]"


def first(exc: BaseException) -> str:
    from seqdeploy.errors import first_line

    return first_line(exc, 300)
