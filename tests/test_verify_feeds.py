"""verify on models trained elsewhere: several inputs, variable-length axes, generated inputs, where the
report goes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from keras_zoo import MAXLEN, VOCAB, sample
from seqdeploy.app.cli import app
from seqdeploy.errors import VerifyInputError
from seqdeploy.verify.feeds import check_data, input_specs, make_feeds

runner = CliRunner()


@pytest.fixture(scope="module")
def models(keras_zoo):
    from seqdeploy.export.convert import load_keras_model

    return {n: load_keras_model(keras_zoo[n], custom_objects=[keras_zoo["layers"]])
            for n in ("bilstm", "transformer", "two_inputs")}


@pytest.fixture(scope="module")
def onnx_files(keras_zoo, tmp_path_factory):
    from seqdeploy.export.convert import export_onnx

    out = tmp_path_factory.mktemp("zoo_onnx")
    return {n: export_onnx(keras_zoo[n], out=out / f"{n}.onnx", custom_objects=[keras_zoo["layers"]]).onnx_path
            for n in ("bilstm", "two_inputs")}


def test_input_specs_read_names_lengths_and_id_ranges(models):
    (ids,) = input_specs(models["bilstm"])
    assert (ids.name, ids.shape, ids.dtype, ids.id_range) == ("ids", (None,), "int32", VOCAB)
    (tok,) = input_specs(models["transformer"])  # Embeddings inside the custom layer: tokens and positions
    assert (tok.shape, tok.id_range, tok.length_cap) == ((MAXLEN,), VOCAB, MAXLEN)
    num, words = input_specs(models["two_inputs"])
    assert (num.name, num.shape, num.dtype, num.id_range) == ("num", (4,), "float32", None)
    assert (words.name, words.shape) == ("words", (None,))


def test_check_data_by_input_name(models):
    specs = input_specs(models["two_inputs"])
    data = sample("two_inputs", n=5)
    got = check_data(data, specs)
    assert got["words"].dtype == np.int32 and got["num"].shape == (5, 4)
    with pytest.raises(VerifyInputError, match=r"no array for input\(s\) \['words'\]"):
        check_data({"num": data["num"]}, specs)
    with pytest.raises(VerifyInputError, match="one array but the model has inputs"):
        check_data(data["num"], specs)
    with pytest.raises(VerifyInputError, match="has 3 rows, the other inputs 5"):
        check_data({"num": data["num"], "words": data["words"][:3]}, specs)
    bil = input_specs(models["bilstm"])
    assert check_data(np.ones((2, 31)), bil)["ids"].shape == (2, 31)  # any length
    with pytest.raises(VerifyInputError, match=r"ids in \[99, 99\] but its Embedding takes ids in \[0, 39\]"):
        check_data(np.full((2, 3), 99), bil)


def test_generated_feeds_stay_in_range_and_vary_length(models):
    specs = input_specs(models["bilstm"])
    feeds = make_feeds(None, None, specs, samples=20)
    kinds = [k for k, _ in feeds]
    assert "random" in kinds and any(k.startswith("random[len=") for k in kinds) and "random[b=1]" in kinds
    lengths = {f["ids"].shape[1] for _, f in feeds}
    assert len(lengths) >= 2
    assert all(0 <= f["ids"].min() and f["ids"].max() < VOCAB for _, f in feeds)
    (tok,) = input_specs(models["transformer"])
    assert all(f["tokens"].shape[1] == MAXLEN for _, f in make_feeds(None, None, [tok], samples=8))


def test_verify_cli_without_data_writes_beside_the_onnx_file(keras_zoo, onnx_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["verify", "--keras", str(keras_zoo["bilstm"]), "--onnx", str(onnx_files["bilstm"]),
                              "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["passed"] and result["max_abs_error"] < 1e-5 and result["samples"] == 0
    assert os.listdir(tmp_path) == []  # nothing in the current directory
    here = onnx_files["bilstm"].parent
    assert (here / "bilstm.verify.json").is_file() and (here / "bilstm.golden.npz").is_file()


def test_verify_cli_two_inputs_npz_and_mismatch(keras_zoo, onnx_files, tmp_path):
    np.savez(tmp_path / "s.npz", **sample("two_inputs", n=9))
    out = tmp_path / "report"
    res = runner.invoke(app, ["verify", str(keras_zoo["two_inputs"]), "--onnx", str(onnx_files["two_inputs"]),
                              "--data", str(tmp_path / "s.npz"), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["samples"] == 9
    golden = np.load(out / "golden.npz")
    assert {"input__num", "input__words", "output__value"} <= set(golden.files)
    np.savez(tmp_path / "bad.npz", num=np.zeros((3, 4), np.float32))
    res = runner.invoke(app, ["verify", "--keras", str(keras_zoo["two_inputs"]), "--onnx",
                              str(onnx_files["two_inputs"]), "--data", str(tmp_path / "bad.npz"),
                              "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "no array for input(s) ['words']" in res.output
    assert not (tmp_path / "bad").exists()
