"""Exact rewrites around convolutions, run by :mod:`seqdeploy.export.optimize` after export.

* :func:`fold_input_scale` -- Keras Rescaling (``x * s + 0``) in front of the first Conv (often behind tf2onnx's
  NHWC -> NCHW Transpose): a Conv is linear and pads with zeros, so ``Conv(W, s * x)`` = ``Conv(s * W, x)``;
  the scale moves into the weights and the two full-tensor passes over the input go away.
* :func:`drop_repeated_relu` -- ``Relu(Relu(x))`` is ``Relu(x)`` (Keras models that apply an Activation twice,
  as the keras-io Xception entry flow does).
* :func:`single_channel_transpose` -- a one-channel channels-last input (a grey image ``N x H x W x 1``, a series
  ``N x T x 1``) reaches its Conv through ``Reshape``/``Unsqueeze``/``Squeeze`` (tf2onnx writes NHWC -> NCHW as
  a Reshape when C = 1, and Conv1D adds an Unsqueeze): one ``Transpose(0, r-1, 1, ..., r-2)`` moves the same
  bytes. It is the form onnxruntime's NHWC transformer cancels against the Transpose it puts in front of an
  int8 ``QLinearConv`` (channels last), and the one the int8 recipe's channel padding
  (:func:`seqdeploy.quantize.recipes.int8_static.pad_input_channels`) looks for.

Measured on benchmarks/real_zoo.py's Xception-like CNN (one thread, interleaved p50): 1.01-1.015x at batch 1
and 32 -- the float32 CNNs are Conv-bound (the MNIST convnet's second Conv runs at ~100 GFLOP/s, near one
core's peak), so their gains come from static int8 (uint8 activations on VNNI), not from graph edits.
onnxruntime's NCHWc layout (graph level ``all``, the runtime default) is what makes the float32 Convs fast:
without it the CNNs ran 0.43-0.63x.
"""

from __future__ import annotations

import numpy as np

from seqdeploy.export.rewrites import (add_initializer, attr, const_value, consumer_map, producer_map, remove_dead_nodes,
                                      unsqueeze_axes)

PASS_THROUGH = ("Transpose", "Reshape")
SHAPE_ONLY = ("Reshape", "Unsqueeze", "Squeeze")  # ops that move no data


def _bypass(g, node, keep: str) -> None:
    """Every reader of ``node``'s output reads ``keep`` instead (``node`` becomes dead)."""
    out = node.output[0]
    for n in g.node:
        for k, name in enumerate(n.input):
            if name == out:
                n.input[k] = keep


def fold_input_scale(model) -> int:
    """``Mul(x, scalar) [-> Add(zeros)] [-> Transpose/Reshape] -> Conv`` as the Conv with scaled weights (see the
    module docstring)."""
    g = model.graph
    outputs = {o.name for o in g.output}
    done = 0
    for mul in [n for n in g.node if n.op_type == "Mul"]:
        cons = consumer_map(g)
        s, x = const_value(g, mul.input[1]), mul.input[0]
        if s is None:
            s, x = const_value(g, mul.input[0]), mul.input[1]
        if s is None or s.size != 1 or s.dtype != np.float32 or const_value(g, x) is not None:
            continue
        drop, t = [(mul, x)], mul.output[0]
        while t not in outputs and len(users := cons.get(t, [])) == 1:
            u = users[0]
            if u.op_type == "Add":
                z = const_value(g, u.input[1] if u.input[0] == t else u.input[0])
                if z is None or z.size != 1 or float(z.reshape(())) != 0.0:
                    break
                drop.append((u, t))
            elif u.op_type not in PASS_THROUGH:
                break
            t = u.output[0]
        convs = cons.get(t, [])
        if t in outputs or any(o in outputs for n, _ in drop for o in n.output) or not convs:
            continue
        weights = [const_value(g, c.input[1]) if c.op_type == "Conv" and c.input[0] == t and c.domain in ("", "ai.onnx")
                   else None for c in convs]
        if any(w is None or w.dtype != np.float32 for w in weights):
            continue
        scale = np.float32(s.reshape(()))
        for c, w in zip(convs, weights):
            c.input[1] = add_initializer(g, c.input[1].split(":")[0] + "_input_scaled", (w * scale).astype(np.float32))
        for node, keep in reversed(drop):
            _bypass(g, node, keep)
        remove_dead_nodes(model)
        done += 1
    return done


def drop_repeated_relu(model) -> int:
    """``Relu(Relu(x))`` as ``Relu(x)``."""
    g = model.graph
    outputs = {o.name for o in g.output}
    prod = producer_map(g)
    done = 0
    for r in [n for n in g.node if n.op_type == "Relu"]:
        first = prod.get(r.input[0])
        if first is None or first.op_type != "Relu" or r.output[0] in outputs:
            continue
        _bypass(g, r, r.input[0])
        done += 1
    if done:
        remove_dead_nodes(model)
    return done


def _shape_after(g, chain: list, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape ``chain`` (Reshape/Unsqueeze/Squeeze nodes, first to last) makes of a tensor of ``shape``."""
    a = np.zeros(shape, dtype=np.bool_)
    for n in chain:
        if n.op_type == "Reshape":
            t = const_value(g, n.input[1])
            if t is None or attr(n, "allowzero", 0):
                return None
            t = [int(v) for v in np.asarray(t).reshape(-1)]
            t = [a.shape[k] if v == 0 else v for k, v in enumerate(t)]  # 0 copies the input's dimension
            a = a.reshape(t)
        else:
            axes = unsqueeze_axes(g, n)
            if n.op_type == "Unsqueeze":
                if axes is None:
                    return None
                rank = a.ndim + len(axes)
                for ax in sorted(v % rank for v in axes):
                    a = np.expand_dims(a, ax)
            else:
                a = np.squeeze(a) if axes is None else np.squeeze(a, axis=tuple(axes))
    return a.shape


def single_channel_transpose(model) -> int:
    """``x (N, d1..dk, 1) -> Reshape/Unsqueeze/Squeeze... -> (N, 1, d1..dk) -> Conv`` as ``Transpose(x) -> Conv``
    (see the module docstring); only when the chain's shapes, worked out at two batch sizes, say so."""
    from onnx import helper

    g = model.graph
    outputs = {o.name for o in g.output}
    inits = {i.name for i in g.initializer}
    inputs = {i.name: i for i in g.input if i.name not in inits}
    done = 0
    for conv in [n for n in g.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]:
        prod = producer_map(g)
        w = const_value(g, conv.input[1]) if len(conv.input) > 1 else None
        if w is None or w.ndim < 3 or w.shape[1] != 1:
            continue
        chain, t = [], conv.input[0]
        while t in prod and prod[t].op_type in SHAPE_ONLY and len(chain) < 4:
            chain.append(prod[t])
            t = prod[t].input[0]
            if t in outputs:
                break
        if not chain or t not in inputs or t in outputs:
            continue
        dims = inputs[t].type.tensor_type.shape.dim
        rank = w.ndim
        static = [d.dim_value if d.HasField("dim_value") else 0 for d in dims[1:]]
        if len(dims) != rank or any(v <= 0 for v in static) or static[-1] != 1:
            continue
        chain.reverse()
        try:
            ok = all(_shape_after(g, chain, (b, *static)) == (b, 1, *static[:-1]) for b in (2, 3))
        except (ValueError, IndexError):
            ok = False
        if not ok:
            continue
        last = chain[-1]
        tr = helper.make_node("Transpose", [t], [last.output[0]], name=(last.name or last.output[0]) + "/as_transpose",
                              perm=[0, rank - 1, *range(1, rank - 1)])
        g.node.insert(list(g.node).index(last), tr)
        g.node.remove(last)
        remove_dead_nodes(model)
        done += 1
    return done


__all__ = ["drop_repeated_relu", "fold_input_scale", "single_channel_transpose"]
