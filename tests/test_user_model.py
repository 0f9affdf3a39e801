"""SAMPLE files of a model trained elsewhere: one column (or array) per model input, checked against the
declared inputs; the task from class names and the final activation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seqdeploy.bundle.user_model import infer_task, read_sample, target_ids
from seqdeploy.errors import DataError
from seqdeploy.verify.feeds import InputSpec

VEC = [InputSpec("features", (3,), "float32")]
SEQ = [InputSpec("ids", (None,), "int32", id_range=50, length_cap=50)]
TWO = [InputSpec("num", (2,), "float32"), InputSpec("text", (), "str")]


def test_single_vector_input_from_one_column_per_feature(tmp_path):
    (tmp_path / "s.csv").write_text("a,b,c,y\n1,2,3,pos\n4,5,6,neg\n", encoding="utf-8")
    s = read_sample(tmp_path / "s.csv", VEC, target="y")
    np.testing.assert_array_equal(s.inputs["features"], [[1, 2, 3], [4, 5, 6]])
    assert s.inputs["features"].dtype == np.float32 and list(s.targets) == ["pos", "neg"] and s.rows == 2


def test_sequences_of_any_length_are_right_padded(tmp_path):
    (tmp_path / "s.csv").write_text('ids\n"[3, 4, 5]"\n7 8\n', encoding="utf-8")
    s = read_sample(tmp_path / "s.csv", SEQ)
    np.testing.assert_array_equal(s.inputs["ids"], [[3, 4, 5], [7, 8, 0]])
    assert s.inputs["ids"].dtype == np.int32
    fixed = [InputSpec("ids", (3,), "int32")]
    with pytest.raises(DataError, match=r"line 3: column 'ids' holds 2 values, the model input takes 3"):
        read_sample(tmp_path / "s.csv", fixed)
    (tmp_path / "bad.csv").write_text("ids\n3 x 5\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON list or space-separated numbers"):
        read_sample(tmp_path / "bad.csv", SEQ)


def test_several_inputs_by_name_from_jsonl_and_npz(tmp_path):
    rows = [{"num": [1.0, 2.0], "text": "good film"}, {"num": [0.5, 0.0], "text": "bad"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    s = read_sample(tmp_path / "s.jsonl", TWO)
    assert s.inputs["num"].shape == (2, 2) and list(s.inputs["text"]) == ["good film", "bad"]
    (tmp_path / "x.jsonl").write_text(json.dumps({"num": [1.0, 2.0], "txt": "a", "extra": 1}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"do not match the model inputs \['num', 'text'\] \(missing \['text'\]\)"):
        read_sample(tmp_path / "x.jsonl", TWO)
    np.savez(tmp_path / "s.npz", num=np.zeros((3, 2), np.float32))
    with pytest.raises(DataError, match=r"no array for input\(s\) \['text'\]"):
        read_sample(tmp_path / "s.npz", TWO)
    with pytest.raises(DataError, match="needs a table"):
        read_sample(tmp_path / "s.npz", TWO, target="y")
    with pytest.raises(DataError, match="unsupported sample type '.txt'"):
        (tmp_path / "s.txt").write_text("x")
        read_sample(tmp_path / "s.txt", TWO)


def test_task_from_labels_and_activation_and_target_ids():
    import keras

    def model(units, activation):
        i = keras.Input((3,))
        return keras.Model(i, keras.layers.Dense(units, activation=activation)(i))

    assert infer_task(model(3, "softmax"), None) == "multiclass"
    assert infer_task(model(1, "sigmoid"), None) == "binary"
    assert infer_task(model(3, None), None) == "regression"
    assert infer_task(model(3, None), ["a", "b", "c"]) == "multiclass"  # logits with names: a classifier
    assert infer_task(model(1, "sigmoid"), ["no", "yes"]) == "binary"
    with pytest.raises(DataError, match="2 class names .* for an output of 3 unit"):
        infer_task(model(3, "softmax"), ["a", "b"])
    np.testing.assert_array_equal(target_ids(np.array(["b", "a", "2"], object), "multiclass", ["a", "b", "c"], "s"),
                                  [1, 0, 2])
    with pytest.raises(DataError, match="target value 'zzz' is neither a class name"):
        target_ids(np.array(["zzz"], object), "multiclass", ["a", "b"], "s")
