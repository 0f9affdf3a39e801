"""Layer coverage of `seqdeploy.export.convert`: small Sequential models, exported, run in
onnxruntime and compared with Keras at two batch sizes (max abs err <= 1e-4).

Every recurrent case must contain its native ONNX op (LSTM / GRU / RNN) and no Loop.
When every case ran (``make test-all``), the table is written to docs/export_coverage.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ATOL = 1e-4
BATCHES = (1, 5)
DOC = Path(__file__).resolve().parent.parent / "docs" / "export_coverage.md"


@dataclass(frozen=True)
class Case:
    id: str
    layers: Callable[[], list]  # built lazily: keras is imported inside
    shape: tuple
    dtype: str = "float32"
    inputs: str = "normal"  # "normal" | "tokens" (ids, 0 = pad) | "padded" (floats, 0 steps): padded right, left, with holes
    native: tuple[str, ...] = ()  # ONNX recurrent ops that must appear
    slow: bool = False


def _L():
    import keras

    return keras.layers


def _normalization():
    layer = _L().Normalization()
    layer.adapt(np.random.RandomState(0).normal(3.0, 2.0, (64, 6)).astype("float32"))
    return layer


ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "silu", "swish", "softplus",
               "softsign", "hard_sigmoid", "leaky_relu", "linear"]

CASES: list[Case] = [
    *[Case(f"dense_{a}", lambda a=a: [_L().Dense(8, activation=a), _L().Dense(3)], (6,)) for a in ACTIVATIONS],
    Case("dense_gelu_approximate", lambda: [_L().Dense(8), _L().Activation(_gelu_approx)], (6,)),
    Case("conv1d", lambda: [_L().Conv1D(4, 3, padding="same", activation="relu"), _L().Conv1D(3, 2, strides=2)], (10, 3)),
    Case("conv2d", lambda: [_L().Conv2D(4, 3, activation="relu"), _L().Conv2D(2, 2, padding="same", strides=2)], (8, 8, 2)),
    Case("conv2d_transpose", lambda: [_L().Conv2DTranspose(3, 3, strides=2, padding="same")], (5, 5, 2)),
    Case("depthwise_conv2d", lambda: [_L().DepthwiseConv2D(3, depth_multiplier=2)], (7, 7, 3)),
    Case("separable_conv2d", lambda: [_L().SeparableConv2D(4, 3, padding="same")], (7, 7, 3)),
    Case("pooling_1d", lambda: [_L().MaxPooling1D(2), _L().AveragePooling1D(2, padding="same")], (9, 3)),
    Case("pooling_2d", lambda: [_L().MaxPooling2D(2), _L().AveragePooling2D(2, padding="same")], (9, 8, 2)),
    Case("global_pooling_1d", lambda: [_L().Conv1D(4, 2), _L().GlobalMaxPooling1D()], (8, 3)),
    Case("global_pooling_2d", lambda: [_L().GlobalAveragePooling2D()], (5, 6, 3)),
    Case("batchnorm", lambda: [_L().Dense(6), _L().BatchNormalization(), _L().Dense(2)], (4,)),
    Case("layernorm", lambda: [_L().Dense(6), _L().LayerNormalization(), _L().Dense(2)], (4,)),
    Case("dropouts_noise", lambda: [_L().Dropout(0.5), _L().SpatialDropout1D(0.3), _L().GaussianNoise(1.0),
                                    _L().Flatten(), _L().Dense(2)], (5, 3)),
    Case("flatten_reshape_permute", lambda: [_L().Reshape((3, 4)), _L().Permute((2, 1)), _L().Flatten()], (12,)),
    Case("repeat_vector", lambda: [_L().Dense(4), _L().RepeatVector(3)], (5,)),
    Case("pad_crop_upsample_2d", lambda: [_L().ZeroPadding2D(1), _L().Cropping2D(((1, 0), (0, 2))),
                                          _L().UpSampling2D(2)], (4, 5, 2)),
    Case("rescaling_normalization", lambda: [_L().Rescaling(0.5, offset=-1.0), _normalization(), _L().Dense(2)], (6,)),
    Case("embedding", lambda: [_L().Embedding(30, 4), _L().Flatten(), _L().Dense(2)], (7,), "int32", "tokens"),
    Case("embedding_mask_zero_pool", lambda: [_L().Embedding(30, 4, mask_zero=True), _L().GlobalAveragePooling1D(),
                                              _L().Dense(2)], (7,), "int32", "tokens"),
    Case("time_distributed_dense", lambda: [_L().TimeDistributed(_L().Dense(3, activation="tanh"))], (5, 4)),
    Case("activation_layers", lambda: [_L().Dense(8), _L().ReLU(), _L().Dense(8), _L().LeakyReLU(0.2),
                                       _L().Dense(8), _L().PReLU(), _L().Dense(8), _L().ELU(),
                                       _L().Dense(3), _L().Softmax()], (5,)),
    # recurrent
    Case("lstm", lambda: [_L().LSTM(8)], (6, 3), native=("LSTM",)),
    Case("lstm_seq", lambda: [_L().LSTM(8, return_sequences=True)], (6, 3), native=("LSTM",)),
    Case("lstm_go_backwards_seq", lambda: [_L().LSTM(8, return_sequences=True, go_backwards=True)], (6, 3),
         native=("LSTM",)),
    Case("gru", lambda: [_L().GRU(8)], (6, 3), native=("GRU",)),
    Case("gru_seq_reset_before", lambda: [_L().GRU(8, return_sequences=True, reset_after=False)], (6, 3),
         native=("GRU",)),
    Case("gru_go_backwards", lambda: [_L().GRU(8, go_backwards=True)], (6, 3), native=("GRU",)),
    Case("simple_rnn", lambda: [_L().SimpleRNN(8)], (6, 3), native=("RNN",)),
    Case("simple_rnn_seq_backwards", lambda: [_L().SimpleRNN(8, return_sequences=True, go_backwards=True)], (6, 3),
         native=("RNN",)),
    Case("gru_hard_sigmoid_relu", lambda: [_L().GRU(6, activation="relu", recurrent_activation="hard_sigmoid")],
         (6, 3), native=("GRU",)),
    Case("bidirectional_lstm_concat", lambda: [_L().Bidirectional(_L().LSTM(6))], (6, 3), native=("LSTM",)),
    Case("bidirectional_gru_sum_seq", lambda: [_L().Bidirectional(_L().GRU(6, return_sequences=True),
                                                                  merge_mode="sum")], (6, 3), native=("GRU",)),
    Case("bidirectional_rnn_ave_mul", lambda: [
        _L().Bidirectional(_L().SimpleRNN(5, return_sequences=True), merge_mode="ave"),
        _L().Bidirectional(_L().SimpleRNN(4), merge_mode="mul")], (6, 3), native=("RNN",)),
    Case("stacked_lstm_gru_dense", lambda: [_L().LSTM(8, return_sequences=True), _L().GRU(6),
                                            _L().Dense(2, activation="softmax")], (6, 3), native=("LSTM", "GRU")),
    Case("conv1d_lstm", lambda: [_L().Conv1D(4, 2, activation="relu"), _L().MaxPooling1D(2), _L().LSTM(6),
                                 _L().Dense(1)], (10, 2), native=("LSTM",)),
    Case("dynamic_time_gru", lambda: [_L().GRU(6, return_sequences=True), _L().TimeDistributed(_L().Dense(2))],
         (None, 3), native=("GRU",)),
    # masked
    Case("masking_lstm", lambda: [_L().Masking(), _L().LSTM(8)], (6, 3), inputs="padded", native=("LSTM",)),
    Case("masking_lstm_seq", lambda: [_L().Masking(), _L().LSTM(8, return_sequences=True)], (6, 3),
         inputs="padded", native=("LSTM",)),
    Case("embedding_mask_lstm", lambda: [_L().Embedding(30, 4, mask_zero=True), _L().LSTM(8), _L().Dense(2)], (7,),
         "int32", "tokens", native=("LSTM",)),
    Case("embedding_mask_gru", lambda: [_L().Embedding(30, 4, mask_zero=True), _L().GRU(8), _L().Dense(2)], (7,),
         "int32", "tokens", native=("GRU",)),
    Case("embedding_mask_stacked_seq", lambda: [
        _L().Embedding(30, 4, mask_zero=True), _L().GRU(6, return_sequences=True),
        _L().SimpleRNN(5, return_sequences=True, go_backwards=True), _L().LSTM(4, return_sequences=True)],
        (7,), "int32", "tokens", native=("GRU", "RNN", "LSTM")),
    Case("embedding_mask_bidirectional_pool", lambda: [
        _L().Embedding(30, 4, mask_zero=True), _L().Bidirectional(_L().LSTM(5, return_sequences=True)),
        _L().GlobalAveragePooling1D(), _L().Dense(3, activation="softmax")], (7,), "int32", "tokens",
        native=("LSTM",)),
    Case("embedding_mask_bidirectional_gru_sum", lambda: [
        _L().Embedding(30, 4, mask_zero=True), _L().Bidirectional(_L().GRU(5), merge_mode="sum")], (7,),
        "int32", "tokens", native=("GRU",)),
]


def _gelu_approx(x):
    import keras

    return keras.activations.gelu(x, approximate=True)


def _inputs(case: Case, batch: int) -> np.ndarray:
    rng = np.random.RandomState(batch * 7 + len(case.id))
    shape = tuple(6 if d is None else d for d in case.shape)
    if case.inputs not in ("tokens", "padded"):
        return rng.normal(0, 1, (batch, *shape)).astype(case.dtype)
    if case.inputs == "tokens":
        x = rng.randint(1, 30, (batch, *shape)).astype(case.dtype)
    else:
        x = rng.normal(0, 1, (batch, *shape)).astype(case.dtype)
    steps = shape[0]
    for i in range(batch):  # rows padded on the right, on the left, with holes; lengths vary
        length = max(1, steps - 1 - i)
        pattern = i % 3
        if pattern == 0:
            x[i, length:] = 0
        elif pattern == 1:
            x[i, : steps - length] = 0
        else:
            x[i, rng.rand(steps) < 0.4] = 0
    if batch > 2:
        x[-1] = 0  # one all-padding row
    return x


def _build(case: Case):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(case.shape, dtype=case.dtype, name="x"), *case.layers()], name=case.id)
    # Keras initialises biases (and BatchNorm statistics) to constants: randomise every
    # trainable weight so that a wrong bias or gate order cannot hide behind zeros.
    rng = np.random.RandomState(1)
    for w in model.trainable_weights:
        w.assign(rng.normal(0.0, 0.4, tuple(w.shape)).astype("float32"))
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
    return model


RESULTS: dict[str, dict] = {}


def _describe(layer) -> str:
    name = type(layer).__name__
    inner = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None)
    if name in ("Bidirectional", "TimeDistributed") and inner is not None:
        extra = f", {layer.merge_mode}" if name == "Bidirectional" else ""
        name = f"{name}({type(inner).__name__}{extra})"
    for flag in ("return_sequences", "go_backwards", "mask_zero"):
        if getattr(layer, flag, False) and not name.startswith("Bidirectional"):
            name += f" {flag}"
    return name


@pytest.fixture(scope="module", autouse=True)
def _coverage_doc():
    """Write docs/export_coverage.md when every case ran and `make docs` asked for it."""
    yield
    if len(RESULTS) != len(CASES) or os.environ.get("SEQDEPLOY_WRITE_DOCS") != "1":
        return
    from seqdeploy.atomic import atomic_write_text

    lines = [
        "# Export layer coverage",
        "",
        "Generated by `tests/test_export_coverage.py` whenever every case ran: each small Sequential model",
        f"is exported, run in onnxruntime and compared with Keras at batch sizes {list(BATCHES)} "
        f"(pass: max abs error <= {ATOL:g}). Masked cases are fed rows padded on the right, on the left, "
        "with holes and all padding.",
        "",
        "| case | layers | native recurrent ops | Loop | max abs err |",
        "|---|---|---|---|---|",
    ]
    for case in CASES:
        r = RESULTS[case.id]
        lines.append(f"| {case.id} | {r['layers']} | {r['native'] or '-'} | {r['loops']} | {r['err']:.1e} |")
    atomic_write_text(DOC, "\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES]
)
def test_layer_case_matches_keras(case: Case):
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    model = _build(case)
    conv = convert_model(model)
    ops = op_counts(conv.model)
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "x"
    assert inp.shape[0] == "batch"
    err = 0.0
    for batch in BATCHES:
        x = _inputs(case, batch)
        want = np.asarray(model(x, training=False))
        (got,) = sess.run(None, {"x": x})
        assert got.shape == want.shape, f"{case.id} batch {batch}: shape {got.shape} vs Keras {want.shape}"
        err = max(err, float(np.max(np.abs(got - want))))
    assert err <= ATOL, f"{case.id}: max abs error {err:.3g} > {ATOL}"
    if case.native:
        for op in case.native:
            assert ops.get(op, 0) >= 1, f"{case.id}: no native {op} in {ops}"
        assert "Loop" not in ops and "Scan" not in ops, f"{case.id}: Loop left in the graph: {ops}"
    RESULTS[case.id] = {
        "layers": ", ".join(_describe(lay) for lay in model.layers),
        "native": ", ".join(d.split(": ", 1)[1] for d in conv.native_recurrent),
        "loops": ops.get("Loop", 0),
        "err": err,
    }


def test_case_list_is_large_enough():
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)
