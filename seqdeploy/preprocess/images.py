"""Images: ``scale`` (pixel values, float32 or uint8)."""

from __future__ import annotations

import math
from collections.abc import Mapping
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
class Scale(Kind):
    """``x * scale + offset`` in float32, reshaped to the model input (images); raw may be uint8."""

    scale: float
    offset: float
    raw_shape: tuple[int, ...]
    raw_dtype: str = "float32"
    model_shape: tuple[int, ...] | None = None  # per sample; None: the raw shape
    #: image files (see seqdeploy.preprocess.image_files): the Pillow resampling filter used to resize every
    #: file to raw_shape, and what alpha becomes; None for arrays that are not read from image files
    resize: str | None = None
    alpha: str | None = None
    kind: ClassVar[str] = "scale"
    raw_name: ClassVar[str] = "image"

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Scale":
        raw_shape = d.get("raw_shape")
        if not isinstance(raw_shape, (list, tuple)) or not raw_shape or not all(
                isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in raw_shape):
            raise _err(where, f"raw_shape = {raw_shape!r} (expected a list of positive integers)")
        scale, offset = _floats([d.get("scale"), d.get("offset")], where, "scale/offset")
        raw_dtype = d.get("raw_dtype", "float32")
        if raw_dtype not in ("float32", "uint8"):
            raise _err(where, f"raw_dtype = {raw_dtype!r} (expected 'float32' or 'uint8')")
        model_shape = d.get("model_shape")
        if model_shape is not None:
            if not isinstance(model_shape, (list, tuple)) or not all(
                    isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in model_shape) \
                    or math.prod(model_shape) != math.prod(raw_shape):
                raise _err(where, f"model_shape = {model_shape!r} (expected positive integers with as many values "
                                  f"as raw_shape {list(raw_shape)})")
            model_shape = tuple(model_shape)
        resize, alpha = d.get("resize"), d.get("alpha")
        if resize is not None or alpha is not None:
            from seqdeploy.preprocess.image_files import ALPHA_MODES, RESIZE_METHODS

            if resize not in RESIZE_METHODS:
                raise _err(where, f"resize = {resize!r} (expected one of {', '.join(RESIZE_METHODS)})")
            if alpha not in ALPHA_MODES:
                raise _err(where, f"alpha = {alpha!r} (expected one of {', '.join(ALPHA_MODES)})")
            if raw_dtype != "uint8" or len(raw_shape) not in (2, 3) or (len(raw_shape) == 3 and raw_shape[2] != 3):
                raise _err(where, f"image files need raw_dtype 'uint8' and raw_shape [height, width] or "
                                  f"[height, width, 3] (got {raw_dtype!r}, {list(raw_shape)})")
        return cls(scale, offset, tuple(raw_shape), raw_dtype, model_shape, resize, alpha)

    def raw_spec(self, model_shape, model_dtype):
        return self.raw_dtype, tuple(self.raw_shape)

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        shape = ", ".join(map(str, self.raw_shape))
        x = numeric_array(raw, f"images of shape (n, {shape})")
        size = math.prod(self.raw_shape)
        if x.ndim < 1 or not (tuple(x.shape[1:]) == self.raw_shape or tuple(x.shape[1:]) == (size,)):
            raise InputValidationError(f"received shape {x.shape} (expected (n, {shape}) or (n, {size}))")
        check_nonempty(x)
        x = x.reshape((x.shape[0], *self.raw_shape))
        if self.raw_dtype == "uint8":
            if x.dtype == np.uint8:
                return x
            if x.dtype.kind == "f":
                check_finite(x, offset, "raw input")
            bad = (x < 0) | (x > 255) | ((x != np.floor(x)) if x.dtype.kind == "f" else False)
            if bad.any():
                row = int(np.flatnonzero(bad.reshape(x.shape[0], -1).any(axis=1))[0])
                val = x.reshape(x.shape[0], -1)[row][bad.reshape(x.shape[0], -1)[row]][0]
                raise InputValidationError(f"row {row + offset} has pixel value {val} (expected integers 0..255 "
                                           f"for uint8 pixels)")
            return x.astype(np.uint8)
        return _finite_float32(x, offset)

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        x = np.asarray(raw).astype(np.float32, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):
            z = x * np.float32(self.scale)
            if self.offset != 0.0:
                z = z + np.float32(self.offset)
        target = _target_shape(model_shape or self.model_shape, self.raw_shape)
        return z.reshape((z.shape[0], *target)).astype(model_dtype, copy=False)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        z = g.node("Mul", [g.cast(raw, np.float32), g.const("scale", np.float32(self.scale))])
        if self.offset != 0.0:
            z = g.node("Add", [z, g.const("offset", np.float32(self.offset))])
        target = _target_shape(model_shape or self.model_shape, self.raw_shape)
        z = g.node("Reshape", [z, g.const("shape", np.asarray([-1, *target], np.int64))])
        g.cast(z, model_dtype, out)
