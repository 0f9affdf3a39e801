"""The exact graph rewrites :mod:`seqdeploy.export.optimize` runs after export (the Transformer ones are in
:mod:`seqdeploy.export.rewrites_attention`) (each a function of the
``ModelProto``, changed in place, returning how many rewrites it made), and the probing they share.
Only onnx, numpy and onnxruntime are imported, lazily."""

from __future__ import annotations

from typing import Any

import numpy as np

PROBE_BATCHES = (1, 2, 3)


# ----------------------------------------------------------------------------- helpers


def initializers(g) -> dict[str, Any]:
    return {i.name: i for i in g.initializer}


def const_value(g, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for i in g.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] == name and n.attribute and n.attribute[0].name == "value":
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def consumer_map(g) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def producer_map(g) -> dict[str, Any]:
    return {o: n for n in g.node for o in n.output}


def attr(node, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def fresh_name(g, base: str) -> str:
    taken = ({i.name for i in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
             | {n.name for n in g.node})
    k, name = 0, base
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def add_initializer(g, base: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    name = fresh_name(g, base)
    g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def opset_version(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def unsqueeze_axes(g, node) -> list[int] | None:
    """The axes of an Unsqueeze/Squeeze (input since opset 13, attribute before)."""
    if len(node.input) > 1:
        a = const_value(g, node.input[1])
        return None if a is None else [int(v) for v in np.asarray(a).reshape(-1)]
    a = attr(node, "axes")
    return None if a is None else [int(v) for v in a]


def _subgraph_reads(node) -> set[str]:
    """Every name read inside ``node``'s subgraphs (If/Loop/Scan bodies), nested ones included: outer names the
    bodies may use."""
    names: set[str] = set()
    for a in node.attribute:
        for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for sn in sub.node:
                names.update(sn.input)
                names.update(_subgraph_reads(sn))
    return names


def replace_node(g, old, *new) -> None:
    """Put the nodes ``new`` (in order) where ``old`` was in ``g``'s node list."""
    idx = list(g.node).index(old)
    g.node.remove(old)
    for n in reversed(new):
        g.node.insert(idx, n)


def remove_dead_nodes(model) -> int:
    """Drop nodes whose outputs nothing uses and the initializers no node uses; return nodes dropped."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
            needed.update(_subgraph_reads(n))
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


def probe_session(model, extra_outputs: list[Any] = ()) -> Any:
    from seqdeploy.runtime.session import SessionSettings, make_session

    m = model
    if extra_outputs:
        import onnx

        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.graph.output.extend(extra_outputs)
    return make_session(m.SerializeToString(), SessionSettings(threads=1, graph_optimization="disable"),
                        wrap_errors=False)


# ----------------------------------------------------------------------------- passes


def fold_static_shapes(model) -> int:
    """Shape arithmetic whose value does not depend on the batch becomes constants (see the module docstring)."""
    import onnx
    from onnx import helper

    g = model.graph
    inits = initializers(g)
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
    prod = producer_map(g)
    boundary = sorted({i for n in g.node if not set(n.output) & derived for i in n.input if i in derived})
    boundary = [b for b in boundary if types.get(b) in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)]
    # a Reshape whose target is computed: its output's shape at every probe batch says the target
    reshapes = [n for n in g.node if n.op_type == "Reshape" and n.input[1] in derived and n.output[0] in types
                and not attr(n, "allowzero", 0)]
    probes = list(dict.fromkeys(boundary + [n.output[0] for n in reshapes]))
    if not probes:
        return 0
    extra = [helper.make_tensor_value_info(b, types[b], None) for b in probes]
    sess = probe_session(model, extra)
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
        n.input[1] = add_initializer(g, f"{n.output[0].split(':')[0]}_target", target)
        done += 1
    consumers = consumer_map(g)
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
                    and all(u.op_type == "Reshape" and u.input[1] == name and not attr(u, "allowzero", 0) for u in users)
                    and -1 not in a.tolist() and 0 not in a.tolist()):
                continue
            new = a.copy()
            new[moving] = -1
        users = [u for u in consumers.get(name, []) if not set(u.output) & derived and name in u.input]
        if not users:
            continue
        cname = add_initializer(g, f"{name.split(':')[0]}_static", new.astype(a.dtype))
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
    prod = producer_map(g)
    cons = consumer_map(g)
    outputs = {o.name for o in g.output}
    inits = initializers(g)
    done = 0
    for conv in [n for n in g.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]:
        w_name = conv.input[1]
        if w_name not in inits:
            continue
        w = numpy_helper.to_array(inits[w_name])
        ks = attr(conv, "kernel_shape", list(w.shape[2:]))
        if w.ndim != 4 or w.shape[2] != 1 or list(ks)[0] != 1:
            continue
        pads = list(attr(conv, "pads", [0, 0, 0, 0]))
        strides = list(attr(conv, "strides", [1, 1]))
        dil = list(attr(conv, "dilations", [1, 1]))
        if attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or pads[0] or pads[2] or strides[0] != 1:
            continue
        users = cons.get(conv.output[0], [])
        if conv.output[0] in outputs or len(users) != 1 or users[0].op_type != "Squeeze" or unsqueeze_axes(g, users[0]) != [2]:
            continue
        src = prod.get(conv.input[0])
        if src is None:
            continue
        if src.op_type == "Unsqueeze" and unsqueeze_axes(g, src) == [2]:
            x3 = src.input[0]
        elif src.op_type == "Reshape":
            target = const_value(g, src.input[1])
            if target is None or target.shape != (4,) or target[2] != 1 or 0 in target.tolist():
                continue
            shape3 = add_initializer(g, f"{src.output[0].split(':')[0]}_3d", np.delete(target, 2).astype(np.int64))
            reshape3 = helper.make_node("Reshape", [src.input[0], shape3], [fresh_name(g, f"{src.output[0]}_3d")],
                                        name=fresh_name(g, f"{src.name}_3d"))
            g.node.insert(list(g.node).index(conv), reshape3)
            x3 = reshape3.output[0]
        elif src.op_type == "Transpose" and prod.get(src.input[0]) is not None and prod[src.input[0]].op_type == "Unsqueeze":
            unsq = prod[src.input[0]]  # [N, W, C] -> Unsqueeze(a) -> Transpose(perm) -> [N, C, 1, W]
            axes, perm = unsqueeze_axes(g, unsq), list(attr(src, "perm", []))
            if axes is None or len(axes) != 1 or len(perm) != 4 or perm[2] != axes[0] % 4:
                continue
            a = axes[0] % 4
            perm3 = [q - (q > a) for q in perm if q != a]
            t3 = helper.make_node("Transpose", [unsq.input[0]], [fresh_name(g, f"{src.output[0]}_3d")],
                                  name=fresh_name(g, f"{src.name}_3d"), perm=perm3)
            g.node.insert(list(g.node).index(conv), t3)
            x3 = t3.output[0]
        else:
            continue
        sq = users[0]
        w3 = add_initializer(g, f"{w_name.split(':')[0]}_1d", w[:, :, 0, :])
        new = helper.make_node("Conv", [x3, w3, *conv.input[2:]], [sq.output[0]], name=conv.name or sq.name,
                               kernel_shape=[int(w.shape[3])], pads=[pads[1], pads[3]], strides=[strides[1]],
                               dilations=[dil[1]], group=int(attr(conv, "group", 1)))
        idx = list(g.node).index(conv)
        g.node.remove(conv)
        g.node.remove(sq)
        g.node.insert(idx, new)
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
        cons = consumer_map(g)
        inits = initializers(g)
        for conv in [n for n in g.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]:
            if conv.input[1] not in inits or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits):
                continue
            users = cons.get(conv.output[0], [])
            if conv.output[0] in outputs or len(users) != 1 or users[0].op_type not in ("Add", "Mul"):
                continue
            op = users[0]
            other = op.input[1] if op.input[0] == conv.output[0] else op.input[0]
            val = const_value(g, other)
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
            w_name = add_initializer(g, f"{conv.input[1].split(':')[0]}_folded", w)
            b_name = add_initializer(g, f"{conv.name or 'conv'}_bias_folded", b)
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


__all__ = ["PROBE_BATCHES", "add_initializer", "attr", "const_value", "consumer_map", "fold_conv_affine", "fold_static_shapes",
           "fresh_name", "initializers", "native_conv1d", "opset_version", "probe_feeds", "probe_session", "producer_map",
           "remove_dead_nodes", "unsqueeze_axes"]
