"""`seqdeploy.export.layers.image`: Resizing (bilinear, nearest; crop / pad to aspect ratio; static and
dynamic image sizes) and CenterCrop export equal to Keras (<= 1e-5 on 0..255 pixels); interpolations
without an exact ONNX form are refused with a message naming what is supported."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ATOL = 1e-5


def _pixels(batch, h=15, w=21):
    return np.random.RandomState(batch).uniform(0, 255, (batch, h, w, 3)).astype("float32")


def test_resize_bilinear_matches_tensorflow_kernel():
    import tensorflow as tf

    from seqdeploy.export.layers.image import resize_bilinear

    x = _pixels(2)
    for size in [(8, 10), (30, 33), (15, 21), (1, 1)]:
        want = tf.image.resize(x, size).numpy()
        np.testing.assert_array_equal(resize_bilinear(x, size).numpy(), want)
        np.testing.assert_array_equal(resize_bilinear(x[0], size).numpy(), want[0])


def test_resizing_and_center_crop_export_equal_keras():
    """One model, several image layers in parallel branches on a dynamic-size and a static-size input."""
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model

    L = keras.layers
    x_in = keras.Input((None, None, 3), name="x")
    s_in = keras.Input((15, 21, 3), name="s")
    outs = [L.Resizing(8, 10, name="down")(x_in),
            L.Resizing(30, 33, name="up")(x_in),
            L.Resizing(12, 9, crop_to_aspect_ratio=True, name="crop")(x_in),
            L.Resizing(10, 10, pad_to_aspect_ratio=True, name="pad")(x_in),
            L.Resizing(7, 11, interpolation="nearest", name="nearest")(x_in),
            L.Rescaling(1 / 127.5, offset=-1, name="rescale")(x_in),
            L.CenterCrop(16, 14, name="center_dynamic")(x_in),  # resized at 15x21, sliced at 17x14
            L.Resizing(9, 30, name="static")(s_in),
            L.CenterCrop(20, 9, name="center_up")(s_in),  # smaller than the target: Keras resizes
            L.CenterCrop(6, 9, name="center_down")(s_in)]
    model = keras.Model([x_in, s_in], outs)
    conv = convert_model(model)
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [n.op_type for n in conv.model.graph.node].count("Resize") == 1  # nearest only
    for batch, (h, w) in [(1, (15, 21)), (3, (17, 14)), (2, (17, 12))]:
        x, s = _pixels(batch, h, w), _pixels(batch + 1)[:batch]
        got = sess.run(None, {"x": x, "s": s})
        want = [np.asarray(v) for v in model([x, s], training=False)]
        for name, g, v in zip([o.name for o in sess.get_outputs()], got, want):
            assert g.shape == v.shape, name
            assert float(np.max(np.abs(g - v))) <= ATOL, (name, float(np.max(np.abs(g - v))))


@pytest.mark.parametrize("kwargs", [{"interpolation": "bicubic"}, {"interpolation": "area"},
                                    {"interpolation": "bilinear", "antialias": True}])
def test_inexact_interpolations_are_refused(kwargs):
    import keras

    from seqdeploy.errors import UnsupportedLayerError
    from seqdeploy.export.layers.image import ImageResizeConverter

    layer = keras.layers.Resizing(8, 8, name="shrink", **kwargs)
    with pytest.raises(UnsupportedLayerError, match=r"'shrink'.*no exact ONNX form.*bilinear"):
        ImageResizeConverter().prepare(layer)
