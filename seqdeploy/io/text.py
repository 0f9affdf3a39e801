"""CSV and JSONL read line by line (standard library only), each row with its line number and bytes read.

    >>> rows = CsvRows("data.csv")  # doctest: +SKIP
    >>> for row in rows: print(rows.line, row)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqdeploy.errors import DataError

#: BadInput kinds: what went wrong on the line
NOT_UTF8, MALFORMED_CSV, NOT_JSON, NOT_OBJECT, NOT_PARQUET = "utf8", "csv", "json", "object", "parquet"


class BadInput(DataError):
    """A table file, or a line of one, that cannot be read: ``kind`` (``utf8`` | ``csv`` | ``json`` | ``object``
    | ``parquet``), ``path``, ``line`` (1-based; 0 for a whole file) and ``detail`` (the decoder's reason, the JSON
    error, the value's type, the Parquet reader's complaint). Callers may word it for their context."""

    def __init__(self, path: str | os.PathLike, kind: str, line: int, detail: str):
        self.path, self.kind, self.line, self.detail = str(path), kind, line, detail
        super().__init__(f"{path}: {self.reason()}")

    def reason(self) -> str:
        """The problem without the path, e.g. ``line 3 is not valid JSON (Expecting value)``."""
        if self.kind == NOT_UTF8:
            return f"line {self.line} is not UTF-8 text ({self.detail})"
        if self.kind == MALFORMED_CSV:
            return f"malformed CSV ({self.detail})"
        if self.kind == NOT_JSON:
            return f"line {self.line} is not valid JSON ({self.detail})"
        if self.kind == NOT_PARQUET:
            return f"not a readable Parquet file ({self.detail})"
        return f"line {self.line} holds {self.detail} (expected a JSON object)"


class Lines:
    """The decoded lines of a UTF-8 file (a leading BOM dropped), counting lines and bytes as they are read."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.line = 0  # number of the last line read (1-based)
        self.done = 0  # bytes read so far
        self.total = self.path.stat().st_size

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb") as fh:
            for raw in fh:
                self.done += len(raw)
                self.line += 1
                try:
                    yield raw.decode("utf-8-sig" if self.line == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise BadInput(self.path, NOT_UTF8, self.line, str(exc.reason)) from None


class CsvRows(Lines):
    """The rows of a CSV file as lists of strings (the header is the first row); ``line`` is the line the last
    row ended on. Malformed quoting is a :class:`BadInput`."""

    def __iter__(self) -> Iterator[list[str]]:  # type: ignore[override]
        csv.field_size_limit(1 << 24)
        try:
            yield from csv.reader(super().__iter__())
        except csv.Error as exc:
            raise BadInput(self.path, MALFORMED_CSV, self.line, str(exc)) from None


class JsonlRows(Lines):
    """``(line number, object)`` for each non-blank line of a JSON-lines file.

    A line that is not JSON, or (with ``objects``, the default) not a JSON object, is a :class:`BadInput`; with
    ``keep_errors`` it is yielded in place of the value instead, so a caller can set the row aside and go on.
    """

    def __init__(self, path: str | os.PathLike, *, objects: bool = True, keep_errors: bool = False):
        super().__init__(path)
        self.objects, self.keep_errors = objects, keep_errors

    def __iter__(self) -> Iterator[tuple[int, Any]]:  # type: ignore[override]
        for text in super().__iter__():
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                if self.objects and not isinstance(obj, dict):
                    raise BadInput(self.path, NOT_OBJECT, self.line, type(obj).__name__)
            except json.JSONDecodeError as exc:
                obj = BadInput(self.path, NOT_JSON, self.line, exc.msg)
            except BadInput as exc:
                obj = exc
            if isinstance(obj, BadInput) and not self.keep_errors:
                raise obj
            yield self.line, obj
