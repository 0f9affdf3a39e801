"""Tabular features: ``standardize``."""

from __future__ import annotations

import dataclasses
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

class TargetScaling:
    """For kinds with ``target_mean`` / ``target_std`` fields: a regression target standardised on the
    training split, answers de-normalised in numpy and in ONNX (None: the target as it is)."""

    @property
    def target_scale(self) -> float:
        return float(self.target_std) if self.target_std is not None else 1.0  # type: ignore[attr-defined]

    def postprocess(self, y: np.ndarray) -> np.ndarray:
        return denormalise(y, self.target_mean, self.target_std)  # type: ignore[attr-defined]

    def postprocess_onnx(self, g, y, out):
        denormalise_onnx(g, y, out, self.target_mean, self.target_std)  # type: ignore[attr-defined]


@register
@dataclass(frozen=True)
class Standardize(TargetScaling, Kind):
    """``(x - mean) / std`` per feature, float32; raw rows may be keyed by feature name.

    Regression on tables standardises the target too (``target_mean``, ``target_std``, from the
    training split): the model learns ``(y - target_mean) / target_std`` and its outputs are
    de-normalised ``y * target_std + target_mean`` (float32) by the runtime and the portable graph.
    """

    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    target_mean: float | None = None
    target_std: float | None = None
    kind: ClassVar[str] = "standardize"
    raw_name: ClassVar[str] = "features"

    @classmethod
    def fit(cls, x_train: np.ndarray, feature_names: Sequence[str]) -> "Standardize":
        x = np.asarray(x_train, dtype=np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std == 0] = 1.0  # constant columns stay at zero instead of dividing by zero
        return cls(tuple(feature_names), tuple(float(v) for v in mean), tuple(float(v) for v in std))

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Standardize":
        names = d.get("feature_names")
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise _err(where, f"feature_names = {names!r} (expected a non-empty list of strings)")
        if len(set(names)) != len(names):
            raise _err(where, "feature_names has duplicates; feature names must be unique")
        n = len(names)
        t_mean, t_std = _target_stats(d, where)
        return cls(tuple(names), _floats(d.get("mean"), where, "mean", n),
                   _floats(d.get("std"), where, "std", n, positive=True), t_mean, t_std)

    def with_target(self, y_train: np.ndarray) -> "Standardize":
        """The same record with the regression target's training mean and std (see the class docstring)."""
        mean, std = fit_target(y_train)
        return dataclasses.replace(self, target_mean=mean, target_std=std)

    @property
    def _mean32(self) -> np.ndarray:
        return np.asarray(self.mean, dtype=np.float32)

    @property
    def _std32(self) -> np.ndarray:
        return np.asarray(self.std, dtype=np.float32)

    def raw_spec(self, model_shape, model_dtype):
        return "float32", (len(self.feature_names),)

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        names = self.feature_names
        n_feat = len(names)
        if type(raw) is np.ndarray and raw.ndim == 2 and raw.shape[1] == n_feat and raw.dtype.kind in "iuf" \
                and raw.shape[0] > 0:
            x = raw  # fast path: already an (n, F) numeric array
        elif isinstance(raw, Mapping):
            raise InputValidationError("received one dict (expected a list of dicts keyed by feature name, "
                                       "or an (n, F) array); wrap a single row in a list: [row]")
        elif hasattr(raw, "columns") and hasattr(raw, "to_numpy"):  # a DataFrame, without importing pandas
            missing = [f for f in names if f not in set(raw.columns)]
            if missing:
                raise InputValidationError(f"the table is missing feature column(s) {missing} (expected columns "
                                           f"{list(names)}; extra columns are ignored)")
            x = numeric_array(raw[list(names)].to_numpy(), "numeric feature columns")
        elif isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], Mapping):
            x = np.empty((len(raw), n_feat), dtype=np.float64)
            for i, row in enumerate(raw):
                if not isinstance(row, Mapping):
                    raise InputValidationError(f"row {i + offset} is {type(row).__name__} (expected a dict keyed by "
                                               f"feature name like rows before it)")
                for j, f in enumerate(names):
                    if f not in row:
                        raise InputValidationError(f"row {i + offset} is missing feature {f!r} (expected keys "
                                                   f"{short_list(names)}; got {list(row)[:10]})")
                    v = row[f]
                    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                        raise InputValidationError(f"row {i + offset} feature {f!r} = {v!r} (expected a number)")
                    x[i, j] = float(v)
        else:
            x = numeric_array(raw, lambda: f"an (n, {n_feat}) array of features {short_list(names)} or a list of dicts")
        if x.ndim != 2 or x.shape[1] != n_feat:
            hint = "; for one sample use x.reshape(1, -1)" if x.ndim == 1 and x.shape[0] == n_feat else ""
            cols = f"; each row has {x.shape[1]} values, not {n_feat}" if x.ndim == 2 else ""
            raise InputValidationError(f"received shape {x.shape} (expected (n, {n_feat}) with features "
                                       f"{short_list(names)}){cols}{hint}")
        check_nonempty(x)
        return _finite_float32(x, offset)

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        x = np.asarray(raw, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            return ((x - self._mean32) / self._std32).astype(model_dtype, copy=False)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        z = g.node("Div", [g.node("Sub", [raw, g.const("mean", self._mean32)]), g.const("std", self._std32)])
        g.cast(z, model_dtype, out)



def fit_target(y_train: np.ndarray) -> tuple[float, float]:
    """Mean and std (1.0 for a constant target) of a regression target on the training split."""
    y = np.asarray(y_train, dtype=np.float64).reshape(-1)
    return float(y.mean()), float(y.std()) or 1.0


def _target_stats(d: Mapping[str, Any], where: str) -> tuple[float | None, float | None]:
    if d.get("target_mean") is None and d.get("target_std") is None:
        return None, None
    mean, std = _floats([d.get("target_mean"), d.get("target_std")], where, "target_mean/target_std")
    if std <= 0:
        raise _err(where, f"target_std = {std} (expected > 0); retrain or fix the record")
    return mean, std


def denormalise(y: np.ndarray, mean: float | None, std: float | None) -> np.ndarray:
    """``y * std + mean`` in float32 (identity without target statistics)."""
    if mean is None or std is None:
        return y
    return np.asarray(y, dtype=np.float32) * np.float32(std) + np.float32(mean)


def denormalise_onnx(g: Any, y: str, out: str, mean: float | None, std: float | None) -> None:
    if mean is None or std is None:
        g.node("Identity", [y], [out])
        return
    y = g.cast(y, np.float32)
    g.node("Add", [g.node("Mul", [y, g.const("target_std", np.float32(std))]),
                   g.const("target_mean", np.float32(mean))], [out])
