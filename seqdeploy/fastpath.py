"""The per-call fast path: pre-bound onnxruntime IOBinding buffers per thread and input shape.

Used by :class:`seqdeploy.runtime.Predictor`; see :class:`FastSession`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16, "tensor(bool)": np.bool_, "tensor(string)": np.object_,
}

# --------------------------------------------------------------------------- the per-call fast path

FAST_MAX_SHAPES = 8  # cached input shapes (batch sizes) per thread; other shapes use session.run
FAST_MAX_BYTES = 1 << 20  # inputs + outputs of one cached shape; larger calls are compute-bound anyway


class _Slot:
    """One thread's pre-bound buffers for one input shape."""

    __slots__ = ("ins", "outs", "binding", "c_binding", "run_options", "ortvalues", "run")


class FastSession:
    """An ``InferenceSession`` wrapper with a low-overhead, thread-safe per-call path.

    ``run(feeds)`` returns the outputs as a list of fresh numpy arrays, exactly what
    ``session.run(output_names, feeds)`` returns, and raises what it raises. Per call:

    * the first call with a given input shape in a thread runs plain ``session.run``,
      then allocates numpy input/output buffers for that shape, wraps them in
      ``OrtValue`` (shared memory), binds them once to a thread-local ``IOBinding``,
      runs the binding once and checks it reproduces the plain outputs;
    * later calls with that shape copy the feeds into the bound buffers, call
      ``run_with_iobinding`` and return copies of the output buffers: no feed dict
      conversion, no output allocation by onnxruntime, no per-call Python checks;
    * anything else takes plain ``run``: a feed that is not a dict of ndarrays of
      exactly the model's dtypes, more than ``FAST_MAX_SHAPES`` shapes in a thread,
      calls over ``FAST_MAX_BYTES``, non-tensor outputs. Any error in the bound path
      (e.g. an output whose shape depends on the data) switches the fast path off
      for this session and the call is retried with plain ``run``.

    Calls go to the pybind session (``session._sess``) with a pre-made ``RunOptions``
    when that attribute exists: the public wrappers re-check names and WebGPU graph
    capture on every call (``run_with_iobinding(b, run_options)`` even raises and
    catches an exception internally in onnxruntime 1.32, ~70 us). Without it the
    public methods are used.

    Thread-safe: buffers and bindings are per thread (``threading.local``); the
    session itself is shared, and onnxruntime's ``Run`` is thread-safe.

    >>> fs = FastSession(make_session("model.onnx"))          # doctest: +SKIP
    >>> fs.run({"features": np.zeros((1, 30), np.float32)})    # doctest: +SKIP
    [array([[0.41]], dtype=float32)]
    """

    def __init__(self, session: ort.InferenceSession, output_names: Sequence[str] | None = None):
        self.session = session
        ins = session.get_inputs()
        self.input_names: tuple[str, ...] = tuple(i.name for i in ins)
        #: the outputs computed and returned (a subset of the graph's: onnxruntime prunes the rest)
        self.output_names: tuple[str, ...] = (tuple(output_names) if output_names
                                              else tuple(o.name for o in session.get_outputs()))
        self._out_list = list(self.output_names)
        self._dtypes = tuple(np.dtype(_ORT_TYPES.get(i.type, np.float32)) for i in ins)
        self._n_in = len(ins)
        self._name0 = self.input_names[0]
        self._dt0 = self._dtypes[0]
        c = getattr(session, "_sess", None)
        self._c = c if (callable(getattr(c, "run", None)) and callable(getattr(c, "run_with_iobinding", None))) else None
        self._run_options = ort.RunOptions()  # read-only during Run: shared by the plain path of every thread
        self._tls = threading.local()
        #: False once the bound path failed (or for string inputs); ``fast_error`` says why
        self.fast_enabled = all(dt.kind in "fiub" for dt in self._dtypes)
        self.fast_error: str | None = None if self.fast_enabled else "string inputs"

    def run(self, feeds: Any) -> list[np.ndarray]:
        """Outputs for model-ready ``feeds`` (``{input name: ndarray}``), in ``output_names`` order."""
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
                    try:
                        if self._n_in == 1:
                            np.copyto(slot.ins[0], x)
                        else:
                            for buf, name in zip(slot.ins, self.input_names):
                                np.copyto(buf, feeds[name])
                        slot.run()
                    except Exception as exc:  # noqa: BLE001 - any failure: plain run from now on
                        self._disable(exc)
                        return self._plain(feeds)
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
        msg = " ".join(str(exc).split())
        self.fast_error = f"{type(exc).__name__}: {msg if len(msg) <= 300 else '...' + msg[-300:]}"
        self._tls = threading.local()  # drop this thread's buffers (other threads see fast_enabled=False)

    def _add_slot(self, slots: dict, key: Any, feeds: dict, outs: Sequence[Any]) -> None:
        if not all(type(o) is np.ndarray and o.dtype.kind in "fiub" for o in outs):
            return  # sequences/maps/strings: plain run only
        ins = [np.empty(feeds[n].shape, dt) for n, dt in zip(self.input_names, self._dtypes)]
        if sum(a.nbytes for a in ins) + sum(o.nbytes for o in outs) > FAST_MAX_BYTES:
            return
        try:
            slot = _Slot()
            slot.ins = ins
            slot.outs = [np.empty(o.shape, o.dtype) for o in outs]
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
            slot.c_binding = getattr(slot.binding, "_iobinding", None)
            if slot.c_binding is None:
                self._c = None  # no pybind handle on this onnxruntime: public API for everything
            slot.run_options = ort.RunOptions()
            slot.run_options.log_severity_level = 4  # a failing bound run falls back quietly (no ORT error log)
            # the bound call, chosen once per slot so the per-call path has no branch
            slot.run = (functools.partial(self._c.run_with_iobinding, slot.c_binding, slot.run_options)
                        if self._c is not None else functools.partial(self.session.run_with_iobinding, slot.binding))
            for buf, name in zip(slot.ins, self.input_names):
                np.copyto(buf, feeds[name])
            slot.run()
            for got, want in zip(slot.outs, outs):  # the bound path must reproduce session.run
                if got.shape != want.shape or not np.array_equal(got, want, equal_nan=want.dtype.kind == "f"):
                    raise RuntimeError("IOBinding outputs differ from session.run")
        except Exception as exc:  # noqa: BLE001
            self._disable(exc)
            return
        slots[key] = slot
