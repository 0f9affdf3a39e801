"""Augmentation and regularization layers are identity at inference: the export drops them (no random ops,
nothing but Identity left of them) and equals Keras exactly, also nested in a keras-io style
``data_augmentation`` Sequential in front of an Xception-like block."""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RANDOM_OPS = {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial",
              "Bernoulli", "Dropout"}


def augmentation_layers():
    """Every Keras augmentation / noise / dropout layer (those this Keras has), with small factors."""
    import keras

    L = keras.layers
    made = [L.RandomFlip(), L.RandomRotation(0.2), L.RandomZoom(0.2), L.RandomContrast(0.3),
            L.RandomTranslation(0.1, 0.1), L.RandomCrop(16, 16), L.RandomBrightness(0.2), L.GaussianNoise(0.1),
            L.GaussianDropout(0.2), L.AlphaDropout(0.2), L.Dropout(0.3), L.SpatialDropout2D(0.2)]
    optional = {"RandomErasing": (), "RandomGrayscale": (), "RandomHue": (0.2,), "RandomSaturation": (0.2,),
                "RandomSharpness": (0.2,), "RandomShear": (0.2,), "RandomColorJitter": (),
                "RandomPosterization": (4,), "RandomInvert": (), "RandomPerspective": (),
                "RandomGaussianBlur": (), "RandomElasticTransform": (), "RandomColorDegeneration": (0.2,),
                "Solarization": (0.2,)}
    made += [getattr(L, name)(*args) for name, args in optional.items() if hasattr(L, name)]
    return made


def _xception_like(augment):
    import keras

    L = keras.layers
    x_in = keras.Input((16, 16, 3), name="x")
    y = L.Rescaling(1 / 255.0)(augment(x_in))
    y = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(8, 3, strides=2, padding="same")(y)))
    previous = y
    y = L.BatchNormalization()(L.SeparableConv2D(8, 3, padding="same")(y))
    y = L.MaxPooling2D(3, strides=2, padding="same")(y)
    y = L.add([y, L.Conv2D(8, 1, strides=2, padding="same")(previous)])
    y = L.Dense(1)(L.Dropout(0.25)(L.GlobalAveragePooling2D()(y)))
    return keras.Model(x_in, y)


def test_augmentation_layers_are_dropped_and_exact():
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    keras.utils.set_random_seed(0)
    layers = augmentation_layers()
    assert len(layers) >= 12
    augment = keras.Sequential(layers, name="data_augmentation")
    model = _xception_like(augment)
    conv = convert_model(model)
    ops = op_counts(conv.model)
    assert not RANDOM_OPS & set(ops), ops
    plain = _xception_like(lambda x: x)  # the same model without augmentation: the same ops
    plain.set_weights(model.get_weights())
    assert op_counts(convert_model(plain).model) == {k: v for k, v in ops.items() if k != "Identity"}
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = np.random.RandomState(batch).uniform(0, 255, (batch, 16, 16, 3)).astype("float32")
        (got,) = sess.run(None, {"x": x})
        np.testing.assert_allclose(got, np.asarray(model(x, training=False)), rtol=0, atol=1e-5)
        assert np.array_equal(np.asarray(augment(x, training=False)), x)
