"""Any Keras model (Sequential, Functional, nested) to ONNX with native recurrent ops.

tf2onnx converts a traced ``tf.function`` of the whole model, but turns every
Keras ``GRU`` / ``SimpleRNN`` and every masked recurrent layer into a slow,
opaque ``Loop``. Here each recurrent layer that has a native ONNX form is cut
out of the trace instead:

1. **discover**: the model is traced once with each candidate layer's ``call``
   replaced by a stand-in that records the call (input shape, whether Keras
   handed it a mask) and returns zeros of the layer's output shape. Shared
   layers (called more than once) get one cut per call.
2. **cut**: the model is traced again for tf2onnx ``from_function``; the
   stand-ins now return an extra function *input* (the layer's output
   placeholder) and hand their sequence input and mask to extra function
   *outputs*. Everything else, including how Keras propagates masks between
   layers (Embedding ``mask_zero``, Masking, mask-passing layers, a recurrent
   layer's output mask), is Keras's own code, traced and converted by tf2onnx.
3. **stitch**: each placeholder input is replaced by the native ONNX node built
   from the layer's weights (:func:`seqdeploy.export.layers.recurrent_onnx.build_recurrent`,
   reading the recorded input and mask), the extra outputs are dropped and the
   nodes are sorted topologically.

Graph inputs and outputs carry the Keras model's names (inputs: the
``keras.Input`` names; outputs: the output layers' names, ``output_N`` for
Sequential). Keras ``TimeDistributed`` is folded into the batch axis on the
way (see :func:`fold_time_distributed`).

    >>> conv = convert_native(keras_model, 17)      # doctest: +SKIP
    >>> conv.native_recurrent                        # doctest: +SKIP
    ('encoder: LSTM', 'decoder: GRU bidirectional')
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Iterator

REC = "seqdeploy__rec"
OUT = "seqdeploy__out"


@dataclasses.dataclass
class _Call:
    """One call of a native-candidate recurrent layer, as recorded while tracing."""

    layer: Any
    spec: Any  # RecurrentSpec
    out_shape: tuple
    has_mask: bool


def iter_layers(model) -> Iterator[Any]:
    """Every layer of ``model``, descending into nested models (not into wrappers)."""
    import keras

    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def is_native_candidate(layer) -> bool:
    from seqdeploy.export.layers.recurrent_onnx import RECURRENT_CLASSES

    cls = type(layer).__name__
    if cls == "Bidirectional":
        return type(layer.forward_layer).__name__ in RECURRENT_CLASSES
    return cls in RECURRENT_CLASSES


def fold_time_distributed(layer, x):
    """Apply ``TimeDistributed(inner)`` as reshape [B, T, ...] -> [B*T, ...] -> inner -> [B, T, ...].

    Keras 3 unrolls TimeDistributed into T copies of the inner layer when T is
    static (T MatMuls in the graph) and uses ``vectorized_map`` when T is dynamic,
    which tf2onnx converts into a Loop with wrong output shapes. Folding time
    into batch is exact for any inner layer at inference (no state across steps).

    >>> y = fold_time_distributed(keras.layers.TimeDistributed(keras.layers.Dense(2)), x)  # doctest: +SKIP
    """
    import tensorflow as tf

    shape = tf.shape(x)
    flat = tf.reshape(x, tf.concat([[-1], shape[2:]], axis=0))
    y = layer.layer(flat, training=False)
    y = tf.reshape(y, tf.concat([shape[:2], tf.shape(y)[1:]], axis=0))
    y.set_shape(layer.compute_output_shape(tuple(x.shape)))
    return y


@contextlib.contextmanager
def _patched(layers_and_calls: list[tuple[Any, Any]]) -> Iterator[None]:
    """Temporarily replace ``layer.call`` on these instances (Keras's ``__call__`` still runs
    around it: input casting, mask lookup, output mask via ``compute_mask``)."""
    for layer, fn in layers_and_calls:
        object.__setattr__(layer, "call", fn)
    try:
        yield
    finally:
        for layer, _ in layers_and_calls:
            layer.__dict__.pop("call", None)


@contextlib.contextmanager
def eager_tensors_as_variables(model) -> Iterator[None]:
    """Hold layers' eager tensor attributes (an adapted ``Normalization``'s ``mean``/``variance``) in
    variables while tracing, so that the frozen graph carries them as constants instead of asking for them
    as extra inputs (a traced function captures eager tensors as placeholders)."""
    import tensorflow as tf

    swapped = []
    for layer in iter_layers(model):
        for name, value in list(vars(layer).items()):
            if isinstance(value, tf.Tensor) and not isinstance(value, tf.Variable) and hasattr(value, "numpy"):
                object.__setattr__(layer, name, tf.Variable(value, trainable=False, name=f"{layer.name}_{name}"))
                swapped.append((layer, name, value))
    try:
        yield
    finally:
        for layer, name, value in swapped:
            object.__setattr__(layer, name, value)


def _time_distributed_patches(model) -> list[tuple[Any, Any]]:
    patches = []
    for layer in iter_layers(model):
        if type(layer).__name__ != "TimeDistributed":
            continue
        original = layer.call

        def call(inputs, training=None, mask=None, _layer=layer, _original=original):
            if mask is not None and "mask" in inspect.signature(_layer.layer.call).parameters:
                return _original(inputs, training=training, mask=mask)  # the inner layer reads the mask
            return fold_time_distributed(_layer, inputs)

        patches.append((layer, call))
    return patches


def _candidates(model) -> tuple[list[tuple[Any, Any]], list[str]]:
    from seqdeploy.export.layers.recurrent_onnx import NotNative, recurrent_spec

    found, notes = [], []
    for layer in iter_layers(model):
        if not is_native_candidate(layer):
            continue
        try:
            found.append((layer, recurrent_spec(layer)))
        except NotNative as exc:
            notes.append(f"layer {layer.name!r} stays a tf2onnx Loop: {exc}")
    return found, notes


def convert_native(model, opset: int, *, input_specs: list, output_names: list[str], from_function,
                   layer_names: list[str]):
    """Trace, cut, convert with ``from_function(fn, specs, opset, what, layer_names)`` and stitch.

    Returns ``(onnx.ModelProto, native descriptions, notes)``; the proto's inputs
    are named like ``input_specs`` and its outputs ``output_names``.
    """
    import tensorflow as tf

    from seqdeploy.export.convert import rename_io, sanitize_name

    candidates, notes = _candidates(model)
    td = _time_distributed_patches(model)
    single = len(input_specs) == 1

    def run_model(xs):
        out = model(xs[0] if single else list(xs), training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    # 1. discover the calls
    calls: list[_Call] = []

    def discover(layer, spec, original):
        def call(sequences, initial_state=None, mask=None, training=None, **kwargs):
            if initial_state is not None or kwargs or (mask is not None and len(mask.shape) != 2):
                calls.append(_Call(layer, None, (), False))  # stays a Loop
                return original(sequences, initial_state=initial_state, mask=mask, training=training, **kwargs)
            shape = tuple(layer.compute_output_shape(tuple(sequences.shape)))
            calls.append(_Call(layer, spec, shape, mask is not None))
            dyn = tf.shape(sequences)
            dims = [dyn[0]] + [dyn[j] if d is None else int(d) for j, d in enumerate(shape[1:], 1)]
            return tf.zeros(tf.stack(dims), sequences.dtype)
        return call

    with _patched(td + [(lay, discover(lay, spec, lay.call)) for lay, spec in candidates]):
        tf.function(lambda *xs: run_model(xs)).get_concrete_function(*input_specs)
    for c in calls:
        if c.spec is None:
            notes.append(f"layer {c.layer.name!r} stays a tf2onnx Loop: it is called with an initial state "
                         "or a mask that is not [batch, time]")
        elif any(d is None for d in c.out_shape[2:]):
            c.spec = None
            notes.append(f"layer {c.layer.name!r} stays a tf2onnx Loop: its output shape {c.out_shape} is not static")
    native = [(i, c) for i, c in enumerate(calls) if c.spec is not None]
    if not native:
        def plain(*xs):
            return {f"{OUT}{k}": o for k, o in enumerate(run_model(xs))}

        with _patched(td):
            proto = from_function(plain, input_specs, opset, f"model {model.name!r}", layer_names)
        _finish_io(proto, [s.name for s in input_specs], [f"{OUT}{k}" for k in range(len(output_names))])
        rename_io(proto, [s.name for s in input_specs], output_names)
        return proto, (), tuple(dict.fromkeys(notes))

    # 2. cut: placeholders in, recurrent inputs/masks out
    ph_specs = [tf.TensorSpec([None, *c.out_shape[1:]], tf.float32, name=f"{REC}{i}_y") for i, c in native]
    n_in = len(input_specs)
    taps: dict[str, Any] = {}
    counter = iter(range(len(calls)))

    def cut(layer, original):
        def call(sequences, initial_state=None, mask=None, training=None, **kwargs):
            i = next(counter)
            if calls[i].spec is None:
                return original(sequences, initial_state=initial_state, mask=mask, training=training, **kwargs)
            taps[f"{REC}{i}_x"] = tf.cast(sequences, tf.float32)
            if mask is not None:
                taps[f"{REC}{i}_mask"] = tf.cast(mask, tf.bool)
            return placeholders[f"{REC}{i}_y"]
        return call

    placeholders: dict[str, Any] = {}

    def traced(*args):
        placeholders.clear()
        taps.clear()
        placeholders.update({s.name: a for s, a in zip(ph_specs, args[n_in:])})
        outs = run_model(args[:n_in])
        return {**{f"{OUT}{k}": o for k, o in enumerate(outs)}, **taps}

    with _patched(td + [(lay, cut(lay, lay.call)) for lay, _ in candidates]):
        proto = from_function(traced, list(input_specs) + ph_specs, opset, f"model {model.name!r}", layer_names)

    # 3. stitch
    from seqdeploy.export.layers.recurrent_onnx import build_recurrent

    graph = proto.graph
    shared = {id(c.layer) for i, c in native if sum(1 for _, d in native if d.layer is c.layer) > 1}
    replace: dict[str, str] = {}
    descriptions = []
    new_nodes, new_inits = [], []
    for i, c in native:
        base = sanitize_name(c.layer.name, "layer") + (f"_call{i}" if id(c.layer) in shared else "")
        mask = f"{REC}{i}_mask" if c.has_mask else None
        built = build_recurrent(c.spec, f"{REC}{i}_x", prefix=f"{base}/native", mask=mask)
        new_nodes.extend(built.nodes)
        new_inits.extend(built.initializers)
        replace[f"{REC}{i}_y"] = built.output
        descriptions.append(built.description)
        if c.has_mask:
            notes.append(f"layer {c.layer.name!r}: its Keras mask is applied exactly for any padding pattern "
                         "(unmasked steps compacted, ONNX sequence_lens, outputs spread back as Keras does)")
    _rename_inputs(proto, replace)
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    _finish_io(proto, [s.name for s in input_specs], [f"{OUT}{k}" for k in range(len(output_names))])
    toposort(graph)
    rename_io(proto, [s.name for s in input_specs], output_names)
    return proto, tuple(descriptions), tuple(dict.fromkeys(notes))


def _rename_inputs(proto, mapping: dict[str, str]) -> None:
    """Point every node input (subgraphs too) named in ``mapping`` at its new tensor."""
    from seqdeploy.export.convert import _graphs

    for g in _graphs(proto):
        for node in g.node:
            for k, n in enumerate(node.input):
                if n in mapping:
                    node.input[k] = mapping[n]


def _finish_io(proto, inputs: list[str], outputs: list[str]) -> None:
    """Keep exactly ``inputs`` and ``outputs`` (in these orders) as the graph's inputs and outputs.

    tf2onnx ``from_function`` also lists tensors the function captured (e.g. the
    constant mean of an adapted ``Normalization``) as graph inputs, although
    freezing made them constants: those unused inputs are dropped.
    """
    from seqdeploy.errors import ExportError

    graph = proto.graph
    used = {n for g in _all_graphs(proto) for node in g.node for n in node.input}
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


def _all_graphs(proto):
    from seqdeploy.export.convert import _graphs

    return _graphs(proto)


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
