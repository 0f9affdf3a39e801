"""Dynamic int8: weights quantized offline, activations at run time (``onnxruntime.quantization.quantize_dynamic``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqdeploy.errors import QuantizeError
from seqdeploy.precision import INT8_DYNAMIC
from seqdeploy.quantize.recipes import Recipe, register
from seqdeploy.quantize.recipes._ops import CONV_OPS, MATMUL_OPS, RNN_OPS, qtype
from seqdeploy.quantize.settings import QUANT_TYPES, QuantTypeName, check_choice, check_nodes

@dataclass(frozen=True)
class DynamicInt8Settings:
    """Dynamic int8 (weights quantized offline, activations at run time).

    ``op_types`` leaves out Conv on purpose: dynamic ConvInteger was measured
    4-10x *slower* than float32 Conv on CPU; use the static recipe for Conv nets.

        >>> DynamicInt8Settings(per_channel=True).op_types
        ('MatMul', 'LSTM', 'Attention')
    """

    per_channel: bool = False
    reduce_range: bool = False
    weight_type: QuantTypeName = "int8"
    op_types: tuple[str, ...] = ("MatMul", "LSTM", "Attention")  # onnxruntime has no dynamic Gemm/GRU kernels
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("weight_type", self.weight_type, QUANT_TYPES)
        check_nodes("op_types", self.op_types)
        check_nodes("nodes_to_exclude", self.nodes_to_exclude)
        if not self.op_types:
            raise QuantizeError("DynamicInt8Settings.op_types is empty (expected at least one op type); e.g. ('MatMul',)")


@register
class Int8Dynamic(Recipe):
    name = "int8-dynamic"
    mode = "dynamic"
    precision = INT8_DYNAMIC
    settings_type = DynamicInt8Settings
    override_field = "dynamic"
    order = 20

    def default_settings(self, qs: Any) -> DynamicInt8Settings:
        kw: dict[str, Any] = {"reduce_range": qs.effective_reduce_range()}
        if qs.per_channel is not None:
            kw["per_channel"] = qs.per_channel
        return DynamicInt8Settings(**kw)

    def skip_reason(self, op_counts: Mapping[str, int], cpu_flags: frozenset[str]) -> str | None:
        n_conv = sum(op_counts.get(op, 0) for op in CONV_OPS)
        n_mm = sum(op_counts.get(op, 0) for op in MATMUL_OPS)
        n_rnn = sum(op_counts.get(op, 0) for op in RNN_OPS)
        n_dyn = op_counts.get("MatMul", 0) + op_counts.get("LSTM", 0) + op_counts.get("Attention", 0)
        if n_conv and n_conv >= n_mm and not n_rnn:
            return f"Conv-heavy ({n_conv} Conv vs {n_mm} MatMul/Gemm): dynamic ConvInteger is slower than float32 on CPU"
        if not n_dyn:
            return "no MatMul/LSTM to quantize (onnxruntime has no dynamic int8 Gemm/GRU kernels)"
        return None

    def build(self, src: Path, dst: Path, settings: DynamicInt8Settings, calibration: Mapping[str, np.ndarray] | None,
              seed: int = 0) -> None:
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=list(settings.op_types), per_channel=settings.per_channel,
            reduce_range=settings.reduce_range, weight_type=qtype(settings.weight_type),
            nodes_to_exclude=list(settings.nodes_to_exclude) or None,
        )

    def quantizable_ops(self, settings: DynamicInt8Settings) -> frozenset[str] | None:
        from seqdeploy.compat import ort_quantizable_ops

        known = ort_quantizable_ops("dynamic")
        return frozenset(settings.op_types) & known if known is not None else frozenset(settings.op_types)
