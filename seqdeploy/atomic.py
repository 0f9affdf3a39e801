"""Atomic file writes and content hashes (standard library only).

Every file seqdeploy writes goes through here: the data is written to a
temporary file in the same directory, flushed, fsynced and renamed over the
target, so a crash leaves the old file or none, never half of one.

    >>> from seqdeploy.atomic import atomic_write_json
    >>> atomic_write_json("runs/x/train.json", {"ok": True})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    For libraries that insist on writing to a path themselves (``model.save``,
    ``onnx.save``). ``suffix`` defaults to the target's suffix because some
    writers (Keras) dispatch on it. On any exception the temporary is removed
    and the target is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.unlink()  # writers such as Keras refuse to overwrite; let them create it
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise RuntimeError(f"writer did not create {tmp_path}")
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    target = Path(target)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return target


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, numpy scalars/arrays, paths and tuples to JSON types.

    Objects with a ``to_record()`` method (preprocessing kinds) are written as their record.
    """
    if callable(getattr(obj, "to_record", None)) and not isinstance(obj, type):
        return to_jsonable(obj.to_record())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy array or scalar
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None if obj != obj else ("inf" if obj > 0 else "-inf")
    return obj


def atomic_write_json(target: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` (dataclasses and numpy values allowed) as indented JSON, atomically."""
    return atomic_write_text(target, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json_or_empty(path: str | os.PathLike) -> dict:
    """A JSON file's object, or ``{}`` when the file is missing or unreadable (an optional stage output)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_file(path: Path) -> None:
    if path.is_dir():
        return
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
