"""Keras layer converters: one module per layer family, each registering a :class:`LayerConverter` in
:data:`REGISTRY`; the package's modules are found on first use, so adding a converter is adding one file.

How a converter takes part in the export (:mod:`seqdeploy.export.native` runs it):

* ``claims(layer)``: which layer instances it handles (default: ``type(layer).__name__`` in ``classes``).
  Every layer of the model (nested models too, not layers inside wrappers) goes to the first claiming
  converter in registry order (``order``, then name): a converter with a lower ``order`` takes a class
  over from another one (the lookup-table refusal has order 100, so any converter claiming
  ``StringLookup`` at the default order 0 replaces the refusal).
* ``prepare(layer)``: once per claimed layer, reads what it needs (weights, vocabulary) and returns a
  state handed back to the other hooks. Raise :class:`NotNative` (reason) to leave the layer to
  tf2onnx with a note, or a :class:`seqdeploy.errors.UnsupportedLayerError` to refuse the export.
* ``trace(layer, state, original)``: optionally a TensorFlow replacement of ``layer.call`` used while
  the model is traced (``TimeDistributed`` folds time into batch this way); ``None`` keeps ``original``.
* ``record(layer, state, arguments)``: per call, with the call's bound arguments (``{"sequences": x,
  "mask": m, "training": False}`` for an LSTM, ``{"inputs": x}`` for most layers), returns a :class:`Cut`:
  the traced tensors the ONNX nodes will read (``inputs``: any dtype, a string graph input included;
  they are tapped out of the trace), the layer's outputs (:class:`OutputSpec`: Keras shape, dtype; each
  becomes a placeholder in the trace) and ``info`` (plain values ``build`` needs, e.g. whether a mask
  came in). ``None`` (the default) or :class:`NotNative` leaves that call in the trace.
* ``build(call)``: the ONNX nodes and initializers computing ``call.outputs`` from the tensors
  ``call.inputs`` names (a :class:`Call`), as a :class:`Built`; names start with ``call.prefix``
  (:class:`NodeBuilder` does that). The nodes replace the placeholders in the converted graph.
* ``domains``: opset domains the nodes use besides the default one, e.g. ``{"ai.onnx.ml": 3}`` or
  ``{"ai.onnx.contrib": 1}``; the latter (:data:`seqdeploy.export.opsets.EXTENSION_DOMAINS`) needs
  onnxruntime-extensions at run time, which the export result records (``needs_extensions``).
* ``min_opset``: the lowest default-domain opset the nodes need (0: any); a model holding such a layer is
  exported at that opset unless one was asked for, and a lower one asked for is refused naming the layer.

A tiny converter (a custom ``Scale2`` layer that doubles its input), as one file in this package::

    import numpy as np
    from seqdeploy.export.layers import REGISTRY, Cut, LayerConverter, NodeBuilder, OutputSpec

    class Scale2Converter(LayerConverter):
        name, classes = "scale2", ("Scale2",)

        def record(self, layer, state, arguments):
            x = arguments["inputs"]
            return Cut(inputs={"x": x}, outputs=(OutputSpec(tuple(x.shape), "float32"),))

        def build(self, call):
            b = NodeBuilder(call.prefix)
            y = b.node("Mul", [call.inputs["x"], b.const("two", np.array(2, np.float32))], "y")
            return b.built([y], description=f"{call.layer.name}: Mul")

    REGISTRY.add(Scale2Converter.name, Scale2Converter())

Only the standard library is imported here; TensorFlow / onnx only inside the hooks.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Callable, Mapping

from seqdeploy.registry import Registry


class NotNative(ValueError):
    """This layer (or this call of it) has no native ONNX form here: tf2onnx converts it (reason in the message)."""


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One output of a cut layer call: its Keras shape (axis 0 the batch, ``None`` for dynamic axes) and dtype."""

    shape: tuple
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class Cut:
    """What :meth:`LayerConverter.record` returns for one call: tapped ``inputs`` (name -> traced tensor;
    names are identifiers), the layer's ``outputs`` and plain ``info`` for :meth:`LayerConverter.build`."""

    inputs: Mapping[str, Any]
    outputs: tuple[OutputSpec, ...]
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Call:
    """One cut call as :meth:`LayerConverter.build` sees it: ONNX tensor names of the tapped ``inputs``."""

    layer: Any
    state: Any  # what prepare() returned
    inputs: Mapping[str, str]
    outputs: tuple[OutputSpec, ...]
    info: Mapping[str, Any]
    prefix: str  # unique name prefix for this call's nodes and initializers
    opset: int


@dataclasses.dataclass(frozen=True)
class Built:
    """ONNX nodes + initializers computing a call's outputs (``outputs``: one tensor name per output)."""

    nodes: tuple
    initializers: tuple
    outputs: tuple[str, ...]
    description: str  # "layer_name: what it became", listed in the export result
    notes: tuple[str, ...] = ()


class LayerConverter:
    """Base class of a layer converter: override what the family needs (see the module docstring)."""

    name: str = ""
    classes: tuple[str, ...] = ()
    order: int = 0
    domains: Mapping[str, int] = MappingProxyType({})
    stays: str = "is left to tf2onnx"  # how a note says what happens to a layer that is not converted
    min_opset: int = 0  # the lowest default-domain opset build() needs (0: any supported)

    def claims(self, layer: Any) -> bool:
        return type(layer).__name__ in self.classes

    def prepare(self, layer: Any) -> Any:
        return None

    def trace(self, layer: Any, state: Any, original: Callable) -> Callable | None:
        return None

    def record(self, layer: Any, state: Any, arguments: dict[str, Any]) -> Cut | None:
        return None

    def build(self, call: Call) -> Built:
        raise NotImplementedError(f"converter {self.name!r} records calls but builds no ONNX nodes")


class NodeBuilder:
    """Collects ONNX nodes and initializers whose names start with ``prefix/``.

    >>> b = NodeBuilder("scale")
    >>> b.node("Mul", ["x", b.const("two", [2.0])], "y")
    'scale/y'
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []

    def name(self, s: str) -> str:
        return f"{self.prefix}/{s}"

    def const(self, s: str, array: Any) -> str:
        """An initializer (once per name: asking twice returns the same tensor)."""
        import numpy as np
        from onnx import numpy_helper

        if self.name(s) not in {t.name for t in self.initializers}:
            self.initializers.append(numpy_helper.from_array(np.asarray(array), self.name(s)))
        return self.name(s)

    def node(self, op: str, inputs: list[str], outputs: str | list[str], *, domain: str = "", **attrs: Any):
        """Add one node; returns its output name (or names, when ``outputs`` is a list)."""
        from onnx import helper

        outs = [self.name(o) for o in ([outputs] if isinstance(outputs, str) else outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=outs[0], domain=domain or None, **attrs))
        return outs[0] if isinstance(outputs, str) else outs

    def built(self, outputs: list[str], description: str, notes: tuple[str, ...] = ()) -> Built:
        return Built(nodes=tuple(self.nodes), initializers=tuple(self.initializers), outputs=tuple(outputs),
                     description=description, notes=tuple(notes))


#: every layer converter, by name; a module of this package registers its family on import
REGISTRY: Registry[LayerConverter] = Registry("seqdeploy.export.layers", order=lambda c: c.order)


def converter_for(layer: Any) -> LayerConverter | None:
    """The converter handling ``layer``: the first claiming one in registry order, or ``None``."""
    return next((c for c in REGISTRY.all().values() if c.claims(layer)), None)


__all__ = ["REGISTRY", "LayerConverter", "NotNative", "OutputSpec", "Cut", "Call", "Built", "NodeBuilder",
           "converter_for"]
