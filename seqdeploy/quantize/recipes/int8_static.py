"""Static int8 in QDQ format, calibrated on training rows (``onnxruntime.quantization.quantize_static``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqdeploy.errors import QuantizeError
from seqdeploy.precision import INT8_STATIC
from seqdeploy.quantize.recipes import Recipe, register
from seqdeploy.quantize.recipes._ops import CONV_OPS, MATMUL_OPS, qtype
from seqdeploy.quantize.settings import (
    CALIBRATION_METHODS,
    QUANT_TYPES,
    CalibrationMethodName,
    QuantTypeName,
    _check_choice,
    _check_nodes,
)


@dataclass(frozen=True)
class StaticInt8Settings:
    """Static int8 in QDQ format, calibrated on training rows.

    ``percentile`` is used by the percentile method only (the share of the
    activation histogram kept, in percent).

        >>> StaticInt8Settings(calibration_method="percentile", percentile=99.99).calibration_method
        'percentile'
    """

    calibration_method: CalibrationMethodName = "minmax"
    calibration_samples: int = 256
    calibration_batch_size: int = 32
    percentile: float = 99.999
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: QuantTypeName = "int8"
    weight_type: QuantTypeName = "int8"
    op_types: tuple[str, ...] | None = None  # None = every op type ORT's QDQ quantizer handles
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        _check_choice("activation_type", self.activation_type, QUANT_TYPES)
        _check_choice("weight_type", self.weight_type, QUANT_TYPES)
        for name in ("calibration_samples", "calibration_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QuantizeError(f"{name} = {value!r} (expected an integer >= 1); e.g. {name}=256")
        if not (isinstance(self.percentile, (int, float)) and 50.0 < float(self.percentile) <= 100.0):
            raise QuantizeError(f"percentile = {self.percentile!r} (expected 50 < p <= 100); e.g. 99.999")
        if self.op_types is not None:
            _check_nodes("op_types", self.op_types)
        _check_nodes("nodes_to_exclude", self.nodes_to_exclude)


@register
class Int8Static(Recipe):
    name = "int8-static"
    mode = "static"
    precision = INT8_STATIC
    settings_type = StaticInt8Settings
    override_field = "static"
    needs_calibration = True
    order = 10

    def default_settings(self, qs: Any) -> StaticInt8Settings:
        kw: dict[str, Any] = {"calibration_samples": qs.calibration_samples, "calibration_method": qs.calibration_method,
                              "reduce_range": qs.effective_reduce_range()}
        if qs.per_channel is not None:
            kw["per_channel"] = qs.per_channel
        return StaticInt8Settings(**kw)

    def skip_reason(self, op_counts: Mapping[str, int], cpu_flags: frozenset[str]) -> str | None:
        if any(op_counts.get(op, 0) for op in CONV_OPS | MATMUL_OPS):
            return None
        return "no Conv/MatMul/Gemm to quantize"

    def build(self, src: Path, dst: Path, settings: StaticInt8Settings, calibration: Mapping[str, np.ndarray] | None,
              seed: int = 0) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        from seqdeploy.quantize.feeds import calibration_reader, subset

        if not calibration:
            raise QuantizeError("int8-static needs calibration data (received none); pass calibration_inputs rows from the training split")
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[settings.calibration_method]
        extra: dict[str, Any] = {}
        if settings.calibration_method == "percentile":
            extra["CalibPercentile"] = float(settings.percentile)
        rows = subset(calibration, settings.calibration_samples, seed)
        quantize_static(
            str(src), str(dst), calibration_reader(rows, settings.calibration_batch_size),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
            per_channel=settings.per_channel, reduce_range=settings.reduce_range,
            activation_type=qtype(settings.activation_type), weight_type=qtype(settings.weight_type),
            nodes_to_exclude=list(settings.nodes_to_exclude) or None, calibrate_method=method,
            extra_options=extra or None,
        )

    def quantizable_ops(self, settings: StaticInt8Settings) -> frozenset[str] | None:
        from seqdeploy.compat import ort_quantizable_ops

        return frozenset(settings.op_types) if settings.op_types else ort_quantizable_ops("static")
