"""Find the first Keras layer whose output the ONNX graph does not reproduce.

When verify fails, "output_0 differs by 0.9" says nothing about *where*. The
locator runs one feed through both sides and compares layer by layer:

* Keras: every top-level layer's output (a nested model counts as one layer;
  shared layers, called more than once, have no single output and are skipped),
  from one ``keras.Model(model.inputs, [layer.output, ...])`` call.
* ONNX: every intermediate tensor, by making all node outputs graph outputs of a
  copy of the model (onnxruntime graph optimisations off, so nothing is fused away).
* A layer *matches* when some ONNX tensor of the same shape equals its output
  within ``atol + rtol * |keras|``. The export does not keep a layer -> tensor map
  (tf2onnx fuses and renames), so tensors are matched by value, in any axis
  order and ignoring unit axes (tf2onnx keeps convolutions channels-first); the
  reported tensor prefers one whose node name carries the layer's name.
* The first mismatch is the first layer (in graph order) that does not match
  while none of the layers downstream of it match either: a layer whose output
  was fused into the next op (no tensor of its own) but whose successors match
  is reported as ``unobserved``, not as the culprit.

    >>> r = locate_mismatch("model.keras", "model.onnx", {"tokens": x})   # doctest: +SKIP
    >>> r.first_mismatch, r.message                                       # doctest: +SKIP
    ('dense_1', "first layer whose output differs: 'dense_1' (Dense), max abs error 0.41 ...")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqdeploy.errors import VerifyInputError, first_line

MATCH, DIFFERS, UNOBSERVED, SKIPPED = "match", "differs", "unobserved", "skipped"


@dataclasses.dataclass(frozen=True)
class LayerCheck:
    """One Keras layer's output against the closest ONNX intermediate tensor."""

    layer: str
    class_name: str
    shape: tuple
    status: str  # match | differs | unobserved | skipped
    onnx_tensor: str | None
    max_abs_error: float | None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class LocateResult:
    first_mismatch: str | None
    layers: tuple[LayerCheck, ...]
    message: str
    batch_size: int


def locate_mismatch(keras_model: Any, onnx_model: Any, feeds: Mapping[str, np.ndarray], *, atol: float = 1e-4,
                    rtol: float = 1e-3, unsafe: bool = False) -> LocateResult:
    """Compare every layer output of ``keras_model`` (a model or a path) with the intermediate
    tensors of ``onnx_model`` (a ModelProto or a path) on one feed (ONNX input name -> array)."""
    from seqdeploy.export.convert import keras_input_names, load_checked_onnx, load_keras_model

    model = load_keras_model(keras_model, unsafe=unsafe) if isinstance(keras_model, (str, Path)) else keras_model
    proto = load_checked_onnx(onnx_model) if isinstance(onnx_model, (str, Path)) else onnx_model
    names = keras_input_names(model)
    missing = [n for n in names if n not in feeds]
    if missing:
        raise VerifyInputError(f"locate: no feed for input(s) {missing} (got {sorted(feeds)}); pass one array per "
                               "model input, named like the ONNX inputs")
    xs = [np.asarray(feeds[n]) for n in names]
    layers, keras_out = _keras_layer_outputs(model, xs)
    onnx_out = _onnx_intermediates(proto, {n: x for n, x in zip(names, xs)})
    by_dims: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    for name, value in onnx_out.items():
        if value.dtype.kind == "f" and value.ndim >= 1:
            by_dims.setdefault(_dims_key(value), []).append((name, _squeeze(value)))
    producers = {out: node.name for node in proto.graph.node for out in node.output}

    checks = []
    for layer, out in zip(layers, keras_out):
        if out is None:
            checks.append(LayerCheck(layer.name, type(layer).__name__, (), SKIPPED, None, None,
                                     "shared layer or several outputs: no single output to compare"))
            continue
        want = np.asarray(out, np.float64)
        best = None  # (not within tolerance, not named after the layer (only among matches), error, tensor)
        wsq = _squeeze(want)
        for tname, value in by_dims.get(_dims_key(want), []):
            for view in _layouts(value, wsq.shape):
                diff = np.abs(view.astype(np.float64) - wsq)
                ok = bool(np.all(diff <= atol + rtol * np.abs(wsq)))
                named = layer.name in f"{producers.get(tname, '')}/{tname}"
                key = (not ok, ok and not named, float(diff.max()) if diff.size else 0.0, tname)
                best = key if best is None or key < best else best
        if best is None:
            checks.append(LayerCheck(layer.name, type(layer).__name__, tuple(want.shape), UNOBSERVED, None, None,
                                     "no ONNX tensor of this shape (in any axis order)"))
        else:
            checks.append(LayerCheck(layer.name, type(layer).__name__, tuple(want.shape),
                                     DIFFERS if best[0] else MATCH, best[3], best[2]))
    checks = _mark_unobserved(checks, _downstream(model, [c.layer for c in checks]))
    first = next((c for c in checks if c.status == DIFFERS), None)
    if first is None:
        message = "every observed layer output matches Keras on this feed"
    else:
        before = [c.layer for c in checks[: checks.index(first)] if c.status == MATCH]
        message = (f"first layer whose output differs: {first.layer!r} ({first.class_name}), max abs error "
                   f"{first.max_abs_error:.3g} against the closest ONNX tensor {first.onnx_tensor!r}"
                   + (f"; {len(before)} layer(s) before it match" if before else "; no layer before it matches"))
    return LocateResult(first_mismatch=first.layer if first else None, layers=tuple(checks), message=message,
                        batch_size=len(xs[0]))


def locate_for_verify(model, onnx_path: Path, feed_name: str, feeds, reports, *, rows: int = 16) -> tuple[str, ...]:
    """The locator's one-line finding for a failed verify, on the feed with the worst error.

    Never raises: a locator problem becomes the line itself (verify's verdict stands on its own).
    """
    worst = max(reports, key=lambda r: r.max_abs_error if r.max_abs_error == r.max_abs_error else -1.0, default=None)
    kind = (worst.worst_feed or "").split(" (batch", 1)[0] if worst is not None else ""
    x = next((x for k, x in feeds if k == kind), feeds[0][1] if feeds else None)
    if x is None or len(model.inputs) != 1:
        return ()
    try:
        result = locate_mismatch(model, onnx_path, {feed_name: x[:rows]})
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the verify result
        return (f"layer locator could not run: {type(exc).__name__}: {first_line(exc, limit=200)}",)
    return (f"layer locator ({kind or 'first'} feed): {result.message}",)


def _squeeze(x: np.ndarray) -> np.ndarray:
    """Drop size-1 axes after the batch axis (tf2onnx runs Conv1D as a 2D Conv with a unit axis)."""
    keep = [0] + [i for i in range(1, x.ndim) if x.shape[i] != 1]
    return x.reshape([x.shape[i] for i in keep])


def _dims_key(x: np.ndarray) -> tuple:
    sq = _squeeze(x)
    return (sq.shape[0], tuple(sorted(sq.shape[1:])))


def _layouts(value: np.ndarray, shape: tuple):
    """``value`` (squeezed) in every axis order (batch first) that has ``shape``: tf2onnx keeps
    convolutions channels-first, Keras channels-last."""
    import itertools

    seen = set()
    for perm in itertools.permutations(range(1, value.ndim)):
        order = (0, *perm)
        if tuple(value.shape[i] for i in order) == tuple(shape) and order not in seen:
            seen.add(order)
            yield value.transpose(order)


def _keras_layer_outputs(model, xs: list[np.ndarray]) -> tuple[list, list]:
    """Top-level layers (InputLayers left out) and their outputs on ``xs`` (None where not comparable)."""
    import keras

    layers = [lay for lay in model.layers if type(lay).__name__ != "InputLayer"]
    tensors, index = [], []
    for k, layer in enumerate(layers):
        try:
            out = layer.output
        except (AttributeError, ValueError, RuntimeError):  # shared layer: several inbound nodes
            continue
        if isinstance(out, (list, tuple)):
            continue
        index.append(k)
        tensors.append(out)
    outputs: list = [None] * len(layers)
    if tensors:
        probe = keras.Model(model.inputs, tensors)
        got = probe(list(xs), training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        for k, value in zip(index, got):
            outputs[k] = np.asarray(value)
    return layers, outputs


def _onnx_intermediates(proto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node output of ``proto`` on ``feeds`` (graph optimisations off)."""
    import onnx

    from seqdeploy.runtime.session import SessionSettings, make_session

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        typed = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    except Exception:  # noqa: BLE001 - shape inference is a convenience here
        typed = {}
    have = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for out in node.output:
            if out and out not in have:
                have.add(out)
                vi = typed.get(out)
                if vi is not None:
                    model.graph.output.append(vi)
                else:
                    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(out))
    sess = make_session(model.SerializeToString(), SessionSettings(graph_optimization="disable"), wrap_errors=False)
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, feeds)
    return {n: np.asarray(v) for n, v in zip(names, values) if isinstance(v, np.ndarray)}


def _downstream(model, layer_names: list[str]) -> dict[str, set[str]]:
    """Layer name -> names of the layers that (transitively) consume its output."""
    config = model.get_config()
    entries = config.get("layers", []) if isinstance(config, dict) else []
    parents: dict[str, set[str]] = {}
    for entry in entries:
        name = (entry.get("config") or {}).get("name") or entry.get("name")
        parents[name] = set(_history_names(entry.get("inbound_nodes", [])))
    if not any(parents.values()):  # Sequential: a chain
        return {n: set(layer_names[i + 1:]) for i, n in enumerate(layer_names)}
    children: dict[str, set[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, set()).add(child)
    out = {}
    for name in layer_names:
        seen, stack = set(), [name]
        while stack:
            for c in children.get(stack.pop(), ()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        out[name] = seen
    return out


def _history_names(obj) -> list[str]:
    if isinstance(obj, dict):
        found = []
        hist = (obj.get("config") or {}).get("keras_history") if isinstance(obj.get("config"), dict) else None
        if hist:
            found.append(hist[0])
        for v in obj.values():
            found.extend(_history_names(v))
        return found
    if isinstance(obj, list):
        return [n for v in obj for n in _history_names(v)]
    return []


def _mark_unobserved(checks: list[LayerCheck], downstream: dict[str, set[str]]) -> list[LayerCheck]:
    """A differing layer with a matching layer downstream was fused away, not wrong."""
    matched = {c.layer for c in checks if c.status == MATCH}
    out = []
    for c in checks:
        if c.status == DIFFERS and downstream.get(c.layer, set()) & matched:
            c = dataclasses.replace(c, status=UNOBSERVED, note="no own tensor in the ONNX graph (fused), "
                                                              "a layer downstream of it matches")
        out.append(c)
    return out
