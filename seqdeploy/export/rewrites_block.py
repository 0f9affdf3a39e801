"""Exact rewrites of a Transformer block around onnxruntime's CPU kernels, run by
:mod:`seqdeploy.export.optimize` after :func:`seqdeploy.export.rewrites_fuse.fuse_attention`; they work on what
onnxruntime's CPU kernels do per call (measured on benchmarks/real_zoo.py's Transformer, 200 ids, one thread, AVX-512):

* :func:`rows_as_2d` -- a region of row-wise ops on ``[batch, seq, C]`` tensors (Dense's MatMul and bias, residual
  Adds, activations, LayerNormalization over the last axis) runs on ``[batch * seq, C]``: each Dense becomes a
  ``Gemm`` with its bias (and onnxruntime folds the ReLU into it), which it does not do for a 3-D MatMul.
* :func:`residual_into_gemm` -- ``r + (a @ W + b)`` as ``Gemm(a, W, C=r)``: the residual read by the Gemm itself,
  the bias moved into r's producer (a LayerNormalization's beta, a constant Add such as a position embedding) and
  taken back out of r's other readers (a Dense bias ``-= b @ W'``, an Attention's QKV bias).
* :func:`mean_as_matmul` -- GlobalAveragePooling1D's ``ReduceMean`` over the sequence as ``MatMul(1/seq, x)``.
* :func:`attention_per_sample` -- above batch 1, ``com.microsoft.Attention`` in a ``Scan`` over the batch
  (``If(batch > 1)``; batch 1 runs the kernel as before): the kernel holds every sample's ``heads x seq x seq``
  scores at once (10 MB at batch 32, 2 heads, 200 ids), out of cache; one sample at a time they stay in L2.
  Only where one sample's scores are >= 128 KB (a smaller block fits in cache anyway). A bare Scan cost ~13 us
  at batch 1 (6%); behind the If, batch 1 measured the same as without it.

Measured (C-API RunWithBinding, one thread, interleaved medians, AVX-512 EPYC): the Transformer at batch 1
268 -> 210-240 us, batch 32 9.3 -> 6.8-7.0 ms. Tried and not kept: ``com.microsoft.MultiHeadAttention``
(its CPU flash-attention path is 20% faster than Attention at batch 32 but 10-18% slower at batch 1, and
needs three projections), the opset-23 ``Attention`` (even at batch 1, 5% slower at 32), unfused
MatMul/Softmax/MatMul (10-23% slower at batch 1), and folding ``Wq Wk^T`` and ``Wv Wo`` per head (12% fewer
FLOPs when key_dim >= the model width, but 14% slower unfused).
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
from seqdeploy.export.rewrites_attention import MS_DOMAIN, run_shapes


ROW_UNARY = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Erf", "Elu", "Selu", "Softplus", "HardSigmoid", "HardSwish",
             "Gelu", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Identity")
ROW_BINARY = ("Add", "Sub", "Mul", "Div", "Sum")


def _row_const(v: np.ndarray, c: int) -> np.ndarray | None:
    """A constant that broadcasts along the last axis only (shape ``[..1, c]`` or a scalar) as ``[c]`` (or a
    scalar); None for anything that varies along another axis."""
    if v.size == 1:
        return v.reshape(())
    if v.shape[-1] == c and v.size == c:
        return v.reshape(c)
    return None


def rows_as_2d(model) -> int:
    """Row-wise ops on ``[batch, d1.., C]`` tensors as ops on ``[batch * d1.., C]`` (see the module docstring); a
    Dense (``MatMul`` + constant bias ``Add``) there becomes ``Gemm``. Returns the Gemms made (0 when no region
    holds a MatMul)."""
    from onnx import helper

    g = model.graph
    shapes = run_shapes(model)
    prod = producer_map(g)
    cons = consumer_map(g)
    outputs = {o.name for o in g.output}
    if opset_version(model) < 13:
        return 0

    def full(name: str) -> list[int] | None:
        s = shapes.get(name)
        if not s or len(s) < 3 or s[0] is not None or any(d is None or d <= 0 for d in s[1:]):
            return None
        return s

    row: dict[str, tuple[list[int], int]] = {}  # node name -> (lead dims, kind)
    for n in g.node:
        if n.domain not in ("", "ai.onnx") or len(n.output) != 1:
            continue
        out = full(n.output[0])
        if out is None:
            continue
        lead = out[:-1]
        ok = False
        if n.op_type == "MatMul":
            w = const_value(g, n.input[1])
            x = full(n.input[0])
            ok = w is not None and w.ndim == 2 and w.dtype == np.float32 and x is not None and x[:-1] == lead \
                and const_value(g, n.input[0]) is None
        elif n.op_type in ROW_BINARY or n.op_type in ROW_UNARY:
            if n.op_type in ROW_UNARY and len(n.input) != 1:
                continue
            ok = True
            for i in n.input:
                v = const_value(g, i)
                if v is not None:
                    ok = ok and n.op_type in ROW_BINARY and _row_const(v, out[-1]) is not None
                else:
                    ok = ok and full(i) == out
        elif n.op_type == "LayerNormalization":
            ok = (attr(n, "axis", -1) in (-1, len(out) - 1) and full(n.input[0]) == out
                  and all(const_value(g, i) is not None for i in n.input[1:] if i))
        elif n.op_type == "Softmax":
            ok = attr(n, "axis", -1) in (-1, len(out) - 1) and full(n.input[0]) == out
        if ok:
            row[n.output[0]] = (lead, 0)
    key = {id(n): n.output[0] for n in g.node}
    members = [n for n in g.node if key[id(n)] in row]
    # connected regions (through row tensors) of the same lead shape; only those holding a MatMul are rewritten
    parent = {key[id(n)]: key[id(n)] for n in members}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for n in members:
        for i in n.input:
            p = prod.get(i)
            if p is not None and key[id(p)] in row and row[key[id(p)]][0] == row[key[id(n)]][0]:
                parent[find(key[id(p)])] = find(key[id(n)])
    with_matmul = {find(key[id(n)]) for n in members if n.op_type == "MatMul"}
    region = {key[id(n)] for n in members if find(key[id(n)]) in with_matmul}
    if not region:
        return 0

    flat: dict[str, str] = {}  # 3-D tensor -> its 2-D name
    new_nodes: dict[int, list] = {}  # insert before node index

    def flat_of(name: str, before: int) -> str:
        if name not in flat:
            c = shapes[name][-1]
            flat[name] = fresh_name(g, f"{name}_rows")
            new_nodes.setdefault(before, []).append(helper.make_node(
                "Reshape", [name, add_initializer(g, f"{name}_rows_shape", np.array([-1, c], np.int64))], [flat[name]],
                name=fresh_name(g, f"{name}_as_rows")))
        return flat[name]

    nodes = list(g.node)
    exits = []
    renamed: dict[str, str] = {}  # a region output -> its 2-D name
    dense: set[str] = set()  # the region's MatMul outputs
    for idx, n in enumerate(nodes):
        if key[id(n)] not in region:
            continue
        c_out = shapes[n.output[0]][-1]
        for j, i in enumerate(n.input):
            if not i:
                continue
            v = const_value(g, i)
            if v is not None:
                if n.op_type in ROW_BINARY:
                    rc = _row_const(v, c_out)
                    if rc.shape != v.shape:
                        n.input[j] = add_initializer(g, f"{i}_row", rc.astype(v.dtype))
            elif i in renamed:
                n.input[j] = renamed[i]
            else:
                n.input[j] = flat_of(i, idx)
        if n.op_type in ("LayerNormalization", "Softmax"):
            for a in n.attribute:
                if a.name == "axis":
                    a.i = -1
        out = n.output[0]
        renamed[out] = n.output[0] = fresh_name(g, f"{out}_rows2d")
        if n.op_type == "MatMul":
            dense.add(renamed[out])
        if out in outputs or any(key[id(u)] not in region for u in cons.get(out, [])):
            lead = shapes[out][1:-1]
            exits.append((idx, helper.make_node(
                "Reshape", [renamed[out], add_initializer(g, f"{out}_unrows_shape", np.array([-1, *lead, c_out], np.int64))],
                [out], name=fresh_name(g, f"{out}_from_rows"))))
    for idx, node in exits:
        new_nodes.setdefault(idx + 1, []).append(node)
    ordered = []
    for idx, n in enumerate(nodes):
        ordered.extend(new_nodes.get(idx, []))
        ordered.append(n)
    ordered.extend(new_nodes.get(len(nodes), []))
    del g.node[:]
    g.node.extend(ordered)
    # Dense: MatMul(x2d, W) -> Add(const bias) as one Gemm
    cons = consumer_map(g)
    done = 0
    for mm in [n for n in g.node if n.op_type == "MatMul" and n.output[0] in dense]:
        users = cons.get(mm.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        other = add.input[1] if add.input[0] == mm.output[0] else add.input[0]
        b = const_value(g, other)
        w = const_value(g, mm.input[1])
        if b is None or b.size != w.shape[1] or b.ndim > 1:
            continue
        gemm = helper.make_node("Gemm", [mm.input[0], mm.input[1], other], [add.output[0]],
                                name=fresh_name(g, f"{mm.name or 'dense'}_gemm"))
        g.node.insert(list(g.node).index(add), gemm)
        g.node.remove(add)
        g.node.remove(mm)
        done += 1
    remove_dead_nodes(model)
    return max(done, 1)


def _through_reshapes(g, cons, name: str, width: int) -> list[tuple[str, object]]:
    """(tensor, consumer) for every reader of ``name`` and, through Reshapes that keep the last axis ``width``,
    of its reshaped views."""
    found = []
    for u in cons.get(name, []):
        if u.op_type == "Reshape" and u.input[0] == name:
            t = const_value(g, u.input[1])
            if t is not None and int(t.reshape(-1)[-1]) == width:
                found.extend(_through_reshapes(g, cons, u.output[0], width))
                continue
        found.append((name, u))
    return found


def residual_into_gemm(model) -> int:
    """``Add/Sum(r, Gemm(a, W, b))`` as ``Gemm(a, W, C=r)`` with ``b`` moved into r (see the module docstring)."""
    g = model.graph
    outputs = {o.name for o in g.output}
    done = 0
    progress = True
    while progress:
        progress = False
        shapes = run_shapes(model)
        prod, cons = producer_map(g), consumer_map(g)
        for s in [n for n in g.node if n.op_type in ("Add", "Sum") and len(n.input) == 2]:
            plan = _residual_plan(g, shapes, prod, cons, outputs, s)
            if plan is None:
                continue
            gm, r, updates = plan
            for node, j, value in updates:
                node.input[j] = add_initializer(g, f"{node.input[j]}_shifted", value)
            gm.input[2] = r
            gm.output[0] = s.output[0]
            idx = list(g.node).index(s)
            g.node.remove(gm)
            g.node.insert(idx - 1 if idx > 0 else 0, gm)
            g.node.remove(s)
            done += 1
            progress = True
            break
    if done:
        remove_dead_nodes(model)
    return done


def _residual_plan(g, shapes, prod, cons, outputs, s):
    """(the Gemm, the residual tensor, [(node, input index, new constant)]) for one residual Add, or None."""
    for k in (0, 1):
        gm, r = prod.get(s.input[k]), s.input[1 - k]
        if gm is None or gm.op_type != "Gemm" or len(gm.input) < 3 or len(cons.get(gm.output[0], [])) != 1 \
                or gm.output[0] in outputs or attr(gm, "transA", 0) or attr(gm, "alpha", 1.0) != 1.0 \
                or attr(gm, "beta", 1.0) != 1.0:
            continue
        b = const_value(g, gm.input[2])
        out_shape, r_shape = shapes.get(s.output[0]), shapes.get(r)
        if b is None or b.ndim > 1 or b.size < 2 or not out_shape or len(out_shape) != 2 or r_shape != out_shape:
            continue
        b = b.reshape(-1).astype(np.float64)
        width = b.size
        # r's source: through Reshapes (last axis kept) up to the node that can absorb the shift
        src = r
        while (p := prod.get(src)) is not None and p.op_type == "Reshape":
            t = const_value(g, p.input[1])
            if t is None or int(t.reshape(-1)[-1]) != width or (shapes.get(p.input[0]) or [0])[-1] != width:
                break
            src = p.input[0]
        p = prod.get(src)
        if p is None or src in outputs:
            continue
        updates = []
        if p.op_type == "LayerNormalization" and len(p.input) > 2 and p.input[2] and len(p.output) == 1:
            beta = const_value(g, p.input[2])
            if beta is None or beta.size != width:
                continue
            updates.append((p, 2, (beta.reshape(-1) + b).astype(beta.dtype)))
        elif p.op_type == "Add" and p.domain in ("", "ai.onnx"):
            j = next((j for j in (0, 1) if const_value(g, p.input[j]) is not None), None)
            if j is None:
                continue
            c = const_value(g, p.input[j])
            if c.ndim and c.shape[-1] not in (1, width):
                continue
            updates.append((p, j, (c + b.reshape((1,) * max(c.ndim - 1, 0) + (width,))).astype(c.dtype)))
        elif p.op_type == "Gemm" and len(p.input) > 2 and not attr(p, "transA", 0):
            c = const_value(g, p.input[2])
            if c is None or c.ndim > 1 or c.size != width or attr(p, "beta", 1.0) != 1.0:
                continue
            updates.append((p, 2, (c.reshape(-1) + b).astype(c.dtype)))
        else:
            continue
        # every other reader of the shifted tensor takes the shift back out
        ok = True
        for name, u in _through_reshapes(g, cons, src, width):
            if u is s and name == r:
                continue
            comp = _compensate(g, cons, u, name, b)
            if comp is None:
                ok = False
                break
            updates.append(comp)
        if ok:
            return gm, r, updates
    return None


def _compensate(g, cons, u, name: str, b: np.ndarray):
    """The constant update that makes reader ``u`` of ``name`` answer the same when ``name`` grows by ``b`` along
    its last axis, or None."""
    if u.op_type == "Gemm" and u.input[0] == name and u.input[1] != name and len(u.input) > 2 and u.input[2] != name \
            and not attr(u, "transA", 0):
        w, c = const_value(g, u.input[1]), const_value(g, u.input[2])
        if w is None or c is None or w.ndim != 2 or c.ndim > 1:
            return None
        w = w.T if attr(u, "transB", 0) else w
        if w.shape[0] != b.size or c.size != w.shape[1]:
            return None
        alpha, beta = float(attr(u, "alpha", 1.0)), float(attr(u, "beta", 1.0))
        return u, 2, (c.reshape(-1) - alpha * (b @ w) / beta).astype(c.dtype)
    if u.op_type == "Attention" and u.domain == MS_DOMAIN and u.input[0] == name and name not in u.input[1:]:
        w, c = const_value(g, u.input[1]), const_value(g, u.input[2]) if len(u.input) > 2 and u.input[2] else None
        if w is None or c is None or w.ndim != 2 or w.shape[0] != b.size or c.size != w.shape[1]:
            return None
        return u, 2, (c - b @ w).astype(c.dtype)
    if u.op_type == "MatMul" and u.input[0] == name and u.input[1] != name:
        w = const_value(g, u.input[1])
        users = cons.get(u.output[0], [])
        if w is None or w.ndim != 2 or w.shape[0] != b.size or len(users) != 1 or users[0].op_type != "Add":
            return None
        add = users[0]
        j = 1 if add.input[0] == u.output[0] else 0
        c = const_value(g, add.input[j])
        if c is None or c.shape[-1:] != (w.shape[1],) or c.size != w.shape[1]:
            return None
        return add, j, (c - (b @ w).reshape(c.shape)).astype(c.dtype)
    return None


def mean_as_matmul(model) -> int:
    """``ReduceMean(x [batch, seq, C], axes=[1], keepdims=0)`` as ``MatMul(1/seq [1, seq], x) -> [batch, C]``."""
    from onnx import helper

    g = model.graph
    shapes = run_shapes(model)
    done = 0
    for rm in [n for n in g.node if n.op_type == "ReduceMean"]:
        x = shapes.get(rm.input[0])
        axes = attr(rm, "axes") if len(rm.input) < 2 else const_value(g, rm.input[1])
        if (not x or len(x) != 3 or x[0] is not None or any(d is None for d in x[1:]) or axes is None
                or [int(a) % 3 for a in np.asarray(axes).reshape(-1)] != [1] or attr(rm, "keepdims", 1) != 0
                or attr(rm, "noop_with_empty_axes", 0)):
            continue
        seq, c = x[1], x[2]
        avg = add_initializer(g, f"{rm.name or 'mean'}_weights", np.full((1, seq), 1.0 / seq, np.float32))
        mid = fresh_name(g, f"{rm.output[0]}_rows")
        mm = helper.make_node("MatMul", [avg, rm.input[0]], [mid], name=fresh_name(g, f"{rm.name or 'mean'}_matmul"))
        rs = helper.make_node("Reshape", [mid, add_initializer(g, f"{rm.name or 'mean'}_shape", np.array([-1, c], np.int64))],
                              [rm.output[0]], name=fresh_name(g, f"{rm.name or 'mean'}_reshape"))
        replace_node(g, rm, mm, rs)
        done += 1
    if done:
        remove_dead_nodes(model)
    return done


SCAN_MIN_SCORES = 32768  # one sample's heads x seq x seq scores (floats) from which the Scan pays (128 KB)


def attention_per_sample(model) -> int:
    """``com.microsoft.Attention`` without mask or past inputs, in a ``Scan`` over the batch (see the module
    docstring)."""
    from onnx import TensorProto, helper

    g = model.graph
    shapes = run_shapes(model)
    version = opset_version(model)
    done = 0
    for att in [n for n in g.node if n.op_type == "Attention" and n.domain == MS_DOMAIN]:
        x, y = shapes.get(att.input[0]), shapes.get(att.output[0])
        if (len(att.input) > 3 and any(att.input[3:])) or len(att.output) != 1 or not x or not y or len(x) != 3 \
                or x[0] is not None or any(d is None for d in x[1:] + y[1:]):
            continue
        if {a.name for a in att.attribute} - {"num_heads", "scale", "qkv_hidden_sizes", "unidirectional", "mask_filter_value"}:
            continue
        heads = int(attr(att, "num_heads", 1))
        if heads * x[1] * x[1] < SCAN_MIN_SCORES:
            continue
        base = fresh_name(g, f"{att.name or 'attention'}_per_sample")
        xs, x3, y3, ys = (f"{base}_{k}" for k in ("x", "x3", "y3", "y"))
        inner = helper.make_node("Attention", [x3, *att.input[1:]], [y3], name=f"{base}_attention", domain=MS_DOMAIN)
        inner.attribute.extend(att.attribute)
        if version >= 13:
            axes = add_initializer(g, f"{base}_axes", np.array([0], np.int64))
            unsq = helper.make_node("Unsqueeze", [xs, axes], [x3], name=f"{base}_unsqueeze")
            sq = helper.make_node("Squeeze", [y3, axes], [ys], name=f"{base}_squeeze")
        else:
            unsq = helper.make_node("Unsqueeze", [xs], [x3], name=f"{base}_unsqueeze", axes=[0])
            sq = helper.make_node("Squeeze", [y3], [ys], name=f"{base}_squeeze", axes=[0])
        body = helper.make_graph([unsq, inner, sq], f"{base}_body",
                                 [helper.make_tensor_value_info(xs, TensorProto.FLOAT, x[1:])],
                                 [helper.make_tensor_value_info(ys, TensorProto.FLOAT, y[1:])])
        if version < 9:
            continue
        scan = helper.make_node("Scan", [att.input[0]], [f"{base}_scanned"], name=base, body=body, num_scan_inputs=1)
        plain = helper.make_node("Attention", list(att.input), [f"{base}_whole"], name=f"{base}_whole_batch",
                                 domain=MS_DOMAIN)
        plain.attribute.extend(att.attribute)
        out_type = [None, *y[1:]]
        then_g = helper.make_graph([scan], f"{base}_batch", [],
                                   [helper.make_tensor_value_info(f"{base}_scanned", TensorProto.FLOAT, out_type)])
        else_g = helper.make_graph([plain], f"{base}_one", [],
                                   [helper.make_tensor_value_info(f"{base}_whole", TensorProto.FLOAT, out_type)])
        shape, batch, several = (fresh_name(g, f"{base}_{k}") for k in ("shape", "batch", "several"))
        new = [helper.make_node("Shape", [att.input[0]], [shape], name=f"{base}_shape"),
               helper.make_node("Gather", [shape, add_initializer(g, f"{base}_zero", np.array(0, np.int64))], [batch],
                                name=f"{base}_batch", axis=0),
               helper.make_node("Greater", [batch, add_initializer(g, f"{base}_one", np.array(1, np.int64))], [several],
                                name=f"{base}_several"),
               helper.make_node("If", [several], [att.output[0]], name=f"{base}_if", then_branch=then_g,
                                else_branch=else_g)]
        idx = list(g.node).index(att)
        g.node.remove(att)
        for k, n in enumerate(new):
            g.node.insert(idx + k, n)
        done += 1
    return done


__all__ = ["SCAN_MIN_SCORES", "attention_per_sample", "mean_as_matmul", "residual_into_gemm", "rows_as_2d"]
