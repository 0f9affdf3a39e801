"""Custom objects: the file that defines a model's custom layers is imported and its classes/functions
passed to Keras; a load failure names the missing class and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seqdeploy.app.cli import app
from seqdeploy.errors import InputFileNotFound, ModelLoadError
from seqdeploy.export.custom_objects import load_custom_objects, missing_object

runner = CliRunner()


def test_collects_registered_and_plain_layers_and_functions(tmp_path):
    f = tmp_path / "objs.py"
    f.write_text("import keras\nfrom keras.layers import Dense  # imported, not defined here\n"
                 "@keras.saving.register_keras_serializable(package='t')\nclass Reg(keras.layers.Layer):\n    pass\n"
                 "class Plain(keras.layers.Layer):\n    pass\n"
                 "def swish2(x):\n    return x * keras.ops.sigmoid(2 * x)\n"
                 "class Helper:\n    pass\n", encoding="utf-8")
    objs = load_custom_objects([f])
    assert {"Reg", "t>Reg", "Plain", "swish2"} <= set(objs)
    assert "Dense" not in objs and "Helper" not in objs
    assert objs["Reg"] is objs["t>Reg"]


def test_a_file_that_raises_names_its_line(tmp_path):
    f = tmp_path / "broken.py"
    f.write_text("import keras\n\nraise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"broken\.py:3 raised RuntimeError: boom"):
        load_custom_objects([f])
    with pytest.raises(InputFileNotFound, match="does not exist"):
        load_custom_objects([tmp_path / "nope.py"])
    with pytest.raises(InputFileNotFound, match="not importable"):
        load_custom_objects(["no_such_module_anywhere"])


def test_missing_object_parses_keras_messages():
    assert missing_object("... Exception encountered: Could not locate class 'TransformerBlock'. Make sure") == \
        ("class", "TransformerBlock")
    assert missing_object("Could not locate function 'swish2'.") == ("function", "swish2")
    assert missing_object("something else") is None


def test_export_with_custom_objects_and_without(keras_zoo, tmp_path):
    model = keras_zoo["transformer"]
    bad = runner.invoke(app, ["export", str(model), "--out", str(tmp_path / "t.onnx")])
    assert bad.exit_code == 2
    assert "'TransformerBlock' (layer 'transformer_block')" in bad.output  # every class not defined here
    assert not (tmp_path / "t.onnx").exists()
    ok = runner.invoke(app, ["export", "--keras", str(model), "--out", str(tmp_path / "t.onnx"),
                             "--custom-objects", str(keras_zoo["layers"])])
    assert ok.exit_code == 0, ok.output
    import onnxruntime as ort

    from keras_zoo import sample
    from seqdeploy.export.convert import load_keras_model

    x = sample("transformer")["tokens"]
    want = np.asarray(load_keras_model(model, custom_objects=[keras_zoo["layers"]])(x, training=False))
    got = ort.InferenceSession(str(tmp_path / "t.onnx")).run(None, {"tokens": x})[0]
    assert np.abs(got - want).max() <= 1e-5


def test_unknown_class_when_the_file_lacks_it(keras_zoo, tmp_path):
    other = tmp_path / "other.py"
    other.write_text("import keras\nclass Unrelated(keras.layers.Layer):\n    pass\n", encoding="utf-8")
    res = runner.invoke(app, ["export", str(keras_zoo["transformer"]), "--out", str(tmp_path / "t.onnx"),
                              "--custom-objects", str(other)])
    assert res.exit_code == 2
    assert "'TransformerBlock' (layer 'transformer_block')" in res.output and "not defined here" in res.output
    raising = tmp_path / "raising.py"
    raising.write_text("x = 1 / 0\n", encoding="utf-8")
    res = runner.invoke(app, ["verify", "--keras", str(keras_zoo["transformer"]), "--onnx", str(tmp_path / "t.onnx"),
                              "--custom-objects", str(raising)])
    assert res.exit_code == 2 and "raising.py:1 raised ZeroDivisionError" in res.output


def test_corrupt_keras_file_and_lambda(tmp_path):
    import keras

    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file at all")
    res = runner.invoke(app, ["export", str(bad), "--out", str(tmp_path / "bad.onnx")])
    assert res.exit_code == 2 and "not a saved Keras model" in res.output
    i = keras.Input((3,), name="x")
    m = keras.Model(i, keras.layers.Lambda(lambda t: t * 2.0, name="double")(i))
    m.save(tmp_path / "lam.keras")
    res = runner.invoke(app, ["export", str(tmp_path / "lam.keras"), "--out", str(tmp_path / "lam.onnx")])
    assert res.exit_code == 2 and "'double'" in res.output and "unsafe" in res.output
    assert not (tmp_path / "lam.onnx").exists() and not (tmp_path / "bad.onnx").exists()


def test_export_answers_with_the_right_form(tmp_path, keras_zoo):
    res = runner.invoke(app, ["export"])
    assert res.exit_code == 2 and "seqdeploy export MODEL.keras --out MODEL.onnx" in res.output
    shutil.copy(keras_zoo["fcn"], tmp_path / "a.keras")
    res = runner.invoke(app, ["export", str(keras_zoo["fcn"]), "--keras", str(tmp_path / "a.keras")])
    assert res.exit_code == 2 and "give the model once" in res.output
