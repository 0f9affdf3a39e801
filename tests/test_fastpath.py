"""seqdeploy.runtime.fastpath.FastSession: every path (capi, iobinding, run) and every fallback gives session.run's outputs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_ort_capi import MODEL_KINDS, model_bytes, sample_feeds

from seqdeploy import compat
from seqdeploy.runtime import fastpath, ort_capi
from seqdeploy.errors import InputValidationError
from seqdeploy.runtime.fastpath import FastSession
from seqdeploy.runtime.predictor import make_session, session_options

PATHS = ("capi", "iobinding", "run")


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is np.ndarray and g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def check_against_plain(fs: FastSession, sess, kind: str, batches=(1, 3, 64, 1, 3)):
    for n in batches:
        feeds = sample_feeds(kind, n, seed=n)
        want = sess.run(list(fs.output_names), feeds)
        for _ in range(3):  # the first call per shape is plain run, then the bound buffers
            assert_same(fs.run(feeds), want)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_path_returns_exactly_what_session_run_returns(kind, path):
    sess = make_session(model_bytes(kind))
    fs = FastSession(sess, model_bytes=model_bytes(kind), fastpath=path)
    check_against_plain(fs, sess, kind)
    assert (fs.path, fs.requested, fs.fallback_reason) == (path, path, None)
    assert fs.fast_enabled == (path != "run"), fs.fast_error
    assert len(getattr(fs._tls, "slots", {})) == (0 if path == "run" else 3)  # batch 1, 3, 64 bound once each
    if path == "capi":
        assert all(isinstance(s.binding, ort_capi.BoundRun) for s in fs._tls.slots.values())


def test_capi_outputs_are_fresh_arrays_and_subsets_work():
    sess = make_session(model_bytes("lstm"))
    fs = FastSession(sess, ["state"], model_bytes=model_bytes("lstm"), fastpath="capi")
    feeds = sample_feeds("lstm", 2)
    want = sess.run(["state"], feeds)
    a, b = fs.run(feeds)[0], fs.run(feeds)[0]
    a[...] = 123.0  # the caller owns its result: no aliasing of the bound output buffer
    c = fs.run(feeds)[0]
    np.testing.assert_array_equal(b, want[0])
    np.testing.assert_array_equal(c, want[0])
    assert not np.shares_memory(b, c) and fs.path == "capi" and len(fs._tls.slots) == 1


def test_capi_session_gets_the_python_sessions_options():
    sess = make_session(model_bytes("mlp"))
    fs = FastSession(sess, fastpath="capi")  # model bytes taken from the session (compat)
    so = session_options()
    assert fs.capi.options == {
        "intra_op_num_threads": so.intra_op_num_threads, "inter_op_num_threads": so.inter_op_num_threads,
        "execution_mode": int(so.execution_mode), "graph_optimization_level": int(so.graph_optimization_level),
        "log_severity_level": so.log_severity_level,
        "config": {k: so.get_session_config_entry(k)
                   for k in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")}}
    assert fs.capi.options["graph_optimization_level"] == 99 and fs.capi.options["config"] == {
        "session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
    fs2 = FastSession(make_session(model_bytes("mlp"), threads=2), fastpath="capi")
    assert fs2.capi.options["intra_op_num_threads"] == 2


def test_capi_from_a_session_made_from_a_path(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(model_bytes("conv"))
    sess = make_session(p)
    fs = FastSession(sess, fastpath="capi")
    check_against_plain(fs, sess, "conv", batches=(2, 2))
    assert fs.path == "capi"


@pytest.mark.parametrize("path", ("capi", "iobinding"))
def test_eight_threads_equal_single_threaded_results(path):
    sess = make_session(model_bytes("conv"))
    fs = FastSession(sess, fastpath=path)
    feeds = [sample_feeds("conv", n, seed=n) for n in (1, 2, 5, 17)]
    expected = [sess.run(None, f)[0] for f in feeds]
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        bad = 0
        for j in range(400):  # each thread binds its own buffers per batch size
            k = (i + j) % len(feeds)
            bad += not np.array_equal(fs.run(feeds[k])[0], expected[k])
        return bad

    with ThreadPoolExecutor(8) as pool:
        assert [f.result(timeout=120) for f in [pool.submit(worker, i) for i in range(8)]] == [0] * 8
    assert fs.path == path and fs.fast_enabled, (fs.fallback_reason, fs.fast_error)


# --------------------------------------------------------------------------- fallbacks


def test_library_missing_falls_back_to_iobinding_with_the_reason(monkeypatch):
    monkeypatch.setattr(ort_capi, "c_library_path", lambda: None)
    sess = make_session(model_bytes("mlp"))
    fs = FastSession(sess, fastpath="capi")
    assert fs.path == "iobinding" and fs.requested == "capi" and fs.capi is None
    assert "C API unavailable" in fs.fallback_reason and "ships no C library" in fs.fallback_reason
    check_against_plain(fs, sess, "mlp")
    assert fs.fast_enabled and len(fs._tls.slots) == 3


def test_older_api_version_falls_back_to_iobinding_with_the_reason(monkeypatch):
    real = ort_capi.load_library
    monkeypatch.setattr(ort_capi, "load_library", lambda: real(max_api_version=ort_capi.MIN_API_VERSION - 1))
    sess = make_session(model_bytes("lstm"))
    fs = FastSession(sess, fastpath="capi")
    assert fs.path == "iobinding"
    assert f"offers OrtApi version {ort_capi.MIN_API_VERSION - 1}" in fs.fallback_reason
    check_against_plain(fs, sess, "lstm")


def test_unknown_model_bytes_fall_back_to_iobinding():
    class NoBytes:  # a session proxy without the private attributes compat reads
        def __init__(self, s):
            self._s = s

        def __getattr__(self, name):
            if name.startswith("_"):
                raise AttributeError(name)
            return getattr(self._s, name)

    sess = make_session(model_bytes("mlp"))
    proxy = NoBytes(sess)
    assert compat.session_model_bytes(proxy) is None and compat.pybind_session(proxy) is None
    fs = FastSession(proxy, fastpath="capi")  # public API only: run_with_iobinding of the proxy
    assert fs.path == "iobinding" and "model bytes are unknown" in fs.fallback_reason
    check_against_plain(fs, sess, "mlp")
    assert fs.fast_enabled and fs._c is None and len(fs._tls.slots) == 3


def test_iobinding_unavailable_falls_back_to_plain_run():
    sess = make_session(model_bytes("two_inputs"))

    def no_binding():
        raise RuntimeError("IOBinding is not available here")

    sess.io_binding = no_binding
    fs = FastSession(sess, fastpath="iobinding")
    check_against_plain(fs, sess, "two_inputs")
    assert fs.path == "run" and not fs.fast_enabled and "IOBinding is not available" in fs.fallback_reason


def test_capi_bound_run_that_disagrees_falls_back_to_iobinding(monkeypatch):
    sess = make_session(model_bytes("mlp"))
    fs = FastSession(sess, fastpath="capi")
    real_bind = fs.capi.bind

    def corrupt_bind(ins, outs, **kw):  # a C path that computes something else must never answer
        bound = real_bind(ins, outs, **kw)
        inner = bound._call

        def call():
            inner()
            bound.outputs[0][...] += 1

        bound._call = call
        return bound

    monkeypatch.setattr(fs.capi, "bind", corrupt_bind)
    check_against_plain(fs, sess, "mlp")
    assert fs.path == "iobinding" and "capi outputs differ from session.run" in fs.fallback_reason


def test_capi_switches_off_for_data_dependent_output_shapes():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nz",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "k"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    fs = FastSession(make_session(m.SerializeToString()), fastpath="capi")
    a, b = np.array([[1, 0, 0, 2]], np.float32), np.array([[1, 1, 1, 0]], np.float32)
    assert fs.run({"x": a})[0].shape == (2, 2) and fs.run({"x": a})[0].shape == (2, 2)
    assert fs.path == "capi"
    got = fs.run({"x": b})[0]  # same input shape, different output shape: the bound run fails, plain run answers
    np.testing.assert_array_equal(got, [[0, 0, 0], [0, 1, 2]])
    assert not fs.fast_enabled and fs.path == "run" and "shape" in fs.fast_error.lower()
    np.testing.assert_array_equal(fs.run({"x": a})[0], [[0, 0], [0, 3]])


def test_path_selection_argument_environment_and_default(monkeypatch):
    sess = make_session(model_bytes("mlp"))
    monkeypatch.delenv(fastpath.FASTPATH_ENV, raising=False)
    assert FastSession(sess).path == fastpath.DEFAULT_FASTPATH
    monkeypatch.setenv(fastpath.FASTPATH_ENV, "CAPI")
    assert FastSession(sess).path == "capi"
    assert FastSession(sess, fastpath="run").path == "run"  # the argument wins over the environment
    monkeypatch.setenv(fastpath.FASTPATH_ENV, "turbo")
    fs = FastSession(sess)
    assert fs.path == fastpath.DEFAULT_FASTPATH and "SEQDEPLOY_FASTPATH='turbo'" in fs.fallback_reason
    with pytest.raises(InputValidationError, match="fastpath = 'fast' \\(expected one of capi, iobinding, run"):
        FastSession(sess, fastpath="fast")


def test_doctor_reports_the_fast_path(monkeypatch):
    from seqdeploy.app.doctor import run_doctor

    monkeypatch.setenv(fastpath.FASTPATH_ENV, "capi")
    check = next(c for c in run_doctor(cpuinfo="flags\t: avx2\n").checks if c.name == "fast path")
    assert check.status == "ok" and check.found.startswith("capi; C API available (onnxruntime")
    monkeypatch.setattr(ort_capi, "load_library", lambda: (_ for _ in ()).throw(ort_capi.OrtCapiError("gone")))
    check = next(c for c in run_doctor(cpuinfo="flags\t: avx2\n").checks if c.name == "fast path")
    assert check.status == "warn" and "gone" in check.advice and "falls back to the IOBinding path" in check.advice


@pytest.mark.parametrize("path", ("capi", "iobinding"))
def test_strided_and_fortran_order_feeds_are_copied_into_the_bound_buffers(path):
    sess = make_session(model_bytes("two_inputs"))
    fs = FastSession(sess, fastpath=path)
    base = sample_feeds("two_inputs", 6)
    variants = [base, {"features": np.asfortranarray(base["features"]), "offsets": base["offsets"]},
                {"features": np.repeat(base["features"], 2, axis=0)[::2], "offsets": base["offsets"][:, ::-1]}]
    for feeds in variants * 2:
        assert_same(fs.run(feeds), sess.run(None, feeds))
    assert fs.path == path and len(fs._tls.slots) == 1


@pytest.mark.parametrize("path", ("capi", "iobinding"))
def test_one_input_one_output_calls_take_the_per_shape_closure(path):
    sess = make_session(model_bytes("mlp"))
    fs = FastSession(sess, fastpath=path)
    x = sample_feeds("mlp", 8)["features"]
    for feeds in ({"features": x[:1]}, {"features": x}, {"features": x[::2]}, {"features": np.asfortranarray(x)}) * 2:
        assert_same(fs.run(feeds), sess.run(None, feeds))
    closures = {k for k in vars(fs._tls) if isinstance(k, tuple)}  # one per input shape, in the thread's dict
    assert sorted(closures) == [(1, 30), (4, 30), (8, 30)] and fs.path == path
    a, b = fs.run({"features": x})[0], fs.run({"features": x})[0]
    a[...] = 5.0  # the caller owns its result: no aliasing of the bound output buffer
    assert not np.shares_memory(a, b)
    assert_same(fs.run({"features": x}), sess.run(None, {"features": x}))
    two = FastSession(make_session(model_bytes("two_inputs")), fastpath=path)
    feeds = sample_feeds("two_inputs", 3)
    for _ in range(3):
        assert_same(two.run(feeds), two.session.run(None, feeds))
    assert set(vars(two._tls)) == {"slots"} and len(two._tls.slots) == 1  # several inputs: the general path


def test_a_failing_bound_run_turns_the_closures_of_every_thread_off():
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nz",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "k"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    fs = FastSession(make_session(m.SerializeToString()), fastpath="iobinding")
    a, b = np.array([[1, 0, 0, 2]], np.float32), np.array([[1, 1, 1, 0]], np.float32)
    used = []

    def prime():
        for _ in range(2):
            fs.run({"x": a})
        call = vars(fs._tls)[(1, 4)]
        vars(fs._tls)[(1, 4)] = lambda x: used.append(1) or call(x)  # count later uses of this thread's closure
        return threading.get_ident()

    with ThreadPoolExecutor(1) as other:  # one worker thread: its buffers persist between submits
        assert other.submit(prime).result() != threading.get_ident()
        for _ in range(2):
            fs.run({"x": a})
        np.testing.assert_array_equal(fs.run({"x": b})[0], [[0, 0, 0], [0, 1, 2]])  # fails bound: plain answers
        assert not fs.fast_enabled and fs.path == "run"
        np.testing.assert_array_equal(other.submit(fs.run, {"x": a}).result()[0], [[0, 0], [0, 3]])
    assert used == []  # the other thread's closure was not called after the failure
