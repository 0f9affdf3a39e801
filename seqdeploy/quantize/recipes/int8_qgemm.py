"""Static int8 in QOperator format for Dense stacks: ``QuantizeLinear -> QGemm ... -> float out``.

The graph onnxruntime runs fastest for int8 MLPs on CPU (``benchmarks/int8_mlp.py``: on the
784-1024-1024-10 MLP, 1 thread, AVX-512 VNNI, 33.8-34.2 us at batch 1 vs int8-dynamic's
35.4-35.7 us, same accuracy). Built in three exact steps:

1. every ``MatMul`` with a 2-D constant weight on a rank-2 input becomes a ``Gemm`` (a following
   ``Add`` of a constant 1-D bias becomes its ``C``): :func:`matmul_to_gemm`;
2. ``quantize_static`` in QOperator format: uint8 activations, per-tensor int8 weights, int32
   bias, Relu absorbed by the uint8 range; calibrated on training rows;
3. a ``DequantizeLinear`` that only reads a QGemm is dropped and the QGemm returns float32
   directly (no ``y_scale``): :func:`float_output_qgemm`.

QGemm covers Gemm only, so models whose MatMuls cannot become Gemm (3-D inputs, activation x
activation products) do not fit (:class:`~seqdeploy.quantize.recipes.RecipeDoesNotFit`), and
recurrent or Conv-heavy op mixes are skipped before building.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqdeploy.errors import QuantizeError
from seqdeploy.precision import INT8_QGEMM
from seqdeploy.quantize.recipes import Recipe, RecipeDoesNotFit, register
from seqdeploy.quantize.recipes._ops import CONV_OPS, MATMUL_OPS, RNN_OPS
from seqdeploy.quantize.settings import CalibrationMethodName, check_calibration, check_nodes


@dataclass(frozen=True)
class QGemmInt8Settings:
    """Static int8 QGemm (QOperator), calibrated on training rows.

    Activations are uint8 and weights per-tensor int8 (onnxruntime's u8s8 QGemm kernel);
    ``reduce_range`` must be on for x86 CPUs without VNNI (``QuantizeSettings`` fills it from
    this CPU). ``float_output`` lets a QGemm whose result is only dequantized return float32.

        >>> QGemmInt8Settings(calibration_samples=128).float_output
        True
    """

    calibration_method: CalibrationMethodName = "minmax"
    calibration_samples: int = 256
    calibration_batch_size: int = 32
    percentile: float = 99.999
    reduce_range: bool = False
    float_output: bool = True
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_calibration(self)
        check_nodes("nodes_to_exclude", self.nodes_to_exclude)


def matmul_to_gemm(model: Any) -> tuple[Any, list[str]]:
    """Rewrite ``MatMul(x, W)`` (+ ``Add(·, b)``) as ``Gemm(x, W, b)`` where that is exact.

    Exact when ``x`` has rank 2 (shape inference), ``W`` is a 2-D initializer and ``b`` a 1-D
    (or ``[1, N]``) initializer read by nothing else; the Gemm keeps the MatMul's node name (so
    exclusions and the layer diagnosis name the same node). Returns the model and the names of
    the MatMuls left as they were.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    rank: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            rank[vi.name] = len(t.shape.dim)
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}

    new_nodes: list[Any] = []
    absorbed: set[int] = set()
    left: list[str] = []
    for n in g.node:
        if id(n) in absorbed:
            continue
        if n.op_type != "MatMul" or n.domain not in ("", "ai.onnx"):
            new_nodes.append(n)
            continue
        x, w = n.input
        if w not in inits or len(inits[w].dims) != 2 or rank.get(x) != 2:
            left.append(n.name or n.output[0])
            new_nodes.append(n)
            continue
        n_out = int(inits[w].dims[1])
        inputs, out = [x, w], n.output[0]
        users = consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Add" and out not in graph_outputs:
            add = users[0]
            other = add.input[1] if add.input[0] == out else add.input[0]
            bias = inits.get(other)
            if bias is not None and len(consumers.get(other, [])) == 1 and (
                    list(bias.dims) == [n_out] or list(bias.dims) == [1, n_out]):
                if len(bias.dims) == 2:
                    flat = numpy_helper.from_array(numpy_helper.to_array(bias).reshape(n_out), other)
                    bias.CopyFrom(flat)
                inputs.append(other)
                out = add.output[0]
                absorbed.add(id(add))
        new_nodes.append(helper.make_node("Gemm", inputs, [out], name=n.name or f"gemm_{out}"))
    del g.node[:]
    g.node.extend(new_nodes)
    return model, left


def float_output_qgemm(model: Any) -> int:
    """Drop each ``DequantizeLinear`` that is the only reader of a QGemm's output; that QGemm
    returns float32 instead (no ``y_scale``/``y_zero_point``). Returns how many were dropped."""
    from onnx import helper

    g = model.graph
    nodes = list(g.node)
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, int] = {}
    for n in nodes:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    replace: dict[int, Any] = {}
    drop: set[int] = set()
    for dql in nodes:
        if dql.op_type != "DequantizeLinear":
            continue
        prod = producer.get(dql.input[0])
        if prod is None or prod.op_type != "QGemm" or readers.get(dql.input[0]) != 1 or dql.input[0] in outputs:
            continue
        ins = list(prod.input[:7])
        while ins and not ins[-1]:
            ins.pop()
        new = helper.make_node("QGemm", ins, [dql.output[0]], name=prod.name, domain="com.microsoft")
        new.attribute.extend(prod.attribute)
        replace[id(prod)] = new
        drop.add(id(dql))
    if not drop:
        return 0
    keep = [replace.get(id(n), n) for n in nodes if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    return len(drop)


@register
class Int8QGemm(Recipe):
    name = "int8-qgemm"
    mode = "qgemm"
    precision = INT8_QGEMM
    settings_type = QGemmInt8Settings
    override_field = "qgemm"
    needs_calibration = True
    order = 25

    def default_settings(self, qs: Any) -> QGemmInt8Settings:
        return QGemmInt8Settings(calibration_samples=qs.calibration_samples, calibration_method=qs.calibration_method,
                                 reduce_range=qs.effective_reduce_range())

    def skip_reason(self, op_counts: Mapping[str, int], cpu_flags: frozenset[str]) -> str | None:
        n_conv = sum(op_counts.get(op, 0) for op in CONV_OPS)
        n_mm = sum(op_counts.get(op, 0) for op in MATMUL_OPS)
        n_rnn = sum(op_counts.get(op, 0) for op in RNN_OPS)
        if n_rnn:
            return f"recurrent ({n_rnn} LSTM/GRU/RNN): QGemm covers Gemm only, the recurrent layers would stay float32"
        if not n_mm:
            return "no MatMul/Gemm to turn into QGemm"
        if n_conv and n_conv >= n_mm:
            return f"Conv-heavy ({n_conv} Conv vs {n_mm} MatMul/Gemm): QGemm covers Gemm only (int8-static quantizes Conv)"
        return None

    def build(self, src: Path, dst: Path, settings: QGemmInt8Settings, calibration: Mapping[str, np.ndarray] | None,
              seed: int = 0) -> None:
        import onnx
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        from seqdeploy.quantize.feeds import static_calibration

        if not calibration:
            raise QuantizeError("int8-qgemm needs calibration data (received none); pass calibration_inputs rows from the training split")
        model, left = matmul_to_gemm(onnx.load(str(src)))
        if left:
            raise RecipeDoesNotFit(
                f"{len(left)} MatMul cannot become Gemm (input not rank 2 or weight not a 2-D constant), "
                f"e.g. {left[0]!r}; QGemm covers Gemm only")
        if not any(n.op_type == "Gemm" for n in model.graph.node):
            raise RecipeDoesNotFit("no Gemm to quantize after the MatMul rewrite")
        gemm = dst.with_name(dst.name + ".gemm.onnx")
        onnx.save(model, str(gemm))
        del model
        try:
            quantize_static(
                str(gemm), str(dst), **static_calibration(settings, calibration, seed),
                quant_format=QuantFormat.QOperator, op_types_to_quantize=["Gemm", "Relu"], per_channel=False,
                reduce_range=settings.reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=list(settings.nodes_to_exclude) or None,
            )
        finally:
            gemm.unlink(missing_ok=True)
        if settings.float_output:
            q = onnx.load(str(dst))
            if float_output_qgemm(q):
                onnx.save(q, str(dst))

    def quantizable_ops(self, settings: QGemmInt8Settings) -> frozenset[str] | None:
        return frozenset({"MatMul", "Gemm"})
