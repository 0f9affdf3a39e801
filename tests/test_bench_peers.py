"""The peer runners (OpenVINO, LiteRT) answer like Keras on the same inputs, and a runner that does not is
listed with its error instead of being timed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from seqdeploy.bench import StopRule, run_bench
from seqdeploy.bench.discover import random_data
from seqdeploy.bench.runners import disagreement, tolerance
from seqdeploy.bench.runners.keras import KerasRunner, KerasSource
from seqdeploy.bench.runners.onnxruntime import OrtRunner

FAST = StopRule(duration_s=0.05, warmup_s=0.0, slice_s=0.005)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory) -> Path:
    """A run directory with a small untrained conv net (Conv2D, BatchNorm, SeparableConv2D, GAP, softmax)
    saved as model.keras and exported to model.onnx."""
    import keras

    from seqdeploy.export.convert import export_onnx

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inp, out)
    run = tmp_path_factory.mktemp("peers") / "conv"
    run.mkdir()
    model.save(run / "model.keras")
    export_onnx(run / "model.keras", out=run / "model.onnx")
    return run


def _x(batch: int = 4) -> np.ndarray:
    return np.random.default_rng(1).random((batch, 12, 12, 3), dtype=np.float32)


def _keras_answers(run: Path, x: np.ndarray) -> list[np.ndarray]:
    r = KerasRunner(KerasSource(run / "model.keras"))
    r.prepare(1)
    return list(r.infer({"image": x}))


def test_disagreement_tolerances():
    ref = [np.array([[0.1, 0.9]], np.float32)]
    assert disagreement(ref, [ref[0] + 5e-5]) is None
    assert "max |diff|" in disagreement(ref, [ref[0] + 0.01])
    assert disagreement(ref, [ref[0] + 0.01], "int8") is None  # int8 is held to a fraction of the output scale
    assert "max |diff|" in disagreement(ref, [ref[0][:, ::-1]], "int8")
    assert "non-finite" in disagreement(ref, [np.full_like(ref[0], np.nan)], "int8")
    assert "values" in disagreement(ref, [np.zeros(3)])
    assert tolerance("int8-static") == tolerance("int8") != tolerance("fp32")


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed (peers extra)")
def test_openvino_answers_like_keras(conv_run):
    from seqdeploy.bench.runners.openvino import OpenvinoRunner

    x = _x()
    r = OpenvinoRunner(conv_run / "model.onnx")
    r.prepare(1)
    assert r.set_batch(4) is None
    got = r.infer({"image": x})
    assert got[0].shape == (4, 3)
    assert disagreement(_keras_answers(conv_run, x), got) is None
    r.set_batch(1)  # a second static batch size compiles its own model
    assert disagreement(_keras_answers(conv_run, x[:1]), r.infer({"image": x[:1]})) is None
    assert "LATENCY hint" in r.notes[0]


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None, reason="ai-edge-litert is not installed (peers extra)")
def test_litert_runners_answer_like_keras(conv_run):
    from seqdeploy.bench.runners.tflite import TfliteRunner, convert_tflite

    x = _x()
    models, errors = convert_tflite(conv_run / "model.keras", ("fp32", "int8-dynamic", "int8"), _x(16))
    assert set(models) == {"fp32", "int8-dynamic", "int8"}, errors
    ref = _keras_answers(conv_run, x)
    for precision, m in models.items():
        assert m.fixed_batch is None and "from_keras_model" in m.notes[0]
        r = TfliteRunner(m)
        r.prepare(1)
        assert r.set_batch(4) is None
        got = r.infer({"image": x})
        assert got[0].shape == (4, 3)
        assert disagreement(ref, got, precision) is None, precision
        assert "ai_edge_litert Interpreter" in r.notes[0]
    fp32 = TfliteRunner(models["fp32"])
    fp32.prepare(1)
    fp32.set_batch(4)
    assert float(np.max(np.abs(fp32.infer({"image": x})[0] - ref[0]))) < 1e-5


class WrongPeer(OrtRunner):
    """The right graph with a wrong answer: what a broken converter gives."""

    family = "tflite"

    def infer(self, feeds):
        return [np.asarray(o)[:, ::-1].copy() for o in super().infer(feeds)]


def test_a_peer_that_disagrees_is_listed_not_timed(conv_run):
    onnx = conv_run / "model.onnx"
    src = KerasSource(conv_run / "model.keras")
    runners = [OrtRunner(onnx, "fp32"), KerasRunner(src, "direct"), WrongPeer(onnx, "fp32", name="tflite:fp32")]
    data = random_data("image", ["batch", 12, 12, 3], np.float32, n=32)
    res = run_bench(conv_run, batches=(1, 4), runners=runners, data=data, rule=FAST)
    for b in (1, 4):
        assert res.get("ort:fp32", b, 1).status == "ok"
        assert res.get("keras:direct", b, 1).status == "ok"
        bad = res.get("tflite:fp32", b, 1)
        assert bad.status == "error" and bad.latency is None
        assert bad.reason.startswith("answers disagree with Keras: output 0: max |diff|")
        assert res.get("ort:fp32", b, 1).speedup["tflite_best"] is None  # no time, so never a win


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None, reason="ai-edge-litert is not installed (peers extra)")
def test_litert_falls_back_to_select_tf_ops_for_a_string_model_and_the_interpreter_refuses_it(tmp_path):
    """A TextVectorization model has no LiteRT builtins: fp32 converts with Select TF ops (Flex) as the last
    resort, says so in its notes, and an interpreter without the Flex delegate refuses it with the real error."""
    import keras

    from seqdeploy.bench.runners.tflite import TfliteRunner, convert_tflite

    keras.utils.set_random_seed(0)
    vec = keras.layers.TextVectorization(max_tokens=20, output_mode="int", output_sequence_length=6)
    vec.adapt(np.asarray(["a good film", "a bad film", "Great acting!"]))
    inp = keras.Input(shape=(1,), dtype="string", name="text")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(vec(inp)))
    keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(x)).save(tmp_path / "m.keras")
    models, errors = convert_tflite(tmp_path / "m.keras", ("fp32", "int8-dynamic"))
    assert set(models) == {"fp32"} and "int8-dynamic" in errors, (models, errors)
    notes = " ".join(models["fp32"].notes)
    assert "Select TF ops" in notes and "earlier attempts failed" in notes and "StringLower" in notes
    r = TfliteRunner(models["fp32"])
    with pytest.raises(Exception, match="Flex delegate"):
        r.prepare(1)
        r.set_batch(2)
        r.infer({"text": np.asarray([["a good film"], ["bad"]], dtype=object)})
