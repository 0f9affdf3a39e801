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

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from seqdeploy.atomic import sha256_bytes
from seqdeploy.errors import BundleError, InputValidationError, IntegrityError
from seqdeploy.fastpath import _ORT_TYPES, FastSession
from seqdeploy.manifest import (
    Artifact,
    Manifest,
    Scale,
    Standardize,
    Tokenize,
    Window,
    bundle_path,
    load_manifest,
)

__all__ = ["Predictor", "FastSession", "RuntimeInfo", "session_options", "make_session", "DEFAULT_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 1024


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
