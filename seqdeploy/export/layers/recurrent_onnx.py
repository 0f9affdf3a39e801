"""Keras recurrent layers emitted directly as native ONNX ``LSTM`` / ``GRU`` / ``RNN`` nodes.

tf2onnx turns Keras ``GRU`` and ``SimpleRNN`` (and any masked recurrent layer)
into a generic ONNX ``Loop``: slow, and opaque to quantization. This module
builds the native op from the layer's weights instead, plus the few
Transpose/Reshape/Slice nodes that restore Keras's ``[batch, time, features]``
layout and its output conventions:

* gate order: Keras LSTM ``i, f, c, o`` -> ONNX ``i, o, f, c``; GRU ``z, r, h``
  is the same in both; Keras ``reset_after=True`` is ONNX ``linear_before_reset=1``.
* ``go_backwards`` with ``return_sequences``: Keras returns the sequence in
  reversed time order, so the ONNX ``reverse`` output is flipped on the time axis.
* masks, any pattern (left/right padding, holes, all-masked rows): the unmasked
  steps are compacted to the front, counted into ``sequence_lens`` and the
  outputs spread back with Keras's masked-step semantics
  (:mod:`seqdeploy.export.layers.masks`).

    >>> spec = recurrent_spec(keras_layer)            # doctest: +SKIP
    >>> built = build_recurrent(spec, "x", prefix="lstm", mask="mask")  # doctest: +SKIP
    >>> built.nodes, built.initializers, built.output  # doctest: +SKIP

Only numpy and onnx are needed here; the Keras layer is read through duck typing. The converter that
puts these nodes in the exported graph: :mod:`seqdeploy.export.layers.recurrent`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from seqdeploy.export.layers import NodeBuilder, NotNative  # noqa: F401 - NotNative: re-exported for callers

RECURRENT_CLASSES = ("LSTM", "GRU", "SimpleRNN")
ONNX_OP = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
MERGE_MODES = ("concat", "sum", "mul", "ave")

# Keras activation name -> (ONNX activation name, alpha, beta); None = no parameter.
_ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),  # Keras 3: relu6(x + 3) / 6
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
}


@dataclasses.dataclass(frozen=True)
class DirectionWeights:
    """ONNX-ordered weights of one direction: W [G*H, F], R [G*H, H], B [2*G*H] or None."""

    W: np.ndarray
    R: np.ndarray
    B: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class RecurrentSpec:
    """Everything needed to emit one recurrent Keras layer as a native ONNX node."""

    name: str
    kind: str  # "LSTM" | "GRU" | "SimpleRNN"
    units: int
    directions: tuple[DirectionWeights, ...]  # 1 or 2 (forward, backward)
    activations: tuple[str, ...]  # Keras names, per direction (LSTM: rec, act, act)
    return_sequences: bool
    go_backwards: bool  # only for a single direction
    merge_mode: str | None  # Bidirectional only
    linear_before_reset: int = 0  # GRU only
    zero_output_for_mask: tuple[bool, ...] = (False,)  # per direction (Bidirectional forces return_sequences)
    return_state: bool = False  # the call also returns the final states (h, and c for LSTM; per direction)

    @property
    def onnx_op(self) -> str:
        return ONNX_OP[self.kind]

    @property
    def description(self) -> str:
        what = self.onnx_op + (" bidirectional" if len(self.directions) == 2 else " reverse" if self.go_backwards else "")
        return f"{self.name}: {what}"


def _activation_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return {"swish": "silu"}.get(name, name)


def _reorder(mat: np.ndarray, kind: str, units: int) -> np.ndarray:
    """Reorder gate blocks along the last axis from Keras to ONNX order."""
    if kind != "LSTM":
        return mat
    i, f, c, o = (mat[..., k * units:(k + 1) * units] for k in range(4))
    return np.concatenate([i, o, f, c], axis=-1)


def _direction_weights(layer: Any) -> tuple[DirectionWeights, int]:
    """Weights of one Keras LSTM/GRU/SimpleRNN layer in ONNX order, plus linear_before_reset."""
    kind = type(layer).__name__
    cell = layer.cell
    units = int(cell.units)
    kernel = np.asarray(cell.kernel.numpy() if hasattr(cell.kernel, "numpy") else cell.kernel, dtype=np.float32)
    rkernel = np.asarray(cell.recurrent_kernel.numpy() if hasattr(cell.recurrent_kernel, "numpy") else cell.recurrent_kernel, dtype=np.float32)
    W = _reorder(kernel, kind, units).T.copy()  # [G*H, F]
    R = _reorder(rkernel, kind, units).T.copy()  # [G*H, H]
    gh = GATES[kind] * units
    lbr = 0
    B = None
    if getattr(cell, "use_bias", True) and getattr(cell, "bias", None) is not None:
        bias = np.asarray(cell.bias.numpy() if hasattr(cell.bias, "numpy") else cell.bias, dtype=np.float32)
        if kind == "GRU" and getattr(cell, "reset_after", False):
            wb, rb = bias.reshape(2, gh)
        else:
            wb, rb = bias.reshape(gh), np.zeros(gh, np.float32)
        B = np.concatenate([_reorder(wb, kind, units), _reorder(rb, kind, units)]).astype(np.float32)
    if kind == "GRU":
        lbr = 1 if getattr(cell, "reset_after", False) else 0
    return DirectionWeights(W=W, R=R, B=B), lbr


def _layer_activations(layer: Any) -> tuple[str, ...]:
    kind = type(layer).__name__
    cell = layer.cell
    act = _activation_name(cell.activation)
    if kind == "SimpleRNN":
        acts = (act,)
    else:
        rec = _activation_name(cell.recurrent_activation)
        acts = (rec, act, act) if kind == "LSTM" else (rec, act)
    for a in acts:
        if a not in _ACTIVATIONS:
            raise NotNative(f"activation {a!r} has no ONNX recurrent equivalent (supported: {', '.join(sorted(_ACTIVATIONS))})")
    return acts


def _check_plain(layer: Any) -> None:
    kind = type(layer).__name__
    if kind not in RECURRENT_CLASSES:
        raise NotNative(f"{kind} is not one of {', '.join(RECURRENT_CLASSES)}")
    if getattr(layer, "stateful", False):
        raise NotNative("stateful=True keeps state between calls, which an ONNX graph cannot")
    cell = layer.cell
    if kind == "LSTM" and not hasattr(cell, "recurrent_kernel"):
        raise NotNative("LSTM cell without recurrent kernel")


def recurrent_spec(layer: Any) -> RecurrentSpec:
    """Read a built Keras LSTM/GRU/SimpleRNN (optionally inside Bidirectional).

    >>> recurrent_spec(keras.layers.GRU(8))  # doctest: +SKIP
    RecurrentSpec(name='gru', kind='GRU', units=8, ...)

    Raises :class:`NotNative` when the layer has no native ONNX equivalent.
    """
    cls = type(layer).__name__
    if cls == "Bidirectional":
        fw, bw = layer.forward_layer, layer.backward_layer
        _check_plain(fw)
        _check_plain(bw)
        if type(fw) is not type(bw):
            raise NotNative("Bidirectional with different forward and backward layer types")
        if fw.go_backwards or not bw.go_backwards:
            raise NotNative("Bidirectional whose forward layer has go_backwards=True")
        if layer.merge_mode not in MERGE_MODES:
            raise NotNative(f"merge_mode={layer.merge_mode!r} (supported: {', '.join(MERGE_MODES)})")
        if fw.return_sequences != bw.return_sequences:
            raise NotNative("Bidirectional with different return_sequences per direction")
        acts_f, acts_b = _layer_activations(fw), _layer_activations(bw)
        wf, lbr_f = _direction_weights(fw)
        wb, lbr_b = _direction_weights(bw)
        if lbr_f != lbr_b or (wf.B is None) != (wb.B is None) or fw.cell.units != bw.cell.units:
            raise NotNative("Bidirectional directions differ in reset_after, use_bias or units")
        return RecurrentSpec(
            name=layer.name, kind=type(fw).__name__, units=int(fw.cell.units), directions=(wf, wb),
            activations=acts_f + acts_b, return_sequences=bool(fw.return_sequences), go_backwards=False,
            merge_mode=layer.merge_mode, linear_before_reset=lbr_f,
            zero_output_for_mask=(_zero_output(fw), _zero_output(bw)), return_state=bool(layer.return_state),
        )
    _check_plain(layer)
    w, lbr = _direction_weights(layer)
    return RecurrentSpec(
        name=layer.name, kind=cls, units=int(layer.cell.units), directions=(w,),
        activations=_layer_activations(layer), return_sequences=bool(layer.return_sequences),
        go_backwards=bool(layer.go_backwards), merge_mode=None, linear_before_reset=lbr,
        zero_output_for_mask=(_zero_output(layer),), return_state=bool(layer.return_state),
    )


def _zero_output(layer: Any) -> bool:
    return bool(getattr(layer, "zero_output_for_mask", False))


@dataclasses.dataclass(frozen=True)
class BuiltRecurrent:
    """ONNX nodes + initializers computing one recurrent layer from ``input`` to ``output``."""

    nodes: tuple
    initializers: tuple
    output: str
    description: str
    states: tuple[str, ...] = ()  # return_state: the final states as Keras returns them ([batch, units] each)


def build_recurrent(spec: RecurrentSpec, x: str, *, prefix: str, mask: str | None = None,
                    initial_state: tuple[str, ...] = ()) -> BuiltRecurrent:
    """Emit ``spec`` reading ``x`` ([batch, time, features] float32) as ONNX nodes.

    ``mask`` names a bool [batch, time] Keras mask of any pattern (see
    :mod:`seqdeploy.export.layers.masks`). Returns the nodes, the initializers and the output name
    ([batch, time, units*] with return_sequences, else [batch, units*]). ``initial_state`` names the states the
    layer was called with, in Keras's order (``[h]`` or ``[h, c]`` per direction, forward first; [batch, units]).

    >>> b = build_recurrent(recurrent_spec(layer), "x", prefix="gru")  # doctest: +SKIP
    """
    from onnx import helper

    from seqdeploy.export.layers.masks import compact_steps, last_step_factor, scatter_indices, scatter_sequence

    b = NodeBuilder(prefix)
    nodes, name, const, node = b.nodes, b.name, b.const, b.node

    dirs = len(spec.directions)
    compact = None
    if mask is not None:
        compact = compact_steps(node, const, x, mask)
        x = compact.x
    xt = node("Transpose", [x], "x_time_major", perm=[1, 0, 2])
    W = const("W", np.stack([d.W for d in spec.directions]))
    R = const("R", np.stack([d.R for d in spec.directions]))
    B = const("B", np.stack([d.B for d in spec.directions])) if spec.directions[0].B is not None else ""
    seq_lens = compact.sequence_lens if compact is not None else ""
    acts, alphas, betas = [], [], []
    for a in spec.activations:
        onnx_name, alpha, beta = _ACTIVATIONS[a]
        acts.append(onnx_name)
        if alpha is not None:
            alphas.append(alpha)
        if beta is not None:
            betas.append(beta)
    attrs: dict[str, Any] = {
        "hidden_size": spec.units,
        "direction": "bidirectional" if dirs == 2 else ("reverse" if spec.go_backwards else "forward"),
        "activations": acts,
    }
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    if spec.kind == "GRU":
        attrs["linear_before_reset"] = spec.linear_before_reset
    init_h = init_c = ""
    if initial_state:
        per = 2 if spec.kind == "LSTM" else 1  # Keras: [h, c] per direction (LSTM), else [h]
        axis0 = const("state_axis0", np.array([0], np.int64))
        h_parts = [node("Unsqueeze", [initial_state[d * per], axis0], f"initial_h_dir{d}") for d in range(dirs)]
        init_h = h_parts[0] if dirs == 1 else node("Concat", h_parts, "initial_h", axis=0)
        if per == 2:
            c_parts = [node("Unsqueeze", [initial_state[d * per + 1], axis0], f"initial_c_dir{d}") for d in range(dirs)]
            init_c = c_parts[0] if dirs == 1 else node("Concat", c_parts, "initial_c", axis=0)
    op_inputs = [xt, W, R, B, seq_lens, init_h, init_c] if spec.kind == "LSTM" else [xt, W, R, B, seq_lens, init_h]
    while op_inputs and op_inputs[-1] == "":
        op_inputs.pop()
    y, y_h = name("Y"), name("Y_h")
    node_outs = [y, y_h] + ([name("Y_c")] if spec.return_state and spec.kind == "LSTM" else [])
    nodes.append(helper.make_node(spec.onnx_op, op_inputs, node_outs, name=name(spec.onnx_op), **attrs))
    states: list[str] = []
    if spec.return_state:
        # Keras: [h] (GRU, SimpleRNN) or [h, c] (LSTM) per direction, forward first; ONNX Y_h/Y_c: [dirs, B, H],
        # the state after the last processed step (with a mask: the last unmasked one, where Keras stops updating)
        for d in range(dirs):
            for k, full in enumerate(node_outs[1:]):
                states.append(node("Gather", [full, const(f"state_dir{d}", np.array(d, np.int64))],
                                   f"state{k}_dir{d}", axis=0))
    reverse = [False, True] if dirs == 2 else [spec.go_backwards]
    zero = list(spec.zero_output_for_mask) + [spec.zero_output_for_mask[-1]] * (dirs - len(spec.zero_output_for_mask))

    if spec.return_sequences:
        # Y: [T, dirs, B, H] -> [B, T, dirs, H]
        out = node("Transpose", [y], "y_batch_major", perm=[2, 0, 1, 3])
        if compact is not None:
            idx = [scatter_indices(node, const, compact, reverse=r, zero_output=z, tag=f"dir{i}")
                   for i, (r, z) in enumerate(zip(reverse, zero))]
            out = scatter_sequence(node, const, out, idx)
        out = _merge(node, const, out, spec, axis=2, flat_shape=np.array([0, 0, -1], np.int64))
        if dirs == 1 and spec.go_backwards:
            # Keras returns the go_backwards sequence in processing (reversed) order.
            out = node("Slice", [out, const("rev_start", np.array([-1], np.int64)),
                                 const("rev_end", np.array([np.iinfo(np.int64).min], np.int64)),
                                 const("rev_axis", np.array([1], np.int64)),
                                 const("rev_step", np.array([-1], np.int64))], "reversed_time")
    else:
        # Y_h: [dirs, B, H] -> [B, dirs, H]
        out = node("Transpose", [y_h], "h_batch_major", perm=[1, 0, 2])
        if compact is not None and any(zero):
            # zero_output_for_mask: Keras's last output is zero when the last processed step is masked.
            ones = const("ones_b1", np.ones((1, 1), np.float32))
            fac = [last_step_factor(node, const, compact, reverse=r, tag=f"dir{i}") if z else ones
                   for i, (r, z) in enumerate(zip(reverse, zero))]
            f = fac[0] if dirs == 1 else node("Concat", fac, "last_factors", axis=1)
            f3 = node("Unsqueeze", [f, const("axes_2c", np.array([2], np.int64))], "last_factors_3d")
            out = node("Mul", [out, f3], "h_masked")
        out = _merge(node, const, out, spec, axis=1, flat_shape=np.array([0, -1], np.int64))
    return BuiltRecurrent(nodes=tuple(nodes), initializers=tuple(b.initializers), output=out, description=spec.description,
                          states=tuple(states))


def _merge(node, const, t: str, spec: RecurrentSpec, *, axis: int, flat_shape: np.ndarray) -> str:
    """Combine the directions axis of ``t``: concat (reshape) or sum/mul/ave (reduce)."""
    mode = spec.merge_mode or "concat"
    if len(spec.directions) == 1 or mode == "concat":
        return node("Reshape", [t, const(f"flat{axis}", flat_shape)], "merged")
    # Gather each direction (drops the axis) and combine elementwise, as Keras does:
    # works at every opset (Reduce* changed signature at 18).
    fw = node("Gather", [t, const("dir0", np.array(0, np.int64))], "forward", axis=axis)
    bw = node("Gather", [t, const("dir1", np.array(1, np.int64))], "backward", axis=axis)
    if mode == "sum":
        return node("Add", [fw, bw], "merged")
    if mode == "mul":
        return node("Mul", [fw, bw], "merged")
    total = node("Add", [fw, bw], "sum")
    return node("Mul", [total, const("half", np.array(0.5, np.float32))], "merged")
