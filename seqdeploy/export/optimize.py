"""Graph cleanup after export: exact rewrites that leave onnxruntime less to do per call.

Each pass is a function of the ``ModelProto`` (changed in place) returning how many rewrites it made;
:data:`PASSES` lists them in order. :func:`optimize_graph` (an entry of
``seqdeploy.export.fixes.GRAPH_FIXES``) runs them and keeps the result only when it answers like the
exported graph on probe inputs (max |diff| <= ``EXACT_RTOL`` x output scale): a pass that would change
an answer, or fails, leaves the graph as it was.

* :func:`fold_static_shapes` -- tf2onnx rebuilds static shapes at run time (``Shape -> Gather -> Concat
  -> Reshape``) wherever Keras used ``tf.shape``. When only the batch axis is dynamic, every such value
  is found by running the graph at two batch sizes: values that do not change become constants, and a
  Reshape target that changes in exactly one position becomes a constant with ``-1`` there.
* :func:`native_conv1d` -- Keras Conv1D arrives as ``Unsqueeze -> Conv(1 x k) -> Squeeze``; a 1-D Conv
  on the 3-D tensor is the same arithmetic without the copies, and lets onnxruntime fuse what follows.
* :func:`fold_conv_affine` -- a per-output-channel ``Add``/``Mul`` after a Conv (bias, BatchNorm in
  inference form) folded into the Conv's weights and bias.
* :func:`drop_tensordot_reshapes` -- TF's Dense on a 3-D tensor flattens to 2-D around its MatMul; the
  MatMul broadcasts over the leading axes without the two Reshapes.
* :func:`fuse_layer_norm` -- TF's LayerNormalization (mean, squared difference, variance, rsqrt, scale,
  shift: 12 nodes) as one ``LayerNormalization`` (opset >= 17).

Measured on benchmarks/real_zoo.py's models (see benchmarks/REAL_ZOO.md). Tried and not kept:
onnxruntime's transformer optimizer (``onnxruntime.transformers.optimizer``, model types ``bert`` and
``bert_tf``) fused nothing in tf2onnx's Keras MultiHeadAttention/LayerNormalization graphs; onnxslim
and onnxscript's optimizer removed nothing more once these passes had run (onnxslim alone folded part
of the Transformer's shape arithmetic, 127 -> 105 nodes; onnxscript 0), and onnxruntime itself already
folds a BatchNorm that directly follows a 2-D Conv.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

EXACT_RTOL = 1e-5  # an optimized graph must answer within this fraction of the output scale
PROBE_BATCHES = (1, 2, 3)


@dataclass(frozen=True)
class OptimizeReport:
    """What :func:`optimize_model` did: rewrites per pass, nodes before/after, the check, or why it kept the input."""

    applied: dict[str, int]
    nodes_before: int
    nodes_after: int
    max_abs_diff: float | None
    kept_original: str | None = None


# ----------------------------------------------------------------------------- helpers


def _inits(g) -> dict[str, Any]:
    return {i.name: i for i in g.initializer}


def _const(g, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for i in g.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] == name and n.attribute and n.attribute[0].name == "value":
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def _consumers(g) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _producer(g) -> dict[str, Any]:
    return {o: n for n in g.node for o in n.output}


def _attr(node, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _fresh(g, base: str) -> str:
    taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    k, name = 0, base
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _add_init(g, base: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    name = _fresh(g, base)
    g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _axes(g, node) -> list[int] | None:
    """The axes of an Unsqueeze/Squeeze (input since opset 13, attribute before)."""
    if len(node.input) > 1:
        a = _const(g, node.input[1])
        return None if a is None else [int(v) for v in np.asarray(a).reshape(-1)]
    a = _attr(node, "axes")
    return None if a is None else [int(v) for v in a]


def remove_dead_nodes(model) -> int:
    """Drop nodes whose outputs nothing uses and the initializers no node uses; return nodes dropped."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
            for a in n.attribute:  # subgraphs (If/Loop/Scan) read outer names
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    needed.update(i for sn in sub.node for i in sn.input)
    dropped = len(g.node) - len(keep)
    if dropped:
        keep.reverse()
        del g.node[:]
        g.node.extend(keep)
    unused = [i for i in g.initializer if i.name not in needed]
    for i in unused:
        g.initializer.remove(i)
    return dropped


def probe_feeds(model, batch: int, seed: int = 0) -> dict[str, np.ndarray] | None:
    """Random feeds at ``batch`` for every graph input, or None when a non-batch axis is not static."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = list(tt.shape.dim)
        if not dims:
            return None
        tail = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                return None
            tail.append(int(d.dim_value))
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal((batch, *tail)).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = np.zeros((batch, *tail), bool)
        else:  # ids: small non-negative values stay valid for any Embedding/Gather
            feeds[vi.name] = rng.integers(0, 2, (batch, *tail)).astype(dtype)
    return feeds


def _session(model, extra_outputs: list[Any] = ()) -> Any:
    import onnxruntime as ort

    m = model
    if extra_outputs:
        import onnx

        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.graph.output.extend(extra_outputs)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- passes


def fold_static_shapes(model) -> int:
    """Shape arithmetic whose value does not depend on the batch becomes constants (see the module docstring)."""
    import onnx
    from onnx import helper

    g = model.graph
    inits = _inits(g)
    shape_ops = {"Shape", "Size"}
    arith = {"Gather", "Concat", "Cast", "Unsqueeze", "Squeeze", "Slice", "ReduceProd", "Mul", "Add", "Sub", "Div",
             "Identity", "Reshape", "Range", "Equal", "Where", "Max", "Min", "ConstantOfShape", "Expand", "Floor"}
    const_outs = {n.output[0] for n in g.node if n.op_type == "Constant"} | set(inits)
    derived: set[str] = set()
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type in shape_ops:
            derived.update(n.output)
        elif n.op_type in arith and n.input and any(i in derived for i in n.input) and all(
                i in derived or i in const_outs or i == "" for i in n.input):
            derived.update(n.output)
    if not derived:
        return 0
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    # only what leaves the shape subgraph matters: values read by nodes outside it
    prod = _producer(g)
    boundary = sorted({i for n in g.node if not set(n.output) & derived for i in n.input if i in derived})
    boundary = [b for b in boundary if types.get(b) in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)]
    # a Reshape whose target is computed: its output's shape at every probe batch says the target
    reshapes = [n for n in g.node if n.op_type == "Reshape" and n.input[1] in derived and n.output[0] in types
                and not _attr(n, "allowzero", 0)]
    probes = list(dict.fromkeys(boundary + [n.output[0] for n in reshapes]))
    if not probes:
        return 0
    extra = [helper.make_tensor_value_info(b, types[b], None) for b in probes]
    sess = _session(model, extra)
    values = []
    for batch in PROBE_BATCHES:
        feeds = probe_feeds(model, batch)
        if feeds is None:
            return 0
        values.append(dict(zip(probes, sess.run(probes, feeds))))
    done = 0
    for n in reshapes:
        shapes = [np.asarray(v[n.output[0]].shape, np.int64) for v in values]
        if any(len(sh) != len(shapes[0]) for sh in shapes) or 0 in shapes[0].tolist():
            continue
        moving = np.zeros(len(shapes[0]), bool)
        for sh in shapes[1:]:
            moving |= sh != shapes[0]
        if int(moving.sum()) != 1:
            continue
        target = shapes[0].copy()
        target[moving] = -1
        n.input[1] = _add_init(g, f"{n.output[0].split(':')[0]}_target", target)
        done += 1
    consumers = _consumers(g)
    for name in boundary:
        vals = [v[name] for v in values]
        a = vals[0]
        if any(v.shape != a.shape for v in vals):
            continue
        moving = np.zeros(a.shape, bool)
        for v in vals[1:]:
            moving |= v != a
        if not moving.any():
            new = a
        else:
            users = consumers.get(name, [])
            if not (a.ndim == 1 and int(moving.sum()) == 1 and users
                    and all(u.op_type == "Reshape" and u.input[1] == name and not _attr(u, "allowzero", 0) for u in users)
                    and -1 not in a.tolist() and 0 not in a.tolist()):
                continue
            new = a.copy()
            new[moving] = -1
        users = [u for u in consumers.get(name, []) if not set(u.output) & derived and name in u.input]
        if not users:
            continue
        cname = _add_init(g, f"{name.split(':')[0]}_static", new.astype(a.dtype))
        for u in users:
            for k, i in enumerate(u.input):
                if i == name:
                    u.input[k] = cname
        done += 1
    del prod
    remove_dead_nodes(model)
    return done


def native_conv1d(model) -> int:
    """``Unsqueeze(axis 2) -> Conv(kernel 1 x k) -> Squeeze(axis 2)`` (Keras Conv1D) as a 1-D Conv on the 3-D tensor.

    The Conv's input may also come from a Reshape to ``[N, C, 1, W]`` with a constant target, or from
    ``Unsqueeze -> Transpose`` of the ``[N, W, C]`` input (tf2onnx's layout change of a first Conv1D).
    """
    from onnx import helper, numpy_helper

    g = model.graph
    prod = _producer(g)
    cons = _consumers(g)
    outputs = {o.name for o in g.output}
    inits = _inits(g)
    done = 0
    for conv in [n for n in g.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]:
        w_name = conv.input[1]
        if w_name not in inits:
            continue
        w = numpy_helper.to_array(inits[w_name])
        ks = _attr(conv, "kernel_shape", list(w.shape[2:]))
        if w.ndim != 4 or w.shape[2] != 1 or list(ks)[0] != 1:
            continue
        pads = list(_attr(conv, "pads", [0, 0, 0, 0]))
        strides = list(_attr(conv, "strides", [1, 1]))
        dil = list(_attr(conv, "dilations", [1, 1]))
        if _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or pads[0] or pads[2] or strides[0] != 1:
            continue
        users = cons.get(conv.output[0], [])
        if conv.output[0] in outputs or len(users) != 1 or users[0].op_type != "Squeeze" or _axes(g, users[0]) != [2]:
            continue
        src = prod.get(conv.input[0])
        if src is None:
            continue
        if src.op_type == "Unsqueeze" and _axes(g, src) == [2]:
            x3 = src.input[0]
        elif src.op_type == "Reshape":
            target = _const(g, src.input[1])
            if target is None or target.shape != (4,) or target[2] != 1 or 0 in target.tolist():
                continue
            shape3 = _add_init(g, f"{src.output[0].split(':')[0]}_3d", np.delete(target, 2).astype(np.int64))
            reshape3 = helper.make_node("Reshape", [src.input[0], shape3], [_fresh(g, f"{src.output[0]}_3d")],
                                        name=_fresh(g, f"{src.name}_3d"))
            g.node.insert(list(g.node).index(conv), reshape3)
            x3 = reshape3.output[0]
        elif src.op_type == "Transpose" and prod.get(src.input[0]) is not None and prod[src.input[0]].op_type == "Unsqueeze":
            unsq = prod[src.input[0]]  # [N, W, C] -> Unsqueeze(a) -> Transpose(perm) -> [N, C, 1, W]
            axes, perm = _axes(g, unsq), list(_attr(src, "perm", []))
            if axes is None or len(axes) != 1 or len(perm) != 4 or perm[2] != axes[0] % 4:
                continue
            a = axes[0] % 4
            perm3 = [q - (q > a) for q in perm if q != a]
            t3 = helper.make_node("Transpose", [unsq.input[0]], [_fresh(g, f"{src.output[0]}_3d")],
                                  name=_fresh(g, f"{src.name}_3d"), perm=perm3)
            g.node.insert(list(g.node).index(conv), t3)
            x3 = t3.output[0]
        else:
            continue
        sq = users[0]
        w3 = _add_init(g, f"{w_name.split(':')[0]}_1d", w[:, :, 0, :])
        new = helper.make_node("Conv", [x3, w3, *conv.input[2:]], [sq.output[0]], name=conv.name or sq.name,
                               kernel_shape=[int(w.shape[3])], pads=[pads[1], pads[3]], strides=[strides[1]],
                               dilations=[dil[1]], group=int(_attr(conv, "group", 1)))
        idx = list(g.node).index(conv)
        g.node.remove(conv)
        g.node.remove(sq)
        g.node.insert(idx, new)
        done += 1
    if done:
        remove_dead_nodes(model)
    return done


def drop_tensordot_reshapes(model) -> int:
    """TF's Dense on a 3-D tensor (``Tensordot``: ``Reshape [-1, K] -> MatMul W[K, M] -> Reshape [-1, T, M]``) as
    one ``MatMul`` on the 3-D tensor (onnxruntime's MatMul broadcasts over the leading axes)."""
    import onnx

    g = model.graph
    shapes = {}
    for vi in list(onnx.shape_inference.infer_shapes(model).graph.value_info) + list(g.input):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    prod = _producer(g)
    cons = _consumers(g)
    outputs = {o.name for o in g.output}
    done = 0
    for mm in [n for n in g.node if n.op_type == "MatMul"]:
        r1 = prod.get(mm.input[0])
        users = cons.get(mm.output[0], [])
        w = _const(g, mm.input[1])
        if r1 is None or r1.op_type != "Reshape" or w is None or w.ndim != 2 or len(users) != 1 or users[0].op_type != "Reshape":
            continue
        r2 = users[0]
        t1, t2 = _const(g, r1.input[1]), _const(g, r2.input[1])
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


def _per_channel(v: np.ndarray, c: int, rank: int) -> np.ndarray | None:
    """``v`` as a length-``c`` vector when it broadcasts over a ``rank``-d NC... tensor per channel only."""
    v = np.asarray(v)
    if v.dtype != np.float32 or v.ndim > rank:
        return None
    full = (1,) * (rank - v.ndim) + v.shape
    if v.size == 1:
        return np.full(c, float(v.reshape(-1)[0]), np.float32)
    if full[1] != c or any(d != 1 for k, d in enumerate(full) if k != 1):
        return None
    return v.reshape(c)


def fold_conv_affine(model) -> int:
    """A Conv followed by per-output-channel ``Add``/``Mul`` constants (bias, inference BatchNorm) folds into
    the Conv's weights and bias: ``(W*x + b) * s + t`` = ``(s*W)*x + (s*b + t)``."""
    from onnx import numpy_helper

    g = model.graph
    outputs = {o.name for o in g.output}
    done = 0
    changed = True
    while changed:
        changed = False
        cons = _consumers(g)
        inits = _inits(g)
        for conv in [n for n in g.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]:
            if conv.input[1] not in inits or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits):
                continue
            users = cons.get(conv.output[0], [])
            if conv.output[0] in outputs or len(users) != 1 or users[0].op_type not in ("Add", "Mul"):
                continue
            op = users[0]
            other = op.input[1] if op.input[0] == conv.output[0] else op.input[0]
            val = _const(g, other)
            w = numpy_helper.to_array(inits[conv.input[1]])
            c = int(w.shape[0])
            vec = _per_channel(val, c, w.ndim) if val is not None else None
            if vec is None:
                continue
            b = (numpy_helper.to_array(inits[conv.input[2]]) if len(conv.input) > 2 and conv.input[2]
                 else np.zeros(c, np.float32))
            if op.op_type == "Mul":
                w = (w * vec.reshape((c,) + (1,) * (w.ndim - 1))).astype(np.float32)
                b = (b * vec).astype(np.float32)
            else:
                b = (b + vec).astype(np.float32)
            w_name = _add_init(g, f"{conv.input[1].split(':')[0]}_folded", w)
            b_name = _add_init(g, f"{conv.name or 'conv'}_bias_folded", b)
            del conv.input[1:]
            conv.input.extend([w_name, b_name])
            conv.output[0] = op.output[0]
            g.node.remove(op)
            done += 1
            changed = True
            break
    if done:
        remove_dead_nodes(model)
    return done


def fuse_layer_norm(model) -> int:
    """TF's LayerNormalization over the last axis (``mean``, ``x - mean``, its square's mean, ``+ eps``,
    ``Sqrt``/``Reciprocal`` or ``Rsqrt``, ``* gamma``, ``x * m + (beta - mean * m)``) as one
    ``LayerNormalization`` node. The means may be ``ReduceMean`` over the last axis or ``GlobalAveragePool``
    on a 3-D tensor."""
    from onnx import helper

    if _opset(model) < 17:
        return 0
    g = model.graph
    prod = _producer(g)
    cons = _consumers(g)
    done = 0

    def mean_of(node) -> str | None:
        if node is None:
            return None
        if node.op_type == "GlobalAveragePool":
            return node.input[0]
        if node.op_type == "ReduceMean" and _attr(node, "keepdims", 1) == 1:
            axes = _attr(node, "axes") if len(node.input) < 2 else _const(g, node.input[1])
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
                eps = _const(g, other(eps_add, var_node.output[0]))
                sq = prod.get(mean_of(var_node))
                if eps is None or eps.size != 1 or sq is None or sq.op_type not in ("Mul", "Pow"):
                    continue
                diff = prod.get(sq.input[0])
                if diff is None or diff.op_type != "Sub" or list(diff.input) != [x, mean_node.output[0]]:
                    continue
                if sq.op_type == "Mul" and list(sq.input) != [diff.output[0]] * 2:
                    continue
                gv, bv = _const(g, gamma), _const(g, beta)
                if gv is None or bv is None:
                    continue
                width = gv.reshape(-1).size
                if bv.reshape(-1).size != width or gv.size != width:
                    continue
                gn = _add_init(g, f"{gamma.split(':')[0]}_ln", gv.reshape(width).astype(np.float32))
                bn = _add_init(g, f"{beta.split(':')[0]}_ln", bv.reshape(width).astype(np.float32))
                ln = helper.make_node("LayerNormalization", [x, gn, bn], [out_add.output[0]],
                                      name=_fresh(g, f"{out_add.name or 'layer_norm'}_fused"), axis=-1,
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


#: the passes :func:`optimize_graph` runs, in this order (name, function of the ModelProto -> rewrites made)
PASSES: tuple[tuple[str, Callable[[Any], int]], ...] = (
    ("fold_static_shapes", fold_static_shapes),
    ("native_conv1d", native_conv1d),
    ("fold_conv_affine", fold_conv_affine),
    ("fuse_layer_norm", fuse_layer_norm),
    ("drop_tensordot_reshapes", drop_tensordot_reshapes),
)


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    diff, scale = 0.0, 0.0
    for x, y in zip(a, b):
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        if x.shape != y.shape:
            return float("inf"), 0.0
        if x.size:
            diff = max(diff, float(np.nanmax(np.abs(x - y))) if np.isfinite(y).all() == np.isfinite(x).all() else float("inf"))
            scale = max(scale, float(np.nanmax(np.abs(x))))
    return diff, scale


def optimize_model(model, passes: tuple[tuple[str, Callable[[Any], int]], ...] = PASSES) -> tuple[Any, OptimizeReport]:
    """Run ``passes`` on a copy of ``model``; return (the optimized copy, or ``model`` itself when the result
    does not answer like it, and the report).

    >>> opt, report = optimize_model(proto)   # doctest: +SKIP
    >>> report.applied                        # doctest: +SKIP
    {'fold_static_shapes': 0, 'native_conv1d': 3, 'fold_conv_affine': 9, 'fuse_layer_norm': 0}
    """
    import onnx

    before = len(model.graph.node)
    feeds = probe_feeds(model, PROBE_BATCHES[-1], seed=1)
    if feeds is None:
        return model, OptimizeReport({}, before, before, None, "an input has a dynamic axis besides the batch")
    try:
        ref = _session(model).run(None, feeds)
    except Exception as exc:  # nothing to compare against: leave the graph alone
        return model, OptimizeReport({}, before, before, None, f"onnxruntime cannot run the graph ({type(exc).__name__})")
    opt = onnx.ModelProto()
    opt.CopyFrom(model)
    applied: dict[str, int] = {}
    for name, fn in passes:
        trial = onnx.ModelProto()
        trial.CopyFrom(opt)
        try:
            n = fn(trial)
            if n:
                got = _session(trial).run(None, feeds)
                diff, scale = _max_diff(ref, got)
                if not diff <= EXACT_RTOL * max(scale, 1e-6):
                    applied[name] = 0
                    continue
                opt = trial
        except Exception:  # a pass that cannot handle this graph: skip it, keep the rest
            applied[name] = 0
            continue
        applied[name] = n
    got = _session(opt).run(None, feeds)
    diff, scale = _max_diff(ref, got)
    if not diff <= EXACT_RTOL * max(scale, 1e-6):
        return model, OptimizeReport(applied, before, before, diff, "the optimized graph answered differently")
    return opt, OptimizeReport(applied, before, len(opt.graph.node), diff)


def optimize_graph(model) -> None:
    """``GRAPH_FIXES`` entry: replace ``model``'s graph by :func:`optimize_model`'s result (in place)."""
    opt, report = optimize_model(model)
    if opt is not model and report.kept_original is None:
        model.CopyFrom(opt)


__all__ = ["EXACT_RTOL", "OptimizeReport", "PASSES", "drop_tensordot_reshapes", "fold_conv_affine", "fold_static_shapes", "fuse_layer_norm",
           "native_conv1d", "optimize_graph", "optimize_model", "probe_feeds", "remove_dead_nodes"]
