"""Image preprocessing family: Keras ``Resizing`` and ``CenterCrop`` (which resizes an image smaller than its
target) traced with a bilinear resize that computes what TensorFlow's ``ResizeBilinear`` kernel computes
(a trace replacement, no cut).

tf2onnx maps ``tf.image.resize(method="bilinear")`` to ONNX ``Resize(linear, half_pixel)``, whose
arithmetic differs from TensorFlow's: up to ~2e-6 relative (4e-4 on 0..255 pixels), and its static output
shape can be wrong (30x32 declared for 30x33). Here the resize is two gathers per axis and TensorFlow's own
lerp order (``top_left + (top_right - top_left) * x_lerp``, then along y), exact to float rounding at any
input size, dynamic ones included. Keras's crop / pad to the aspect ratio is Keras's own code, traced.

``nearest`` is left to tf2onnx (``Resize(nearest)`` is exact; ``antialias`` does not change it).
``Rescaling`` needs nothing (Mul + Add, exact). Interpolations with no exact ONNX form here (``bicubic``,
``area``, ``lanczos3/5``, ``gaussian``, ``mitchellcubic``, and ``antialias=True`` for them or ``bilinear``)
are refused: tf2onnx would emit an operator onnxruntime rejects or a Resize that disagrees with Keras.

``CenterCrop`` on an input of dynamic height/width: Keras's traced call is a plain slice, so an image smaller
than the target would come out smaller (eager Keras resizes it); here it is traced as what eager Keras does,
slice when the image is at least the target size, ``smart_resize`` otherwise (an ONNX ``If``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from seqdeploy.export.layers import REGISTRY, LayerConverter

EXACT = ("bilinear", "nearest")


def resize_bilinear(images: Any, size: Any) -> Any:
    """``tf.image.resize(images, size, "bilinear")`` (half-pixel centers, no antialias) as gathers and
    TensorFlow's kernel arithmetic; ``images`` [batch, height, width, channels] or [height, width, channels].

    >>> resize_bilinear(tf.zeros([2, 15, 21, 3]), (8, 10)).shape  # doctest: +SKIP
    TensorShape([2, 8, 10, 3])
    """
    import numpy as np
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    batched = len(images.shape) == 4
    x = tf.cast(images if batched else images[None], tf.float32)
    out_h, out_w = (int(s) for s in size)
    shape = tf.shape(x)

    def axis(dim, out_size):
        static = x.shape[dim]
        if static is not None:  # TensorFlow's float32 arithmetic, done here (a folded Div may become a Mul)
            scale = np.float32(static) / np.float32(out_size)
            pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
            floor = np.floor(pos)
            low = np.maximum(floor.astype(np.int32), 0)
            high = np.minimum(np.ceil(pos).astype(np.int32), static - 1)
            return tf.constant(low), tf.constant(high), tf.constant(pos - floor)
        in_size = shape[dim]
        scale = tf.math.divide_no_nan(tf.cast(in_size, tf.float32), tf.cast(tf.fill([1], out_size), tf.float32))
        pos = (tf.range(out_size, dtype=tf.float32) + 0.5) * scale - 0.5
        floor = tf.floor(pos)
        low = tf.maximum(tf.cast(floor, tf.int32), 0)
        high = tf.minimum(tf.cast(tf.math.ceil(pos), tf.int32), in_size - 1)
        return low, high, pos - floor

    y_low, y_high, y_lerp = axis(1, out_h)
    x_low, x_high, x_lerp = axis(2, out_w)
    top, bottom = tf.gather(x, y_low, axis=1), tf.gather(x, y_high, axis=1)
    x_lerp = tf.reshape(x_lerp, [1, 1, out_w, 1])
    top_left, top_right = tf.gather(top, x_low, axis=2), tf.gather(top, x_high, axis=2)
    bottom_left, bottom_right = tf.gather(bottom, x_low, axis=2), tf.gather(bottom, x_high, axis=2)
    top = top_left + (top_right - top_left) * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    out = top + (bottom - top) * tf.reshape(y_lerp, [1, out_h, 1, 1])
    out.set_shape([x.shape[0], out_h, out_w, x.shape[3]])
    return out if batched else out[0]


@contextlib.contextmanager
def exact_tf_resize() -> Iterator[None]:
    """While active, ``tf.image.resize`` with bilinear, no antialias and no preserved aspect ratio is
    :func:`resize_bilinear` (Keras's image backend calls it at the end of ``Resizing`` / ``CenterCrop``)."""
    import tensorflow as tf

    original = tf.image.resize

    def resize(images, size, method="bilinear", preserve_aspect_ratio=False, antialias=False, name=None):
        static = all(isinstance(s, int) or hasattr(s, "__index__") for s in size)
        if str(getattr(method, "value", method)) == "bilinear" and not antialias and not preserve_aspect_ratio \
                and static and len(images.shape) in (3, 4):
            return resize_bilinear(images, size)
        return original(images, size, method=method, preserve_aspect_ratio=preserve_aspect_ratio,
                        antialias=antialias, name=name)

    tf.image.resize = resize
    try:
        yield
    finally:
        tf.image.resize = original


class ImageResizeConverter(LayerConverter):
    name = "image"
    classes = ("Resizing", "CenterCrop")

    def prepare(self, layer: Any) -> None:
        from seqdeploy.errors import UnsupportedLayerError

        interpolation = getattr(layer, "interpolation", "bilinear")
        antialias = getattr(layer, "antialias", False) and interpolation != "nearest"
        if interpolation not in EXACT or antialias:
            raise UnsupportedLayerError(
                f"layer {layer.name!r} ({type(layer).__name__}): interpolation={interpolation!r}, "
                f"antialias={getattr(layer, 'antialias', False)} has no exact ONNX form (expected "
                f"interpolation in {list(EXACT)} with antialias=False); use one of those, or resize the "
                "images before they reach the model")
        return None

    def trace(self, layer: Any, state: Any, original: Callable) -> Callable:
        def call(*args, **kwargs):
            with exact_tf_resize():
                images = args[0] if args else None
                if type(layer).__name__ == "CenterCrop" and _dynamic_image(layer, images):
                    return center_crop_dynamic(layer, images, lambda: original(*args, **kwargs))
                return original(*args, **kwargs)

        return call


def _dynamic_image(layer: Any, images: Any) -> bool:
    shape = getattr(images, "shape", None)
    return (layer.data_format == "channels_last" and shape is not None and len(shape) == 4
            and (shape[1] is None or shape[2] is None))


def center_crop_dynamic(layer: Any, images: Any, sliced: Callable) -> Any:
    """What eager Keras's ``CenterCrop`` does for an image of any size: its slice when the image is at least
    the target size, else ``smart_resize`` to it (bilinear)."""
    import keras
    import tensorflow as tf

    shape = tf.shape(images)
    large = tf.logical_and(shape[1] >= layer.height, shape[2] >= layer.width)
    size = [layer.height, layer.width]
    out = tf.cond(large, sliced, lambda: tf.cast(keras.preprocessing.image.smart_resize(
        tf.cast(images, layer.compute_dtype), size, data_format="channels_last"), layer.compute_dtype))
    out.set_shape([images.shape[0], layer.height, layer.width, images.shape[3]])
    return out


REGISTRY.add(ImageResizeConverter.name, ImageResizeConverter())
