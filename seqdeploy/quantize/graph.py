"""The float32 model quantize starts from: loading, op counts, refusing already-quantized models, pre-processing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from seqdeploy.errors import InputFileNotFound, QuantizeError
from seqdeploy.precision import QUANTIZED_OP_TYPES, is_quantized_op  # noqa: F401  (re-exported)


def load_onnx(path: Path) -> Any:
    if not path.exists():
        raise InputFileNotFound(f"{path}: no such ONNX model (expected a float32 model.onnx; run `seqdeploy export` first)")
    from seqdeploy.export.convert import load_checked_onnx

    return load_checked_onnx(path)


def op_counts(model) -> dict[str, int]:
    """Count node op types in the main graph and in subgraphs (Loop/Scan bodies)."""
    from seqdeploy.export.convert import op_counts as graph_op_counts

    return graph_op_counts(model)


def check_not_quantized(model, path: str | os.PathLike = "model") -> None:
    """Raise :class:`QuantizeError` if ``model`` already holds quantized ops or float16 weights."""
    from onnx import TensorProto

    found = sorted(op for op in op_counts(model) if is_quantized_op(op))
    if found:
        raise QuantizeError(
            f"{path}: already quantized (found {', '.join(found)}); expected a float32 model. "
            "Quantize the float32 model.onnx from `seqdeploy export` instead"
        )
    fp16 = [init.name for init in model.graph.initializer if init.data_type == TensorProto.FLOAT16]
    if fp16:
        raise QuantizeError(
            f"{path}: already converted to float16 ({len(fp16)} float16 initializers, e.g. {fp16[0]!r}); "
            "expected a float32 model. Quantize the float32 model.onnx from `seqdeploy export` instead"
        )


def preprocess(src: Path, dst: Path) -> tuple[Path, list[str]]:
    """Run ``quant_pre_process`` (shape inference + graph optimisation); fall back to ``src``.

    Returns the model to quantize and the warnings collected.
    """
    import tempfile

    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    warnings: list[str] = []
    # onnxruntime's symbolic shape inference saves "sym_shape_infer_temp.onnx" (+ external data) into the current
    # directory when it gives up: run it from a scratch directory so nothing lands where the user works.
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="seqdeploy-preprocess-") as scratch:
        os.chdir(scratch)
        try:
            try:
                quant_pre_process(str(src), str(dst))
                return dst, warnings
            except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation, never a blocker
                warnings.append(f"quant_pre_process failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                "retrying without symbolic shape inference")
            try:
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
                return dst, warnings
            except Exception as exc:  # noqa: BLE001
                warnings.append(f"quant_pre_process failed again ({type(exc).__name__}: {str(exc)[:200]}); "
                                "quantizing the model as exported")
        finally:
            os.chdir(here)
    return src, warnings


__all__ = ["QUANTIZED_OP_TYPES", "check_not_quantized", "is_quantized_op", "load_onnx", "op_counts", "preprocess"]
