"""Recurrent family: Keras ``LSTM`` / ``GRU`` / ``SimpleRNN`` (plain, ``go_backwards``, ``Bidirectional``,
masked with any padding pattern) cut out of the trace and emitted as one native ONNX ``LSTM`` / ``GRU`` /
``RNN`` node (:mod:`seqdeploy.export.layers.recurrent_onnx`; masks: :mod:`seqdeploy.export.layers.masks`).

tf2onnx alone would emit a slow, opaque ``Loop`` for GRU, SimpleRNN and every masked recurrent layer. A
layer without a native form (e.g. an unsupported activation) stays a Loop, with a note. ``return_state=True``
(a seq2seq encoder) returns ONNX's own final states (``Y_h``, ``Y_c``); a call with ``initial_state`` (the
decoder) feeds them to ONNX's ``initial_h`` / ``initial_c``.
"""

from __future__ import annotations

from typing import Any

from seqdeploy.export.layers import REGISTRY, Built, Call, Cut, LayerConverter, NotNative, OutputSpec
from seqdeploy.export.layers.recurrent_onnx import RECURRENT_CLASSES


class RecurrentConverter(LayerConverter):
    name = "recurrent"
    classes = (*RECURRENT_CLASSES, "Bidirectional")
    stays = "stays a tf2onnx Loop"

    def claims(self, layer: Any) -> bool:
        if type(layer).__name__ == "Bidirectional":
            return type(layer.forward_layer).__name__ in RECURRENT_CLASSES
        return type(layer).__name__ in RECURRENT_CLASSES

    def prepare(self, layer: Any):
        from seqdeploy.export.layers.recurrent_onnx import recurrent_spec

        return recurrent_spec(layer)  # NotNative: stays a Loop

    def record(self, layer: Any, state: Any, arguments: dict[str, Any]) -> Cut:
        import tensorflow as tf

        sequences, mask = arguments["sequences"], arguments.get("mask")
        if mask is not None and len(mask.shape) != 2:
            raise NotNative("it is called with a mask that is not [batch, time]")
        init = arguments.get("initial_state")
        states = [] if init is None else (list(init) if isinstance(init, (list, tuple)) else [init])
        per = (2 if state.kind == "LSTM" else 1) * len(state.directions)
        if states and (len(states) != per or any(len(getattr(t, "shape", ())) != 2 for t in states)):
            raise NotNative(f"it is called with {len(states)} initial state tensor(s); expected {per} of shape "
                            "[batch, units]")
        shapes = layer.compute_output_shape(tuple(sequences.shape))
        if not state.return_state:
            shapes = [shapes]
        shapes = [tuple(sh) for sh in shapes]  # return_state: the output, then each state
        shape = shapes[0]
        if any(d is None for d in shape[2:]) or any(d is None for sh in shapes[1:] for d in sh[1:]):
            raise NotNative(f"its output shape {shape} is not static")
        inputs = {"x": tf.cast(sequences, tf.float32)}
        if mask is not None:
            inputs["mask"] = tf.cast(mask, tf.bool)
        for k, t in enumerate(states):
            inputs[f"state{k}"] = tf.cast(t, tf.float32)
        return Cut(inputs=inputs, outputs=tuple(OutputSpec(sh, "float32") for sh in shapes),
                   info={"has_mask": mask is not None, "states": len(states)})

    def build(self, call: Call) -> Built:
        from seqdeploy.export.layers.recurrent_onnx import build_recurrent

        built = build_recurrent(call.state, call.inputs["x"], prefix=call.prefix, mask=call.inputs.get("mask"),
                                initial_state=tuple(call.inputs[f"state{k}"] for k in range(call.info.get("states", 0))))
        notes = ()
        if call.info["has_mask"]:
            notes = (f"layer {call.layer.name!r}: its Keras mask is applied exactly for any padding pattern "
                     "(unmasked steps compacted, ONNX sequence_lens, outputs spread back as Keras does)",)
        return Built(nodes=built.nodes, initializers=built.initializers, outputs=(built.output, *built.states),
                     description=built.description, notes=notes)


REGISTRY.add(RecurrentConverter.name, RecurrentConverter())
