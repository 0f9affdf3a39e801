"""The embeddable runtime: load a bundle, run its portable deployment graph, predict.

Imports only numpy, onnxruntime, the standard library and seqdeploy's
manifest/preprocess/fastpath/errors/atomic modules: never TensorFlow, never
``onnx``. This is what ``pip install seqdeploy`` (the base install) gives an
application.

    >>> from seqdeploy.runtime import Predictor
    >>> p = Predictor.from_bundle("runs/breast_cancer_mlp")      # doctest: +SKIP
    >>> p.predict([{"mean radius": 14.1, ...}])                     # doctest: +SKIP
    array(['benign'], dtype='<U9')
    >>> p.predict_proba(x_raw)[:, 1]                               # doctest: +SKIP

Session defaults (:func:`~seqdeploy.runtime.session.session_options`; every session comes from
:func:`~seqdeploy.runtime.session.make_session`), chosen by measurement for per-call
latency of small models (``benchmarks/predictor_overhead.py``,
``benchmarks/runtime_threads.py``; numbers in ``benchmarks/RESULTS.md``):

* ``intra_op_num_threads = 1`` (``threads=None``): for models this small a second
  intra-op thread only adds hand-off cost; concurrency comes from the caller
  (``predict``/``run`` are thread-safe and release the GIL). Pass ``threads=k``
  for large models called from one thread.
* ``inter_op_num_threads = 1``, sequential execution: the graphs are chains.
* ``allow_spinning = 0``: a library inside someone else's process must not keep
  a core busy between calls.
* ``graph_optimization_level = ORT_ENABLE_ALL``: the fusions pay off at larger
  batches and cost nothing at batch 1.
* the model bytes are read once, their sha256 checked against the manifest, and
  the session is created from those bytes, so the file cannot change between
  the check and the load.

Per call, :class:`~seqdeploy.runtime.fastpath.FastSession` binds numpy buffers to an
``IOBinding`` once per thread and input shape (see its docstring for the
fallbacks and the optional C API path).
"""

from __future__ import annotations

import functools
import threading
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from seqdeploy import compat
from seqdeploy.atomic import sha256_bytes
from seqdeploy.errors import BundleError, InputValidationError, IntegrityError
from seqdeploy.runtime.session import ORT_TYPES, SessionSettings, make_session, session_options  # noqa: F401
from seqdeploy.runtime.extensions import libraries_for
from seqdeploy.runtime.fastpath import FAST_MAX_SHAPES, FastSession  # noqa: F401
from seqdeploy.preprocess import Kind, NoPreprocessing, class_names, task_outputs
from seqdeploy.preprocess import fmt_shape, numeric_array, shape_ok, short_list  # noqa: F401  (shared input checks)
from seqdeploy.runtime.manifest import (
    Artifact,
    Manifest,
    bundle_path,
    load_manifest,
    version_tuple,
)

__all__ = ["Predictor", "FastSession", "RuntimeInfo", "session_options", "make_session", "DEFAULT_BATCH_SIZE"]

#: rows per ``predict`` chunk (memory stays bounded) wherever a batch size is not given
DEFAULT_BATCH_SIZE = 1024


# onnxruntime's exception for rejected feeds (RuntimeError where the binding does not expose it)
_OrtInvalidArgument: type[BaseException] = next(
    (e for e in compat.ort_error_types() if e.__name__ == "InvalidArgument"), RuntimeError)


@dataclass(frozen=True)
class RuntimeInfo:
    """What a :class:`Predictor` loaded: bundle, artifact, graph file, threads, onnxruntime version."""

    bundle: str
    artifact: str
    precision: str
    threads: int
    onnxruntime: str
    #: the file ``predict`` runs: the portable graph (raw inputs -> answers) or, for bundles without one,
    #: the model-ready artifact with the recorded preprocessing replayed in numpy
    graph_file: str = ""
    graph: str = "model-ready"
    #: the session settings in use: the bundle's measured choice (``manifest.runtime_settings``) or
    #: the defaults, with any explicit ``threads`` / ``settings`` applied
    settings: SessionSettings = SessionSettings()


# --------------------------------------------------------------------------- predictor


class Predictor:
    """A loaded bundle: the portable deployment graph (raw inputs -> answers) in one onnxruntime session.

    ``predict`` / ``predict_proba`` check the raw inputs (:mod:`seqdeploy.preprocess`
    ``coerce``: column count, types, NaN) and run the portable graph, which holds
    the preprocessing, the model and the task outputs; nothing is computed in numpy
    on the way except picking the label names. ``run`` takes model-ready feeds and
    uses the model-ready artifact (its session is created on first use). Bundles
    written before portable graphs existed run the model-ready artifact with the
    same preprocessing definition applied in numpy.

    Thread-safe: every method may be called from many threads at once
    (onnxruntime's ``run`` is thread-safe; the only mutable state is the per-thread
    buffers of :class:`FastSession` and the lazily created model-ready session).

    >>> p = Predictor.from_bundle("runs/iris_softmax")          # doctest: +SKIP
    >>> p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]))            # doctest: +SKIP
    array(['setosa'], dtype='<U10')
    """

    def __init__(self, manifest: Manifest, session: ort.InferenceSession, info: RuntimeInfo,
                 model_ready: Callable[[], ort.InferenceSession] | None = None, fastpath: str | None = None):
        self.manifest = manifest
        self._fastpath = fastpath
        self.info = info
        self.pre = manifest.preprocessing
        self._portable = info.graph == "portable"
        self._graph_session = session
        self._model_ready_factory = model_ready
        self._model_ready: ort.InferenceSession | None = None if self._portable else session
        self._lock = threading.Lock()
        meta = session.get_inputs()
        self._graph_inputs = tuple(i.name for i in meta)
        self._graph_dtypes = {i.name: np.dtype(ORT_TYPES.get(i.type, np.float32)) for i in meta}
        self._graph_shapes = {i.name: tuple(i.shape) for i in meta}
        outs = [o.name for o in session.get_outputs()]
        task = manifest.task
        if self._portable:
            want = "prediction" if task == "regression" else "class_id"
            self._fast_answer = FastSession(session, output_names=[want], fastpath=fastpath)
            self._fast_proba = (FastSession(session, output_names=["probabilities"], fastpath=fastpath)
                                if task != "regression" else None)
            self._fast = None
        else:
            self._fast_answer = self._fast_proba = None
            self._fast = FastSession(session, fastpath=fastpath)
        n_classes = _n_classes(manifest, session, outs, self._portable)
        self._labels = np.asarray(class_names(manifest.labels, n_classes)) if n_classes else None
        self._keep_ids = manifest.labels is None  # no names: predict() returns class ids as before
        # predict() on a portable graph with one raw input: what it does, bound once
        self._lean = None
        if self._portable and not isinstance(self.pre, NoPreprocessing) and len(self._graph_inputs) == 1 \
                and type(self.pre).feeds is Kind.feeds:
            if task == "regression":
                post: Callable[[np.ndarray], np.ndarray] = functools.partial(np.asarray, dtype=np.float64)
            elif self._keep_ids:
                post = _same
            else:
                post = self._labels.__getitem__
            self._lean = (self._graph_inputs[0], self.pre.coerce, self._fast_answer, post)
        first = self._graph_shapes[self._graph_inputs[0]]
        self._fixed_batch = first[0] if first and isinstance(first[0], int) and first[0] > 0 else None
        self._one_chunk = self._fixed_batch or DEFAULT_BATCH_SIZE  # predict() rows that need no chunking

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, artifact: str | None = None,
                    threads: int | None = None, graph: str = "portable",
                    settings: SessionSettings | None = None, fastpath: str | None = None) -> "Predictor":
        """Load and check a bundle, then create a session for ``artifact`` (default: the deployment one).

        ``artifact`` is a file name, recipe or precision (``"model.onnx"``, ``"fp16"``);
        ``graph="model-ready"`` runs the model-ready file with numpy preprocessing
        instead of the portable graph (for comparisons). Raises :class:`BundleError` /
        :class:`IntegrityError` before any session exists if the manifest or a file is wrong.

        Without ``settings``, the deployed artifact uses the session settings (threads, spinning, graph
        optimisation) measured fastest at batch 1 for it (``manifest.runtime_settings``, written from
        :func:`seqdeploy.bench.tune.tune_bundle`), else the defaults; ``threads`` overrides the thread count.
        ``fastpath`` picks the per-call path (:data:`seqdeploy.runtime.fastpath.FASTPATHS`; default: the
        ``SEQDEPLOY_FASTPATH`` environment variable, else the measured default).

        >>> p = Predictor.from_bundle("runs/breast_cancer_mlp", artifact="float32")  # doctest: +SKIP
        """
        if graph not in ("portable", "model-ready"):
            raise InputValidationError(f"graph = {graph!r} (expected 'portable' or 'model-ready')")
        manifest = load_manifest(path)
        art: Artifact = manifest.deployment if artifact is None else manifest.artifact(artifact)
        if settings is None and manifest.runtime_settings is not None and art.file == manifest.deployment_artifact:
            settings = manifest.runtime_settings.for_batch(1)  # measured best for per-call latency
        chosen = (settings or SessionSettings()).with_threads(threads)
        root = Path(path) if Path(path).is_dir() else Path(path).parent
        for need in (art.min_onnxruntime, art.portable.min_onnxruntime if art.portable else art.min_onnxruntime):
            if version_tuple(ort.__version__) < version_tuple(need):
                raise BundleError(f"{art.file} needs onnxruntime >= {need} (opset {art.opset}); "
                                  f"installed {ort.__version__}: pip install -U onnxruntime")

        def load(file: str, sha256: str, contrib_ops: tuple[str, ...]) -> ort.InferenceSession:
            full = bundle_path(path, file)
            libraries = libraries_for(contrib_ops, file)  # e.g. onnxruntime-extensions for string ops
            data = full.read_bytes()
            if sha256_bytes(data) != sha256:  # the bytes we load are the bytes we checked
                raise IntegrityError(f"{full} changed while loading (sha256 differs from the manifest); "
                                     f"copy the bundle again or rebuild it")
            return make_session(data, settings=chosen, custom_ops_libraries=libraries)

        def model_ready() -> ort.InferenceSession:
            session = load(art.file, art.sha256, art.contrib_ops)
            got = tuple(i.name for i in session.get_inputs())
            want = tuple(t.name for t in manifest.inputs)
            if set(got) != set(want):
                raise BundleError(f"{art.file} has inputs {list(got)} but the manifest lists {list(want)}; "
                                  f"rebuild the manifest with write_bundle_manifest(run_dir)")
            return session

        if art.portable is not None and graph == "portable":
            session = load(art.portable.file, art.portable.sha256, art.portable.contrib_ops)
            info = RuntimeInfo(str(root), art.file, art.precision, chosen.threads, ort.__version__,
                               art.portable.file, "portable", chosen)
            return cls(manifest, session, info, model_ready, fastpath=fastpath)
        info = RuntimeInfo(str(root), art.file, art.precision, chosen.threads, ort.__version__, art.file,
                           "model-ready", chosen)
        return cls(manifest, model_ready(), info, fastpath=fastpath)

    def __repr__(self) -> str:
        return (f"Predictor({self.manifest.name!r}, task={self.manifest.task!r}, artifact={self.info.artifact!r}, "
                f"graph={self.info.graph!r}, inputs={list(self.input_names)})")

    # ------------------------------------------------------------------ the model-ready session (run)

    @property
    def session(self) -> ort.InferenceSession:
        """The model-ready artifact's session (what :meth:`run` uses); created on first use."""
        if self._model_ready is None:
            with self._lock:
                if self._model_ready is None:
                    assert self._model_ready_factory is not None
                    sess = self._model_ready_factory()
                    self._fast = FastSession(sess, fastpath=self._fastpath)
                    self._model_ready = sess
        return self._model_ready

    @property
    def fast_session(self) -> FastSession:
        """The model-ready session's per-call wrapper (what :meth:`run` calls; its ``path`` says which
        fast path is in use and ``fallback_reason`` why it differs from the one asked for)."""
        self.session  # noqa: B018 - creates it on first use
        assert self._fast is not None
        return self._fast

    @property
    def input_names(self) -> tuple[str, ...]:
        """Model-ready input names (the keys :meth:`run` takes)."""
        return tuple(t.name for t in self.manifest.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Model-ready output names (the keys :meth:`run` returns)."""
        return tuple(t.name for t in self.manifest.outputs)

    @functools.cached_property
    def further_outputs(self) -> tuple[str, ...]:
        """A several-output model's outputs after the first (the one ``predict`` answers), as :meth:`answers`
        returns them by name beside the task outputs; empty for one output."""
        if not self._portable:
            return self.output_names[1:]
        graph = {o.name for o in self._graph_session.get_outputs()}
        return tuple(n for n in self.output_names[1:] if n in graph)

    @property
    def raw_input_names(self) -> tuple[str, ...]:
        """Inputs of the graph ``predict`` runs (the portable graph's raw inputs when there is one)."""
        return self._graph_inputs

    @functools.cached_property
    def _input_dtypes(self) -> dict[str, np.dtype]:
        """Model-ready input dtypes (the model-ready session's)."""
        return {i.name: np.dtype(ORT_TYPES.get(i.type, np.float32)) for i in self.session.get_inputs()}

    @functools.cached_property
    def _input_shapes(self) -> dict[str, tuple]:
        """Model-ready input shapes (the model-ready session's)."""
        return {i.name: tuple(i.shape) for i in self.session.get_inputs()}

    # ------------------------------------------------------------------ low level

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on model-ready feeds (no preprocessing): ``{input name: array}`` -> ``{output name: array}``.

        Feeds are not checked for NaN here; a feed onnxruntime rejects is explained
        in an :class:`InputValidationError`.

        >>> p.run({"features": np.zeros((1, 30), np.float32)})  # doctest: +SKIP
        {'dense_2': array([[0.41]], dtype=float32)}
        """
        self.session  # noqa: B018 - create it (and its fast path) on first use
        fast = self._fast
        assert fast is not None
        try:
            outs = fast.run(feeds)
        except (_OrtInvalidArgument, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            raise self._explain_feeds(feeds, exc) from None
        return {fast.output_names[0]: outs[0]} if len(outs) == 1 else dict(zip(fast.output_names, outs))

    def _explain_feeds(self, feeds: Any, exc: Exception) -> InputValidationError:
        names = self.input_names
        dtypes, shapes = self._input_dtypes, self._input_shapes
        expected = ", ".join(f"{n}: {dtypes[n].name} {fmt_shape(shapes[n])}" for n in names)
        if not isinstance(feeds, Mapping):
            return InputValidationError(f"run() received {type(feeds).__name__} (expected a dict of numpy arrays: "
                                        f"{{{expected}}}); use predict() for raw inputs")
        missing = [n for n in names if n not in feeds]
        extra = [n for n in feeds if n not in names]
        if missing or extra:
            return InputValidationError(f"run() received feeds {list(feeds)} (expected {list(names)}; "
                                        f"missing {missing}, unknown {extra})")
        for name in names:
            v = feeds[name]
            want_dt = dtypes[name]
            if not isinstance(v, np.ndarray):
                return InputValidationError(f"run(): feed {name!r} is {type(v).__name__} (expected a numpy array "
                                            f"{want_dt.name} {fmt_shape(shapes[name])})")
            if v.dtype != want_dt:
                return InputValidationError(f"run(): feed {name!r} has dtype {v.dtype} (expected {want_dt.name}); "
                                            f"cast it with .astype(np.{want_dt.name})")
            if not shape_ok(v.shape, shapes[name]):
                return InputValidationError(f"run(): feed {name!r} has shape {tuple(v.shape)} (expected "
                                            f"{fmt_shape(shapes[name])})")
        return InputValidationError(f"onnxruntime rejected the feeds: {str(exc).strip()[:400]} (expected {expected})")

    # ------------------------------------------------------------------ preprocessing

    def preprocess(self, raw: Any) -> dict[str, np.ndarray]:
        """Turn raw inputs into model-ready feeds with the recorded preprocessing (validated), in numpy.

        >>> p.preprocess(["a fine film"])["tokens"].dtype  # doctest: +SKIP
        dtype('int32')
        """
        feeds = self._raw_feeds(raw, 0)
        if isinstance(self.pre, NoPreprocessing):
            return feeds
        name = self.input_names[0]
        return {name: self.pre.apply(feeds if len(feeds) > 1 else next(iter(feeds.values())),
                                     self._input_dtypes[name], self._input_shapes[name][1:])}

    def _raw_feeds(self, raw: Any, offset: int) -> dict[str, np.ndarray]:
        """Raw inputs checked and converted to what the portable graph takes (``{raw input name: array}``)."""
        pre = self.pre
        if not isinstance(pre, NoPreprocessing):
            return pre.feeds(pre.coerce(raw, offset), self._raw_name)
        names = self._graph_inputs
        if len(names) > 1 or isinstance(raw, Mapping):
            if not isinstance(raw, Mapping):
                raise InputValidationError(f"received {type(raw).__name__} (this model has inputs "
                                           f"{list(names)}: pass a dict of arrays)")
            missing = [n for n in names if n not in raw]
            if missing:
                raise InputValidationError(f"missing input(s) {missing} (expected {list(names)})")
            items = {n: raw[n] for n in names}
        else:
            items = {names[0]: raw}
        feeds, n_rows = {}, None
        for n, v in items.items():
            x = pre.coerce(v, offset, self._graph_dtypes[n], self._graph_shapes[n][1:], n)
            if n_rows is not None and x.shape[0] != n_rows:
                raise InputValidationError(f"input {n!r} has {x.shape[0]} rows but the others have {n_rows}")
            n_rows = x.shape[0]
            feeds[n] = x
        return feeds

    @functools.cached_property
    def _raw_name(self) -> str:
        return self._graph_inputs[0] if self._portable else self.input_names[0]

    # ------------------------------------------------------------------ predict

    def predict(self, raw: Any, batch_size: int | None = None) -> np.ndarray:
        """Predict from raw inputs: class labels for classifiers, values in target units for regression.

        Inputs are checked and run ``batch_size`` rows at a time (default :data:`DEFAULT_BATCH_SIZE`) so
        memory stays bounded for large inputs.

        >>> p.predict(np.array([[...30 floats...]]))    # doctest: +SKIP
        array(['benign'], dtype='<U9')
        """
        return self._predict_rows(raw, False, 0, batch_size)

    def predict_proba(self, raw: Any, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``; a binary model gives ``(n, 2)`` = ``[1 - p, p]``.

        >>> p.predict_proba(x)[:, 1]   # probability of labels[1]  # doctest: +SKIP
        """
        return self._predict_rows(raw, True, 0, batch_size)

    def answers(self, raw: Any) -> dict[str, np.ndarray]:
        """Every output of the portable graph for raw inputs: ``probabilities``, ``class_id``, ``label``
        (classifiers) or ``prediction`` (regression), as an application in another language reads them, plus a
        several-output model's further outputs under their own names (:attr:`further_outputs`)."""
        feeds = self._raw_feeds(raw, 0)
        if self._portable:
            sess = self._graph_session
            return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        return self._numpy_answers(feeds)

    def _predict_rows(self, raw: Any, proba: bool, offset: int, batch_size: int | None = None) -> np.ndarray:
        if proba and self.manifest.task == "regression":
            raise InputValidationError("predict_proba() is for classifiers; this bundle's task is regression: "
                                       "use predict()")
        if batch_size is None and type(raw) is np.ndarray and raw.ndim >= 1 and 0 < raw.shape[0] <= self._one_chunk:
            return self._run_chunk(raw, offset, proba)  # one chunk: what _chunks would yield
        outs = [self._run_chunk(c, offset + o, proba) for c, o in self._chunks(raw, batch_size)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def _run_chunk(self, chunk: Any, offset: int, proba: bool) -> np.ndarray:
        if self._lean is not None and not proba:  # the per-call hot path: one raw input, labels or values
            name, coerce, fast, post = self._lean
            feeds = {name: coerce(chunk, offset)}
            try:
                return post(fast.run(feeds)[0])
            except (_OrtInvalidArgument, ValueError, TypeError, RuntimeError, AttributeError,
                    UnicodeError) as exc:
                raise self._explain_raw(feeds, exc) from None
        feeds = self._raw_feeds(chunk, offset)
        task = self.manifest.task
        if not self._portable:
            out = self._numpy_answers(feeds)
            key = "prediction" if task == "regression" else ("probabilities" if proba else "class_id")
            y = out[key]
        else:
            fast = self._fast_proba if proba else self._fast_answer
            assert fast is not None
            try:
                y = fast.run(feeds)[0]
            except (_OrtInvalidArgument, ValueError, TypeError, RuntimeError, AttributeError,
                    UnicodeError) as exc:
                raise self._explain_raw(feeds, exc) from None
        if task == "regression":
            return y.astype(np.float64)
        if proba:
            return y.astype(np.float64)
        return y if self._keep_ids else self._labels[y]

    def _numpy_answers(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Bundles without a portable graph: the same definition, preprocessing and outputs in numpy."""
        if isinstance(self.pre, NoPreprocessing):
            model_feeds = feeds
        else:
            model_feeds = self.preprocess_coerced(feeds if len(feeds) > 1 else next(iter(feeds.values())))
        outs = self.run(model_feeds)
        first = outs.get(self.output_names[0], next(iter(outs.values())))
        answers = task_outputs(first, self.manifest.task, self.manifest.labels, self.pre)
        return {**answers, **{n: outs[n] for n in self.output_names[1:] if n in outs}}

    def preprocess_coerced(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Model-ready feeds from raw inputs already checked by ``coerce`` (numpy preprocessing)."""
        name = self._model_input
        return {name: self.pre.apply(x, self._input_dtypes[name], self._input_shapes[name][1:])}

    @functools.cached_property
    def _model_input(self) -> str:
        return self.manifest.inputs[0].name

    def _explain_raw(self, feeds: dict, exc: Exception) -> InputValidationError:
        if isinstance(exc, UnicodeError):
            return InputValidationError(f"a text is not valid Unicode ({exc.reason}); expected UTF-8 encodable "
                                        f"strings")
        return InputValidationError(f"onnxruntime rejected the inputs: {str(exc).strip()[:400]} (expected "
                                    + ", ".join(f"{n}: {self._graph_dtypes[n].name} "
                                                f"{fmt_shape(self._graph_shapes[n])}" for n in self._graph_inputs)
                                    + ")")

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
                raw = numeric_array(raw, "a rectangular array of numbers")
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


def _n_classes(manifest: Manifest, session: ort.InferenceSession, outs: Sequence[str], portable: bool) -> int | None:
    if manifest.task == "regression":
        return None
    if manifest.labels is not None:
        return len(manifest.labels)
    if portable and "probabilities" in outs:
        shape = next(o.shape for o in session.get_outputs() if o.name == "probabilities")
    else:
        shape = session.get_outputs()[0].shape
    units = shape[-1] if shape and isinstance(shape[-1], int) else 2
    return 2 if units == 1 else units


def _same(y: np.ndarray) -> np.ndarray:
    return y
