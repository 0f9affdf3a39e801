"""The mismatch locator names the first layer whose output the ONNX graph gets wrong."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

T, VOCAB = 6, 20


def _seeded(model):
    rng = np.random.RandomState(1)
    for w in model.trainable_weights:
        w.assign(rng.normal(0.0, 0.4, tuple(w.shape)).astype("float32"))
    return model


def _tokens(batch=6):
    rng = np.random.RandomState(0)
    x = rng.randint(1, VOCAB, (batch, T)).astype("int32")
    x[1, :3] = 0  # left padded
    x[2, 2] = 0  # a hole
    return x


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = _seeded(keras.Sequential([
        keras.Input((T,), dtype="int32", name="tokens"), L.Embedding(VOCAB, 4, mask_zero=True, name="emb"),
        L.LSTM(5, return_sequences=True, name="enc"), L.Dense(6, activation="tanh", name="middle"),
        L.GRU(4, name="dec"), L.Dense(3, activation="softmax", name="head")], name="chain"))
    root = tmp_path_factory.mktemp("locate")
    model.save(root / "m.keras")
    from seqdeploy.export.convert import export_onnx

    export_onnx(root / "m.keras", out=root / "m.onnx")
    return root, model


def _corrupt(src, dst, layer: str, op_types=("MatMul", "Gemm", "LSTM", "GRU", "RNN")):
    """Add 5 to one weight of the (first) weight matrix used by ``layer``'s nodes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in op_types and layer in node.name:
            name = next(n for n in node.input if n in inits and len(inits[n].dims) >= 2)
            arr = numpy_helper.to_array(inits[name]).copy()
            arr.flat[0] += 5.0
            inits[name].CopyFrom(numpy_helper.from_array(arr, name))
            onnx.save(model, str(dst))
            return
    raise AssertionError(f"no weight of {layer!r} found")


def test_clean_export_has_no_mismatch(sequential):
    from seqdeploy.verify.locate import MATCH, locate_mismatch

    root, model = sequential
    r = locate_mismatch(model, root / "m.onnx", {"tokens": _tokens()})
    assert r.first_mismatch is None
    assert [c.layer for c in r.layers] == ["emb", "enc", "middle", "dec", "head"]
    assert all(c.status == MATCH for c in r.layers), r.layers


@pytest.mark.parametrize("layer", ["middle", "enc", "dec"])
def test_corrupted_middle_layer_is_found(sequential, layer):
    from seqdeploy.verify.locate import DIFFERS, MATCH, locate_mismatch

    root, model = sequential
    bad = root / f"bad_{layer}.onnx"
    _corrupt(root / "m.onnx", bad, layer)
    r = locate_mismatch(root / "m.keras", bad, {"tokens": _tokens()})
    assert r.first_mismatch == layer, r.layers
    status = {c.layer: c.status for c in r.layers}
    order = [c.layer for c in r.layers]
    assert all(status[n] == MATCH for n in order[: order.index(layer)])
    assert status[layer] == DIFFERS and f"{layer!r}" in r.message
    assert next(c for c in r.layers if c.layer == layer).max_abs_error > 1e-3


def test_verify_failure_names_the_layer(sequential):
    from seqdeploy.errors import CheckFailed
    from seqdeploy.verify.parity import verify_models

    root, _ = sequential
    bad = root / "bad_verify.onnx"
    _corrupt(root / "m.onnx", bad, "middle")
    with pytest.raises(CheckFailed) as info:
        verify_models(root / "m.keras", bad, real_inputs=_tokens(), vocabulary_size=VOCAB)
    hints = [w for w in info.value.result.warnings if "layer locator" in w]
    assert len(hints) == 1 and "first layer whose output differs: 'middle' (Dense)" in hints[0]


def test_functional_branch_is_found_while_the_other_branch_matches(tmp_path):
    import keras

    from seqdeploy.export.convert import export_onnx
    from seqdeploy.verify.locate import MATCH, locate_mismatch

    L = keras.layers
    keras.utils.set_random_seed(0)
    x = keras.Input((T, 3), name="window")
    a = L.Dense(4, name="branch_a")(L.LSTM(4, name="rnn")(x))
    b = L.Dense(4, name="branch_b")(L.GlobalAveragePooling1D(name="pool")(L.Conv1D(3, 2, name="conv")(x)))
    model = _seeded(keras.Model(x, L.Dense(1, name="out")(L.Concatenate(name="cat")([a, b]))))
    model.save(tmp_path / "f.keras")
    export_onnx(tmp_path / "f.keras", out=tmp_path / "f.onnx")
    _corrupt(tmp_path / "f.onnx", tmp_path / "bad.onnx", "branch_b")
    feed = {"window": np.random.RandomState(0).randn(4, T, 3).astype("float32")}
    r = locate_mismatch(model, tmp_path / "bad.onnx", feed)
    status = {c.layer: c.status for c in r.layers}
    assert r.first_mismatch == "branch_b", r.layers
    assert status["rnn"] == status["branch_a"] == status["conv"] == status["pool"] == MATCH


def test_missing_feed_is_a_clear_error(sequential):
    from seqdeploy.errors import VerifyInputError
    from seqdeploy.verify.locate import locate_mismatch

    root, model = sequential
    with pytest.raises(VerifyInputError, match=r"no feed for input\(s\) \['tokens'\]"):
        locate_mismatch(model, root / "m.onnx", {"x": _tokens()})


def test_conv_net_layouts_are_matched_and_the_corrupted_conv_found(tmp_path):
    """tf2onnx runs Conv2D channels-first: the locator still matches the channels-last Keras outputs."""
    import keras

    from seqdeploy.export.convert import export_onnx
    from seqdeploy.verify.locate import MATCH, UNOBSERVED, locate_mismatch

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = _seeded(keras.Sequential([
        keras.Input((8, 8, 2), name="img"), L.Conv2D(4, 3, name="c1"), L.BatchNormalization(name="bn"),
        L.ReLU(name="act"), L.Conv2D(3, 3, name="c2"), L.Flatten(name="flat"), L.Dense(2, name="out")]))
    model.save(tmp_path / "cnn.keras")
    export_onnx(tmp_path / "cnn.keras", out=tmp_path / "cnn.onnx")
    feed = {"img": np.random.RandomState(0).randn(3, 8, 8, 2).astype("float32")}
    clean = locate_mismatch(model, tmp_path / "cnn.onnx", feed)
    status = {c.layer: c.status for c in clean.layers}
    # the export folds the inference BatchNormalization into c1's Conv: c1's own output no longer exists in the
    # graph (unobserved), the folded Conv answers for bn
    assert status.pop("c1") == UNOBSERVED, clean.layers
    assert clean.first_mismatch is None and set(status.values()) == {MATCH}, clean.layers
    _corrupt(tmp_path / "cnn.onnx", tmp_path / "bad.onnx", "c2", op_types=("Conv",))
    bad = locate_mismatch(model, tmp_path / "bad.onnx", feed)
    assert bad.first_mismatch == "c2" and [c.status for c in bad.layers[1:3]] == [MATCH] * 2
