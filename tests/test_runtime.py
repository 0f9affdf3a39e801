"""seqdeploy.runtime.predictor: Predictor on tiny onnx.helper bundles (no TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seqdeploy.errors import BundleError, InputValidationError, IntegrityError
from seqdeploy.runtime.predictor import Predictor, make_session, session_options
from test_manifest import KINDS, build_bundle, reference, sample_raw


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {k: build_bundle(root, k, quantize=(k == "binary")) for k in KINDS}


@pytest.fixture(scope="module")
def predictors(bundles):
    return {k: Predictor.from_bundle(p) for k, p in bundles.items()}


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("kind", KINDS)
def test_predictions_match_numpy_reference(predictors, kind):
    p = predictors[kind]
    raw = sample_raw(kind, n=9)
    feeds, expected = reference(kind, raw)
    np.testing.assert_array_equal(p.preprocess(raw)[p.input_names[0]], feeds)
    if kind == "window":
        np.testing.assert_allclose(p.predict(raw), expected, rtol=1e-5, atol=1e-4)
        assert p.predict(raw).shape == (9,)
        with pytest.raises(InputValidationError, match="regression: use predict"):
            p.predict_proba(raw)
        return
    proba = p.predict_proba(raw)
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    labels = np.asarray(p.manifest.labels)
    want = labels[(expected[:, 1] >= 0.5).astype(int)] if p.manifest.task == "binary" else labels[expected.argmax(1)]
    np.testing.assert_array_equal(p.predict(raw), want)


def test_binary_proba_is_n_by_2(predictors):
    proba = predictors["binary"].predict_proba(sample_raw("binary", n=5))
    assert proba.shape == (5, 2) and proba.dtype == np.float64


def test_rows_keyed_by_feature_name(predictors):
    p = predictors["binary"]
    raw = sample_raw("binary", n=4)
    rows = [{**dict(zip("abcd", map(float, r))), "id": i, "target": "x"} for i, r in enumerate(raw)]  # extras ignored
    np.testing.assert_array_equal(p.predict_proba(rows), p.predict_proba(raw))
    rows[2] = {k: v for k, v in rows[2].items() if k != "c"}
    with pytest.raises(InputValidationError, match="row 2 is missing feature 'c'"):
        p.predict(rows)
    with pytest.raises(InputValidationError, match="wrap a single row in a list"):
        p.predict(rows[0])
    with pytest.raises(InputValidationError, match="row 0 feature 'a' = 'x' .expected a number"):
        p.predict([{"a": "x", "b": 1, "c": 1, "d": 1}])


def test_golden_file_reproduced(bundles, predictors):
    for kind, path in bundles.items():
        g = np.load(path / "golden.npz")
        p = predictors[kind]
        raw = g["raw"].tolist() if kind == "text" else g["raw"]
        feeds = p.preprocess(raw)
        out = p.run(feeds)
        for name in p.output_names:
            np.testing.assert_allclose(out[name], g[f"output__{name}"], rtol=1e-5, atol=1e-6)


def test_batching_equals_unbatched(predictors):
    for kind, p in predictors.items():
        raw = sample_raw(kind, n=23)
        full = p.predict(raw, batch_size=10_000)
        for bs in (1, 3, 7):
            np.testing.assert_array_equal(p.predict(raw, batch_size=bs), full)
        if kind != "window":
            np.testing.assert_allclose(p.predict_proba(raw, batch_size=4), p.predict_proba(raw))
    with pytest.raises(InputValidationError, match="batch_size = 0"):
        predictors["binary"].predict(sample_raw("binary"), batch_size=0)


def test_nan_reported_with_row_after_batching(predictors):
    raw = sample_raw("binary", n=20)
    raw[13, 2] = np.nan
    with pytest.raises(InputValidationError, match="row 13 contains nan .expected finite numbers"):
        predictors["binary"].predict(raw, batch_size=4)


def test_artifact_selection(bundles):
    p = Predictor.from_bundle(bundles["binary"], artifact="fp16", threads=2)
    assert p.info.artifact == "model.fp16.onnx" and p.info.threads == 2
    assert p.session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(BundleError, match="'int3' is not in this bundle"):
        Predictor.from_bundle(bundles["binary"], artifact="int3")
    with pytest.raises(InputValidationError, match="threads = 0"):
        Predictor.from_bundle(bundles["binary"], threads=0)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kind, raw, match", [
    ("binary", np.zeros((2, 3)), r"shape \(2, 3\) .expected \(n, 4\)"),
    ("binary", np.zeros(4), r"for one sample use x.reshape\(1, -1\)"),
    ("binary", np.array([["a"] * 4]), "dtype <U1 .expected numbers"),
    ("binary", np.zeros((2, 4), complex), "dtype complex128"),
    ("binary", np.zeros((2, 4), bool), "dtype bool"),
    ("binary", np.zeros((0, 4)), "empty array"),
    ("binary", [], "empty list"),
    ("binary", [[1, 2, 3, 4], [1, 2]], "ragged"),
    ("binary", np.array([[1.0, np.inf, 0, 0]]), "row 0 contains inf"),
    ("binary", np.array([[1e300, 0, 0, 0]]), "overflows float32"),
    ("binary", "1,2,3,4", "received str"),
    ("binary", None, "received NoneType"),
    ("text", "good film", r"wrap it in a list: \[text\]"),
    ("text", ["good", 3], "item 1 is int"),
    ("text", [], "empty list"),
    ("text", np.array([["a"]]), "1-D list of strings"),
    ("window", np.zeros((3, 5)), r"expected \(n, 4\)"),
    ("window", np.full((1, 4), np.nan), "row 0 contains nan"),
])
def test_invalid_inputs(predictors, kind, raw, match):
    with pytest.raises(InputValidationError, match=match):
        predictors[kind].predict(raw)


def test_run_explains_rejected_feeds(predictors):
    p = predictors["binary"]
    good = np.zeros((2, 4), np.float32)
    assert p.run({"features": good})["prob"].shape == (2, 1)
    with pytest.raises(InputValidationError, match=r"dtype float64 .expected float32.; cast it with .astype\(np.float32\)"):
        p.run({"features": good.astype(np.float64)})
    with pytest.raises(InputValidationError, match=r"shape \(2, 5\) .expected \(n, 4\)"):
        p.run({"features": np.zeros((2, 5), np.float32)})
    with pytest.raises(InputValidationError, match=r"missing \['features'\], unknown \['x'\]"):
        p.run({"x": good})
    with pytest.raises(InputValidationError, match="expected a dict of numpy arrays"):
        p.run(good)


def test_text_tokenization(predictors):
    p = predictors["text"]
    ids = p.preprocess(["GOOD film, awful plot!! good good good", ""])["tokens"]
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [[2, 4, 7, 5, 2], [0, 0, 0, 0, 0]])  # lowercased, truncated, padded
    assert p.preprocess(["zzz"])["tokens"][0, 0] == 1  # <oov>


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arr=hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.bool_,
                           np.complex64, np.dtype("U3"), np.dtype("O")]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    elements=None, fill=None))
def test_property_validation_never_crashes(predictors, arr):
    """Any array -> a correct result or InputValidationError, never another exception."""
    for kind in ("binary", "window", "multiclass"):
        p = predictors[kind]
        try:
            out = p.predict(arr, batch_size=2)
        except InputValidationError:
            continue
        x = np.asarray(arr, np.float64)
        assert out.shape == (x.shape[0],)
        _, expected = reference(kind, x)
        if kind == "window":
            np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3 * (1 + np.abs(expected).max()))
        else:
            proba = p.predict_proba(arr)
            np.testing.assert_allclose(proba, expected, atol=1e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.one_of(st.lists(st.text(max_size=30), max_size=5),
                       st.lists(st.one_of(st.text(max_size=5), st.integers(), st.none(), st.floats()), max_size=4),
                       st.text(max_size=10), st.integers()))
def test_property_text_validation(predictors, texts):
    p = predictors["text"]
    try:
        out = p.predict(texts, batch_size=2)
    except InputValidationError:
        return
    _, expected = reference("text", texts)
    np.testing.assert_array_equal(out, np.asarray(p.manifest.labels)[(expected[:, 1] >= 0.5).astype(int)])


# --------------------------------------------------------------------------- integrity and loading


def test_tampered_bundle_refused_before_session(tmp_path, monkeypatch):
    run = build_bundle(tmp_path, "binary")
    path = run / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    import onnxruntime

    created = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: created.append(1))
    with pytest.raises(IntegrityError, match="model.onnx"):
        Predictor.from_bundle(run)
    assert created == []


def test_too_old_onnxruntime_refused(tmp_path):
    run = build_bundle(tmp_path, "binary", golden=False)
    m = json.loads((run / "manifest.json").read_text())
    m["artifacts"][0]["min_onnxruntime"] = "99.0"
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="needs onnxruntime >= 99.0.*pip install -U onnxruntime"):
        Predictor.from_bundle(run)


def test_session_defaults(bundles):
    so = session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    sess = make_session(bundles["binary"] / "model.onnx")
    assert sess.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(BundleError, match="cannot load"):
        make_session(b"garbage")


# --------------------------------------------------------------------------- concurrency


def test_eight_threads_match_single_threaded(predictors):
    cases = {k: sample_raw(k, n=33, seed=5) for k in KINDS}
    expected = {k: predictors[k].predict(cases[k], batch_size=8) for k in KINDS}
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        results = []
        for j in range(25):  # bounded: 8 x 25 calls
            kind = KINDS[(i + j) % len(KINDS)]
            results.append((kind, predictors[kind].predict(cases[kind], batch_size=8)))
        return results

    with ThreadPoolExecutor(8) as pool:
        all_results = [r for fut in [pool.submit(worker, i) for i in range(8)] for r in fut.result(timeout=60)]
    assert len(all_results) == 200
    for kind, got in all_results:
        np.testing.assert_array_equal(got, expected[kind])


# --------------------------------------------------------------------------- the per-call fast path


@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_returns_exactly_what_session_run_returns(bundles, kind):
    p = Predictor.from_bundle(bundles[kind])  # a fresh predictor: no cached shapes yet
    for n in (1, 3, 1, 64, 3):
        feeds = p.preprocess(sample_raw(kind, n=n, seed=n))
        want = p.session.run(list(p.output_names), feeds)
        for _ in range(3):  # first call per shape is plain run, then the bound buffers
            got = p.run(feeds)
            assert list(got) == list(p.output_names)
            for g, w in zip(got.values(), want):
                assert g.dtype == w.dtype and g.shape == w.shape
                np.testing.assert_array_equal(g, w)
    assert p._fast.fast_enabled, p._fast.fast_error
    assert len(p._fast._tls.slots) == 3  # batch 1, 3 and 64 bound once each in this thread


def test_fast_path_outputs_are_fresh_arrays(predictors):
    p = predictors["binary"]
    feeds = p.preprocess(sample_raw("binary", n=2))
    a = p.run(feeds)[p.output_names[0]]
    b = p.run(feeds)[p.output_names[0]]
    keep = b.copy()
    a[...] = 123.0  # the caller owns its result: no aliasing of the bound output buffer
    c = p.run(feeds)[p.output_names[0]]
    np.testing.assert_array_equal(b, keep)
    np.testing.assert_array_equal(c, keep)
    assert not np.shares_memory(b, c)


def test_fast_path_falls_back_for_uncached_and_unusual_feeds(bundles):
    from seqdeploy.runtime import predictor as runtime

    p = Predictor.from_bundle(bundles["binary"])
    name, out = p.input_names[0], p.output_names[0]
    x = np.random.default_rng(0).standard_normal((runtime.FAST_MAX_SHAPES + 4, 8)).astype(np.float32)
    for n in range(1, runtime.FAST_MAX_SHAPES + 4):  # more shapes than the cache holds: plain run for the rest
        f = {name: np.ascontiguousarray(x[:n, :4])}
        for _ in range(2):
            np.testing.assert_array_equal(p.run(f)[out], p.session.run([out], f)[0])
    assert len(p._fast._tls.slots) == runtime.FAST_MAX_SHAPES
    strided = x[:3, ::2]  # not C-contiguous; copied into the bound buffer
    np.testing.assert_array_equal(p.run({name: strided})[out], p.session.run([out], {name: strided})[0])
    with pytest.raises(InputValidationError, match="dtype float64"):  # not the fast path's dtype: same error
        p.run({name: x[:1, :4].astype(np.float64)})
    with pytest.raises(InputValidationError, match="shape"):
        p.run({name: x[:1, :5]})
    assert p._fast.fast_enabled


def test_fast_path_switches_off_for_data_dependent_output_shapes():
    from onnx import TensorProto, helper

    from seqdeploy.runtime.predictor import FastSession

    g = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nz",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "k"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    fs = FastSession(make_session(m.SerializeToString()))
    a, b = np.array([[1, 0, 0, 2]], np.float32), np.array([[1, 1, 1, 0]], np.float32)
    assert fs.run({"x": a})[0].shape == (2, 2) and fs.run({"x": a})[0].shape == (2, 2)
    got = fs.run({"x": b})[0]  # same input shape, different output shape: the bound run fails, plain run answers
    np.testing.assert_array_equal(got, [[0, 0, 0], [0, 1, 2]])
    assert not fs.fast_enabled and "shape" in fs.fast_error
    np.testing.assert_array_equal(fs.run({"x": a})[0], [[0, 0], [0, 3]])


def test_fast_path_from_eight_threads_with_mixed_batch_sizes(bundles):
    p = Predictor.from_bundle(bundles["multiclass"])
    name = p.input_names[0]
    feeds = [p.preprocess(sample_raw("multiclass", n=n, seed=n)) for n in (1, 2, 5, 17)]
    expected = [p.session.run(list(p.output_names), f)[0] for f in feeds]
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        bad = 0
        for j in range(300):  # each thread binds its own buffers per batch size
            k = (i + j) % len(feeds)
            got = p.run({name: feeds[k][name]})[p.output_names[0]]
            bad += not np.array_equal(got, expected[k])
        return bad

    with ThreadPoolExecutor(8) as pool:
        assert [f.result(timeout=60) for f in [pool.submit(worker, i) for i in range(8)]] == [0] * 8
    assert p._fast.fast_enabled, p._fast.fast_error


# --------------------------------------------------------------------------- import hygiene


def test_runtime_never_imports_tensorflow_or_onnx(bundles):
    code = f"""
import sys, time, json
t = time.perf_counter()
import seqdeploy.runtime.predictor as rt
t_import = time.perf_counter() - t
p = rt.Predictor.from_bundle({str(bundles['binary'])!r})
pred = p.predict([[0.0, 1.0, 2.0, 3.0]])
print(json.dumps({{"import_s": t_import, "pred": pred.tolist(),
                  "loaded": sorted(m for m in ("tensorflow", "keras", "onnx", "tf2onnx") if m in sys.modules)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    assert res["loaded"] == []
    assert res["pred"][0] in ("neg", "pos")
    print(f"import seqdeploy.runtime.predictor: {res['import_s'] * 1000:.0f} ms")
