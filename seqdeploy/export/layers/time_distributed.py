"""TimeDistributed family: ``TimeDistributed(inner)`` traced as one call of ``inner`` on time folded into the
batch axis (a trace replacement, no cut).

Keras 3 unrolls TimeDistributed into T copies of the inner layer when T is static (T MatMuls in the graph)
and uses ``vectorized_map`` when T is dynamic, which tf2onnx converts into a Loop with wrong output shapes.
Folding time into batch is exact for any inner layer at inference (no state across steps). An inner layer
that reads the mask keeps Keras's own call.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from seqdeploy.export.layers import REGISTRY, LayerConverter


def fold_time_distributed(layer, x):
    """Apply ``TimeDistributed(inner)`` as reshape [B, T, ...] -> [B*T, ...] -> inner -> [B, T, ...].

    >>> y = fold_time_distributed(keras.layers.TimeDistributed(keras.layers.Dense(2)), x)  # doctest: +SKIP
    """
    import tensorflow as tf

    shape = tf.shape(x)
    flat = tf.reshape(x, tf.concat([[-1], shape[2:]], axis=0))
    y = layer.layer(flat, training=False)
    y = tf.reshape(y, tf.concat([shape[:2], tf.shape(y)[1:]], axis=0))
    y.set_shape(layer.compute_output_shape(tuple(x.shape)))
    return y


class TimeDistributedConverter(LayerConverter):
    name = "time_distributed"
    classes = ("TimeDistributed",)

    def trace(self, layer: Any, state: Any, original: Callable) -> Callable:
        def call(inputs, training=None, mask=None):
            if mask is not None and "mask" in inspect.signature(layer.layer.call).parameters:
                return original(inputs, training=training, mask=mask)  # the inner layer reads the mask
            return fold_time_distributed(layer, inputs)

        return call


REGISTRY.add(TimeDistributedConverter.name, TimeDistributedConverter())
