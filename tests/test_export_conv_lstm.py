"""`seqdeploy.export.layers.conv_lstm`: ConvLSTM layers with a static number of frames export without a
Loop and equal Keras; a variable number of frames stays a Loop with a note saying why."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ATOL = 1e-5


def _randomize(model):
    rng = np.random.RandomState(1)
    for w in model.weights:
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, tuple(w.shape)).astype("float32"))
        else:
            w.assign(rng.normal(0.0, 0.4, tuple(w.shape)).astype("float32"))
    return model


def _run(model, xs_per_batch):
    """Export once, run each input list in onnxruntime and Keras; max abs error over all of them."""
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    conv = convert_model(model)
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    err = 0.0
    for xs in xs_per_batch:
        got = sess.run(None, {i.name: v for i, v in zip(sess.get_inputs(), xs)})
        want = model(xs if len(xs) > 1 else xs[0], training=False)
        want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
        assert [g.shape for g in got] == [w.shape for w in want]
        err = max([err] + [float(np.max(np.abs(g - w))) for g, w in zip(got, want)])
    return conv, op_counts(conv.model), err


def _frames(shape, batches=(1, 3)):
    return [[np.random.RandomState(b).normal(size=(b, *shape)).astype("float32")] for b in batches]


def _check_static(layers, shape):
    import keras

    keras.utils.set_random_seed(0)
    model = _randomize(keras.Sequential([keras.Input(shape, name="x"), *layers]))
    conv, ops, err = _run(model, _frames(shape))
    assert err <= ATOL, f"max abs error {err:.3g}"
    assert "Loop" not in ops and "Scan" not in ops, ops
    assert not any("Loop" in n for n in conv.notes), conv.notes


def test_next_frame_model_unrolled_equals_keras_without_loop():
    """The keras-io next-frame shape: ConvLSTM2D x2 with BatchNorm -> Conv3D, static frames."""
    import keras

    L = keras.layers
    _check_static([L.ConvLSTM2D(4, 3, padding="same", return_sequences=True), L.BatchNormalization(),
                   L.ConvLSTM2D(3, 1, padding="same", return_sequences=True), L.BatchNormalization(),
                   L.Conv3D(1, 3, padding="same", activation="sigmoid")], (3, 6, 6, 2))


@pytest.mark.slow
def test_strides_dilation_valid_backwards_activations_equal_keras():
    import keras

    L = keras.layers
    _check_static([L.ConvLSTM2D(3, 1, padding="same", return_sequences=True, go_backwards=True),
                   L.ConvLSTM2D(3, (3, 2), strides=(2, 1), padding="same", return_sequences=True,
                                activation="relu", recurrent_activation="hard_sigmoid"),
                   L.ConvLSTM2D(2, 3, dilation_rate=2, padding="valid", use_bias=False)], (3, 9, 9, 2))


def test_return_state_initial_state_and_last_output_conv_lstm1d():
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    x_in = keras.Input((4, 7, 3), name="x")
    seq, h, c = L.ConvLSTM1D(5, 3, padding="same", return_state=True, return_sequences=True)(x_in)
    last = L.ConvLSTM1D(5, 2, padding="same", go_backwards=True)(seq, initial_state=[h, c])  # even kernel
    model = _randomize(keras.Model(x_in, [last, L.Add(name="state")([h, c])]))
    _, ops, err = _run(model, _frames((4, 7, 3)))
    assert err <= ATOL
    assert "Loop" not in ops


def test_variable_frames_stay_a_loop_with_a_note():
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = _randomize(keras.Sequential([keras.Input((None, 6, 6, 2), name="x"),
                                         L.ConvLSTM2D(3, 3, padding="same", return_sequences=True, name="frames"),
                                         L.Conv3D(1, 3, padding="same")]))
    conv, ops, err = _run(model, _frames((5, 6, 6, 2)) + _frames((2, 6, 6, 2), (2,)))
    assert err <= ATOL
    assert ops.get("Loop", 0) == 1
    (note,) = [n for n in conv.notes if "'frames'" in n]
    assert "Loop" in note and "time length is not static" in note
