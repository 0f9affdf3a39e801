"""``none``: raw inputs are model inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from seqdeploy.errors import InputValidationError
from seqdeploy.preprocess.base import Kind, register
from seqdeploy.preprocess.checks import (  # noqa: F401
    check_finite, check_nonempty, _compiled, _err, _finite_float32, _floats, fmt_shape, numeric_array,
    shape_ok, short_list, _target_shape,
)

@register
@dataclass(frozen=True)
class NoPreprocessing(Kind):
    """Raw inputs are model inputs."""

    kind: ClassVar[str] = "none"

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "NoPreprocessing":
        return cls()

    def raw_spec(self, model_shape, model_dtype):
        return model_dtype, tuple(model_shape)

    def coerce(self, raw: Any, offset: int = 0, dtype: Any = np.float32,
               shape: Sequence[Any] | None = None, name: str = "inputs") -> np.ndarray:
        if np.dtype(dtype).kind == "O":  # a string input (a model with its own StringLookup/TextVectorization)
            return _strings(raw, shape, name)
        x = numeric_array(raw, f"{name}: {fmt_shape(shape or ())}")
        if shape is not None and not shape_ok(x.shape[1:], shape):
            raise InputValidationError(f"input {name!r} has shape {x.shape} (expected {fmt_shape(('n', *shape))})")
        check_nonempty(x)
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            return _finite_float32(x, offset, dtype)
        if x.dtype.kind == "f":
            check_finite(x, offset, f"input {name!r}")
            if not np.all(np.mod(x, 1) == 0):
                raise InputValidationError(f"input {name!r} has non-integer values (expected {dtype.name})")
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if x.size and (x.min() < info.min or x.max() > info.max):
                raise InputValidationError(f"input {name!r} has values outside the {dtype.name} range")
        return x.astype(dtype, copy=False)

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        if np.dtype(model_dtype).kind == "O":
            return _strings(raw, model_shape[1:] if model_shape else None, "inputs")
        return np.asarray(raw).astype(model_dtype, copy=False)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        g.node("Identity", [raw], [out])


def _strings(raw: Any, shape: Sequence[Any] | None, name: str) -> np.ndarray:
    """Rows of text for a string input: an object array of ``str`` (bytes decoded as UTF-8)."""
    x = np.asarray(raw, dtype=object)
    if x.ndim == 0:
        raise InputValidationError(f"input {name!r} received one value {raw!r} (expected a list of strings, one a row)")
    if shape is not None and not shape_ok(x.shape[1:], shape):
        raise InputValidationError(f"input {name!r} has shape {x.shape} (expected {fmt_shape(('n', *shape))})")
    check_nonempty(x)
    out = np.empty(x.shape, dtype=object)
    for i, v in enumerate(x.flat):
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif not isinstance(v, str):
            raise InputValidationError(f"input {name!r} value {i} is {type(v).__name__} {v!r} (expected a string)")
        out.flat[i] = v
    return out


Preprocessing = Kind
