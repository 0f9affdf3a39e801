"""Float16 weights and arithmetic, float32 inputs and outputs (``onnxconverter_common.float16``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqdeploy.precision import FP16
from seqdeploy.quantize.recipes import Recipe, register
from seqdeploy.quantize.settings import check_nodes

_NATIVE_FP16_FLAGS = frozenset({"avx512_fp16", "fphp", "asimdhp"})


@dataclass(frozen=True)
class Float16Settings:
    """Float16 weights and arithmetic; inputs and outputs stay float32 (``keep_io_types``).

        >>> Float16Settings().keep_io_types
        True
    """

    keep_io_types: bool = True
    op_block_list: tuple[str, ...] | None = None  # None = onnxconverter-common's default block list
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op_block_list is not None:
            check_nodes("op_block_list", self.op_block_list)
        check_nodes("nodes_to_exclude", self.nodes_to_exclude)


@register
class Fp16(Recipe):
    name = "fp16"
    mode = "fp16"
    precision = FP16
    settings_type = Float16Settings
    override_field = "fp16"
    order = 30

    def skip_reason(self, op_counts: Mapping[str, int], cpu_flags: frozenset[str]) -> str | None:
        if cpu_flags & _NATIVE_FP16_FLAGS:
            return None
        return ("this CPU has no native float16 arithmetic (avx512_fp16 / ARM fphp): onnxruntime would emulate it; "
                "ask for the fp16 mode explicitly to measure it anyway")

    def build(self, src: Path, dst: Path, settings: Float16Settings, calibration: Mapping[str, np.ndarray] | None,
              seed: int = 0) -> None:
        import onnx
        from onnxconverter_common import float16

        model = onnx.load(str(src))
        kw: dict[str, Any] = {"keep_io_types": settings.keep_io_types}
        if settings.op_block_list is not None:
            kw["op_block_list"] = list(settings.op_block_list)
        if settings.nodes_to_exclude:
            kw["node_block_list"] = list(settings.nodes_to_exclude)
        onnx.save(float16.convert_float_to_float16(model, **kw), str(dst))
