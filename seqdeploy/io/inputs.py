"""Which table files an input names: one file, a directory (recursively, sorted) or a glob pattern."""

from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass
from pathlib import Path

from seqdeploy.errors import InputFileNotFound, UsageError

INPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


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
