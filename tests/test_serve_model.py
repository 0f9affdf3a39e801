"""seqdeploy.serve.model in-process (no server, no kserve): every preprocessing kind, v2 tensors and v1 raw rows."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest

from seqdeploy.errors import InputValidationError, IntegrityError, RequestTooLarge
from seqdeploy.runtime.predictor import Predictor
from seqdeploy.serve import load_models
from seqdeploy.serve.model import ServedModel
from test_manifest import KINDS, build_bundle, sample_raw

_V2 = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(string)": "BYTES", "tensor(int32)": "INT32"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    return {k: build_bundle(root, k) for k in KINDS}


def _as_sent(raw, datatype):
    """What the protocol decoder hands the model: BYTES arrive as bytes objects."""
    if datatype == "BYTES":
        return np.asarray([t.encode() for t in raw], dtype=object)
    return np.asarray(raw, dtype=np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_v2_and_v1_answers_equal_predictor_for_every_kind(bundles, kind):
    m = ServedModel.load(bundles[kind])
    p = Predictor.from_bundle(bundles[kind])
    assert m.portable
    sess = ort.InferenceSession(str(bundles[kind] / m.graph_file))
    assert [t.as_dict() for t in m.inputs] == [
        {"name": i.name, "datatype": _V2[i.type], "shape": [d if isinstance(d, int) else -1 for d in i.shape]}
        for i in sess.get_inputs()]
    raws = [sample_raw(kind, n=n, seed=n) for n in (1, 3, 5)]
    # v2: three requests, one onnxruntime call, each gets its own rows
    payloads = []
    for raw in raws:
        feeds, rows = m.check_v2([(m.inputs[0].name, m.inputs[0].datatype, _as_sent(raw, m.inputs[0].datatype))],
                                 max_rows=100)
        assert rows == len(raw)
        payloads.append(feeds)
    for raw, out in zip(raws, m.run_v2(payloads)):
        answer = out["label"] if "label" in out else out["prediction"]
        want = p.predict(raw if kind != "text" else list(raw))
        if answer.dtype == object:
            assert answer.tolist() == want.tolist()
        else:
            np.testing.assert_allclose(answer, want, rtol=1e-5, atol=1e-5)
        if "probabilities" in out:
            np.testing.assert_allclose(out["probabilities"], p.predict_proba(raw), rtol=1e-6, atol=1e-7)
    # v1: raw rows as JSON would carry them, batched the same way
    v1 = [m.check_instances(raw if kind == "text" else np.asarray(raw).tolist(), max_rows=100) for raw in raws]
    assert [n for _, n in v1] == [1, 3, 5]
    for raw, got in zip(raws, m.run_v1([x for x, _ in v1])):
        if kind == "window":
            np.testing.assert_allclose(got, p.predict(raw), rtol=1e-6)
        else:
            assert got.tolist() == p.predict(raw).tolist()


def test_requests_that_do_not_fit_are_refused_with_what_was_expected(bundles):
    m = ServedModel.load(bundles["binary"])
    name = m.inputs[0].name
    x = np.zeros((2, 4), np.float32)
    cases = [
        ([("nope", "FP32", x)], "unknown ['nope'], missing ['features']"),
        ([(name, "FP64", x.astype(np.float64))], "datatype FP64 (expected FP32)"),
        ([(name, "FP32", np.zeros((2, 5), np.float32))], "shape [2, 5] (expected [-1, 4]"),
        ([(name, "FP32", np.zeros((0, 4), np.float32))], "no data"),
        ([(name, "FP32", np.array([[1, np.nan, 0, 0]], np.float32))], "row 0 contains a non-finite value"),
        ([(name, "FP32", x), (name, "FP32", x)], "duplicated"),
    ]
    for tensors, msg in cases:
        with pytest.raises(InputValidationError, match=re.escape(msg)):
            m.check_v2(tensors, max_rows=100)
    with pytest.raises(RequestTooLarge, match="101 rows"):
        m.check_v2([(name, "FP32", np.zeros((101, 4), np.float32))], max_rows=100)
    with pytest.raises(RequestTooLarge, match="at most 2"):
        m.check_instances([[0.0] * 4] * 3, max_rows=2)
    with pytest.raises(InputValidationError, match="non-empty list"):
        m.check_instances([], max_rows=2)
    with pytest.raises(InputValidationError, match="not outputs"):
        m.requested_outputs(["nope"])
    text = ServedModel.load(bundles["text"])
    with pytest.raises(InputValidationError, match="expected a string"):
        text.check_instances(["fine", 3], max_rows=10)


def test_load_models_checks_every_bundle_and_names(bundles, tmp_path):
    with pytest.raises(Exception, match="two bundles are both named"):
        load_models([bundles["binary"], bundles["binary"]])
    assert [m.name for m in load_models([bundles["binary"], bundles["binary"]], names=["a", "b"])] == ["a", "b"]
    with pytest.raises(Exception, match="cannot appear in a URL path"):
        load_models([bundles["binary"]], names=["a/b"])
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(bundles["window"], bad)
    portable = bad / ServedModel.load(bad).graph_file
    portable.write_bytes(portable.read_bytes() + b"\0")
    with pytest.raises(IntegrityError):
        load_models([bad])
