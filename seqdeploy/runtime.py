"""The embeddable runtime: load a bundle, replay its preprocessing, predict.

Imports only numpy, onnxruntime, the standard library and seqdeploy's
manifest/errors/atomic modules: never TensorFlow, never ``onnx``. This is what
``pip install seqdeploy`` (the base install) gives an application.

    >>> from seqdeploy.runtime import Predictor
    >>> p = Predictor.from_bundle("runs/breast_cancer_mlp")      # doctest: +SKIP
    >>> p.predict([{"mean radius": 14.1, ...}])                     # doctest: +SKIP
    array(['benign'], dtype='<U9')
    >>> p.predict_proba(x_raw)[:, 1]                               # doctest: +SKIP

Session defaults (measured on the shared 2-core box, onnxruntime 1.32, a
30-16-8-1 MLP, medians of 7 interleaved rounds; the box was busy, load 2-6, so
treat absolute microseconds as +-30%; ``python benchmarks/predictor_overhead.py``
and ``python benchmarks/runtime_threads.py`` reproduce them):

* ``intra_op_num_threads = 1`` (``threads=None``). For models this small a call
  is a few microseconds of compute plus per-call overhead, and a second intra-op
  thread only adds hand-off cost: batch 1, 11.8 us with 1 thread vs 12.4-13.4 us
  with 2; batch 256, 21 us vs 29-37 us. Concurrency comes from the caller
  instead: ``run`` is thread-safe and releases the GIL. Pass ``threads=k`` for
  large models called from one thread.
* ``inter_op_num_threads = 1``, sequential execution: the graphs are chains.
* ``allow_spinning = 0``. With one intra-op thread there is no pool to spin.
  With ``threads > 1``, spinning saves a few microseconds but keeps a core busy
  between calls in the host application. That is the wrong default for a
  library that runs inside someone else's process.
* ``graph_optimization_level = ORT_ENABLE_ALL``: at batch 256 the fusions make
  calls ~35% faster than ENABLE_BASIC (21 vs 35 us); at batch 1 the two are
  within noise (11.8 vs 12.5 us).
* the model bytes are read once, their sha256 checked against the manifest, and
  the session is created from those bytes, so the file cannot change between
  the check and the load.

Per-call overhead (``benchmarks/predictor_overhead.py --baseline-rev HEAD --tflite``:
30-16-8-1 MLP, 30 interleaved rounds x 2000 calls, medians; the box was busy, so
read the ratios). onnxruntime's kernels take ~1-2 us here; the rest is its Python
path: ``session.run`` converts the feed dict, allocates outputs and re-checks names
on every call. :class:`FastSession` (used by :class:`Predictor`) binds, per thread
and input shape, numpy input/output buffers to an ``IOBinding`` once; a call is
``np.copyto`` + ``run_with_iobinding`` + a copy of the output (details and the
fallbacks in its docstring). Batch 1, time relative to bare ``session.run``:

    ==========================================  ======  =========  ==============
    runner                                      before  after      TFLite / this
    ==========================================  ======  =========  ==============
    bare ``session.run``                        1.00    1.00       0.28-0.29
    bare ``run_with_iobinding`` (pre-bound)     0.53    0.53-0.54  0.54
    ``Predictor.run(feeds)``                    1.10    0.68-0.69  0.41-0.43
    ``Predictor.predict(raw rows)``             4.7-5.5 2.4-2.8    0.11-0.12
    TFLite set_tensor/invoke/get_tensor         0.28    0.28-0.29  1.00
    ==========================================  ======  =========  ==============

i.e. ``Predictor.run`` takes 0.61x the time it took (11.7 -> 7.1 us in the
quieter run) and ``predict`` 0.51x (56.8 -> 28.8 us). At batch 64: run 0.75x,
predict 0.58x. ``predict`` is lean rather than free: a float input whose
magnitudes cannot overflow skips ``np.errstate`` and the finiteness scan (one
abs-max test instead, same arithmetic), a single chunk skips the chunk generator,
and labels come from the output dtype without a float64 copy. Still missing the
"within 2x of TFLite" goal by ~15%: the remaining gap is onnxruntime's own
``run_with_iobinding`` floor (~0.54x TFLite even with nothing else around it).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from seqdeploy.atomic import sha256_bytes
from seqdeploy.errors import BundleError, InputValidationError, IntegrityError
from seqdeploy.manifest import (
    Artifact,
    Manifest,
    NoPreprocessing,
    Scale,
    Standardize,
    Tokenize,
    Window,
    bundle_path,
    load_manifest,
)

__all__ = ["Predictor", "FastSession", "RuntimeInfo", "session_options", "make_session", "DEFAULT_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 1024

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16, "tensor(bool)": np.bool_, "tensor(string)": np.object_,
}

try:  # onnxruntime's own exceptions (rejected feeds, unloadable models)
    from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

    _OrtInvalidArgument = _ort_state.InvalidArgument
    _ORT_LOAD_ERRORS: tuple[type[BaseException], ...] = tuple(
        getattr(_ort_state, n) for n in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf",
                                         "InvalidGraph", "NotImplemented", "ModelLoaded", "RuntimeException")
        if isinstance(getattr(_ort_state, n, None), type)) + (RuntimeError,)
except ImportError:  # pragma: no cover - very old onnxruntime
    _OrtInvalidArgument = RuntimeError  # type: ignore[misc,assignment]
    _ORT_LOAD_ERRORS = (RuntimeError,)


# --------------------------------------------------------------------------- sessions


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The measured CPU defaults (see the module docstring) as ``SessionOptions``.

    >>> so = session_options()
    >>> so.intra_op_num_threads
    1
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputValidationError(f"threads = {threads!r} (expected an integer >= 1, or None for the default 1)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: no warnings on the host application's stderr
    return so


def make_session(model: str | os.PathLike | bytes, threads: int | None = None) -> ort.InferenceSession:
    """One CPU ``InferenceSession`` with :func:`session_options` (path or model bytes).

    >>> sess = make_session("runs/breast_cancer_mlp/model.onnx")  # doctest: +SKIP
    """
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except _ORT_LOAD_ERRORS as exc:
        where = "model bytes" if isinstance(model, bytes) else str(model)
        raise BundleError(f"onnxruntime {ort.__version__} cannot load {where}: {str(exc).strip()[:400]}; "
                          f"check the bundle's min_onnxruntime and upgrade onnxruntime if needed") from None


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


@dataclass(frozen=True)
class RuntimeInfo:
    """What a :class:`Predictor` loaded: bundle, artifact, threads, onnxruntime version."""

    bundle: str
    artifact: str
    precision: str
    threads: int
    onnxruntime: str


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

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        ins = session.get_inputs()
        self.input_names: tuple[str, ...] = tuple(i.name for i in ins)
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())
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


# --------------------------------------------------------------------------- predictor


class Predictor:
    """A loaded bundle: one onnxruntime session plus the recorded preprocessing.

    Thread-safe: every method may be called from many threads at once
    (onnxruntime's ``run`` is thread-safe; the only mutable state is the per-thread
    buffers of :class:`FastSession`).

    >>> p = Predictor.from_bundle("runs/iris_softmax")          # doctest: +SKIP
    >>> p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]))            # doctest: +SKIP
    array(['setosa'], dtype='<U10')
    """

    def __init__(self, manifest: Manifest, session: ort.InferenceSession, info: RuntimeInfo):
        self.manifest = manifest
        self.session = session
        self.info = info
        self._input_meta = session.get_inputs()
        self.input_names: tuple[str, ...] = tuple(i.name for i in self._input_meta)
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())
        self._output_list = list(self.output_names)
        self._fast = FastSession(session)
        self._out0 = self.output_names[0]
        self._input_dtypes = {i.name: np.dtype(_ORT_TYPES.get(i.type, np.float32)) for i in self._input_meta}
        self._input_shapes = {i.name: tuple(i.shape) for i in self._input_meta}
        pre = manifest.preprocessing
        self._vocab = {tok: i for i, tok in enumerate(pre.vocabulary)} if isinstance(pre, Tokenize) else None
        self._token_re = re.compile(pre.token_pattern) if isinstance(pre, Tokenize) else None
        if isinstance(pre, Standardize):
            self._mean = np.asarray(pre.mean, dtype=np.float64)
            self._std = np.asarray(pre.std, dtype=np.float64)
            self._n_feat = len(pre.feature_names)
            # |x| <= this for every value => (x - mean) / std is finite and fits float32 (half its max):
            # such inputs skip np.errstate and the finiteness check (same arithmetic, same result)
            dt = np.dtype(_ORT_TYPES.get(self._input_meta[0].type, np.float32))
            lim = 0.5 * float(np.finfo(dt).max) if dt.kind == "f" else 0.0
            with np.errstate(over="ignore", invalid="ignore"):
                safe = np.min(lim * self._std - np.abs(self._mean)) if self._std.size else 0.0
            self._safe_abs = float(safe) if np.isfinite(safe) and safe > 0 else 0.0
        if manifest.labels is not None:
            self._labels = np.asarray(manifest.labels)
        else:
            self._labels = None
        first = self._input_shapes[self.input_names[0]]
        self._fixed_batch = first[0] if first and isinstance(first[0], int) and first[0] > 0 else None
        self._one_chunk = self._fixed_batch or DEFAULT_BATCH_SIZE  # predict() rows that need no chunking

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, artifact: str | None = None,
                    threads: int | None = None) -> "Predictor":
        """Load and check a bundle, then create one session for ``artifact`` (default: the deployment one).

        ``artifact`` is a file name, recipe or precision (``"model.onnx"``, ``"fp16"``).
        Raises :class:`BundleError` / :class:`IntegrityError` before any session exists
        if the manifest or a file is wrong.

        >>> p = Predictor.from_bundle("runs/breast_cancer_mlp", artifact="float32")  # doctest: +SKIP
        """
        manifest = load_manifest(path)
        art: Artifact = manifest.deployment if artifact is None else manifest.artifact(artifact)
        if _version_tuple(ort.__version__) < _version_tuple(art.min_onnxruntime):
            raise BundleError(f"{art.file} needs onnxruntime >= {art.min_onnxruntime} (opset {art.opset}); "
                              f"installed {ort.__version__}: pip install -U onnxruntime")
        file = bundle_path(path, art.file)
        data = file.read_bytes()
        if sha256_bytes(data) != art.sha256:  # the bytes we load are the bytes we checked
            raise IntegrityError(f"{file} changed while loading (sha256 differs from the manifest); "
                                 f"copy the bundle again or rebuild it")
        session = make_session(data, threads)
        got = tuple(i.name for i in session.get_inputs())
        want = tuple(t.name for t in manifest.inputs)
        if set(got) != set(want):
            raise BundleError(f"{art.file} has inputs {list(got)} but the manifest lists {list(want)}; "
                              f"rebuild the manifest with write_bundle_manifest(run_dir)")
        root = Path(path) if Path(path).is_dir() else Path(path).parent
        info = RuntimeInfo(str(root), art.file, art.precision, threads or 1, ort.__version__)
        return cls(manifest, session, info)

    def __repr__(self) -> str:
        return (f"Predictor({self.manifest.name!r}, task={self.manifest.task!r}, artifact={self.info.artifact!r}, "
                f"inputs={list(self.input_names)})")

    # ------------------------------------------------------------------ low level

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on model-ready feeds (no preprocessing): ``{input name: array}`` -> ``{output name: array}``.

        Feeds are not checked for NaN here; a feed onnxruntime rejects is explained
        in an :class:`InputValidationError`.

        >>> p.run({"features": np.zeros((1, 30), np.float32)})  # doctest: +SKIP
        {'dense_2': array([[0.41]], dtype=float32)}
        """
        try:
            outs = self._fast.run(feeds)
        except (_OrtInvalidArgument, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            raise self._explain_feeds(feeds, exc) from None
        return {self._out0: outs[0]} if len(outs) == 1 else dict(zip(self.output_names, outs))

    def _explain_feeds(self, feeds: Any, exc: Exception) -> InputValidationError:
        expected = ", ".join(f"{n}: {self._input_dtypes[n].name} {_fmt_shape(self._input_shapes[n])}"
                             for n in self.input_names)
        if not isinstance(feeds, Mapping):
            return InputValidationError(f"run() received {type(feeds).__name__} (expected a dict of numpy arrays: "
                                        f"{{{expected}}}); use predict() for raw inputs")
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            return InputValidationError(f"run() received feeds {list(feeds)} (expected {list(self.input_names)}; "
                                        f"missing {missing}, unknown {extra})")
        for name in self.input_names:
            v = feeds[name]
            want_dt = self._input_dtypes[name]
            if not isinstance(v, np.ndarray):
                return InputValidationError(f"run(): feed {name!r} is {type(v).__name__} (expected a numpy array "
                                            f"{want_dt.name} {_fmt_shape(self._input_shapes[name])})")
            if v.dtype != want_dt:
                return InputValidationError(f"run(): feed {name!r} has dtype {v.dtype} (expected {want_dt.name}); "
                                            f"cast it with .astype(np.{want_dt.name})")
            if not _shape_ok(v.shape, self._input_shapes[name]):
                return InputValidationError(f"run(): feed {name!r} has shape {tuple(v.shape)} (expected "
                                            f"{_fmt_shape(self._input_shapes[name])})")
        return InputValidationError(f"onnxruntime rejected the feeds: {str(exc).strip()[:400]} (expected {expected})")

    # ------------------------------------------------------------------ preprocessing

    def preprocess(self, raw: Any) -> dict[str, np.ndarray]:
        """Turn raw inputs into model-ready feeds with the recorded preprocessing (validated).

        >>> p.preprocess(["a fine film"])["tokens"].dtype  # doctest: +SKIP
        dtype('int32')
        """
        return self._preprocess(raw, offset=0)

    def _preprocess(self, raw: Any, offset: int) -> dict[str, np.ndarray]:
        pre = self.manifest.preprocessing
        name = self.input_names[0]
        dtype = self._input_dtypes[name]
        if type(pre) is Standardize:
            x = self._standardize_array(raw, pre)
            if x.dtype.kind == "f" and float(np.maximum.reduce(np.abs(x), axis=None)) <= self._safe_abs:  # NaN: False
                return {name: ((x - self._mean) / self._std).astype(dtype, copy=False)}
            with np.errstate(over="ignore", invalid="ignore"):
                z = ((x - self._mean) / self._std).astype(dtype, copy=False)
                # NaN/inf anywhere make the sum NaN/inf (a finite sum that overflows only costs the diagnosis)
                bad = dtype.kind == "f" and not math.isfinite(np.add.reduce(z, axis=None))
            if bad:  # diagnose only then
                _check_finite(x, offset, "raw input")
                _cast_checked(z, dtype, offset)
            return {name: z}
        if isinstance(pre, Window):
            x = _numeric_array(raw, f"(n, {pre.window}) raw series windows")
            if x.ndim != 2 or x.shape[1] != pre.window:
                raise InputValidationError(f"received shape {x.shape} (expected (n, {pre.window}): one row of "
                                           f"{pre.window} raw series values per sample)")
            _check_nonempty(x)
            _check_finite(x, offset, "raw input")
            with np.errstate(over="ignore", invalid="ignore"):
                z = (x.astype(np.float64) - pre.mean) / pre.std
            rank = len(self._input_shapes[name])
            z = z.reshape(z.shape[0], pre.window, 1) if rank == 3 else z
            return {name: _cast_checked(z, dtype, offset)}
        if isinstance(pre, Scale):
            x = _numeric_array(raw, f"images of shape (n, {', '.join(map(str, pre.raw_shape))})")
            size = math.prod(pre.raw_shape)
            if x.ndim < 1 or not (tuple(x.shape[1:]) == pre.raw_shape or tuple(x.shape[1:]) == (size,)):
                raise InputValidationError(
                    f"received shape {x.shape} (expected (n, {', '.join(map(str, pre.raw_shape))}) or (n, {size}))")
            _check_nonempty(x)
            if dtype.kind != "f":
                _check_finite(x, offset, "raw input")
            with np.errstate(over="ignore", invalid="ignore"):
                z = (x.astype(np.float64) * pre.scale + pre.offset).astype(dtype, copy=False)
                bad = dtype.kind == "f" and not math.isfinite(np.add.reduce(z, axis=None))
            if bad:  # NaN/inf in the input or an overflow: find the row (same messages as before)
                _check_finite(x, offset, "raw input")
                _cast_checked(z, dtype, offset)
            model_shape = self._input_shapes[name][1:]
            target = model_shape if all(isinstance(d, int) for d in model_shape) else pre.raw_shape
            return {name: z.reshape((x.shape[0], *target))}
        if isinstance(pre, Tokenize):
            return {name: self._tokenize(raw, pre, offset).astype(dtype, copy=False)}
        return self._no_preprocessing(raw)

    def _standardize_array(self, raw: Any, pre: Standardize) -> np.ndarray:
        names = pre.feature_names
        n_feat = len(names)
        if type(raw) is np.ndarray and raw.ndim == 2 and raw.shape[1] == n_feat and raw.dtype.kind in "iuf" \
                and raw.shape[0] > 0:
            return raw  # fast path: already an (n, F) numeric array
        if isinstance(raw, Mapping):
            raise InputValidationError("received one dict (expected a list of dicts keyed by feature name, "
                                       "or an (n, F) array); wrap a single row in a list: [row]")
        if hasattr(raw, "columns") and hasattr(raw, "to_numpy"):  # a DataFrame, without importing pandas
            missing = [f for f in names if f not in set(raw.columns)]
            if missing:
                raise InputValidationError(f"the table is missing feature column(s) {missing} (expected columns "
                                           f"{list(names)}; extra columns are ignored)")
            raw = raw[list(names)].to_numpy()
        if isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], Mapping):
            x = np.empty((len(raw), n_feat), dtype=np.float64)
            for i, row in enumerate(raw):
                if not isinstance(row, Mapping):
                    raise InputValidationError(f"row {i} is {type(row).__name__} (expected a dict keyed by feature "
                                               f"name like rows before it)")
                for j, f in enumerate(names):
                    if f not in row:
                        raise InputValidationError(
                            f"row {i} is missing feature {f!r} (expected keys {list(names)}; got {list(row)[:10]})")
                    v = row[f]
                    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                        raise InputValidationError(f"row {i} feature {f!r} = {v!r} (expected a number)")
                    x[i, j] = float(v)
            return x
        x = _numeric_array(raw, lambda: f"an (n, {n_feat}) array of features {_short(names)} or a list of dicts")
        if x.ndim != 2 or x.shape[1] != n_feat:
            hint = "; for one sample use x.reshape(1, -1)" if x.ndim == 1 and x.shape[0] == n_feat else ""
            raise InputValidationError(f"received shape {x.shape} (expected (n, {n_feat}) with features "
                                       f"{_short(names)}){hint}")
        _check_nonempty(x)
        return x

    def _tokenize(self, raw: Any, pre: Tokenize, offset: int) -> np.ndarray:
        if isinstance(raw, (str, bytes)):
            raise InputValidationError(f"received one string {raw[:40]!r} (expected a list of strings); "
                                       f"wrap it in a list: [text]")
        if isinstance(raw, np.ndarray):
            if raw.ndim != 1:
                raise InputValidationError(f"received an array of shape {raw.shape} (expected a 1-D list of strings)")
            raw = raw.tolist()
        if not isinstance(raw, (list, tuple)):
            raise InputValidationError(f"received {type(raw).__name__} (expected a list of strings)")
        if not raw:
            raise InputValidationError("received an empty list (expected at least one string)")
        length = pre.sequence_length
        out = np.zeros((len(raw), length), dtype=np.int64)
        vocab, pat = self._vocab, self._token_re
        assert vocab is not None and pat is not None
        for i, text in enumerate(raw):
            if not isinstance(text, str):
                raise InputValidationError(f"item {i + offset} is {type(text).__name__} {text!r:.40} "
                                           f"(expected a string)")
            if pre.lowercase:
                text = text.lower()
            ids = [vocab.get(t, 1) for t in pat.findall(text)[:length]]
            out[i, : len(ids)] = ids
        return out

    def _no_preprocessing(self, raw: Any) -> dict[str, np.ndarray]:
        if len(self.input_names) > 1 or isinstance(raw, Mapping):
            if not isinstance(raw, Mapping):
                raise InputValidationError(f"received {type(raw).__name__} (this model has inputs "
                                           f"{list(self.input_names)}: pass a dict of arrays)")
            missing = [n for n in self.input_names if n not in raw]
            if missing:
                raise InputValidationError(f"missing input(s) {missing} (expected {list(self.input_names)})")
            items = {n: raw[n] for n in self.input_names}
        else:
            items = {self.input_names[0]: raw}
        feeds = {}
        n_rows = None
        for n, v in items.items():
            want = self._input_shapes[n]
            x = _numeric_array(v, f"{n}: {_fmt_shape(want)}")
            if not _shape_ok(x.shape, want):
                raise InputValidationError(f"input {n!r} has shape {x.shape} (expected {_fmt_shape(want)})")
            _check_nonempty(x)
            if n_rows is not None and x.shape[0] != n_rows:
                raise InputValidationError(f"input {n!r} has {x.shape[0]} rows but the others have {n_rows}")
            n_rows = x.shape[0]
            dtype = self._input_dtypes[n]
            if dtype.kind == "f":
                _check_finite(x, 0, f"input {n!r}")
                feeds[n] = _cast_checked(x, dtype, 0)
            else:
                if x.dtype.kind == "f":
                    _check_finite(x, 0, f"input {n!r}")
                    if not np.all(np.mod(x, 1) == 0):
                        raise InputValidationError(f"input {n!r} has non-integer values (expected {dtype.name})")
                info = np.iinfo(dtype) if dtype.kind in "iu" else None
                if info is not None and x.size and (x.min() < info.min or x.max() > info.max):
                    raise InputValidationError(f"input {n!r} has values outside the {dtype.name} range")
                feeds[n] = x.astype(dtype, copy=False)
        return feeds

    # ------------------------------------------------------------------ predict

    def predict(self, raw: Any, batch_size: int | None = None) -> np.ndarray:
        """Predict from raw inputs: class labels for classifiers, values in target units for regression.

        Inputs are preprocessed and run ``batch_size`` rows at a time (default
        1024) so memory stays bounded for large inputs.

        >>> p.predict(np.array([[...30 floats...]]))    # doctest: +SKIP
        array(['benign'], dtype='<U9')
        """
        return self._predict_rows(raw, False, 0, batch_size)

    def predict_proba(self, raw: Any, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``; a binary model gives ``(n, 2)`` = ``[1 - p, p]``.

        >>> p.predict_proba(x)[:, 1]   # probability of labels[1]  # doctest: +SKIP
        """
        return self._predict_rows(raw, True, 0, batch_size)

    def _predict_rows(self, raw: Any, proba: bool, offset: int, batch_size: int | None = None) -> np.ndarray:
        task = self.manifest.task
        if proba and task == "regression":
            raise InputValidationError("predict_proba() is for classifiers; this bundle's task is regression: "
                                       "use predict()")
        if batch_size is None and type(raw) is np.ndarray and raw.ndim >= 1 and 0 < raw.shape[0] <= self._one_chunk:
            return self._post(self._run_chunk(raw, offset), task, proba)  # one chunk: what _chunks would yield
        outs = [self._post(self._run_chunk(c, offset + o), task, proba) for c, o in self._chunks(raw, batch_size)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def _labels_from_proba(self, probs: np.ndarray) -> np.ndarray:
        if self.manifest.task == "binary":
            ids = (probs[:, 1] >= 0.5).astype(np.int64)
        else:
            ids = np.argmax(probs, axis=1)
        return self._labels[ids] if self._labels is not None else ids

    def _run_chunk(self, chunk: Any, offset: int) -> np.ndarray:
        feeds = self._preprocess(chunk, offset)
        try:
            return self._fast.run(feeds)[0]
        except (_OrtInvalidArgument, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            raise self._explain_feeds(feeds, exc) from None

    def _chunks(self, raw: Any, batch_size: int | None) -> Iterable[tuple[Any, int]]:
        if batch_size is None:
            batch_size = DEFAULT_BATCH_SIZE
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputValidationError(f"batch_size = {batch_size!r} (expected an integer >= 1)")
        if self._fixed_batch is not None:
            batch_size = self._fixed_batch
        if type(raw) is np.ndarray and raw.ndim >= 1 and 0 < raw.shape[0] <= batch_size:  # fast path
            yield raw, 0
            return
        if isinstance(raw, Mapping):  # multi-input 'none' models: slice every input alike
            if raw and all(isinstance(v, np.ndarray) and v.ndim >= 1 for v in raw.values()):
                n = min(v.shape[0] for v in raw.values())
                if n == 0:
                    raise InputValidationError("received empty inputs (0 rows); pass at least one sample")
                for s in range(0, n, batch_size):
                    yield {k: v[s:s + batch_size] for k, v in raw.items()}, s
                return
            yield raw, 0
            return
        if isinstance(raw, (list, tuple)):
            if len(raw) == 0:
                raise InputValidationError("received an empty list (expected at least one sample)")
            if not isinstance(raw[0], (Mapping, str)):
                raw = _numeric_array(raw, "a rectangular array of numbers")
        if isinstance(raw, np.ndarray) and raw.ndim >= 1:
            if raw.shape[0] == 0:
                raise InputValidationError(f"received an empty array of shape {raw.shape} (expected at least one row)")
            if raw.shape[0] > batch_size:
                for s in range(0, raw.shape[0], batch_size):
                    yield raw[s:s + batch_size], s
                return
        elif isinstance(raw, (list, tuple)) and len(raw) > batch_size:
            for s in range(0, len(raw), batch_size):
                yield raw[s:s + batch_size], s
            return
        elif hasattr(raw, "columns") and hasattr(raw, "to_numpy") and len(raw) > batch_size:
            for s in range(0, len(raw), batch_size):
                yield raw.iloc[s:s + batch_size], s
            return
        yield raw, 0

    def _post(self, y: np.ndarray, task: str, proba: bool) -> np.ndarray:
        n = y.shape[0]
        y = y.reshape(n, -1)
        if task == "regression":
            pre = self.manifest.preprocessing
            if isinstance(pre, Window):
                y = y.astype(np.float64) * pre.std + pre.mean
            return y[:, 0] if y.shape[1] == 1 else y
        if task == "binary" and y.shape[1] == 1:
            if not proba:  # y >= 0.5 in the output dtype equals the float64 test (the cast is exact)
                ids = (y[:, 0] >= 0.5).astype(np.int64)  # (an int8 view indexes 3x slower)
                return self._labels[ids] if self._labels is not None else ids
            probs = np.empty((n, 2), dtype=np.float64)
            probs[:, 1] = y[:, 0]
            np.subtract(1.0, probs[:, 1], out=probs[:, 0])
        elif not proba and self.manifest.task != "binary":  # argmax is the same before the exact float64 cast
            ids = np.argmax(y, axis=1)
            return self._labels[ids] if self._labels is not None else ids
        else:
            probs = y.astype(np.float64)
        return probs if proba else self._labels_from_proba(probs)


# --------------------------------------------------------------------------- helpers


def _short(names: Sequence[str], k: int = 6) -> str:
    names = list(names)
    return str(names) if len(names) <= k else f"[{', '.join(map(repr, names[:k]))}, ... {len(names)} in all]"


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("n" if not isinstance(d, int) else str(d) for d in shape) + ")"


def _shape_ok(got: Sequence[int], want: Sequence[Any]) -> bool:
    return len(got) == len(want) and all(not isinstance(w, int) or w <= 0 or g == w for g, w in zip(got, want))


def _numeric_array(raw: Any, expected: str | Callable[[], str]) -> np.ndarray:
    """``raw`` as a numeric ndarray; ``expected`` (text or a callable making it) is used in errors only."""
    if isinstance(raw, np.ndarray):
        x = raw
    else:
        if isinstance(raw, (str, bytes, Mapping)) or raw is None:
            raise InputValidationError(f"received {type(raw).__name__} (expected {_text(expected)})")
        try:
            x = np.asarray(raw)
        except (ValueError, TypeError) as exc:
            raise InputValidationError(f"received a ragged or mixed sequence ({exc}) "
                                       f"(expected {_text(expected)})") from None
    if x.dtype.kind not in "iuf":
        raise InputValidationError(f"received dtype {x.dtype} (expected numbers: int or float; {_text(expected)})")
    if x.ndim == 0:
        raise InputValidationError(f"received a scalar (expected {_text(expected)})")
    return x


def _text(expected: str | Callable[[], str]) -> str:
    return expected() if callable(expected) else expected


def _check_nonempty(x: np.ndarray) -> None:
    if x.shape[0] == 0 or x.size == 0:
        raise InputValidationError(f"received an empty array of shape {x.shape} (expected at least one sample)")


def _check_finite(x: np.ndarray, offset: int, what: str) -> None:
    if x.dtype.kind != "f":
        return
    finite = np.isfinite(x)
    if not finite.all():
        row = int(np.flatnonzero(~finite.reshape(x.shape[0], -1).all(axis=1))[0])
        bad = x.reshape(x.shape[0], -1)[row][~finite.reshape(x.shape[0], -1)[row]][0]
        raise InputValidationError(f"{what} row {row + offset} contains {bad} (expected finite numbers); "
                                   f"impute or drop rows with missing values before predicting")


def _cast_checked(z: np.ndarray, dtype: np.dtype, offset: int) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        out = z.astype(dtype, copy=False)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        row = int(np.flatnonzero(~np.isfinite(out).reshape(out.shape[0], -1).all(axis=1))[0])
        raise InputValidationError(f"row {row + offset} overflows {dtype.name} after preprocessing "
                                   f"(a value is too large; expected magnitudes below {np.finfo(dtype).max:.3g})")
    return out


# --------------------------------------------------------------------------- files (batch scoring)


@dataclass(frozen=True)
class PredictFileResult:
    """What :func:`predict_file` did: rows scored, where they went, how fast."""

    bundle: str
    artifact: str
    input: str
    output: str | None
    format: str
    rows: int
    seconds: float
    rows_per_second: float


def predict_file(
    predictor: "Predictor",
    input_path: str | os.PathLike,
    output: str | os.PathLike | Any | None = None,
    batch_size: int | None = None,
    progress: Any = None,
) -> PredictFileResult:
    """Score a CSV / NPY / JSONL file in chunks and write predictions as CSV or JSONL.

    Memory stays flat: CSV and JSONL are read line by line, NPY is memory-mapped,
    and each chunk's predictions are written before the next chunk is read.
    ``output`` is a path (``.csv`` or ``.jsonl``, written atomically) or a
    text stream (CSV). ``progress(done, total)`` is called after each chunk
    (bytes for CSV/JSONL, rows for NPY).

    >>> predict_file(Predictor.from_bundle("runs/x"), "data.csv", "preds.jsonl")  # doctest: +SKIP
    """
    import contextlib
    import time

    from seqdeploy.atomic import atomic_path
    from seqdeploy.errors import DataError, InputFileNotFound, UsageError

    src = Path(input_path)
    if not src.is_file():
        raise InputFileNotFound(f"input {src} does not exist (expected a .csv, .npy or .jsonl file)")
    kind = src.suffix.lower()
    if kind not in (".csv", ".npy", ".jsonl", ".ndjson"):
        raise UsageError(f"input {src} has suffix {kind or '(none)'!r} (expected .csv, .npy or .jsonl)")
    bs = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise UsageError(f"batch size {batch_size!r} (expected an integer >= 1)")
    out_is_path = output is not None and isinstance(output, (str, os.PathLike))
    fmt = "csv"
    if out_is_path:
        suffix = Path(output).suffix.lower()  # type: ignore[arg-type]
        if suffix not in (".csv", ".jsonl", ".ndjson"):
            raise UsageError(f"output {output} has suffix {suffix or '(none)'!r} (expected .csv or .jsonl)")
        fmt = "csv" if suffix == ".csv" else "jsonl"
    writer = _PredictionWriter(predictor, fmt)
    t0 = time.perf_counter()
    rows = 0
    with contextlib.ExitStack() as stack:
        if out_is_path:
            tmp = stack.enter_context(atomic_path(output))  # type: ignore[arg-type]
            stream = stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
        else:
            import sys

            stream = output if output is not None else sys.stdout
        for chunk, done, total in _read_chunks(predictor, src, kind, bs, DataError):
            try:
                if predictor.manifest.task == "regression":
                    preds, probs = predictor._predict_rows(chunk, False, rows), None
                else:
                    probs = predictor._predict_rows(chunk, True, rows)
                    preds = predictor._labels_from_proba(probs)
            except InputValidationError as exc:
                raise InputValidationError(f"{src}: {exc}") from None
            writer.write(stream, preds, probs)
            rows += len(preds)
            if progress is not None:
                progress(done, total)
        if rows == 0:
            raise DataError(f"{src} has no data rows (expected at least one sample after the header)")
        stream.flush()
    secs = time.perf_counter() - t0
    return PredictFileResult(predictor.info.bundle, predictor.info.artifact, str(src),
                             str(output) if out_is_path else None, fmt, rows, round(secs, 4),
                             round(rows / secs, 1) if secs > 0 else 0.0)


class _PredictionWriter:
    """CSV: ``prediction[,p_<label>...]``; JSONL: ``{"prediction": ..., "probabilities": {...}}``."""

    def __init__(self, predictor: "Predictor", fmt: str):
        self.fmt = fmt
        m = predictor.manifest
        self.header_done = False
        self.class_names: list[str] | None = None
        if m.task != "regression":
            k = len(m.labels) if m.labels else (2 if m.task == "binary" else None)
            self.class_names = list(m.labels) if m.labels else ([str(i) for i in range(k)] if k else None)

    def write(self, stream: Any, preds: np.ndarray, probs: np.ndarray | None) -> None:
        import csv
        import json

        if probs is not None and self.class_names is None:
            self.class_names = [str(i) for i in range(probs.shape[1])]
        if self.fmt == "csv":
            w = csv.writer(stream, lineterminator="\n")
            if not self.header_done:
                if probs is not None:
                    w.writerow(["prediction", *[f"p_{c}" for c in self.class_names or []]])
                elif preds.ndim == 2:
                    w.writerow([f"prediction_{j}" for j in range(preds.shape[1])])
                else:
                    w.writerow(["prediction"])
                self.header_done = True
            # .tolist() first: formatting numpy scalars one by one is ~10x slower than Python floats
            if probs is not None:
                w.writerows([p, *pr] for p, pr in zip(preds.tolist(), np.round(probs, 7).tolist()))
            elif preds.ndim == 2:
                w.writerows(preds.astype(np.float64).tolist())
            else:
                w.writerows([v] for v in preds.astype(np.float64).tolist())
        else:
            names = self.class_names or []
            values = preds.tolist() if preds.dtype.kind in "UOi" else preds.astype(np.float64).tolist()
            if probs is None:
                lines = [json.dumps({"prediction": v}) for v in values]
            else:
                lines = [json.dumps({"prediction": v, "probabilities": dict(zip(names, pr))})
                         for v, pr in zip(values, np.round(probs, 7).tolist())]
            stream.write("\n".join(lines) + "\n")


def _read_chunks(predictor: "Predictor", src: Path, kind: str, bs: int, DataError: type) -> Iterable[tuple[Any, int, int]]:
    pre = predictor.manifest.preprocessing
    if kind == ".npy":
        try:
            arr = np.load(src, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{src} is not a readable .npy array ({exc}); save it with np.save (numeric or "
                            f"fixed-width string dtype, no objects)") from None
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise DataError(f"{src} holds an array of shape {arr.shape} (expected at least one row)")
        for s in range(0, arr.shape[0], bs):
            chunk = np.asarray(arr[s:s + bs])
            if isinstance(pre, Tokenize):
                if chunk.dtype.kind not in "US":
                    raise DataError(f"{src} has dtype {chunk.dtype} (expected strings for a text model)")
                chunk = chunk.astype(str).tolist()
            yield chunk, min(s + bs, arr.shape[0]), arr.shape[0]
        return
    total = src.stat().st_size
    counter = _ByteCounter(src)
    try:
        if kind == ".csv":
            yield from _csv_chunks(predictor, src, counter, bs, total, DataError)
        else:
            yield from _jsonl_chunks(predictor, src, counter, bs, total, DataError)
    finally:
        counter.close()


class _ByteCounter:
    """Yield decoded lines of a file opened in binary mode, counting bytes read (for progress)."""

    def __init__(self, path: Path):
        self.fh = open(path, "rb")
        self.done = 0
        self.line_no = 0

    def __iter__(self) -> Any:
        first = True
        for raw in self.fh:
            self.done += len(raw)
            self.line_no += 1
            text = raw.decode("utf-8-sig" if first else "utf-8")
            first = False
            yield text

    def close(self) -> None:
        self.fh.close()


def _flat_size(predictor: "Predictor") -> int | None:
    pre = predictor.manifest.preprocessing
    if isinstance(pre, Window):
        return pre.window
    if isinstance(pre, Scale):
        return math.prod(pre.raw_shape)
    shape = predictor._input_shapes[predictor.input_names[0]][1:]
    return math.prod(shape) if all(isinstance(d, int) for d in shape) else None


def _reshape_flat(predictor: "Predictor", x: np.ndarray) -> np.ndarray:
    pre = predictor.manifest.preprocessing
    if isinstance(pre, NoPreprocessing):
        shape = predictor._input_shapes[predictor.input_names[0]][1:]
        if all(isinstance(d, int) for d in shape):
            return x.reshape((x.shape[0], *shape))
    return x


def _csv_chunks(predictor: "Predictor", src: Path, counter: _ByteCounter, bs: int, total: int,
                DataError: type) -> Iterable[tuple[Any, int, int]]:
    import csv

    pre = predictor.manifest.preprocessing
    reader = csv.reader(iter(counter))
    header = next(reader, None)
    if header is None:
        raise DataError(f"{src} is empty (expected a header row and data rows)")
    header = [h.strip() for h in header]
    if isinstance(pre, Tokenize):
        if "text" not in header:
            raise DataError(f"{src} has columns {header[:10]} but no 'text' column (expected a header with a "
                            f"'text' column holding the raw strings)")
        col = header.index("text")
        buf: list[Any] = []
        for row in reader:
            if not row:
                continue
            if col >= len(row):
                raise DataError(f"{src} line {counter.line_no}: {len(row)} fields (expected a 'text' value in "
                                f"column {col + 1})")
            buf.append(row[col])
            if len(buf) >= bs:
                yield buf, counter.done, total
                buf = []
        if buf:
            yield buf, counter.done, total
        return
    if isinstance(pre, Standardize):
        missing = [f for f in pre.feature_names if f not in header]
        if missing:
            raise InputValidationError(
                f"{src} is missing feature column(s) {_short(missing)} (header has {_short(header)}; expected the "
                f"training feature names {_short(pre.feature_names)}; extra columns such as ids are ignored)")
        cols = [header.index(f) for f in pre.feature_names]
        names = list(pre.feature_names)
    else:
        width = _flat_size(predictor)
        try:
            first_values = [float(h) for h in header]
        except ValueError:
            first_values = None
        if width is not None and len(header) != width:
            raise DataError(f"{src} has {len(header)} columns (expected {width} numeric columns: one raw value each)")
        cols = list(range(len(header)))
        names = header
        if first_values is not None:  # no header: the first line is data
            pending = [first_values]
        else:
            pending = []
    rows: list[list[float]] = [] if isinstance(pre, Standardize) else pending
    need = max(cols) + 1
    for row in reader:
        if not row:
            continue
        if len(row) < need:
            raise DataError(f"{src} line {counter.line_no}: {len(row)} fields (expected {len(header)} as in the header)")
        vals = []
        for c in cols:
            cell = row[c].strip()
            try:
                vals.append(float(cell))
            except ValueError:
                what = "is empty (a missing value)" if not cell else f"= {cell!r} is not a number"
                raise DataError(f"{src} line {counter.line_no} column {names[cols.index(c)]!r} {what}; "
                                f"impute or drop such rows before predicting") from None
        rows.append(vals)
        if len(rows) >= bs:
            yield _reshape_flat(predictor, np.asarray(rows, dtype=np.float64)), counter.done, total
            rows = []
    if rows:
        yield _reshape_flat(predictor, np.asarray(rows, dtype=np.float64)), counter.done, total


def _jsonl_chunks(predictor: "Predictor", src: Path, counter: _ByteCounter, bs: int, total: int,
                  DataError: type) -> Iterable[tuple[Any, int, int]]:
    import json

    pre = predictor.manifest.preprocessing
    buf: list[Any] = []
    for line in counter:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{src} line {counter.line_no} is not valid JSON ({exc.msg}); expected one JSON "
                            f"object per line") from None
        if isinstance(pre, Tokenize):
            if isinstance(obj, dict):
                if "text" not in obj:
                    raise DataError(f"{src} line {counter.line_no}: keys {list(obj)[:10]} (expected a 'text' key)")
                obj = obj["text"]
            if not isinstance(obj, str):
                raise DataError(f"{src} line {counter.line_no}: {type(obj).__name__} (expected {{\"text\": \"...\"}})")
        elif isinstance(pre, Standardize):
            if isinstance(obj, list):
                obj = dict(zip(pre.feature_names, obj)) if len(obj) == len(pre.feature_names) else obj
            if not isinstance(obj, dict):
                raise DataError(f"{src} line {counter.line_no}: {type(obj).__name__} (expected an object keyed by "
                                f"feature name, e.g. {{{pre.feature_names[0]!r}: 1.0, ...}})")
            missing = [f for f in pre.feature_names if f not in obj]
            if missing:
                raise InputValidationError(f"{src} line {counter.line_no} is missing feature(s) {_short(missing)} "
                                           f"(expected keys {_short(pre.feature_names)})")
        else:
            if isinstance(obj, dict):
                if "input" not in obj:
                    raise DataError(f"{src} line {counter.line_no}: keys {list(obj)[:10]} (expected an 'input' key "
                                    f"or a bare JSON list)")
                obj = obj["input"]
            if not isinstance(obj, list):
                raise DataError(f"{src} line {counter.line_no}: {type(obj).__name__} (expected a list of numbers)")
        buf.append(obj)
        if len(buf) >= bs:
            yield _jsonl_batch(predictor, buf), counter.done, total
            buf = []
    if buf:
        yield _jsonl_batch(predictor, buf), counter.done, total


def _jsonl_batch(predictor: "Predictor", buf: list[Any]) -> Any:
    pre = predictor.manifest.preprocessing
    if isinstance(pre, (Tokenize, Standardize)):
        return buf
    return _numeric_array(buf, "rows of numbers of equal length")
