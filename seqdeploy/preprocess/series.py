"""Series windows: ``window`` (normalised input, de-normalised output)."""

from __future__ import annotations

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
class Window(Kind):
    """``(x - mean) / std`` over a window of a series (float32); outputs are de-normalised ``y * std + mean``."""

    window: int
    mean: float
    std: float
    kind: ClassVar[str] = "window"
    raw_name: ClassVar[str] = "window"

    @classmethod
    def fit(cls, series_train: np.ndarray, window: int) -> "Window":
        s = np.asarray(series_train, dtype=np.float64)
        return cls(int(window), float(s.mean()), float(s.std()) or 1.0)

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Window":
        window = d.get("window")
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise _err(where, f"window = {window!r} (expected an integer >= 1)")
        mean, std = _floats([d.get("mean"), d.get("std")], where, "mean/std")
        if std <= 0:
            raise _err(where, f"std = {std} (expected > 0)")
        return cls(window, mean, std)

    def raw_spec(self, model_shape, model_dtype):
        return "float32", (self.window,)

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        x = numeric_array(raw, f"(n, {self.window}) raw series windows")
        if x.ndim != 2 or x.shape[1] != self.window:
            raise InputValidationError(f"received shape {x.shape} (expected (n, {self.window}): one row of "
                                       f"{self.window} raw series values per sample)")
        check_nonempty(x)
        return _finite_float32(x, offset)

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        x = np.asarray(raw, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            z = (x - np.float32(self.mean)) / np.float32(self.std)
        if model_shape is None or len(model_shape) == 2:  # (window, 1) per sample
            z = z[..., None]
        return z.astype(model_dtype, copy=False)

    @property
    def target_scale(self) -> float:
        return float(self.std)

    def postprocess(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.float32) * np.float32(self.std) + np.float32(self.mean)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        z = g.node("Div", [g.node("Sub", [raw, g.const("mean", np.float32(self.mean))]),
                           g.const("std", np.float32(self.std))])
        if model_shape is None or len(model_shape) == 2:
            z = g.node("Unsqueeze", [z, g.const("axis", np.asarray([2], np.int64))])
        g.cast(z, model_dtype, out)

    def postprocess_onnx(self, g, y, out):
        y = g.cast(y, np.float32)
        g.node("Add", [g.node("Mul", [y, g.const("std", np.float32(self.std))]),
                       g.const("mean", np.float32(self.mean))], [out])
