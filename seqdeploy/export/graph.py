"""Shared ONNX graph helpers of the export: tensor names, every (sub)graph, renaming, the layer a node came
from, op counts and a topological sort. Only onnx is imported, lazily.

    >>> from seqdeploy.export.graph import sanitize_name, unique_names
    >>> sanitize_name("input layer:0"), unique_names(["x", "x"])
    ('input_layer_0', ['x', 'x_1'])
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterator


def sanitize_name(name: str, fallback: str = "tensor") -> str:
    """Make a tensor name safe for every client: only ``[A-Za-z0-9_]``, not starting with a digit.

    >>> sanitize_name("input layer:0")
    'input_layer_0'
    """
    out = re.sub(r"[^A-Za-z0-9_]", "_", str(name)).strip("_") or fallback
    if out[0].isdigit():
        out = f"{fallback}_{out}"
    return out


def unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats suffixed ``_1``, ``_2``, ... (first occurrence unchanged)."""
    seen: Counter = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n] - 1}")
    return out


def graphs(model) -> Iterator[Any]:
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
    for g in graphs(model):
        for node in g.node:
            c[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
    return dict(sorted(c.items()))


def layer_of(node_name: str, layer_names: list[str]) -> str | None:
    """Best guess of the Keras layer a tf2onnx node came from (its name path contains the layer name)."""
    parts = re.split(r"[/:]", node_name)
    for name in sorted(layer_names, key=len, reverse=True):
        if name in parts:
            return name
    for name in sorted(layer_names, key=len, reverse=True):
        if name and name in node_name:
            return name
    return None


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


def rename_inputs(model, mapping: dict[str, str]) -> None:
    """Point every node input (subgraphs too) named in ``mapping`` at its new tensor."""
    for g in graphs(model):
        for node in g.node:
            for k, n in enumerate(node.input):
                if n in mapping:
                    node.input[k] = mapping[n]


def keep_io(model, inputs: list[str], outputs: list[str]) -> None:
    """Keep exactly ``inputs`` and ``outputs`` (in these orders) as the graph's inputs and outputs.

    tf2onnx ``from_function`` also lists tensors the function captured (e.g. the
    constant mean of an adapted ``Normalization``) as graph inputs, although
    freezing made them constants: those unused inputs are dropped.
    """
    from seqdeploy.errors import ExportError

    graph = model.graph
    used = {n for g in graphs(model) for node in g.node for n in node.input}
    for what, items, wanted in (("outputs", graph.output, outputs), ("inputs", graph.input, inputs)):
        by_name = {o.name: o for o in items}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ExportError(f"the converted graph lacks the model {what} {missing} (found {sorted(by_name)}); "
                              "report it with the model attached")
        extra = [n for n in by_name if n not in wanted and what == "inputs" and n in used]
        if extra:
            raise ExportError(f"the converted graph needs unexpected inputs {extra}; report it with the model attached")
        kept = [by_name[n] for n in wanted]
        del items[:]
        items.extend(kept)


def toposort(graph) -> None:
    """Sort ``graph.node`` so every node comes after the producers of its inputs (subgraph
    references to outer tensors count as inputs)."""
    from onnx import AttributeProto

    def needs(node) -> set[str]:
        names = set(node.input)
        for attr in node.attribute:
            subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                for n in sub.node:
                    names |= needs(n)
        return names

    nodes = list(graph.node)
    producer = {out: k for k, n in enumerate(nodes) for out in n.output if out}
    deps = [{producer[i] for i in needs(n) if i in producer and producer[i] != k} for k, n in enumerate(nodes)]
    order, state = [], [0] * len(nodes)  # 0 new, 1 visiting, 2 done
    for start in range(len(nodes)):
        stack = [(start, iter(sorted(deps[start])))]
        if state[start]:
            continue
        state[start] = 1
        while stack:
            k, it = stack[-1]
            nxt = next((d for d in it if state[d] != 2), None)
            if nxt is None:
                stack.pop()
                state[k] = 2
                order.append(k)
            elif state[nxt] == 1:
                raise ValueError(f"cycle in the stitched graph at node {nodes[nxt].name!r}")
            else:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(deps[nxt]))))
    del graph.node[:]
    graph.node.extend(nodes[k] for k in order)


__all__ = ["sanitize_name", "unique_names", "graphs", "op_counts", "layer_of", "rename_io", "rename_inputs",
           "keep_io", "toposort"]
