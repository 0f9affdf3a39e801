"""Graph fixes and graph queries for exported ONNX models (each a small function).

:func:`fix_erfc` (TF's exact GELU uses ``Erfc``, which is not an ONNX op),
:func:`name_batch_axis` (tf2onnx names the dynamic batch ``unk__N``),
:func:`rename_io` (names from the Keras model), :func:`check_opset_support` and
:func:`check_runtime_loadable` (anything onnxruntime refuses is reported by layer
name), plus :func:`op_counts` and :func:`loop_and_contrib_warnings`.
Re-exported by :mod:`seqdeploy.export`; only onnx / onnxruntime are imported, lazily.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterator

from seqdeploy.errors import OpsetError, UnsupportedLayerError

BATCH = "batch"


def sanitize_name(name: str, fallback: str = "tensor") -> str:
    """Make a tensor name safe for every client: only ``[A-Za-z0-9_]``, not starting with a digit.

    >>> sanitize_name("input layer:0")
    'input_layer_0'
    """
    out = re.sub(r"[^A-Za-z0-9_]", "_", str(name)).strip("_") or fallback
    if out[0].isdigit():
        out = f"{fallback}_{out}"
    return out


def _unique(names: list[str]) -> list[str]:
    seen: Counter = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n] - 1}")
    return out


def fix_erfc(model) -> int:
    """Replace every ``Erfc(x)`` node (not an ONNX op; TF's exact GELU emits it) by ``1 - Erf(x)``.

    Returns the number of nodes replaced. ``Erf`` exists since opset 9.

    >>> fix_erfc(model_proto)  # doctest: +SKIP
    1
    """
    import numpy as np
    from onnx import helper, numpy_helper

    count = 0
    for graph in _graphs(model):
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


def drop_value_info(model) -> None:
    """Forget tf2onnx's intermediate shapes: shape inference recomputes them from the fixed graph."""
    del model.graph.value_info[:]


#: the fixes every converted graph goes through, in this order (add a fix: a function of the ModelProto here)
GRAPH_FIXES: tuple = (fix_erfc, drop_value_info, name_batch_axis)


def apply_graph_fixes(model) -> None:
    """Run :data:`GRAPH_FIXES` on ``model`` in order."""
    for fix in GRAPH_FIXES:
        fix(model)


def rename_io(model, input_names: list[str], output_names: list[str]) -> None:
    """Rename graph inputs/outputs (in order) everywhere they are referenced.

    >>> rename_io(model_proto, ["features"], ["probability"])  # doctest: +SKIP
    """
    graph = model.graph
    mapping: dict[str, str] = {}
    for vi, new in zip(graph.input, input_names):
        mapping[vi.name] = new
    for vi, new in zip(graph.output, output_names):
        mapping[vi.name] = new
    mapping = {k: v for k, v in mapping.items() if k != v}
    if not mapping:
        return
    taken = {n for node in graph.node for n in list(node.input) + list(node.output)} | {i.name for i in graph.initializer}
    clash = (taken - set(mapping)) & set(mapping.values())
    if clash:  # an internal tensor already uses a wanted name: move it aside first
        aside = {n: f"{n}__internal" for n in clash}
        _rename_everywhere(graph, aside)
    _rename_everywhere(graph, mapping)


def _rename_everywhere(graph, mapping: dict[str, str]) -> None:
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n in mapping:
                node.input[i] = mapping[n]
        for i, n in enumerate(node.output):
            if n in mapping:
                node.output[i] = mapping[n]
    for coll in (graph.input, graph.output, graph.value_info, graph.initializer):
        for item in coll:
            if item.name in mapping:
                item.name = mapping[item.name]


def _graphs(model) -> Iterator[Any]:
    """The main graph and every subgraph (Loop/If/Scan bodies)."""
    from onnx import AttributeProto

    stack = [model.graph]
    while stack:
        g = stack.pop()
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def op_counts(model) -> dict[str, int]:
    """``{op_type: count}`` over the main graph and subgraphs (domain-qualified unless ai.onnx)."""
    c: Counter = Counter()
    for g in _graphs(model):
        for node in g.node:
            c[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
    return dict(sorted(c.items()))


def _layer_of(node_name: str, layer_names: list[str]) -> str | None:
    """Best guess of the Keras layer a tf2onnx node came from (its name path contains the layer name)."""
    parts = re.split(r"[/:]", node_name)
    for name in sorted(layer_names, key=len, reverse=True):
        if name in parts:
            return name
    for name in sorted(layer_names, key=len, reverse=True):
        if name and name in node_name:
            return name
    return None


def loop_and_contrib_warnings(model, layer_names: list[str] = ()) -> tuple[str, ...]:
    """One warning per ``Loop``/``Scan`` node and per op outside the standard domains.

    >>> loop_and_contrib_warnings(model_proto, ["gru"])  # doctest: +SKIP
    ("Loop node 'gru/while_loop' (layer 'gru'): generic loop, ~3-8x slower than a native op and not quantizable",)
    """
    out = []
    for node in model.graph.node:
        layer = _layer_of(node.name, list(layer_names))
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

    from seqdeploy.export import DEFAULT_OPSET, MIN_OPSET

    for g in _graphs(model):
        for node in g.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            layer = _layer_of(node.name, list(layer_names))
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
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        msg = str(exc)
        node_name = None
        m = re.search(r"node with name '([^']*)'", msg) or re.search(r"Node \(([^)]*)\)", msg)
        if m:
            node_name = m.group(1)
        ops = set(re.findall(r"implementation for (\w+)", msg)) | set(re.findall(r"[\w.]*:(\w+)\(", msg))
        if node_name is None and ops:  # onnxruntime named the op only: find its node
            node_name = next((n.name for g in _graphs(model) for n in g.node if n.op_type in ops), None)
        layer = _layer_of(node_name, list(layer_names)) if node_name else None
        where = f"layer {layer!r}" if layer else (f"node {node_name!r}" if node_name else "the converted graph")
        what = f" (op {', '.join(sorted(ops))})" if ops else ""
        raise UnsupportedLayerError(
            f"{where}{what} cannot be loaded by onnxruntime: {msg.splitlines()[0][:300]}; "
            "replace the layer or try another opset"
        ) from None
