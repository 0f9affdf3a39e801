"""Precisions of model-ready ONNX artifacts and the artifact naming rule: one definition for
manifest, verify, bench and quantize.

A precision has three spellings, each kept where a file format already uses it:

* ``name``: the manifest's ``precision`` and the quantize recipe (``float32``, ``int8-static``,
  ``int8-dynamic``, ``int8-qgemm``, ``fp16``);
* ``label``: the short tag in benchmark runner names (``ort:fp32``, ``ort:int8-static``);
* ``numeric``: the element type of the arithmetic, ``verify.json``'s ``artifact_precision``
  (``float32``, ``int8``, ``float16``).

The artifact naming rule: the float32 export is ``model.onnx``; every other precision is
``model.<name>.onnx`` (the portable wrapping of an artifact adds ``.portable`` before ``.onnx``,
see :mod:`seqdeploy.bundle.portable`).

    >>> precision_of("int8-static").label, FLOAT32.artifact, artifact_name("fp16")
    ('int8-static', 'model.onnx', 'model.fp16.onnx')
    >>> precision_of_file("model.int8-dynamic.onnx").name, precision_of_file("model.onnx").label
    ('int8-dynamic', 'fp32')

Importing this module needs nothing beyond the standard library (onnx only inside
:func:`precision_of_graph`), so the embedded runtime can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARTIFACT_STEM = "model"
ARTIFACT_SUFFIX = ".onnx"
PORTABLE_MARK = "portable"

#: Op types that only appear in quantized graphs (plus every ``QLinear*`` op).
QUANTIZED_OP_TYPES = frozenset(
    {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
        "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "MatMulIntegerToFloat", "QGemm", "QAttention",
        "MatMulNBits", "MatMulFpQ4", "QOrderedMatMul",
    }
)
#: Ops that mark a graph quantized at run time (activations quantized per call).
_DYNAMIC_OP_TYPES = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                               "MatMulIntegerToFloat"})


@dataclass(frozen=True)
class Precision:
    """One precision of a model-ready artifact (see the module docstring for the three spellings)."""

    name: str
    label: str
    numeric: str

    @property
    def artifact(self) -> str:
        """The artifact's file name under the naming rule."""
        return artifact_name(self.name)

    @property
    def is_float32(self) -> bool:
        return self.name == FLOAT32.name

    def __str__(self) -> str:
        return self.name


FLOAT32 = Precision("float32", "fp32", "float32")
INT8_STATIC = Precision("int8-static", "int8-static", "int8")
INT8_DYNAMIC = Precision("int8-dynamic", "int8-dynamic", "int8")
INT8_QGEMM = Precision("int8-qgemm", "int8-qgemm", "int8")
FP16 = Precision("fp16", "fp16", "float16")

#: The known precisions by name: the built-in ones (the runtime reads them without the quantizer), then
#: those of recipes added later, which declare their ``Precision`` in their own module and are
#: registered with it (:func:`register_precision`, called by ``seqdeploy.quantize.recipes.register``).
KNOWN: dict[str, Precision] = {p.name: p for p in (FLOAT32, INT8_STATIC, INT8_DYNAMIC, INT8_QGEMM, FP16)}
_ALIASES = {"fp32": FLOAT32, "float": FLOAT32, "float16": FP16, "half": FP16}


def register_precision(precision: Precision) -> Precision:
    """Make ``precision`` known by name (what a recipe with a precision of its own does on import).

        >>> register_precision(INT8_STATIC) is INT8_STATIC
        True
    """
    known = KNOWN.get(precision.name)
    if known is not None and known != precision:
        raise ValueError(f"precision {precision.name!r} is already {known!r}; a recipe with other spellings "
                         f"needs a name of its own")
    return KNOWN.setdefault(precision.name, precision)


def precision_of(name: str | Precision | None) -> Precision:
    """The precision called ``name`` (a name, a label or a recipe; None = float32).

    Unknown names containing a known one resolve to it (``"int8-static-retry"`` -> int8-static);
    other unknown names become a precision of their own, with ``int8`` or ``float16`` as the
    numeric type when the name says so.

        >>> precision_of("fp32") is FLOAT32, precision_of("float16") is FP16, precision_of("int4-weight").numeric
        (True, True, 'int4-weight')
    """
    if isinstance(name, Precision):
        return name
    if name is None or name == "":
        return FLOAT32
    key = str(name).lower()
    if key in KNOWN:
        return KNOWN[key]
    if key in _ALIASES:
        return _ALIASES[key]
    for p in KNOWN.values():
        if not p.is_float32 and p.name in key:
            return p
    if "float16" in key:
        return FP16
    numeric = "int8" if "int8" in key else "float16" if "fp16" in key else str(name)
    return Precision(str(name), str(name), numeric)


def artifact_name(precision: str | Precision | None) -> str:
    """``model.onnx`` for float32, ``model.<name>.onnx`` otherwise.

        >>> artifact_name(None), artifact_name("int8-dynamic")
        ('model.onnx', 'model.int8-dynamic.onnx')
    """
    p = precision_of(precision)
    return ARTIFACT_STEM + ARTIFACT_SUFFIX if p.is_float32 else f"{ARTIFACT_STEM}.{p.name}{ARTIFACT_SUFFIX}"


def is_portable_file(path: str | os.PathLike) -> bool:
    """Whether a file name is a portable deployment graph (``<artifact stem>.portable.onnx``)."""
    parts = Path(path).name.split(".")
    return len(parts) >= 3 and parts[-2] == PORTABLE_MARK


def precision_of_file(path: str | os.PathLike) -> Precision:
    """The precision a file name states under the naming rule (``model.onnx`` and other names: float32).

        >>> precision_of_file("runs/x/model.fp16.onnx") is FP16, precision_of_file("other.onnx") is FLOAT32
        (True, True)
    """
    parts = Path(path).name.split(".")
    return precision_of(parts[1]) if len(parts) >= 3 and not is_portable_file(path) else FLOAT32


def is_quantized_op(op_type: str) -> bool:
    """Whether an op type (optionally domain-qualified) only appears in quantized graphs.

        >>> is_quantized_op("QLinearConv"), is_quantized_op("com.microsoft.QGemm"), is_quantized_op("Conv")
        (True, True, False)
    """
    op = op_type.rsplit(".", 1)[-1]
    return op in QUANTIZED_OP_TYPES or op.startswith("QLinear")


def precision_of_graph(model: Any) -> Precision:
    """The precision an ONNX ``ModelProto`` computes in, read from its ops and initializers.

    Quantized ops: int8-dynamic when activations are quantized at run time, int8-qgemm when the
    file holds QGemm (only the QOperator recipe writes it; QDQ files hold Gemm), else int8-static;
    float16 initializers: fp16; otherwise float32.
    """
    ops = {n.op_type for n in model.graph.node}
    if any(is_quantized_op(op) for op in ops):
        return INT8_DYNAMIC if ops & _DYNAMIC_OP_TYPES else INT8_QGEMM if "QGemm" in ops else INT8_STATIC
    from onnx import TensorProto

    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        return FP16
    return FLOAT32


def precision_of_onnx(path: str | os.PathLike) -> Precision:
    """:func:`precision_of_graph` of an ONNX file (weights not loaded)."""
    import onnx

    return precision_of_graph(onnx.load(str(path), load_external_data=False))


__all__ = ["Precision", "FLOAT32", "INT8_STATIC", "INT8_DYNAMIC", "INT8_QGEMM", "FP16", "KNOWN", "QUANTIZED_OP_TYPES",
           "register_precision", "precision_of", "artifact_name", "precision_of_file", "is_portable_file", "is_quantized_op",
           "precision_of_graph", "precision_of_onnx"]
