"""Exact rewrites that replace tf2onnx subgraphs by one onnxruntime kernel or by a weight permutation, run by
:mod:`seqdeploy.export.optimize` after export.

* :func:`fuse_attention` -- Keras MultiHeadAttention without a mask (self-attention: query, key and value read
  the same tensor) as onnxruntime's ``com.microsoft.Attention``: the three projections packed into one weight,
  scores, softmax and the weighted sum in one kernel.
* :func:`native_gather_index` -- TF's Embedding wraps negative ids (``Where(ids < 0, ids + n, ids)``, lowered
  to 8 nodes); ONNX ``Gather`` accepts indices in ``[-n, n)`` itself, so the ids go to the Gather directly.
* :func:`residual_sum` -- an ``Add`` that feeds a ``LayerNormalization`` becomes ``Sum`` (the same arithmetic
  for two inputs): onnxruntime 1.32 fuses ``Add -> LayerNormalization`` into ``SkipLayerNormalization``, which
  measured 2.6-6x slower than the two kernels on this AVX-512 CPU (hidden 32 to 768, batch 1 and 32).

Measured on benchmarks/real_zoo.py's Transformer (200 ids, 2 heads, one thread, interleaved p50 on a shared
2-core AVX-512 VM): the graph as exported before these passes ran 258 us at batch 1; with ``residual_sum`` and
``native_gather_index`` alone 272 -> (with ``fuse_attention`` too) 233 us, and 11.8 -> 10.7 ms at batch 32;
``fuse_attention`` without ``residual_sum`` gained nothing (onnxruntime then formed SkipLayerNormalization).
Tried and not kept: ``com.microsoft.MultiHeadAttention`` on three projected inputs instead of ``Attention``
(0.87x at batch 1, even at batch 32); folding the Transpose before a Flatten into the next MatMul's weight rows
(exact, one copy fewer) measured even on the MNIST convnet (1.00x at batch 1, 0.98x at 32) and left the Flatten
without a tensor of its own for verify's layer locator: not kept.
"""

from __future__ import annotations

import numpy as np

from seqdeploy.export.rewrites import add_initializer, attr, const_value, consumer_map, fresh_name, producer_map, remove_dead_nodes
from seqdeploy.export.rewrites_attention import static_shapes

LAYOUT_OPS = ("Reshape", "Transpose", "Unsqueeze", "Squeeze")
MS_DOMAIN = "com.microsoft"


def _through_layout_up(prod, name: str) -> str:
    while (n := prod.get(name)) is not None and n.op_type in LAYOUT_OPS:
        name = n.input[0]
    return name


def _projection(g, prod, name: str):
    """From an attention operand up through layout ops and one constant Add to ``MatMul(x, W)``:
    (x, W [k, m], bias [m] or None), or None when the chain is anything else."""
    bias = None
    while True:
        name = _through_layout_up(prod, name)
        n = prod.get(name)
        if n is None:
            return None
        if n.op_type == "Add" and bias is None:
            c, other = const_value(g, n.input[1]), n.input[0]
            if c is None:
                c, other = const_value(g, n.input[0]), n.input[1]
            if c is None:
                return None
            bias, name = c, other
            continue
        if n.op_type != "MatMul":
            return None
        w = const_value(g, n.input[1])
        if w is None or w.ndim != 2:
            return None
        if bias is not None:
            if bias.size != w.shape[1]:
                return None
            bias = bias.reshape(-1)
        return n.input[0], w, bias


def fuse_attention(model) -> int:
    """Unmasked self-attention (see the module docstring) as one ``com.microsoft.Attention`` node."""
    from onnx import helper

    g = model.graph
    shapes = static_shapes(model)
    done = 0
    for sm in [n for n in g.node if n.op_type == "Softmax"]:
        prod, cons = producer_map(g), consumer_map(g)
        if attr(sm, "axis", -1) not in (-1, len(shapes.get(sm.input[0], [])) - 1):
            continue
        # scores: MatMul(q, k) [x scalar] -> layout ops -> Softmax
        name, scale = _through_layout_up(prod, sm.input[0]), 1.0
        n = prod.get(name)
        if n is not None and n.op_type == "Mul":
            s = const_value(g, n.input[1])
            if s is None or s.size != 1:
                continue
            scale, name = float(s.reshape(())), _through_layout_up(prod, n.input[0])
            n = prod.get(name)
        if n is None or n.op_type != "MatMul" or const_value(g, n.input[1]) is not None:
            continue
        q_shape = shapes.get(n.input[0]) or []
        head = q_shape[-1] if q_shape else None
        q, k = _projection(g, prod, n.input[0]), _projection(g, prod, n.input[1])
        # weighted sum: Softmax -> layout ops -> MatMul(p, v) -> layout ops -> out
        name = sm.output[0]
        while len(users := cons.get(name, [])) == 1 and users[0].op_type in LAYOUT_OPS:
            name = users[0].output[0]
        if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[0] != name:
            continue
        pv = users[0]
        v = _projection(g, prod, pv.input[1])
        out = pv.output[0]
        while len(users := cons.get(out, [])) == 1 and users[0].op_type in LAYOUT_OPS:
            out = users[0].output[0]
        if q is None or k is None or v is None or not head or not (q[0] == k[0] == v[0]):
            continue
        x_shape, o_shape = shapes.get(q[0]) or [], shapes.get(out) or []
        wq, wk, wv = q[1], k[1], v[1]
        if (len(x_shape) != 3 or wq.shape != wk.shape or wq.shape[0] != wv.shape[0] or wq.shape[1] % head
                or o_shape[1:] != [x_shape[1], wv.shape[1]]):
            continue
        heads = wq.shape[1] // head
        if wv.shape[1] % heads:
            continue
        dt = wq.dtype
        bias = np.concatenate([b if b is not None else np.zeros(w.shape[1], dt) for b, w in ((q[2], wq), (k[2], wk), (v[2], wv))])
        base = fresh_name(g, sm.name + "_attention")
        ins = [q[0], add_initializer(g, base + "_qkv_weight", np.concatenate([wq, wk, wv], axis=1).astype(dt)),
               add_initializer(g, base + "_qkv_bias", bias.astype(dt))]
        kw = {"num_heads": int(heads), "scale": float(scale)}
        if wv.shape[1] != wq.shape[1]:
            kw["qkv_hidden_sizes"] = [int(wq.shape[1]), int(wk.shape[1]), int(wv.shape[1])]
        old = prod[out]
        node = helper.make_node("Attention", ins, [out], name=base, domain=MS_DOMAIN, **kw)
        g.node.insert(list(g.node).index(old), node)
        g.node.remove(old)
        remove_dead_nodes(model)
        done += 1
    if done and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return done


def native_gather_index(model) -> int:
    """``Gather(data, Where(ids < 0, ids + n, ids))`` (tf2onnx's arithmetic form of SelectV2) as
    ``Gather(data, ids)`` where n is the gathered axis's size (see the module docstring)."""
    g = model.graph
    prod = producer_map(g)
    done = 0

    def src(name: str, op: str):
        n = prod.get(name)
        return n if n is not None and n.op_type == op else None

    def uncast(name: str) -> str:
        n = src(name, "Cast")
        return n.input[0] if n is not None else name

    for gat in [n for n in g.node if n.op_type == "Gather"]:
        data = const_value(g, gat.input[0])
        add = src(gat.input[1], "Add")
        if data is None or add is None:
            continue
        n_axis = data.shape[attr(gat, "axis", 0)]
        muls = [src(i, "Mul") for i in add.input]
        if None in muls:
            continue
        keep = neg = None  # (mask, ids) of ids * Cast(Not(mask)) and of Cast(mask) * (ids + n)
        for mul in muls:
            for a, b in (mul.input, mul.input[::-1]):
                c = src(a, "Cast")
                if c is None:
                    continue
                if (nt := src(c.input[0], "Not")) is not None:
                    keep = (nt.input[0], b)
                elif (sh := src(b, "Add")) is not None:
                    off = const_value(g, sh.input[1])
                    if off is not None and off.size == 1 and int(off.reshape(())) == n_axis:
                        neg = (c.input[0], sh.input[0])
        if keep is None or neg is None or keep != neg:
            continue
        neg_mask, ids = keep
        less = src(neg_mask, "Less")
        if less is None or uncast(less.input[0]) != ids or (z := const_value(g, less.input[1])) is None or z.size != 1 or float(z.reshape(())) != 0:
            continue
        gat.input[1] = ids
        done += 1
    if done:
        remove_dead_nodes(model)
    return done


def residual_sum(model) -> int:
    """``Add -> LayerNormalization`` as ``Sum -> LayerNormalization`` (see the module docstring)."""
    g = model.graph
    prod = producer_map(g)
    done = 0
    for ln in [n for n in g.node if n.op_type == "LayerNormalization"]:
        add = prod.get(ln.input[0])
        if add is not None and add.op_type == "Add" and add.domain in ("", "ai.onnx"):
            add.op_type = "Sum"
            done += 1
    return done


__all__ = ["fuse_attention", "native_gather_index", "residual_sum"]
