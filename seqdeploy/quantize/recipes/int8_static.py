"""Static int8 in QDQ format, calibrated on training rows (``onnxruntime.quantization.quantize_static``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqdeploy.errors import QuantizeError
from seqdeploy.precision import INT8_STATIC
from seqdeploy.quantize.recipes import Recipe, register
from seqdeploy.quantize.recipes._ops import CONV_OPS, MATMUL_OPS, qtype
from seqdeploy.quantize.settings import (
    QUANT_TYPES,
    CalibrationMethodName,
    QuantTypeName,
    check_calibration,
    check_choice,
    check_nodes,
    default_activation_type,
    default_pad_input_channels,
)

#: input-channel multiple onnxruntime's int8 indirect convolution (MLAS ConvSym) needs on x86
CHANNEL_MULTIPLE = 4


def _graph_maps(g: Any) -> tuple[dict[str, Any], set[str], dict[str, Any], dict[str, list[Any]]]:
    """(initializers by name, graph inputs that are not initializers, producer by tensor, consumers by tensor)."""
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return inits, {i.name for i in g.input} - set(inits), producer, consumers


def pad_input_channels(model: Any, multiple: int = CHANNEL_MULTIPLE, skip: tuple[str, ...] = ()) -> tuple[Any, list[str]]:
    """Pad the input channels of each 2-D or 1-D Conv fed by a model input through ``Transpose(0, 3, 1, 2)``
    (``Transpose(0, 2, 1)`` for a series) to ``multiple``.

    The channels-last input ``x`` (C channels) becomes ``MatMul(x, E)`` with ``E = [I_C | 0]`` (C x C'), and
    the Conv weight gets C' - C zero input channels: exact in float32 (products with 1 and 0) and
    after quantization (the zero weights add nothing). The MatMul keeps the input float: its
    names are returned so the quantizer leaves them out. Other Convs (group > 1, non-constant
    weights, already a multiple, other producers, the nodes named in ``skip``) are left as they are.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits, graph_inputs, producer, consumers = _graph_maps(g)
    added: list[str] = []
    for conv in list(g.node):
        found = _input_conv(conv, inits, producer, consumers, graph_inputs)
        if found is None or found[0].dims[1] % multiple == 0 or conv.name in skip:
            continue
        w, t = found
        weight = numpy_helper.to_array(w)
        cin = weight.shape[1]
        cout = -(-cin // multiple) * multiple
        padded = np.concatenate([weight, np.zeros((weight.shape[0], cout - cin) + weight.shape[2:], weight.dtype)], 1)
        w.CopyFrom(numpy_helper.from_array(padded, w.name))
        base = conv.name or conv.output[0]
        eye, out = f"{base}/pad_channels_E", f"{t.input[0]}/pad_channels"
        g.initializer.append(numpy_helper.from_array(np.eye(cin, cout, dtype=np.float32), eye))
        mm = helper.make_node("MatMul", [t.input[0], eye], [out], name=f"{base}/pad_channels")
        t.input[0] = out
        g.node.insert(list(g.node).index(t), mm)
        added.append(mm.name)
        stale = [vi for vi in g.value_info if vi.name == conv.input[0]]  # its channel count changed
        for vi in stale:
            g.value_info.remove(vi)
    return model, added


def _input_conv(conv, inits, producer, consumers, graph_inputs) -> tuple[Any, Any] | None:
    """(weight initializer, Transpose) when ``conv`` is a plain 1-D/2-D Conv fed by a model input through the
    channels-last -> channels-first ``Transpose`` (and nothing else reads its input or weight), else None."""
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or len(conv.input) < 2:
        return None
    w = inits.get(conv.input[1])
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    t = producer.get(conv.input[0])
    if w is None or len(w.dims) not in (3, 4) or group != 1 or t is None or t.op_type != "Transpose":
        return None
    perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), None)
    rank = len(w.dims)
    if (perm != [0, rank - 1, *range(1, rank - 1)] or t.input[0] not in graph_inputs
            or len(consumers.get(conv.input[0], [])) != 1 or len(consumers.get(conv.input[1], [])) != 1):
        return None
    return w, t


def unfold_input_conv(model: Any, multiple: int = CHANNEL_MULTIPLE) -> tuple[Any, list[str]]:
    """Split each one-channel Conv fed by a model input (see :func:`pad_input_channels`) into a float "unfold" Conv
    and a 1 x 1 Conv.

    The unfold Conv has the original's kernel size, strides, pads and dilations and T identity kernels (T = the
    kernel's taps, padded with zero kernels to ``multiple``): output channel t is the input under tap t, copied
    exactly. The 1 x 1 Conv multiplies those T channels by the weights laid out as (M, T) and adds the bias: the same
    sum in another order (float32 rounding apart). Quantized, the second is a plain u8 x s8 GEMM in onnxruntime
    (channels last), where a one-channel 3 x 3 ``QLinearConv`` runs im2col or, padded to 4 channels, computes 4x
    the products; the unfold Conv stays float (its names are returned so the quantizer leaves them out).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits, graph_inputs, producer, consumers = _graph_maps(g)
    added: list[str] = []
    for conv in list(g.node):
        found = _input_conv(conv, inits, producer, consumers, graph_inputs)
        if found is None or found[0].dims[1] != 1:
            continue
        w = found[0]
        weight = numpy_helper.to_array(w)
        m, kernel = weight.shape[0], weight.shape[2:]
        taps = int(np.prod(kernel))
        if taps < 2:
            continue
        width = -(-taps // multiple) * multiple
        eye = np.zeros((width, 1, taps), np.float32)
        eye[np.arange(taps), 0, np.arange(taps)] = 1.0
        base = conv.name or conv.output[0]
        e_name, out = f"{base}/unfold_E", f"{base}/unfold"
        g.initializer.append(numpy_helper.from_array(eye.reshape((width, 1) + kernel), e_name))
        spatial = [a for a in conv.attribute if a.name in ("strides", "pads", "dilations", "auto_pad", "kernel_shape")]
        unfold = helper.make_node("Conv", [conv.input[0], e_name], [out], name=out)
        unfold.attribute.extend(spatial)
        flat = np.zeros((m, width), weight.dtype)
        flat[:, :taps] = weight.reshape(m, taps)
        w.CopyFrom(numpy_helper.from_array(flat.reshape((m, width) + (1,) * len(kernel)), w.name))
        for a in spatial:
            conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("kernel_shape", [1] * len(kernel)))
        conv.input[0] = out
        g.node.insert(list(g.node).index(conv), unfold)
        added.append(unfold.name)
    return model, added


@dataclass(frozen=True)
class StaticInt8Settings:
    """Static int8 in QDQ format, calibrated on training rows.

    ``percentile`` is used by the percentile method only (the share of the
    activation histogram kept, in percent). ``pad_input_channels`` pads the input
    channels of a Conv fed by the model's NHWC input to a multiple of 4 (an exact rewrite,
    :func:`pad_input_channels`) so onnxruntime's VNNI int8 convolution kernel takes it; the
    default follows the CPU (:func:`seqdeploy.quantize.settings.default_pad_input_channels`), as do
    ``unfold_input_conv`` (a one-channel input Conv, such as a grey image's or a univariate series', split into a
    float tap-copying Conv and a 1 x 1 int8 Conv: :func:`unfold_input_conv`; it runs before the padding, which then
    has nothing left to pad there) and ``activation_type`` (uint8 with VNNI:
    :func:`seqdeploy.quantize.settings.default_activation_type`).

        >>> StaticInt8Settings(calibration_method="percentile", percentile=99.99).calibration_method
        'percentile'
    """

    calibration_method: CalibrationMethodName = "minmax"
    calibration_samples: int = 256
    calibration_batch_size: int = 32
    percentile: float = 99.999
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: QuantTypeName = field(default_factory=default_activation_type)  # uint8 where VNNI runs u8s8
    weight_type: QuantTypeName = "int8"
    op_types: tuple[str, ...] | None = None  # None = every op type ORT's QDQ quantizer handles
    nodes_to_exclude: tuple[str, ...] = ()
    pad_input_channels: bool = False
    unfold_input_conv: bool = False

    def __post_init__(self) -> None:
        for name in ("pad_input_channels", "unfold_input_conv"):
            if not isinstance(getattr(self, name), bool):
                raise QuantizeError(f"{name} = {getattr(self, name)!r} (expected true or false)")
        check_calibration(self)
        check_choice("activation_type", self.activation_type, QUANT_TYPES)
        check_choice("weight_type", self.weight_type, QUANT_TYPES)
        if self.op_types is not None:
            check_nodes("op_types", self.op_types)
        check_nodes("nodes_to_exclude", self.nodes_to_exclude)


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
                              "reduce_range": qs.effective_reduce_range(),
                              "pad_input_channels": default_pad_input_channels(),
                              "unfold_input_conv": default_pad_input_channels()}
        if qs.per_channel is not None:
            kw["per_channel"] = qs.per_channel
        return StaticInt8Settings(**kw)

    def skip_reason(self, op_counts: Mapping[str, int], cpu_flags: frozenset[str]) -> str | None:
        if any(op_counts.get(op, 0) for op in CONV_OPS | MATMUL_OPS):
            return None
        return "no Conv/MatMul/Gemm to quantize"

    def build(self, src: Path, dst: Path, settings: StaticInt8Settings, calibration: Mapping[str, np.ndarray] | None,
              seed: int = 0) -> None:
        from onnxruntime.quantization import QuantFormat, quantize_static

        from seqdeploy.quantize.feeds import static_calibration

        if not calibration:
            raise QuantizeError("int8-static needs calibration data (received none); pass calibration_inputs rows from the training split")
        source, exclude, padded = src, list(settings.nodes_to_exclude), None
        rewrites = [f for f, on in ((unfold_input_conv, settings.unfold_input_conv),
                                    (pad_input_channels, settings.pad_input_channels)) if on]
        if rewrites:
            import onnx

            model, added = onnx.load(str(src)), []
            for rewrite in rewrites:  # the padding skips the unfold Convs (they stay float)
                model, names = rewrite(model, skip=tuple(added)) if rewrite is pad_input_channels else rewrite(model)
                added += names
            if added:  # the float nodes in front of the first Conv stay float
                padded = dst.with_name(dst.name + ".padded.onnx")
                onnx.save(model, str(padded))
                source, exclude = padded, exclude + added
            del model
        try:
            quantize_static(
                str(source), str(dst), **static_calibration(settings, calibration, seed),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
                per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                activation_type=qtype(settings.activation_type), weight_type=qtype(settings.weight_type),
                nodes_to_exclude=exclude or None,
            )
        finally:
            if padded is not None:
                padded.unlink(missing_ok=True)

    def quantizable_ops(self, settings: StaticInt8Settings) -> frozenset[str] | None:
        from seqdeploy.compat import ort_quantizable_ops

        return frozenset(settings.op_types) if settings.op_types else ort_quantizable_ops("static")
