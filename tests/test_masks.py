"""Masked recurrent layers match Keras exactly for every padding pattern, with native ops only.

Each model is exported once and fed one batch per padding pattern: right padding,
left padding (``pad_sequences`` default), holes (padding inside a sequence),
all-masked rows, no padding. Grid: {LSTM, GRU, SimpleRNN} x {return_sequences on/off}
x {forward, go_backwards, Bidirectional} x {single, stacked}; the default suite runs
the single layers, the stacked ones are marked slow.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ATOL = 1e-5
STEPS, VOCAB = 7, 20
CELLS = ("LSTM", "GRU", "SimpleRNN")
DIRECTIONS = ("forward", "backwards", "bidirectional")


def _patterns(batch: int = 5) -> dict[str, np.ndarray]:
    """Token ids (0 = padding) in every padding pattern; row lengths vary, incl. an all-padding row."""
    rng = np.random.RandomState(7)
    ids = rng.randint(1, VOCAB, (batch, STEPS)).astype("int32")
    lengths = np.array([STEPS, 4, 1, 0, 2][:batch])
    t = np.arange(STEPS)[None, :]
    right = np.where(t < lengths[:, None], ids, 0)
    left = np.where(t >= STEPS - lengths[:, None], ids, 0)
    holes = ids.copy()
    holes[rng.rand(batch, STEPS) < 0.35] = 0
    holes[1, [0, 3, 6]] = 0  # masked first, middle and last step
    holes[3] = 0  # all masked
    both = np.where((t >= 1) & (t < STEPS - 1), ids, 0)  # padded on both sides
    return {"right": right.astype("int32"), "left": left.astype("int32"), "holes": holes.astype("int32"),
            "both_sides": both.astype("int32"), "none": ids, "all_masked": np.zeros_like(ids)}


def _recurrent(L, cell: str, direction: str, return_sequences: bool, **kw):
    layer = getattr(L, cell)(4, return_sequences=return_sequences, go_backwards=direction == "backwards", **kw)
    return L.Bidirectional(layer, merge_mode="concat") if direction == "bidirectional" else layer


def _model(layers: list, name: str):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS,), dtype="int32", name="tokens"),
                              keras.layers.Embedding(VOCAB, 3, mask_zero=True), *layers], name=name)
    rng = np.random.RandomState(1)
    for w in model.trainable_weights:  # biases too: a wrong bias must not hide behind zeros
        w.assign(rng.normal(0.0, 0.5, tuple(w.shape)).astype("float32"))
    return model


def _check(model, patterns=None) -> dict[str, float]:
    """Export, assert native ops and no Loop, compare every pattern with Keras; return errors."""
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    conv = convert_model(model)
    ops = op_counts(conv.model)
    assert "Loop" not in ops and "Scan" not in ops, ops
    assert any(op in ops for op in ("LSTM", "GRU", "RNN")), ops
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    errors = {}
    for name, x in (patterns or _patterns()).items():
        want = np.asarray(model(x, training=False))
        (got,) = sess.run(None, {"tokens": x})
        assert got.shape == want.shape, f"{name}: {got.shape} vs {want.shape}"
        errors[name] = float(np.max(np.abs(got - want)))
    bad = {k: v for k, v in errors.items() if v > ATOL}
    assert not bad, f"{model.name}: max abs error over {ATOL} for padding patterns {bad}"
    return errors


GRID = list(itertools.product(CELLS, (True, False), DIRECTIONS))


@pytest.mark.parametrize("cell,seq,direction", GRID, ids=[f"{c}-{'seq' if s else 'last'}-{d}" for c, s, d in GRID])
def test_single_masked_layer_every_pattern(cell, seq, direction):
    import keras

    model = _model([_recurrent(keras.layers, cell, direction, seq)], f"{cell}_{direction}_{seq}")
    _check(model)


@pytest.mark.slow
@pytest.mark.parametrize("cell,seq,direction", GRID, ids=[f"{c}-{'seq' if s else 'last'}-{d}" for c, s, d in GRID])
def test_stacked_masked_layers_every_pattern(cell, seq, direction):
    """Two layers: the first returns sequences and hands its mask to the second."""
    import keras

    L = keras.layers
    other = {"LSTM": "GRU", "GRU": "SimpleRNN", "SimpleRNN": "LSTM"}[cell]
    model = _model([_recurrent(L, other, direction, True), _recurrent(L, cell, direction, seq)],
                   f"stacked_{cell}_{direction}_{seq}")
    _check(model)


def test_stacked_mixed_directions_and_pooling():
    """go_backwards feeding a forward layer (Keras passes the un-reversed mask on), a
    Bidirectional sum, then masked average pooling."""
    import keras

    L = keras.layers
    model = _model([L.GRU(4, return_sequences=True, go_backwards=True), L.LSTM(4, return_sequences=True),
                    L.Bidirectional(L.SimpleRNN(3, return_sequences=True), merge_mode="sum"),
                    L.GlobalAveragePooling1D(), L.Dense(2)], "mixed_stack")
    _check(model)


def test_zero_output_for_mask_layers():
    """A standalone layer with zero_output_for_mask=True: zeros at masked steps, and a zero
    last output when the last processed step is masked."""
    import keras

    L = keras.layers
    for seq, backwards in ((True, False), (False, False), (True, True), (False, True)):
        model = _model([L.GRU(4, return_sequences=seq, go_backwards=backwards, zero_output_for_mask=True)],
                       f"zero_out_{seq}_{backwards}")
        errors = _check(model)
        assert set(errors) >= {"left", "holes"}


def test_mask_propagated_through_dense_and_masking_layer():
    """The mask reaches the recurrent layer through a mask-passing Dense; and from a Masking layer on floats."""
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    L = keras.layers
    _check(_model([L.Dense(5, activation="tanh"), L.LSTM(4, return_sequences=True), L.LSTM(3)], "dense_between"))

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS, 2), name="tokens"), L.Masking(0.0),
                              L.Bidirectional(L.GRU(3, return_sequences=True)), L.SimpleRNN(2)])
    conv = convert_model(model)
    assert "Loop" not in op_counts(conv.model)
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, ids in _patterns().items():
        x = np.random.RandomState(3).randn(len(ids), STEPS, 2).astype("float32") * (ids != 0)[..., None]
        np.testing.assert_allclose(sess.run(None, {"tokens": x})[0], np.asarray(model(x)), atol=ATOL, err_msg=name)


def test_all_masked_rows_give_keras_zeros():
    """Keras outputs zeros (initial state) for a row without any unmasked step; so does the export."""
    import keras

    model = _model([keras.layers.LSTM(4)], "all_masked")
    x = _patterns()["all_masked"]
    assert np.all(np.asarray(model(x)) == 0.0)
    _check(model, {"all_masked": x})


def test_verify_catches_a_right_padding_only_export(tmp_path, monkeypatch):
    """Verify's left-padded / holes probes fail an export that treats the mask as right padding."""
    import keras

    import seqdeploy.export.layers.masks as em
    from seqdeploy.errors import CheckFailed
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.verify.parity import verify_models

    model = _model([keras.layers.GRU(4), keras.layers.Dense(1, activation="sigmoid")], "right_only")
    model.save(tmp_path / "m.keras")
    real = _patterns()["right"]
    original = em.compact_steps

    def right_padding_only(node, const, x, mask):  # what sequence_lens alone does: no compaction
        c = original(node, const, x, mask)
        return em.CompactedSteps(x=x, sequence_lens=c.sequence_lens, mask=c.mask, counts=c.counts, total=c.total)

    monkeypatch.setattr(em, "compact_steps", right_padding_only)
    export_onnx(tmp_path / "m.keras", out=tmp_path / "wrong.onnx")
    monkeypatch.setattr(em, "compact_steps", original)
    export_onnx(tmp_path / "m.keras", out=tmp_path / "right.onnx")

    assert verify_models(tmp_path / "m.keras", tmp_path / "right.onnx", real_inputs=real, vocabulary_size=VOCAB).passed
    with pytest.raises(CheckFailed) as info:
        verify_models(tmp_path / "m.keras", tmp_path / "wrong.onnx", real_inputs=real, vocabulary_size=VOCAB)
    worst = {r.worst_feed for r in info.value.result.outputs}
    assert any(w and ("left-padded" in w or "holes" in w) for w in worst), worst


def test_dynamic_time_axis_with_masks():
    """Input((None,)): the same graph serves every sequence length, masks included."""
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None,), dtype="int32", name="tokens"), L.Embedding(VOCAB, 3, mask_zero=True),
                              L.Bidirectional(L.GRU(4, return_sequences=True)),
                              L.LSTM(3, go_backwards=True, return_sequences=True),
                              L.TimeDistributed(L.Dense(2))])  # masked, dynamic time: folded, not a Loop
    conv = convert_model(model)
    assert "Loop" not in op_counts(conv.model)
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for steps in (1, 5, 9):
        x = np.random.RandomState(steps).randint(0, 4, (4, steps)).astype("int32")  # ~1/4 padding anywhere
        np.testing.assert_allclose(sess.run(None, {"tokens": x})[0], np.asarray(model(x)), atol=ATOL)


@pytest.mark.parametrize("opset", [13, 18])
def test_mask_nodes_at_lowest_and_highest_opset(opset):
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model

    L = keras.layers
    model = _model([L.Bidirectional(L.GRU(4, return_sequences=True)),
                    L.SimpleRNN(3, go_backwards=True, return_sequences=True, zero_output_for_mask=True), L.LSTM(2)],
                   f"opset_{opset}")
    conv = convert_model(model, opset=opset)
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, x in _patterns().items():
        np.testing.assert_allclose(sess.run(None, {"tokens": x})[0], np.asarray(model(x)), atol=ATOL, err_msg=name)


STATE_GRID = [(c, d) for c in CELLS for d in DIRECTIONS]


@pytest.mark.parametrize("cell,direction", STATE_GRID, ids=[f"{c}-{d}" for c, d in STATE_GRID])
def test_return_state_gives_keras_final_states_for_every_pattern(cell, direction):
    """return_state=True (a seq2seq encoder): the output and every final state (h, and c for LSTM; forward then
    backward) from the one native node, equal to Keras for every padding pattern (masked steps keep the state)."""
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    keras.utils.set_random_seed(0)
    inp = keras.Input((STEPS,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, 3, mask_zero=True)(inp)
    outs = _recurrent(keras.layers, cell, direction, cell != "GRU", return_state=True)(x)
    model = keras.Model(inp, list(outs), name=f"state_{cell}_{direction}")
    rng = np.random.RandomState(1)
    for w in model.trainable_weights:
        w.assign(rng.normal(0.0, 0.5, tuple(w.shape)).astype("float32"))
    n_states = (2 if cell == "LSTM" else 1) * (2 if direction == "bidirectional" else 1)
    assert len(model.outputs) == 1 + n_states
    conv = convert_model(model)
    ops = op_counts(conv.model)
    assert "Loop" not in ops and ops.get({"SimpleRNN": "RNN"}.get(cell, cell)) == 1, ops
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, ids in _patterns().items():
        want = [np.asarray(o) for o in model(ids, training=False)]
        got = sess.run(None, {"tokens": ids})
        assert [g.shape for g in got] == [w.shape for w in want], name
        err = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
        assert err <= ATOL, f"{name}: {err}"


DECODER_FAST = {("LSTM", "forward"), ("GRU", "bidirectional"), ("SimpleRNN", "backwards")}


@pytest.mark.parametrize("cell,direction", [pytest.param(c, d, id=f"{c}-{d}", marks=[] if (c, d) in DECODER_FAST
                                                         else [pytest.mark.slow]) for c, d in STATE_GRID])
def test_encoder_states_start_a_masked_decoder(cell, direction):
    """keras-io's seq2seq shape: an encoder's final states (return_state) start a decoder (initial_state), the
    decoder reading padded ids: both one native node each (ONNX initial_h / initial_c), equal to Keras."""
    import keras
    import onnxruntime as ort

    from seqdeploy.export.convert import convert_model, op_counts

    keras.utils.set_random_seed(0)
    L = keras.layers
    enc_in, dec_in = keras.Input((5, 3), name="encoder"), keras.Input((STEPS,), dtype="int32", name="tokens")
    enc = _recurrent(L, cell, direction, False, return_state=True)(enc_in)
    dec = L.Embedding(VOCAB, 3, mask_zero=True)(dec_in)
    y = _recurrent(L, cell, direction, True)(dec, initial_state=list(enc[1:]))
    model = keras.Model([enc_in, dec_in], L.Dense(3)(y))
    rng = np.random.RandomState(1)
    for w in model.trainable_weights:
        w.assign(rng.normal(0.0, 0.5, tuple(w.shape)).astype("float32"))
    conv = convert_model(model)
    ops = op_counts(conv.model)
    assert "Loop" not in ops and ops.get({"SimpleRNN": "RNN"}.get(cell, cell)) == 2, ops
    sess = ort.InferenceSession(conv.model.SerializeToString(), providers=["CPUExecutionProvider"])
    xe = rng.normal(size=(5, 5, 3)).astype("float32")
    for name, ids in _patterns().items():
        want = np.asarray(model([xe, ids], training=False))
        got = sess.run(None, {"encoder": xe, "tokens": ids})[0]
        assert np.abs(got - want).max() <= ATOL, name
