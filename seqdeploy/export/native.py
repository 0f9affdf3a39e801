"""Any Keras model (Sequential, Functional, nested) to ONNX, with the registered layer converters
(:mod:`seqdeploy.export.layers`) taking over the layers they claim.

tf2onnx converts a traced ``tf.function`` of the whole model. A converter can
replace a layer's call while tracing (``trace``), refuse the layer, or have its
calls cut out of the trace and emitted as its own ONNX nodes:

1. **discover**: the model is traced once with each claimed layer's ``call``
   replaced by a stand-in that asks the converter to ``record`` the call (the
   tensors its nodes will read, e.g. the sequence input and the Keras mask, and
   the layer's output specs) and returns stand-in values of the output specs.
   Shared layers (called more than once) get one cut per call.
2. **cut**: the model is traced again for tf2onnx ``from_function``; the
   stand-ins now return extra function *inputs* (the outputs' placeholders) and
   hand the recorded tensors to extra function *outputs* (a string graph input
   passes through as an Identity). Everything else, including how Keras
   propagates masks between layers, is Keras's own code, traced and converted
   by tf2onnx.
3. **stitch**: each converter ``build``\\s its ONNX nodes from the recorded
   tensors, the placeholders are replaced by the built outputs, the extra
   outputs are dropped, the converters' opset domains are imported and the
   nodes sorted topologically.

Graph inputs and outputs carry the Keras model's names (inputs: the
``keras.Input`` names; outputs: the output layers' names, ``output_N`` for
Sequential).

    >>> traced = convert_native(keras_model, 17, input_specs=specs, output_names=["y"],
    ...                         from_function=fn, layer_names=names)   # doctest: +SKIP
    >>> [n.description for n in traced.native]                          # doctest: +SKIP
    ['encoder: LSTM', 'decoder: GRU bidirectional']
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Callable, Iterator

from seqdeploy.errors import ExportError, UnsupportedLayerError
from seqdeploy.export.graph import keep_io, rename_inputs, rename_io, sanitize_name, toposort
from seqdeploy.export.layers import Call, Cut, LayerConverter, NotNative, converter_for

CUT = "seqdeploy__cut"
OUT = "seqdeploy__out"


@dataclasses.dataclass(frozen=True)
class NativeLayer:
    """One layer call emitted by a converter's own ONNX nodes."""

    layer: str
    converter: str
    description: str


@dataclasses.dataclass(frozen=True)
class Traced:
    """What :func:`convert_native` returns: the stitched ``onnx.ModelProto`` and what was converted natively."""

    model: Any
    native: tuple[NativeLayer, ...]
    notes: tuple[str, ...]
    domains: dict[str, int]  # opset domains the converters' nodes added (besides the default one)


@dataclasses.dataclass
class _Claim:
    layer: Any
    converter: LayerConverter
    state: Any
    original: Callable  # the layer's own call
    base: Callable  # the call traced when the converter cuts nothing: its trace() replacement or the original


@dataclasses.dataclass
class _Call:
    claim: _Claim
    cut: Cut | None  # None: this call stays in the trace


def iter_layers(model) -> Iterator[Any]:
    """Every layer of ``model``, descending into nested models (not into wrappers)."""
    import keras

    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


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


def claim_layers(model) -> tuple[list[_Claim], list[str]]:
    """Each layer's converter (registry order) and its prepared state; notes for layers left to tf2onnx.
    A converter refusing a layer raises here."""
    claims, notes = [], []
    for layer in iter_layers(model):
        conv = converter_for(layer)
        if conv is None:
            continue
        try:
            state = conv.prepare(layer)
        except NotNative as exc:
            notes.append(f"layer {layer.name!r} {conv.stays}: {exc}")
            continue
        original = layer.call
        claims.append(_Claim(layer, conv, state, original, conv.trace(layer, state, original) or original))
    return claims, notes


def _record(claim: _Claim, args: tuple, kwargs: dict, notes: list[str] | None) -> Cut | None:
    """The converter's record of one call, or None when the call stays in the trace."""
    try:
        bound = inspect.signature(claim.original).bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    try:
        return claim.converter.record(claim.layer, claim.state, arguments)
    except NotNative as exc:
        if notes is not None:
            notes.append(f"layer {claim.layer.name!r} {claim.converter.stays}: {exc}")
        return None


def _stand_in(spec) -> Any:
    """A traced value with exactly the static shape and dtype of ``spec`` (never evaluated)."""
    import tensorflow as tf

    zeros = tf.zeros([1 if d is None else int(d) for d in spec.shape], tf.as_dtype(spec.dtype))
    return tf.compat.v1.placeholder_with_default(zeros, [None if d is None else int(d) for d in spec.shape])


def _one_or_tuple(outs: list) -> Any:
    return outs[0] if len(outs) == 1 else tuple(outs)


def convert_native(model, opset: int, *, input_specs: list, output_names: list[str], from_function,
                   layer_names: list[str]) -> Traced:
    """Trace, cut, convert with ``from_function(fn, specs, opset, what, layer_names)`` and stitch.

    The proto's inputs are named like ``input_specs`` and its outputs ``output_names``.
    """
    claims, notes = claim_layers(model)
    single = len(input_specs) == 1
    input_names = [s.name for s in input_specs]
    out_keys = [f"{OUT}{k}" for k in range(len(output_names))]

    structure = model_input_structure(model)

    def run_model(xs) -> list:
        if structure is not None:  # keras.Model(inputs={name: Input, ...}): called with the same dict
            import keras

            out = model(keras.tree.pack_sequence_as(structure, list(xs)), training=False)
        else:
            out = model(xs[0] if single else list(xs), training=False)
        if isinstance(out, dict):  # outputs={key: tensor}: flattened like model.outputs (keys sorted)
            import keras

            return keras.tree.flatten(out)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    calls = _discover(claims, run_model, input_specs, notes)
    native = [(i, c) for i, c in enumerate(calls) if c.cut is not None]
    what = f"model {model.name!r}"
    if not native:
        def plain(*xs):
            return dict(zip(out_keys, run_model(xs)))

        with _patched([(c.layer, c.base) for c in claims]):
            proto = from_function(plain, input_specs, opset, what, layer_names)
        done, domains = (), {}
    else:
        proto = _convert_cut(claims, calls, run_model, input_specs, out_keys,
                             lambda fn, specs: from_function(fn, specs, opset, what, layer_names))
        done, domains = _stitch(proto, native, opset, notes)
        toposort(proto.graph)
    keep_io(proto, input_names, out_keys)
    rename_io(proto, input_names, output_names)
    return Traced(model=proto, native=done, notes=tuple(dict.fromkeys(notes)), domains=domains)


def model_input_structure(model) -> Any:
    """The model's input structure when it is a dict (``keras.Model(inputs={name: Input})``), else None.

    Its flattened order (``keras.tree.flatten``, keys sorted) is the order of ``model.inputs``; the
    ONNX graph has one input per key, named by the key (:func:`dict_input_names`).
    """
    structure = getattr(model, "input", None) if getattr(model, "inputs", None) else None
    return structure if isinstance(structure, dict) else None


def dict_input_names(model) -> list[str] | None:
    """The keys of a dict-input model, in the order of ``model.inputs`` (else None)."""
    structure = model_input_structure(model)
    if structure is None:
        return None
    import keras

    keys = keras.tree.flatten({k: str(k) for k in structure})
    if len(keys) != len(model.inputs) or any(isinstance(v, (dict, list, tuple)) for v in structure.values()):
        raise ExportError(f"model {model.name!r} takes a nested input structure ({type(structure).__name__} of "
                          f"containers); expected a flat dict of keras.Input, one per named input")
    return keys


def dict_output_names(model) -> list[str] | None:
    """The keys of a dict-output model (``keras.Model(outputs={key: tensor})``), in the order of
    ``model.outputs`` (else None): its ONNX outputs are named by the keys."""
    structure = getattr(model, "output", None) if getattr(model, "outputs", None) else None
    if not isinstance(structure, dict):
        return None
    import keras

    keys = keras.tree.flatten({k: str(k) for k in structure})
    return keys if len(keys) == len(model.outputs) else None


def _discover(claims: list[_Claim], run_model, input_specs: list, notes: list[str]) -> list[_Call]:
    """1. Trace once with stand-ins: every call of a claimed layer, in call order, with what its converter recorded."""
    import tensorflow as tf

    calls: list[_Call] = []
    refused: list[Exception] = []  # a converter refusing one call (e.g. by its inputs' dtype): raised after tracing

    def discover(claim: _Claim):
        def call(*args, **kwargs):
            try:
                cut = _record(claim, args, kwargs, notes)
            except UnsupportedLayerError as exc:  # TensorFlow would wrap it in its own staging error
                refused.append(exc)
                cut = None
            calls.append(_Call(claim, cut))
            if cut is None:
                return claim.base(*args, **kwargs)
            return _one_or_tuple([_stand_in(s) for s in cut.outputs])
        return call

    with _patched([(c.layer, discover(c)) for c in claims]):
        tf.function(lambda *xs: run_model(xs)).get_concrete_function(*input_specs)
    if refused:
        raise refused[0]
    return calls


def _convert_cut(claims: list[_Claim], calls: list[_Call], run_model, input_specs: list, out_keys: list[str],
                 convert) -> Any:
    """2. Trace again with placeholders (extra inputs) for the cut calls' outputs and their recorded tensors
    as extra outputs, and convert that with ``convert(fn, specs)``."""
    import tensorflow as tf

    ph_specs = [tf.TensorSpec([None, *s.shape[1:]], tf.as_dtype(s.dtype), name=f"{CUT}{i}_y{k}")
                for i, c in enumerate(calls) if c.cut is not None for k, s in enumerate(c.cut.outputs)]
    n_in = len(input_specs)
    taps: dict[str, Any] = {}
    placeholders: dict[str, Any] = {}
    counter = iter(range(len(calls)))

    def cut(claim: _Claim):
        def call(*args, **kwargs):
            i = next(counter)
            if calls[i].cut is None:
                return claim.base(*args, **kwargs)
            got = _record(claim, args, kwargs, None)
            if got is None or len(got.outputs) != len(calls[i].cut.outputs):
                raise ExportError(f"layer {claim.layer.name!r}: converter {claim.converter.name!r} recorded "
                                  "this call differently on the second trace; report it with the model attached")
            for name, tensor in got.inputs.items():
                taps[f"{CUT}{i}_{name}"] = tf.identity(tensor)  # a graph input passes through too
            return _one_or_tuple([placeholders[f"{CUT}{i}_y{k}"] for k in range(len(got.outputs))])
        return call

    def traced(*args):
        placeholders.clear()
        taps.clear()
        placeholders.update({s.name: a for s, a in zip(ph_specs, args[n_in:])})
        outs = run_model(args[:n_in])
        return {**dict(zip(out_keys, outs)), **taps}

    with _patched([(c.layer, cut(c)) for c in claims]):
        return convert(traced, list(input_specs) + ph_specs)


def _stitch(proto, native: list[tuple[int, _Call]], opset: int,
            notes: list[str]) -> tuple[tuple[NativeLayer, ...], dict[str, int]]:
    """3. Each converter's nodes replace its call's placeholders, reading the tapped tensors."""
    graph = proto.graph
    per_layer: dict[int, int] = {}
    for _, c in native:
        per_layer[id(c.claim.layer)] = per_layer.get(id(c.claim.layer), 0) + 1
    replace: dict[str, str] = {}
    done: list[NativeLayer] = []
    domains: dict[str, int] = {}
    for i, c in native:
        layer, conv = c.claim.layer, c.claim.converter
        base = sanitize_name(layer.name, "layer") + (f"_call{i}" if per_layer[id(layer)] > 1 else "")
        built = conv.build(Call(layer=layer, state=c.claim.state,
                                inputs={name: f"{CUT}{i}_{name}" for name in c.cut.inputs},
                                outputs=c.cut.outputs, info=c.cut.info, prefix=f"{base}/native", opset=opset))
        if len(built.outputs) != len(c.cut.outputs):
            raise ExportError(f"layer {layer.name!r}: converter {conv.name!r} built {len(built.outputs)} outputs "
                              f"for a layer with {len(c.cut.outputs)}")
        graph.node.extend(built.nodes)
        graph.initializer.extend(built.initializers)
        replace.update({f"{CUT}{i}_y{k}": out for k, out in enumerate(built.outputs)})
        done.append(NativeLayer(layer=layer.name, converter=conv.name, description=built.description))
        notes.extend(built.notes)
        for domain, version in conv.domains.items():
            domains[domain] = max(version, domains.get(domain, 0))
    replace.update(_drop_tap_identities(graph, {f"{CUT}{i}_{name}" for i, c in native for name in c.cut.inputs}))
    for name in replace:  # a tap may copy another call's placeholder: follow the chain
        while replace[name] in replace:
            replace[name] = replace[replace[name]]
    rename_inputs(proto, replace)
    _import_domains(proto, domains)
    return tuple(done), dict(sorted(domains.items()))


def _drop_tap_identities(graph, taps: set[str]) -> dict[str, str]:
    """Remove the Identity nodes that produced the tapped tensors; returns tap -> the tensor it copied."""
    mapping = {}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.output[0] in taps:
            mapping[node.output[0]] = node.input[0]
            graph.node.remove(node)
    return mapping


def _import_domains(proto, domains: dict[str, int]) -> None:
    """Add (or raise to) each domain's version in the model's opset imports."""
    from onnx import helper

    have = {o.domain: o for o in proto.opset_import}
    for domain, version in domains.items():
        if domain in have:
            have[domain].version = max(have[domain].version, version)
        else:
            proto.opset_import.append(helper.make_opsetid(domain, version))


__all__ = ["NativeLayer", "Traced", "iter_layers", "eager_tensors_as_variables", "claim_layers", "convert_native"]
