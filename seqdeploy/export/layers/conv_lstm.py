"""Convolutional LSTM family: Keras ``ConvLSTM1D`` / ``ConvLSTM2D`` / ``ConvLSTM3D`` unrolled over a static
number of frames while the model is traced (a trace replacement, no cut), so the ONNX graph has no ``Loop``.

tf2onnx turns Keras's ``while_loop`` over time into one ONNX ``Loop`` per layer (opaque to graph optimizers,
per-step overhead in onnxruntime). With a static time length ``T`` the layer is traced as:

* one input convolution over all frames at once (time folded into the batch axis, the four gates' kernels
  as one kernel of ``4 * filters`` output channels, the bias added once);
* per step, one recurrent convolution of ``h_{t-1}`` (``padding="same"``, stride 1, Keras's
  ``recurrent_conv``; skipped at the first step when the initial state is zero) and the gate math of
  Keras's ``ConvLSTMCell`` (``i, f, c~, o`` with the layer's ``activation`` / ``recurrent_activation``).

Padding, strides, dilation, ``use_bias``, ``return_sequences``, ``return_state``, ``go_backwards`` and an
explicit ``initial_state`` follow Keras. A variable time length, a mask, a stateful layer or
``channels_first`` keep Keras's own call (a tf2onnx ``Loop``) and the export notes why.
"""

from __future__ import annotations

from typing import Any, Callable

from seqdeploy.export.layers import REGISTRY, LayerConverter, NotNative

CONV_LSTM_CLASSES = ("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")


def unrollable(layer: Any, sequences: Any, initial_state: Any = None, mask: Any = None) -> str | None:
    """Why this call of a ConvLSTM layer cannot be unrolled, or ``None`` when it can."""
    if sequences.shape[1] is None:
        return (f"its time length is not static (input shape {tuple(sequences.shape)}); to unroll it, build the "
                "model with a fixed number of frames in its Input and copy the weights over (set_weights)")
    if mask is not None:
        return "it is called with a mask"
    if getattr(layer, "stateful", False):
        return "it is stateful"
    if layer.cell.data_format != "channels_last":
        return f"its data_format is {layer.cell.data_format!r} (only 'channels_last' is unrolled)"
    if initial_state is not None and len(list(initial_state)) != 2:
        return "its initial state is not [h, c]"
    return None


def unroll_conv_lstm(layer: Any, sequences: Any, initial_state: Any = None) -> Any:
    """Keras's ConvLSTM recurrence over the static time axis of ``sequences`` (inference: no dropout).

    >>> y = unroll_conv_lstm(keras.layers.ConvLSTM2D(4, 3), frames)  # doctest: +SKIP
    """
    import tensorflow as tf

    cell = layer.cell
    steps = int(sequences.shape[1])
    shape = tf.shape(sequences)
    folded = tf.reshape(sequences, tf.concat([[-1], shape[2:]], axis=0))
    z_in = cell.input_conv(folded, cell.kernel, padding=cell.padding)
    if cell.use_bias:
        z_in = z_in + cell.bias  # [i | f | c | o] blocks on the channel axis, like the kernel's
    z_in = tf.reshape(z_in, tf.concat([shape[:2], tf.shape(z_in)[1:]], axis=0))
    # the recurrence runs channels-first, ONNX Conv's own layout: no Transpose pair around each step's Conv
    rank = len(z_in.shape) - 3  # spatial dims
    z_in = tf.transpose(z_in, [0, 1, rank + 2, *range(2, rank + 2)])  # [B, T, 4F, *spatial]
    first = [0, rank + 1, *range(1, rank + 1)]  # [B, *spatial, F] -> [B, F, *spatial]
    last = [0, *range(2, rank + 2), 1]  # and back
    layout = {1: "NCW", 2: "NCHW", 3: "NCDHW"}[rank]
    if initial_state is None:
        h = c = None  # zero state: the first recurrent convolution is exactly zero
    else:
        h, c = (tf.transpose(tf.convert_to_tensor(s, dtype=z_in.dtype), first) for s in initial_state)
    order = range(steps - 1, -1, -1) if layer.go_backwards else range(steps)
    outputs = []
    for t in order:
        z = z_in[:, t]
        if h is not None:
            z = z + tf.nn.convolution(h, cell.recurrent_kernel, padding="SAME", data_format=layout)
        z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)
        i = cell.recurrent_activation(z_i)
        f = cell.recurrent_activation(z_f)
        candidate = i * cell.activation(z_c)
        c = candidate if c is None else f * c + candidate
        o = cell.recurrent_activation(z_o)
        h = o * cell.activation(c)
        outputs.append(h)
    if layer.return_sequences:
        output = tf.transpose(tf.stack(outputs, axis=1), [0, 1, *range(3, rank + 3), 2])
    else:
        output = tf.transpose(h, last)
    if layer.return_state:
        return output, tf.transpose(h, last), tf.transpose(c, last)
    return output


class ConvLSTMConverter(LayerConverter):
    name = "conv_lstm"
    classes = CONV_LSTM_CLASSES
    stays = "stays a tf2onnx Loop"

    def trace(self, layer: Any, state: Any, original: Callable) -> Callable:
        def call(sequences, initial_state=None, mask=None, training=False):
            if unrollable(layer, sequences, initial_state, mask) is not None:
                return original(sequences, initial_state=initial_state, mask=mask, training=training)
            return unroll_conv_lstm(layer, sequences, initial_state)

        return call

    def record(self, layer: Any, state: Any, arguments: dict[str, Any]) -> None:
        """Nothing is cut (the trace replacement unrolls the call); a call that stays a Loop is noted."""
        reason = unrollable(layer, arguments["sequences"], arguments.get("initial_state"), arguments.get("mask"))
        if reason is not None:
            raise NotNative(reason)
        return None


REGISTRY.add(ConvLSTMConverter.name, ConvLSTMConverter())
