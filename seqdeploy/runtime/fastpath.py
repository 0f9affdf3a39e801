"""The per-call fast path: pre-bound input/output buffers per thread and input shape.

Used by :class:`seqdeploy.runtime.predictor.Predictor`; see :class:`FastSession`. Three paths,
best first, each falling back to the next with the reason recorded:

* ``"capi"``: a second session made through onnxruntime's stable C API
  (:mod:`seqdeploy.runtime.ort_capi`) from the same model bytes and session options; a call is
  ``np.copyto`` + one foreign ``RunWithBinding`` call + a copy of the outputs.
* ``"iobinding"``: the Python session's ``IOBinding`` (the pybind object when
  :func:`seqdeploy.compat.pybind_session` finds it, the public wrapper otherwise).
* ``"run"``: plain ``session.run``.

The default is :data:`DEFAULT_FASTPATH`; ``SEQDEPLOY_FASTPATH=capi|iobinding|run`` in the
environment or ``FastSession(..., fastpath=...)`` picks another. Why ``iobinding`` stays
the default: ``benchmarks/capi_fastpath.py`` (30-16-8-1 MLP, 15 interleaved rounds x 2000
calls, medians, onnxruntime 1.32, shared 2-core AMD EPYC) measured the C API path at
0.99x the IOBinding path's speed at batch 1 in two runs (4.94 vs 4.88 us in the quieter
one) and 1.01x at batch 64 (quieter run; the busy one was too noisy at 64); the bar to
ship it was 1.3x. The bound calls themselves cost the same (pybind
``run_with_iobinding`` 2.81 us, C ``RunWithBinding`` through ctypes 2.77 us): the pybind
layer adds nothing measurable, and the C API's plain ``Run`` is slower (it re-checks
names and shapes per call). What remains per call is onnxruntime's own run (1.6 us for an
Identity graph) and the numpy copies and dict handling around it (~1.9 us). The C API
path also loads a second onnxruntime copy (+17 MB RSS) and keeps a second session.

Where the rest of a tiny model's call goes (``benchmarks/tiny_batch64.py``, TINY_BATCH64.md):
on the seed MLP at batch 1, ``Predictor.run`` ~4.0 us = ~1.45 us of Python (this module's
copies and checks, and the Predictor wrapper; TFLite's own ``set_tensor``/``get_tensor``
cost ~1.3 us) + the bound run ~2.55 us, of which onnxruntime's fixed cost per ``Run``
(Identity graph) is ~1.4 us and each further node ~0.36 us.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from seqdeploy import compat
from seqdeploy.errors import InputValidationError, OrtCapiError
from seqdeploy.runtime.session import ORT_TYPES

__all__ = ["FastSession", "FASTPATHS", "DEFAULT_FASTPATH", "FASTPATH_ENV", "FAST_MAX_SHAPES", "FAST_MAX_BYTES"]

FASTPATHS = ("capi", "iobinding", "run")  # best first: each falls back to the next
DEFAULT_FASTPATH = "iobinding"  # measured: see the module docstring
FASTPATH_ENV = "SEQDEPLOY_FASTPATH"
FAST_MAX_SHAPES = 8  # cached input shapes (batch sizes) per thread; other shapes use session.run
FAST_MAX_BYTES = 1 << 20  # inputs + outputs of one cached shape; larger calls are compute-bound anyway


class _Slot:
    """One thread's pre-bound buffers for one input shape."""

    __slots__ = ("ins", "outs", "in0", "out0", "binding", "c_binding", "run_options", "ortvalues", "run", "fail")


def _no_status(status: Any) -> None:  # pybind calls raise instead of returning a status
    raise RuntimeError(f"unexpected return value {status!r} from the bound run")


def requested_fastpath(fastpath: str | None = None) -> tuple[str, str | None]:
    """The path asked for (argument, else ``SEQDEPLOY_FASTPATH``, else the default) and a note if the
    environment value was not understood."""
    if fastpath is not None:
        if fastpath not in FASTPATHS:
            raise InputValidationError(f"fastpath = {fastpath!r} (expected one of {', '.join(FASTPATHS)}, or None "
                                       f"for the {FASTPATH_ENV} environment variable / default {DEFAULT_FASTPATH})")
        return fastpath, None
    env = os.environ.get(FASTPATH_ENV, "").strip().lower()
    if not env:
        return DEFAULT_FASTPATH, None
    if env not in FASTPATHS:
        return DEFAULT_FASTPATH, (f"{FASTPATH_ENV}={env!r} is not one of {', '.join(FASTPATHS)}: "
                                  f"using the default {DEFAULT_FASTPATH}")
    return env, None


class FastSession:
    """An ``InferenceSession`` wrapper with a low-overhead, thread-safe per-call path.

    ``run(feeds)`` returns the outputs as a list of fresh numpy arrays, exactly what
    ``session.run(output_names, feeds)`` returns, and raises what it raises. Per call:

    * the first call with a given input shape in a thread runs plain ``session.run``,
      then allocates numpy input/output buffers for that shape, binds them once (to a
      C API ``OrtIoBinding`` on the ``capi`` path, to the session's ``IOBinding`` on the
      ``iobinding`` path), runs the binding once and checks it reproduces the plain
      outputs bit for bit;
    * later calls with that shape copy the feeds into the bound buffers, make one bound
      run call and return copies of the output buffers: no feed dict conversion, no
      output allocation by onnxruntime, no per-call Python checks (one input and one
      output: the copy, run and copy are one closure per shape, found by one dict lookup);
    * anything else takes plain ``run``: a feed that is not a dict of ndarrays of
      exactly the model's dtypes, more than ``FAST_MAX_SHAPES`` shapes in a thread,
      calls over ``FAST_MAX_BYTES``, non-tensor outputs. Any error in a bound run
      (e.g. an output whose shape depends on the data) switches the fast path off
      for this session and the call is retried with plain ``run``.

    ``path`` is the path in use (``"capi"``, ``"iobinding"`` or ``"run"``), ``requested``
    the one asked for, ``fallback_reason`` why they differ (None when they do not).
    The ``capi`` path needs the model bytes: pass ``model_bytes=`` (the verified bytes
    the session was made from), else they are taken from the session
    (:func:`seqdeploy.compat.session_model_bytes`). Its session gets the Python
    session's options (threads, execution mode, optimization level, log level,
    spinning), read through the public ``get_session_options()``.

    Thread-safe: buffers and bindings are per thread (``threading.local``); the
    sessions are shared, and onnxruntime's ``Run`` is thread-safe.

    >>> fs = FastSession(make_session("model.onnx"))          # doctest: +SKIP
    >>> fs.run({"features": np.zeros((1, 30), np.float32)})    # doctest: +SKIP
    [array([[0.41]], dtype=float32)]
    """

    def __init__(self, session: ort.InferenceSession, output_names: Sequence[str] | None = None, *,
                 model_bytes: bytes | None = None, fastpath: str | None = None, capi_library: Any = None):
        self.session = session
        ins = session.get_inputs()
        self.input_names: tuple[str, ...] = tuple(i.name for i in ins)
        #: the outputs computed and returned (a subset of the graph's: onnxruntime prunes the rest)
        self.output_names: tuple[str, ...] = (tuple(output_names) if output_names
                                              else tuple(o.name for o in session.get_outputs()))
        self._out_list = list(self.output_names)
        self._dtypes = tuple(np.dtype(ORT_TYPES.get(i.type, np.float32)) for i in ins)
        self._n_in = len(ins)
        self._name0 = self.input_names[0]
        self._dt0 = self._dtypes[0]
        self._c = compat.pybind_session(session)
        self._run_options = ort.RunOptions()  # read-only during Run: shared by the plain path of every thread
        self._tls = threading.local()
        #: False once the bound path failed (or for string inputs); ``fast_error`` says why
        self.fast_enabled = all(dt.kind in "fiub" for dt in self._dtypes)
        self.fast_error: str | None = None if self.fast_enabled else "string inputs"
        #: the path asked for; ``path`` the one in use; ``fallback_reason`` why they differ
        self.requested, note = requested_fastpath(fastpath)
        self.path: str = self.requested
        self.fallback_reason: str | None = note
        self.capi: Any = None  # the C API session on the capi path
        if self.fast_enabled and self.requested == "run":
            self.fast_enabled, self.fast_error = False, "plain session.run requested"
        if not self.fast_enabled:
            self._fall_back("run", self.fast_error)
        elif self.requested == "capi":
            self._open_capi(model_bytes, capi_library)
        #: 1 while the one-input shortcut of ``run`` is on (one input, fast path enabled), else -1
        self._n_single = 1 if (self.fast_enabled and self._n_in == 1) else -1

    # ------------------------------------------------------------------ paths

    def _fall_back(self, path: str, reason: str | None) -> None:
        if FASTPATHS.index(path) > FASTPATHS.index(self.path):
            self.path = path
            self.fallback_reason = f"{self.fallback_reason}; {reason}" if self.fallback_reason else reason
            self._tls = threading.local()  # drop bound buffers of the old path (every thread)

    def _open_capi(self, model_bytes: bytes | None, library: Any) -> None:
        from seqdeploy.runtime import ort_capi

        try:
            data = model_bytes if model_bytes is not None else compat.session_model_bytes(self.session)
            if data is None:
                raise OrtCapiError("the model bytes are unknown (pass model_bytes= with the bytes the session "
                                   "was created from)")
            lib = library if library is not None else ort_capi.load_library()
            cs = ort_capi.CapiSession(bytes(data), lib=lib, **_options_of(self.session))
            py_out = {o.name: ORT_TYPES.get(o.type) for o in self.session.get_outputs()}
            want = (self.input_names, self._dtypes, {n: py_out.get(n) for n in self.output_names})
            c_out = dict(zip(cs.output_names, cs.output_types))
            got = (cs.input_names, cs.input_types, {n: c_out.get(n) for n in self.output_names})
            if want != got:
                raise OrtCapiError(f"the C API session's inputs/outputs {got} differ from the Python session's "
                                   f"{want} (different model bytes?)")
        except Exception as exc:  # noqa: BLE001 - any failure: the next path, with the reason
            self._fall_back("iobinding", f"C API unavailable: {_describe(exc)}")
            return
        self.capi = cs

    # ------------------------------------------------------------------ calls

    def run(self, feeds: Any) -> list[np.ndarray]:
        """Outputs for model-ready ``feeds`` (``{input name: ndarray}``), in ``output_names`` order."""
        # one input, one output, a bound shape: one dict lookup and one closure call. Measured with
        # benchmarks/tiny_batch64.py (seed MLP, digits CNN): 0.08-0.22 us less per call than the
        # general path below (which the same calls took before); outputs unchanged
        if type(feeds) is dict and len(feeds) == self._n_single:
            x = feeds.get(self._name0)
            if type(x) is np.ndarray and x.dtype is self._dt0:
                call = self._tls.__dict__.get(x.shape)  # this thread's closure for the shape (see _add_slot)
                if call is not None:
                    try:
                        return call(x)
                    except Exception as exc:  # noqa: BLE001 - any failure: plain run from now on
                        self._disable(exc)
                        return self._plain(feeds)
        return self._run_general(feeds)

    def _run_general(self, feeds: Any) -> list[np.ndarray]:
        if self.fast_enabled and type(feeds) is dict and len(feeds) == self._n_in:
            if self._n_in == 1:
                x = feeds.get(self._name0)
                key: Any = x.shape if (type(x) is np.ndarray and x.dtype is self._dt0) else None
            else:
                key = self._key(feeds)
            if key is not None:
                slots = getattr(self._tls, "slots", None)
                if slots is None:
                    slots = self._tls.slots = {}
                slot = slots.get(key)
                if slot is not None:
                    try:  # same dtype and shape (the key): plain element copies, no casting or broadcasting
                        if self._n_in == 1:
                            slot.in0[...] = x
                        else:
                            for buf, name in zip(slot.ins, self.input_names):
                                buf[...] = feeds[name]
                        status = slot.run()
                        if status:
                            slot.fail(status)
                    except Exception as exc:  # noqa: BLE001 - any failure: plain run from now on
                        self._disable(exc)
                        return self._plain(feeds)
                    if slot.out0 is not None:
                        return [slot.out0.copy()]  # a fresh copy
                    return [o.copy() for o in slot.outs]
                outs = self._plain(feeds)
                if len(slots) < FAST_MAX_SHAPES:
                    self._add_slot(slots, key, feeds, outs)
                return outs
        return self._plain(feeds)

    def _plain(self, feeds: Any) -> list[np.ndarray]:
        if self._c is not None:
            return self._c.run(self._out_list, feeds, self._run_options)
        return self.session.run(self._out_list, feeds)

    def _key(self, feeds: dict) -> tuple | None:
        key = []
        for name, dt in zip(self.input_names, self._dtypes):
            v = feeds.get(name)
            if type(v) is not np.ndarray or v.dtype is not dt:
                return None
            key.append(v.shape)
        return tuple(key)

    def _disable(self, exc: BaseException) -> None:
        self.fast_enabled = False
        self._n_single = -1  # every thread's shortcut off (their closures stay unused)
        self.fast_error = _describe(exc)
        self._fall_back("run", f"bound run failed: {self.fast_error}")
        self._tls = threading.local()  # drop this thread's buffers (other threads see fast_enabled=False)

    def _add_slot(self, slots: dict, key: Any, feeds: dict, outs: Sequence[Any]) -> None:
        if not all(type(o) is np.ndarray and o.dtype.kind in "fiub" for o in outs):
            return  # sequences/maps/strings: plain run only
        ins = [np.empty(feeds[n].shape, dt) for n, dt in zip(self.input_names, self._dtypes)]
        if sum(a.nbytes for a in ins) + sum(o.nbytes for o in outs) > FAST_MAX_BYTES:
            return
        path = self.path
        slot = _Slot()
        slot.ins = ins
        slot.outs = [np.empty(o.shape, o.dtype) for o in outs]
        slot.in0 = ins[0]
        slot.out0 = slot.outs[0] if len(slot.outs) == 1 else None
        slot.fail = _no_status
        try:
            if path == "capi":
                self._bind_capi(slot)
            elif path == "iobinding":
                self._bind_iobinding(slot)
            else:
                return
            for buf, name in zip(slot.ins, self.input_names):
                np.copyto(buf, feeds[name])
            status = slot.run()
            if status:
                slot.fail(status)
            for got, want in zip(slot.outs, outs):  # the bound path must reproduce session.run
                if got.shape != want.shape or not np.array_equal(got, want, equal_nan=want.dtype.kind == "f"):
                    raise RuntimeError(f"{path} outputs differ from session.run")
        except Exception as exc:  # noqa: BLE001
            if path == "capi":  # the next path takes over from the next call on
                self._fall_back("iobinding", f"C API bound run failed: {_describe(exc)}")
            elif path == "iobinding":
                self._disable(exc)
            return
        if self.path == path:
            slots[key] = slot
            if self._n_in == 1 and slot.out0 is not None:
                # keyed by the input's shape (a tuple) in the thread's own attribute dict: one dict
                # lookup per call (attribute names are strings, so no clash with "slots")
                self._tls.__dict__[key] = _bound_call(slot)

    def _bind_capi(self, slot: _Slot) -> None:
        bound = self.capi.bind(slot.ins, slot.outs, output_names=self.output_names)
        slot.binding = bound  # owns the OrtValues and the OrtIoBinding
        slot.run = bound._call  # returns the OrtStatus* (None when ok)
        lib = self.capi.lib

        def fail(status: int) -> None:
            raise lib.status_error(status, "RunWithBinding")

        slot.fail = fail

    def _bind_iobinding(self, slot: _Slot) -> None:
        slot.binding = self.session.io_binding()
        slot.ortvalues = []
        for name, buf in zip(self.input_names, slot.ins):
            ov = ort.OrtValue.ortvalue_from_numpy(buf)
            slot.binding.bind_ortvalue_input(name, ov)
            slot.ortvalues.append(ov)
        for name, buf in zip(self.output_names, slot.outs):
            ov = ort.OrtValue.ortvalue_from_numpy(buf)
            slot.binding.bind_ortvalue_output(name, ov)
            slot.ortvalues.append(ov)
        slot.c_binding = compat.pybind_iobinding(slot.binding)
        if slot.c_binding is None:
            self._c = None  # no pybind handle on this onnxruntime: public API for everything
        slot.run_options = ort.RunOptions()
        slot.run_options.log_severity_level = 4  # a failing bound run falls back quietly (no ORT error log)
        # the bound call, chosen once per slot so the per-call path has no branch
        slot.run = (functools.partial(self._c.run_with_iobinding, slot.c_binding, slot.run_options)
                    if self._c is not None else functools.partial(self.session.run_with_iobinding, slot.binding))


def _bound_call(slot: _Slot) -> Any:
    """The whole per-call work of a one-input, one-output slot as one closure: copy in, bound run, copy out."""
    in0, out0, run, fail = slot.in0, slot.out0, slot.run, slot.fail

    def call(x: np.ndarray) -> list[np.ndarray]:
        in0[...] = x  # same dtype and shape (the key): plain element copies, no casting or broadcasting
        status = run()
        if status:
            fail(status)
        return [out0.copy()]  # a fresh copy

    call.slot = slot  # type: ignore[attr-defined]  # keeps the binding and its buffers alive with the closure
    return call


def _describe(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg if len(msg) <= 300 else '...' + msg[-300:]}"


def _options_of(session: ort.InferenceSession) -> dict[str, Any]:
    """The session's options as :class:`seqdeploy.runtime.ort_capi.CapiSession` keywords (public API only)."""
    so = session.get_session_options()
    config = {}
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        try:
            config[key] = so.get_session_config_entry(key)
        except Exception:  # noqa: BLE001 - not set on this session: onnxruntime's default applies
            continue
    return {"intra_op_num_threads": so.intra_op_num_threads, "inter_op_num_threads": so.inter_op_num_threads,
            "execution_mode": int(so.execution_mode), "graph_optimization_level": int(so.graph_optimization_level),
            "log_severity_level": so.log_severity_level, "config": config}


def fastpath_status() -> tuple[str | None, str, str, str]:
    """``(found, expected, status, advice)`` of the per-call fast path for ``seqdeploy doctor``.

    Loads the C library (never raises): which path ``FastSession`` takes by default, and
    whether the C API path would be available.
    """
    try:
        from seqdeploy.runtime import ort_capi

        default, note = requested_fastpath()
    except Exception as exc:  # noqa: BLE001 - onnxruntime/numpy missing: their own checks say so
        return None, "capi, iobinding or run", "warn", f"fast path unavailable: {type(exc).__name__}: {exc}"
    expected = f"capi, iobinding or run (default {DEFAULT_FASTPATH}; {FASTPATH_ENV} picks)"
    try:
        lib = ort_capi.load_library()
        capi = f"C API available (onnxruntime {lib.version}, OrtApi {lib.api_version})"
        ok = True
    except Exception as exc:  # noqa: BLE001
        capi, ok = f"C API unavailable: {exc}", False
    status = "warn" if (note or (default == "capi" and not ok)) else "ok"
    advice = "; ".join(x for x in (note, capi if not ok else "") if x)
    if default == "capi" and not ok:
        advice += "; FastSession falls back to the IOBinding path"
    return f"{default}; {capi}" if ok else f"{default}", expected, status, advice
