"""What the int8 recipes share: op families and onnxruntime's quantized types (not a recipe: no registration)."""

from __future__ import annotations

from typing import Any

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
MATMUL_OPS = frozenset({"MatMul", "Gemm"})
RNN_OPS = frozenset({"LSTM", "GRU", "RNN"})


def qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]
