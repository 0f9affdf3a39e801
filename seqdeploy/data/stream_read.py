"""Reading a streamed training table (:mod:`seqdeploy.data.stream`): record batches of one file decoded into
raw numeric values, categories and targets, each row given its part (train / validation / test) by a hash of
its content. Every bad value is a :class:`~seqdeploy.errors.BadDataFile` naming the file and row."""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from seqdeploy.errors import BadDataFile, DataError
from seqdeploy.io.inputs import InputFile

#: rows read per record batch
READ_ROWS = 65_536


def require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        raise DataError("streaming a table from several or large files needs pyarrow; install it with: pip install "
                        "'seqdeploy[distributed]'") from None


def file_batches(f: InputFile, columns: Sequence[str]) -> Iterator[tuple[Any, int]]:
    """``(Arrow table, first row)`` batches of ``columns``; a file without them is a :class:`BadDataFile`."""
    from seqdeploy.io.arrow import file_columns, iter_batches

    have = file_columns(f)
    missing = [c for c in columns if c not in have]
    if missing:
        raise BadDataFile(f"{f.path}: column(s) {missing} missing (it has {have[:10]}); every file needs the "
                          f"columns of the first", f.path)
    yield from iter_batches(f, columns, READ_ROWS)


def floats(f: InputFile, col: Any, name: str, row0: int) -> np.ndarray:
    """A column as float64; an empty cell, text or NaN/inf is a :class:`BadDataFile` naming the row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.utf8_trim_whitespace(col)
        try:
            x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            x = None
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        x = None if col.null_count else col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    else:
        x = None
    if x is not None and np.isfinite(x).all():
        return x
    for i, v in enumerate(col.to_pylist()):
        what = None
        if v is None or (isinstance(v, str) and not v.strip()):
            what = "is empty (a missing value); impute or drop such rows before training"
        elif isinstance(v, bool) or not isinstance(v, (int, float, str)):
            what = f"{str(v)[:40]!r} is not a number; feature columns must be numeric"
        else:
            try:
                number = float(v)
            except ValueError:
                number = None
                what = (f"{str(v)[:40]!r} is not a number; feature columns must be numeric (or list the column "
                        f"in [data] categorical)")
            if number is not None and not math.isfinite(number):
                what = f"non-finite value {number}; remove or impute NaN/inf before training"
        if what:
            raise BadDataFile(f"{f.path}: row {row0 + i}, column {name!r}: {what}", f.path, row0 + i)
    raise BadDataFile(f"{f.path}: column {name!r} has type {col.type} (expected numbers)", f.path)


def texts(col: Any) -> list[str]:
    """Category / class cells as text: None -> "", 3.0 -> "3" (as the in-memory loader does)."""
    out = []
    for v in col.to_pylist():
        if v is None:
            out.append("")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out


def target_texts(col: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(col.type) and not col.null_count:
        return np.asarray(pc.cast(col, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    if pa.types.is_string(col.type) and not col.null_count:
        return np.asarray(pc.utf8_trim_whitespace(col).to_numpy(zero_copy_only=False), dtype=object)
    return np.asarray(texts(col), dtype=object)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _text_hashes(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """CRC-32 of each text (hashed once per distinct value)."""
    uniq, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return np.asarray([zlib.crc32(v.encode()) for v in uniq.tolist()], dtype=np.uint64)[inverse.reshape(-1)]


def row_hash(x: np.ndarray, cats: Sequence[Sequence[str]], target: Sequence[str] | np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit hash of each row's content (numeric values, categories, target) and the seed."""
    n = len(x)
    h = np.full(n, np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _GOLDEN, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = np.ascontiguousarray(x + 0.0, dtype=np.float64).view(np.uint64).reshape(n, -1)  # -0.0 == 0.0
        for c in range(bits.shape[1]):
            h = _mix(h ^ bits[:, c])
        for col in cats:
            h = _mix(h ^ _text_hashes(col))
        t = np.asarray(target)
        h = _mix(h ^ (_text_hashes(t) if t.dtype.kind in "OU" else
                      np.ascontiguousarray(t + 0.0, dtype=np.float64).view(np.uint64)))
    return h


def split_of(h: np.ndarray, test_fraction: float, val_fraction: float) -> np.ndarray:
    """Part of each row from its hash: 2 = test, 1 = validation, 0 = train."""
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.where(u < test_fraction, 2, np.where(u < test_fraction + val_fraction * (1 - test_fraction), 1, 0))


@dataclasses.dataclass
class Rows:
    """One record batch decoded: raw numeric values, categories, targets and parts."""

    x: np.ndarray
    cats: list[list[str]]
    target: Any
    part: np.ndarray


def decode(f: InputFile, table: Any, row0: int, numeric: Sequence[str], categorical: Sequence[str],
            target: str, task: str, seed: int, test_fraction: float, val_fraction: float) -> Rows:
    from seqdeploy.io.arrow import ERROR_COLUMN

    if ERROR_COLUMN in table.column_names:
        for i, reason in enumerate(table.column(ERROR_COLUMN).to_pylist()):
            if reason:
                raise BadDataFile(f"{f.path}: row {row0 + i}: {reason}", f.path, row0 + i)
    x = np.empty((table.num_rows, len(numeric)), dtype=np.float64)
    for j, name in enumerate(numeric):
        x[:, j] = floats(f, table.column(name), name, row0)
    cats = [texts(table.column(name)) for name in categorical]
    if task == "regression":
        y: Any = floats(f, table.column(target), target, row0)
    else:
        y = target_texts(table.column(target))
    part = split_of(row_hash(x, cats, y, seed), test_fraction, val_fraction)
    return Rows(x, cats, y, part)
