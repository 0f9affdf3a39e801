"""Graph fixes and graph queries for exported ONNX models (each a small function).

:func:`fix_erfc` (TF's exact GELU uses ``Erfc``, which is not an ONNX op),
:func:`fold_channel_affine` (a per-channel Mul+Add as one depthwise Conv, onnxruntime's fast layout),
:func:`name_batch_axis` (tf2onnx names the dynamic batch ``unk__N``),
:func:`check_opset_support` and :func:`check_runtime_loadable` (anything onnxruntime
refuses is reported by layer name), plus :func:`loop_and_contrib_warnings`
(renaming and op counts are graph helpers: :mod:`seqdeploy.export.graph`).
Re-exported by :mod:`seqdeploy.export.convert`; only onnx / onnxruntime are imported, lazily.
"""

from __future__ import annotations

import re
from typing import Any

from seqdeploy.errors import OpsetError, UnsupportedLayerError
from seqdeploy.export.graph import graphs, layer_of, op_counts, rename_io, sanitize_name  # noqa: F401 - op_counts, rename_io: re-exported
from seqdeploy.export.opsets import BATCH, DEFAULT_OPSET, MIN_OPSET, custom_ops_libraries
from seqdeploy.export.optimize import optimize_graph


def fix_erfc(model) -> int:
    """Replace every ``Erfc(x)`` node (not an ONNX op; TF's exact GELU emits it) by ``1 - Erf(x)``.

    Returns the number of nodes replaced. ``Erf`` exists since opset 9.

    >>> fix_erfc(model_proto)  # doctest: +SKIP
    1
    """
    import numpy as np
    from onnx import helper, numpy_helper

    count = 0
    for graph in graphs(model):
        new_nodes = []
        for node in graph.node:
            if node.op_type == "Erfc" and node.domain in ("", "ai.onnx"):
                count += 1
                base = node.name or f"erfc_{count}"
                one = f"{base}/one"
                erf = f"{base}/erf"
                graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
                new_nodes.append(helper.make_node("Erf", [node.input[0]], [erf], name=erf))
                new_nodes.append(helper.make_node("Sub", [one, erf], [node.output[0]], name=f"{base}/one_minus_erf"))
            else:
                new_nodes.append(node)
        if len(new_nodes) != len(graph.node):
            del graph.node[:]
            graph.node.extend(new_nodes)
    return count


def name_batch_axis(model, batch: str = BATCH) -> None:
    """Name the dynamic batch axis ``batch`` in inputs, outputs and value_info.

    tf2onnx names every dynamic dimension ``unk__N``; the batch axis is axis 0
    of every graph input and output. Any ``unk__N`` symbol found on axis 0 of an
    input/output is renamed everywhere it occurs; other ``unk__N`` dims become
    plain unknown dimensions (no symbol), which is what they are.

    >>> name_batch_axis(model_proto)  # doctest: +SKIP
    """
    graph = model.graph
    batch_syms = set()
    for vi in list(graph.input) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].dim_param and (dims[0].dim_param.startswith("unk__") or dims[0].dim_param == batch):
            batch_syms.add(dims[0].dim_param)
        elif dims and not dims[0].dim_param and not dims[0].HasField("dim_value"):
            dims[0].dim_param = batch
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param in batch_syms:
                dim.dim_param = batch
            elif dim.dim_param.startswith("unk__"):
                dim.ClearField("dim_param")


def fold_channel_affine(model) -> int:
    """Rewrite ``Add(Mul(x, s), b)`` with per-channel constants ``s, b`` of shape ``[1, C, 1, 1]`` (what an
    inference BatchNormalization after an activation exports to) as one depthwise 1x1 ``Conv`` (``group=C``,
    weights ``s``, bias ``b``); when the Add feeds only a ``MaxPool`` and every ``s > 0``, the MaxPool moves in
    front of it. Returns the number of pairs rewritten.

    Why: onnxruntime runs the Conv in its blocked NCHWc layout with the convolutions around it, but a
    broadcast Add stays in plain NCHW, so each call paid two layout conversions (``benchmarks/TINY_BATCH64.md``:
    the digits CNN's bound run 0.77-0.84x). The rewrite is exact: the 1x1 depthwise Conv computes
    ``x * s`` then ``+ b`` per element like the pair did, and the max commutes with ``x * s + b`` for
    ``s > 0`` because float rounding is monotonic. Only rank-4 ``x`` whose channel axis is known to be
    ``C`` is rewritten (shape inference), so broadcasting never changes.
    """
    import numpy as np
    from onnx import helper, numpy_helper, shape_inference

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    try:
        inferred = shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - no shapes, no rewrite
        return 0
    shapes = {}
    for vi in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def const_and_other(node) -> tuple[Any, str] | None:
        for k in (1, 0):
            if len(node.input) == 2 and node.input[k] in inits and node.input[1 - k] not in inits:
                return numpy_helper.to_array(inits[node.input[k]]), node.input[1 - k]
        return None

    done = 0
    orphans: set[str] = set()
    for mul in list(g.node):
        if mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") or mul.output[0] in outputs:
            continue
        got = const_and_other(mul)
        nxt = consumers.get(mul.output[0], [])
        if got is None or len(nxt) != 1 or nxt[0].op_type != "Add" or nxt[0].domain not in ("", "ai.onnx"):
            continue
        scale, src = got
        add = nxt[0]
        got_b = const_and_other(add)
        if got_b is None or got_b[1] != mul.output[0]:
            continue
        shift = got_b[0]
        if scale.dtype != np.float32 or shift.dtype != np.float32 or scale.ndim != 4 or shift.shape != scale.shape                 or scale.shape[0] != 1 or scale.shape[2:] != (1, 1):
            continue
        c = int(scale.shape[1])
        x_shape = shapes.get(src)
        if x_shape is None or len(x_shape) != 4 or x_shape[1] != c:
            continue
        end = add.output[0]
        pool = consumers.get(end, [])
        move_pool = (len(pool) == 1 and pool[0].op_type == "MaxPool" and pool[0].domain in ("", "ai.onnx")
                     and end not in outputs and len(pool[0].output) == 1 and bool(np.all(scale > 0)))
        base = sanitize_name(mul.name or mul.output[0], "affine")
        w_name, b_name = f"{base}/dw_scale", f"{base}/dw_shift"
        g.initializer.extend([numpy_helper.from_array(scale.reshape(c, 1, 1, 1), w_name),
                              numpy_helper.from_array(shift.reshape(c), b_name)])
        idx = list(g.node).index(mul)
        if move_pool:
            mp = pool[0]
            new_pool = helper.make_node("MaxPool", [src], [f"{base}/pooled"], name=mp.name)
            new_pool.attribute.extend(mp.attribute)
            new = [new_pool, helper.make_node("Conv", [f"{base}/pooled", w_name, b_name], [mp.output[0]],
                                              group=c, kernel_shape=[1, 1], name=f"{base}/as_depthwise_conv")]
            drop = (mul, add, mp)
        else:
            new = [helper.make_node("Conv", [src, w_name, b_name], [end], group=c, kernel_shape=[1, 1],
                                    name=f"{base}/as_depthwise_conv")]
            drop = (mul, add)
        for n in drop:
            g.node.remove(n)
        for k, n in enumerate(new):
            g.node.insert(idx + k, n)
        orphans.update(i for i in (*mul.input, *add.input) if i in inits)
        done += 1
    used = {i for n in g.node for i in n.input}
    for name in orphans - used:
        g.initializer.remove(inits[name])
    return done


def drop_value_info(model) -> None:
    """Forget tf2onnx's intermediate shapes: shape inference recomputes them from the fixed graph."""
    del model.graph.value_info[:]


#: the fixes every converted graph goes through, in this order (add a fix: a function of the ModelProto here)
GRAPH_FIXES: tuple = (fix_erfc, optimize_graph, fold_channel_affine, drop_value_info, name_batch_axis)


def apply_graph_fixes(model) -> list[Any]:
    """Run :data:`GRAPH_FIXES` on ``model`` in order; return what the fixes reported (their non-None results)."""
    reports = []
    for fix in GRAPH_FIXES:
        out = fix(model)
        if out is not None and not isinstance(out, int):
            reports.append(out)
    return reports


def loop_and_contrib_warnings(model, layer_names: list[str] = ()) -> tuple[str, ...]:
    """One warning per ``Loop``/``Scan`` node and per op outside the standard domains.

    >>> loop_and_contrib_warnings(model_proto, ["gru"])  # doctest: +SKIP
    ("Loop node 'gru/while_loop' (layer 'gru'): generic loop, ~3-8x slower than a native op and not quantizable",)
    """
    out = []
    for node in model.graph.node:
        layer = layer_of(node.name, list(layer_names))
        where = f" (layer {layer!r})" if layer else ""
        if node.op_type in ("Loop", "Scan") and node.domain in ("", "ai.onnx"):
            out.append(
                f"{node.op_type} node {node.name!r}{where}: generic loop, typically 3-8x slower than a native "
                "recurrent op and not quantizable"
            )
        elif node.domain not in ("", "ai.onnx", "ai.onnx.ml"):
            out.append(f"{node.domain}.{node.op_type} node {node.name!r}{where}: contrib-domain op, not portable to every runtime")
    return tuple(out)


def check_opset_support(model, opset: int, layer_names: list[str] = ()) -> None:
    """Raise :class:`OpsetError` if a standard op in the graph does not exist at ``opset``,
    and :class:`UnsupportedLayerError` for an op that is no ONNX op at all.

    >>> check_opset_support(model_proto, 13)  # doctest: +SKIP
    """
    from onnx import defs

    for g in graphs(model):
        for node in g.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            layer = layer_of(node.name, list(layer_names))
            where = f"layer {layer!r}" if layer else f"node {node.name!r}"
            if not defs.has(node.op_type):
                raise UnsupportedLayerError(
                    f"{where}: converts to {node.op_type!r}, which is not an ONNX operator; "
                    "replace the layer with a supported equivalent or report it with the model attached"
                )
            try:
                defs.get_schema(node.op_type, opset)
            except defs.SchemaError:
                since = min(s.since_version for s in defs.get_all_schemas_with_history() if s.name == node.op_type and s.domain == "")
                raise OpsetError(
                    f"{where} needs ONNX op {node.op_type} (available from opset {since}) but opset {opset} was "
                    f"requested; use opset {max(since, MIN_OPSET)} or higher (default {DEFAULT_OPSET})"
                ) from None


def check_runtime_loadable(model, layer_names: list[str] = ()) -> None:
    """Create an onnxruntime CPU session; a refusal becomes :class:`UnsupportedLayerError` naming the layer."""
    from seqdeploy.runtime.session import make_session

    libraries = custom_ops_libraries(model)  # a converter's ai.onnx.contrib ops (onnxruntime-extensions)
    try:
        make_session(model.SerializeToString(), custom_ops_libraries=libraries, wrap_errors=False)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        msg = str(exc)
        node_name = None
        m = re.search(r"node with name '([^']*)'", msg) or re.search(r"Node \(([^)]*)\)", msg)
        if m:
            node_name = m.group(1)
        ops = set(re.findall(r"implementation for (\w+)", msg)) | set(re.findall(r"[\w.]*:(\w+)\(", msg))
        if node_name is None and ops:  # onnxruntime named the op only: find its node
            node_name = next((n.name for g in graphs(model) for n in g.node if n.op_type in ops), None)
        layer = layer_of(node_name, list(layer_names)) if node_name else None
        where = f"layer {layer!r}" if layer else (f"node {node_name!r}" if node_name else "the converted graph")
        what = f" (op {', '.join(sorted(ops))})" if ops else ""
        raise UnsupportedLayerError(
            f"{where}{what} cannot be loaded by onnxruntime: {msg.splitlines()[0][:300]}; "
            "replace the layer or try another opset"
        ) from None
