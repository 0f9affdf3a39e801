"""Exact rewrites for tf2onnx's Transformer graphs (Keras Dense on 3-D tensors, MultiHeadAttention's einsums,
LayerNormalization), run by :mod:`seqdeploy.export.optimize` after export.

The passes after fuse_attention that reshape a Transformer block around onnxruntime's kernels live in
:mod:`seqdeploy.export.rewrites_block`.
"""

from __future__ import annotations

import numpy as np

from seqdeploy.export.rewrites import (
    add_initializer,
    attr,
    const_value,
    consumer_map,
    fresh_name,
    opset_version,
    producer_map,
    remove_dead_nodes,
    replace_node,
)

MS_DOMAIN = "com.microsoft"


def drop_tensordot_reshapes(model) -> int:
    """TF's Dense on a 3-D tensor (``Tensordot``: ``Reshape [-1, K] -> MatMul W[K, M] -> Reshape [-1, T, M]``) as
    one ``MatMul`` on the 3-D tensor (onnxruntime's MatMul broadcasts over the leading axes)."""
    import onnx

    g = model.graph
    shapes = {}
    for vi in list(onnx.shape_inference.infer_shapes(model).graph.value_info) + list(g.input):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    prod = producer_map(g)
    cons = consumer_map(g)
    outputs = {o.name for o in g.output}
    done = 0
    for mm in [n for n in g.node if n.op_type == "MatMul"]:
        r1 = prod.get(mm.input[0])
        users = cons.get(mm.output[0], [])
        w = const_value(g, mm.input[1])
        if r1 is None or r1.op_type != "Reshape" or w is None or w.ndim != 2 or len(users) != 1 or users[0].op_type != "Reshape":
            continue
        r2 = users[0]
        t1, t2 = const_value(g, r1.input[1]), const_value(g, r2.input[1])
        x_shape = shapes.get(r1.input[0])
        if t1 is None or t2 is None or not x_shape or len(x_shape) < 3 or any(d is None for d in x_shape[1:]):
            continue
        k, m = int(w.shape[0]), int(w.shape[1])
        if t1.tolist() != [-1, k] or x_shape[-1] != k or t2.tolist() != [-1, *x_shape[1:-1], m]:
            continue
        if mm.output[0] in outputs or len(cons.get(r1.output[0], [])) != 1:
            continue
        mm.input[0] = r1.input[0]
        mm.output[0] = r2.output[0]
        g.node.remove(r2)
        done += 1
    if done:
        remove_dead_nodes(model)
    return done


def static_shapes(model) -> dict[str, list[int | None]]:
    """Every tensor's shape from onnx shape inference (None for the batch and unknown axes)."""
    import onnx

    out = {}
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    return out


def run_shapes(model) -> dict[str, list[int | None]]:
    """:func:`static_shapes`, completed by running the graph at two batch sizes where onnx shape inference stops
    (it does not know ``com.microsoft`` ops): an axis that follows the batch is None. Empty when the graph has an
    input with another dynamic axis or does not run."""
    from onnx import helper

    from seqdeploy.export.rewrites import PROBE_BATCHES, probe_feeds, probe_session

    shapes = static_shapes(model)
    names = [o for n in model.graph.node for o in n.output if o and (o not in shapes or None in shapes[o][1:])]
    if not names:
        return shapes
    runs = []
    for batch in PROBE_BATCHES[1:3]:
        feeds = probe_feeds(model, batch, seed=batch)
        if feeds is None:
            return {}
        extra = [helper.make_value_info(n, helper.TypeProto()) for n in names]
        try:
            runs.append(probe_session(model, extra).run(names, feeds))
        except Exception:  # noqa: BLE001 -- a graph that does not run here keeps its inferred shapes
            return shapes
    for name, a, b in zip(names, *runs):
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim != b.ndim or not a.ndim:
            continue
        shapes[name] = [None if (i == 0 and x != y) else (int(x) if x == y else -1) for i, (x, y) in enumerate(zip(a.shape, b.shape))]
        if -1 in shapes[name]:
            del shapes[name]
    return shapes


def _merge_groups(y: list[int], r: list[int]) -> list[list[int]] | None:
    """Which consecutive axes of shape ``y`` make each axis of shape ``r`` (a Reshape that only merges axes
    and adds or drops unit axes), or None.

    >>> _merge_groups([7, 2, 1, 200, 32], [14, 200, 32])
    [[0, 1], [2, 3], [4]]
    """
    groups: list[list[int]] = []
    j = 0
    for d in r:
        g: list[int] = []
        size = 1
        while j < len(y) and size < d:
            size *= y[j]
            g.append(j)
            j += 1
        if size != d:
            return None
        groups.append(g)
    rest = list(range(j, len(y)))
    if any(y[a] != 1 for a in rest) or (rest and not groups):
        return None
    if rest:
        groups[-1].extend(rest)
    return groups


def collapse_transposes(model) -> int:
    """``Transpose(p1) -> Reshape -> Transpose(p2)`` (tf2onnx's Einsum lowering) as one ``Transpose`` and a
    ``Reshape`` when the Reshape only merges axes, and only where that keeps the innermost axis in place
    while ``p1`` moved it (a strided copy becomes a copy of contiguous rows)."""
    from onnx import helper

    g = model.graph
    shapes = static_shapes(model)
    prod = producer_map(g)
    cons = consumer_map(g)
    outputs = {o.name for o in g.output}
    done = 0
    probe_batch = 7
    for t2 in [n for n in g.node if n.op_type == "Transpose"]:
        rs = prod.get(t2.input[0])
        if rs is None or rs.op_type != "Reshape" or len(cons.get(rs.output[0], [])) != 1 or rs.output[0] in outputs:
            continue
        t1 = prod.get(rs.input[0])
        if t1 is None or t1.op_type != "Transpose" or len(cons.get(t1.output[0], [])) != 1 or t1.output[0] in outputs:
            continue
        x_shape = shapes.get(t1.input[0])
        target = const_value(g, rs.input[1])
        p1, p2 = list(attr(t1, "perm", [])), list(attr(t2, "perm", []))
        if not x_shape or target is None or not p1 or not p2 or any(d is None for d in x_shape[1:]) or 0 in target.tolist():
            continue
        x = [probe_batch] + list(x_shape[1:])
        y = [x[a] for a in p1]
        r = [int(v) for v in target.tolist()]
        if r.count(-1) > 1:
            continue
        if -1 in r:
            known = int(np.prod([v for v in r if v != -1]))
            if int(np.prod(y)) % known:
                continue
            r[r.index(-1)] = int(np.prod(y)) // known
        groups = _merge_groups(y, r)
        if groups is None or len(p2) != len(r):
            continue
        q = [a for i in p2 for a in groups[i]]
        perm = [p1[a] for a in q]
        last = max(a for a in range(len(x)) if x[a] != 1)

        def innermost(pm: list[int]) -> int:
            return next(a for a in reversed(pm) if x[a] != 1)

        if innermost(p1) == last or innermost(perm) != last:
            continue
        batch_group = next(i for i, gr in enumerate(groups) if p1.index(0) in gr)
        new_target = [(-1 if i == batch_group else r[i]) for i in p2]
        t_new = helper.make_node("Transpose", [t1.input[0]], [fresh_name(g, f"{t1.output[0]}_collapsed")],
                                 name=fresh_name(g, f"{t1.name}_collapsed_transpose"), perm=perm)
        r_new = helper.make_node("Reshape", [t_new.output[0], add_initializer(g, f"{rs.output[0]}_collapsed",
                                                                          np.array(new_target, np.int64))],
                                 [t2.output[0]], name=fresh_name(g, f"{rs.name}_collapsed_reshape"))
        replace_node(g, t2, t_new, r_new)
        done += 1
    if done:
        remove_dead_nodes(model)
    return done


def hoist_scalar_mul(model) -> int:
    """``MatMul -> Reshape/Squeeze/Unsqueeze ... -> Mul(scalar)`` with the Mul moved right after the MatMul,
    where onnxruntime folds it into the MatMul (``alpha``); the same product, one pass over the scores fewer."""
    from onnx import helper

    g = model.graph
    prod = producer_map(g)
    cons = consumer_map(g)
    outputs = {o.name for o in g.output}
    done = 0
    for mul in [n for n in g.node if n.op_type == "Mul"]:
        k = next((i for i, name in enumerate(mul.input) if (v := const_value(g, name)) is not None and v.size == 1), None)
        if k is None:
            continue
        chain = []
        cur = prod.get(mul.input[1 - k])
        while cur is not None and cur.op_type in ("Reshape", "Squeeze", "Unsqueeze") and \
                len(cons.get(cur.output[0], [])) == 1 and cur.output[0] not in outputs:
            chain.append(cur)
            cur = prod.get(cur.input[0])
        if not chain or cur is None or cur.op_type != "MatMul" or len(cons.get(cur.output[0], [])) != 1 \
                or cur.output[0] in outputs:
            continue
        scaled = fresh_name(g, f"{cur.output[0]}_scaled")
        new_mul = helper.make_node("Mul", [cur.output[0], mul.input[k]], [scaled], name=fresh_name(g, f"{mul.name}_hoisted"))
        chain[-1].input[0] = scaled
        chain[0].output[0] = mul.output[0]
        g.node.remove(mul)
        g.node.insert(list(g.node).index(cur) + 1, new_mul)
        done += 1
    return done


def fuse_layer_norm(model) -> int:
    """TF's LayerNormalization over the last axis (``mean``, ``x - mean``, its square's mean, ``+ eps``,
    ``Sqrt``/``Reciprocal`` or ``Rsqrt``, ``* gamma``, ``x * m + (beta - mean * m)``) as one
    ``LayerNormalization`` node. The means may be ``ReduceMean`` over the last axis or ``GlobalAveragePool``
    on a 3-D tensor."""
    from onnx import helper

    if opset_version(model) < 17:
        return 0
    g = model.graph
    prod = producer_map(g)
    cons = consumer_map(g)
    done = 0

    def mean_of(node) -> str | None:
        if node is None:
            return None
        if node.op_type == "GlobalAveragePool":
            return node.input[0]
        if node.op_type == "ReduceMean" and attr(node, "keepdims", 1) == 1:
            axes = attr(node, "axes") if len(node.input) < 2 else const_value(g, node.input[1])
            if axes is not None and [int(a) for a in np.asarray(axes).reshape(-1)] == [-1]:
                return node.input[0]
        return None

    def other(node, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]

    for out_add in [n for n in g.node if n.op_type == "Add"]:
        try:
            a, b = (prod.get(i) for i in out_add.input)
            if a is None or b is None:
                continue
            # out = x * m + (beta - mean * m): one side Mul(x, m), the other Add(Mul(Neg(mean), m), beta)
            for mul2, add1 in ((a, b), (b, a)):
                if mul2.op_type != "Mul" or add1.op_type != "Add":
                    continue
                mul1 = next((prod.get(i) for i in add1.input if prod.get(i) is not None and prod[i].op_type == "Mul"), None)
                if mul1 is None:
                    continue
                beta = other(add1, mul1.output[0])
                neg = next((prod.get(i) for i in mul1.input if prod.get(i) is not None and prod[i].op_type == "Neg"), None)
                if neg is None:
                    continue
                m = other(mul1, neg.output[0])
                if m not in mul2.input:
                    continue
                x = other(mul2, m)
                mean_node = prod.get(neg.input[0])
                if mean_of(mean_node) != x:
                    continue
                m_node = prod.get(m)  # m = rsqrt(var + eps) * gamma
                if m_node is None or m_node.op_type != "Mul":
                    continue
                rs = next((prod.get(i) for i in m_node.input if prod.get(i) is not None
                           and prod[i].op_type in ("Reciprocal", "Rsqrt")), None)
                if rs is None:
                    continue
                gamma = other(m_node, rs.output[0])
                if rs.op_type == "Reciprocal":
                    sqrt = prod.get(rs.input[0])
                    if sqrt is None or sqrt.op_type != "Sqrt":
                        continue
                    eps_add = prod.get(sqrt.input[0])
                else:
                    eps_add = prod.get(rs.input[0])
                if eps_add is None or eps_add.op_type != "Add":
                    continue
                var_node = next((prod.get(i) for i in eps_add.input if prod.get(i) is not None and mean_of(prod[i]) is not None), None)
                if var_node is None:
                    continue
                eps = const_value(g, other(eps_add, var_node.output[0]))
                sq = prod.get(mean_of(var_node))
                if eps is None or eps.size != 1 or sq is None or sq.op_type not in ("Mul", "Pow"):
                    continue
                diff = prod.get(sq.input[0])
                if diff is None or diff.op_type != "Sub" or list(diff.input) != [x, mean_node.output[0]]:
                    continue
                if sq.op_type == "Mul" and list(sq.input) != [diff.output[0]] * 2:
                    continue
                gv, bv = const_value(g, gamma), const_value(g, beta)
                if gv is None or bv is None:
                    continue
                width = gv.reshape(-1).size
                if bv.reshape(-1).size != width or gv.size != width:
                    continue
                gn = add_initializer(g, f"{gamma.split(':')[0]}_ln", gv.reshape(width).astype(np.float32))
                bn = add_initializer(g, f"{beta.split(':')[0]}_ln", bv.reshape(width).astype(np.float32))
                ln = helper.make_node("LayerNormalization", [x, gn, bn], [out_add.output[0]],
                                      name=fresh_name(g, f"{out_add.name or 'layer_norm'}_fused"), axis=-1,
                                      epsilon=float(eps.reshape(-1)[0]))
                g.node.insert(list(g.node).index(out_add), ln)
                g.node.remove(out_add)
                done += 1
                break
        except (KeyError, IndexError, ValueError):
            continue
    if done:
        remove_dead_nodes(model)
    del cons
    return done


__all__ = ["MS_DOMAIN", "collapse_transposes", "drop_tensordot_reshapes", "fuse_layer_norm", "hoist_scalar_mul",
           "run_shapes", "static_shapes"]
