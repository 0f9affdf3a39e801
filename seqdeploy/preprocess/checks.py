"""Input checks shared by the preprocessing kinds and the runtime: what was received, what was expected."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np

from seqdeploy.errors import BundleError, InputValidationError

def _err(where: str, msg: str) -> BundleError:
    return BundleError(f"{where}: {msg}")


def _floats(v: Any, where: str, key: str, n: int | None = None, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise _err(where, f"{key} = {v!r} (expected numbers)")
    out = tuple(float(x) for x in v)
    if n is not None and len(out) != n:
        raise _err(where, f"{key} has {len(out)} values (expected {n}, one per feature)")
    if not all(math.isfinite(x) for x in out):
        raise _err(where, f"{key} contains NaN or inf; retrain with finite data")
    if positive and any(x <= 0 for x in out):
        raise _err(where, f"{key} contains values <= 0 (expected std > 0); retrain or fix the record")
    return out


_REGEX_CACHE: dict[str, "re.Pattern[str]"] = {}


def _compiled(pattern: str) -> "re.Pattern[str]":
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE[pattern] = re.compile(pattern)
    return rx


def _target_shape(model_shape: Sequence[Any] | None, raw_shape: Sequence[int]) -> tuple[int, ...]:
    if model_shape and all(isinstance(d, int) and d > 0 for d in model_shape):
        return tuple(int(d) for d in model_shape)
    return tuple(raw_shape)


def short_list(names: Sequence[str], k: int = 6) -> str:
    names = list(names)
    return str(names) if len(names) <= k else f"[{', '.join(map(repr, names[:k]))}, ... {len(names)} in all]"


def fmt_shape(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("n" if not isinstance(d, int) or d <= 0 else str(d) for d in shape) + ")"


def shape_ok(got: Sequence[int], want: Sequence[Any]) -> bool:
    return len(got) == len(want) and all(not isinstance(w, int) or w <= 0 or g == w for g, w in zip(got, want))


def numeric_array(raw: Any, expected: str | Callable[[], str]) -> np.ndarray:
    """``raw`` as a numeric ndarray; ``expected`` (text or a callable making it) is used in errors only."""
    if isinstance(raw, np.ndarray):
        x = raw
    else:
        if isinstance(raw, (str, bytes, Mapping)) or raw is None:
            raise InputValidationError(f"received {type(raw).__name__} (expected {_text(expected)})")
        try:
            x = np.asarray(raw)
        except (ValueError, TypeError) as exc:
            raise InputValidationError(f"received a ragged or mixed sequence ({exc}) "
                                       f"(expected {_text(expected)})") from None
    if x.dtype.kind not in "iuf":
        raise InputValidationError(f"received dtype {x.dtype} (expected numbers: int or float; {_text(expected)})")
    if x.ndim == 0:
        raise InputValidationError(f"received a scalar (expected {_text(expected)})")
    return x


def _text(expected: str | Callable[[], str]) -> str:
    return expected() if callable(expected) else expected


def check_nonempty(x: np.ndarray) -> None:
    if x.shape[0] == 0 or x.size == 0:
        raise InputValidationError(f"received an empty array of shape {x.shape} (expected at least one sample)")


def check_finite(x: np.ndarray, offset: int, what: str) -> None:
    if x.dtype.kind != "f":
        return
    finite = np.isfinite(x)
    if not finite.all():
        flat = finite.reshape(x.shape[0], -1)
        row = int(np.flatnonzero(~flat.all(axis=1))[0])
        bad = x.reshape(x.shape[0], -1)[row][~flat[row]][0]
        raise InputValidationError(f"{what} row {row + offset} contains {bad} (expected finite numbers); "
                                   f"impute or drop rows with missing values before predicting")


def _finite_float32(x: np.ndarray, offset: int, dtype: Any = np.float32) -> np.ndarray:
    """``x`` as float32 (or ``dtype``), refusing NaN/inf and values that overflow it."""
    if x.dtype == dtype:  # no cast, nothing can overflow: skip np.errstate (the per-call hot path)
        out = x
        bad = not math.isfinite(float(np.add.reduce(out, axis=None, dtype=np.float64)))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            out = x.astype(dtype, copy=False)
            bad = not math.isfinite(float(np.add.reduce(out, axis=None, dtype=np.float64)))
    if bad:  # NaN/inf anywhere make the float64 sum non-finite: diagnose only then
        check_finite(x, offset, "raw input")
        row = int(np.flatnonzero(~np.isfinite(out).reshape(out.shape[0], -1).all(axis=1))[0])
        raise InputValidationError(f"row {row + offset} overflows {np.dtype(dtype).name} (a value is too large; "
                                   f"expected magnitudes below {np.finfo(dtype).max:.3g})")
    return out
