"""Exact rewrites around convolutions, run by :mod:`seqdeploy.export.optimize` after export.

* :func:`fold_input_scale` -- Keras Rescaling (``x * s + 0``) in front of the first Conv (often behind tf2onnx's
  NHWC -> NCHW Transpose): a Conv is linear and pads with zeros, so ``Conv(W, s * x)`` = ``Conv(s * W, x)``;
  the scale moves into the weights and the two full-tensor passes over the input go away.
* :func:`drop_repeated_relu` -- ``Relu(Relu(x))`` is ``Relu(x)`` (Keras models that apply an Activation twice,
  as the keras-io Xception entry flow does).

Measured on benchmarks/real_zoo.py's Xception-like CNN (one thread, interleaved p50): 1.01-1.015x at batch 1
and 32 -- the float32 CNNs are Conv-bound (the MNIST convnet's second Conv runs at ~100 GFLOP/s, near one
core's peak), so their gains come from static int8 (uint8 activations on VNNI), not from graph edits.
onnxruntime's NCHWc layout (graph level ``all``, the runtime default) is what makes the float32 Convs fast:
without it the CNNs ran 0.43-0.63x.
"""

from __future__ import annotations

import numpy as np

from seqdeploy.export.rewrites import add_initializer, const_value, consumer_map, producer_map, remove_dead_nodes

PASS_THROUGH = ("Transpose", "Reshape")


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


__all__ = ["drop_repeated_relu", "fold_input_scale"]
