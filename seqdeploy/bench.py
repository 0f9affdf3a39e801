"""Timing harness and runners: onnxruntime artifacts vs Keras vs TFLite, side by side.

In the spirit of onnxruntime_perf_test / TFLite benchmark_model: every runner is
created (timed), run once (first-inference time), warmed up, then timed call by
call. Runners are *interleaved* -- rounds of A B C A B C, each a short time
slice -- so machine drift hits every runner alike and cancels in the ratios.
Each runner gets an equal share of the time budget, so a 36 ms ``model.predict``
cannot starve a 8 us onnxruntime session.

    >>> from seqdeploy.bench import run_bench, write_outputs        # doctest: +SKIP
    >>> res = run_bench("runs/breast_cancer_mlp", batches=(1, 64))   # doctest: +SKIP
    >>> write_outputs(res, "runs/breast_cancer_mlp")                 # doctest: +SKIP

Importing this module never imports TensorFlow, Keras or onnx: they are imported
inside the runners that need them. What is timed per call is the full per-call
path a user pays: feeds in, outputs out as numpy (set_tensor/invoke/get_tensor for
TFLite, bind/run for onnxruntime, ``np.asarray(model(x))`` for Keras).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import importlib.metadata
import io
import json
import os
import platform
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from seqdeploy.atomic import atomic_path, atomic_write_json, atomic_write_text, to_jsonable
from seqdeploy.errors import BenchError, InputFileNotFound, UsageError

SCHEMA_VERSION = 1
DEFAULT_BATCHES: tuple[int, ...] = (1, 8, 64)
DEFAULT_THREADS: tuple[int, ...] = (1,)
PEERS: tuple[str, ...] = ("keras", "tflite")
MAX_BATCH = 65536
MAX_THREADS = 256
REF_ONNX_FP32 = "onnx_fp32"
REF_KERAS_DIRECT = "keras_direct"
REF_TFLITE_BEST = "tflite_best"
QUANTILE_GRID = tuple(range(101))  # stored percentiles 0..100, enough to redraw the distribution

# --------------------------------------------------------------------------------------
# statistics


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency summary in microseconds (percentiles use numpy's linear method).

    >>> latency_stats([1e-6, 2e-6, 3e-6]).p50_us
    2.0
    """

    n: int
    mean_us: float
    std_us: float
    min_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    quantiles_us: tuple[float, ...] = ()  # at QUANTILE_GRID percentiles (0..100)


def latency_stats(samples_s: Sequence[float] | np.ndarray) -> LatencyStats:
    """Summarise per-call durations given in seconds.

    >>> s = latency_stats([0.001] * 99 + [0.002])
    >>> (s.p50_us, s.max_us)
    (1000.0, 2000.0)
    """
    a = np.asarray(samples_s, dtype=np.float64) * 1e6
    if a.size == 0:
        raise BenchError("latency_stats received no samples (expected at least 1); run at least one call")
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
    q = np.percentile(a, QUANTILE_GRID)
    return LatencyStats(
        n=int(a.size),
        mean_us=float(a.mean()),
        std_us=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        min_us=float(a.min()),
        p50_us=float(p50),
        p90_us=float(p90),
        p99_us=float(p99),
        p999_us=float(p999),
        max_us=float(a.max()),
        quantiles_us=tuple(float(v) for v in q),
    )


def speedup(reference_us: float | None, candidate_us: float | None) -> float | None:
    """How many times faster ``candidate`` is than ``reference`` (> 1 = faster); None if unknown.

    >>> speedup(100.0, 25.0)
    4.0
    """
    if reference_us is None or candidate_us is None or candidate_us <= 0 or reference_us <= 0:
        return None
    return float(reference_us) / float(candidate_us)


# --------------------------------------------------------------------------------------
# the interleaved timing loop (pure: takes callables and a clock, so tests can fake both)


@dataclass(frozen=True)
class StopRule:
    """When to stop timing one (batch, threads) configuration.

    ``duration_s`` is the whole configuration's budget, split equally between runners;
    a runner stops when it used its share *and* has ``min_samples``, or at
    ``max_overrun`` times its share whatever it has (a 2 s call must not eat the run),
    or at ``max_samples``. With ``count`` every runner makes exactly ``count`` timed calls.

    >>> StopRule(duration_s=2.0).share(4)
    0.5
    """

    duration_s: float | None = 2.0
    count: int | None = None
    warmup_s: float = 0.1
    slice_s: float = 0.02
    min_samples: int = 5
    max_samples: int = 1_000_000
    max_overrun: float = 3.0

    def __post_init__(self) -> None:
        if self.count is None and self.duration_s is None:
            raise BenchError("StopRule received neither duration_s nor count; set one of them")
        if self.count is not None and self.count < 1:
            raise BenchError(f"count = {self.count} (expected an integer >= 1); pass --count 1 or more")
        if self.duration_s is not None and not self.duration_s > 0:
            raise BenchError(f"duration = {self.duration_s} s (expected > 0); pass e.g. --duration 2")
        if self.slice_s <= 0 or self.warmup_s < 0:
            raise BenchError(f"slice_s = {self.slice_s}, warmup_s = {self.warmup_s} (expected slice > 0, warmup >= 0)")

    def share(self, n_runners: int) -> float:
        return (self.duration_s or 0.0) / max(1, n_runners)


def _is_done(rule: StopRule, n: int, spent: float, share: float) -> bool:
    if rule.count is not None:
        return n >= rule.count
    if n >= rule.max_samples:
        return True
    if spent >= share and n >= rule.min_samples:
        return True
    return spent >= rule.max_overrun * share and n >= 1


def warm_up(fn: Callable[[], Any], warmup_s: float, clock: Callable[[], float] = time.perf_counter,
            min_calls: int = 3) -> int:
    """Call ``fn`` until ``warmup_s`` elapsed and at least ``min_calls`` calls; return the number of calls.

    >>> warm_up(lambda: None, 0.0)
    3
    """
    start = clock()
    calls = 0
    while True:
        fn()
        calls += 1
        if calls >= min_calls and clock() - start >= warmup_s:
            return calls


def run_interleaved(
    calls: Sequence[Callable[[], Any]],
    rule: StopRule,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Time ``calls`` in interleaved rounds of short slices; return per-call seconds per callable.

    Each round gives every unfinished callable one slice of ``rule.slice_s`` (at least one
    call), so slow and fast runners see the same machine state.

    >>> out = run_interleaved([lambda: None, lambda: None], StopRule(count=3))
    >>> [len(s) for s in out]
    [3, 3]
    """
    n = len(calls)
    samples: list[list[float]] = [[] for _ in range(n)]
    spent = [0.0] * n
    share = rule.share(n)
    active = list(range(n))
    while active:
        for i in list(active):
            fn = calls[i]
            slice_start = clock()
            s = samples[i]
            while True:
                t0 = clock()
                fn()
                t1 = clock()
                s.append(t1 - t0)
                spent[i] += t1 - t0
                if _is_done(rule, len(s), spent[i], share) or t1 - slice_start >= rule.slice_s:
                    break
            if _is_done(rule, len(s), spent[i], share):
                active.remove(i)
    return samples


# --------------------------------------------------------------------------------------
# onnxruntime session settings

_GRAPH_LEVELS = ("disable", "basic", "extended", "layout", "all")


@dataclass(frozen=True)
class OrtSettings:
    """onnxruntime CPU session settings used by the ONNX runners (defaults: see benchmarks/README.md).

    ``per_call`` is ``"run"`` (plain ``session.run``, what Predictor users pay) or
    ``"iobinding"`` (inputs bound per call, outputs written into pre-allocated buffers, copied out).
    ``cache_dir`` keeps the optimized graph on disk (``optimized_model_filepath``) keyed by
    the model's sha256, ORT version and level; later sessions load it with optimizations off.

    >>> OrtSettings().per_call, OrtSettings().graph_optimization
    ('run', 'all')
    """

    allow_spinning: bool = False
    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    inter_op_threads: int = 1
    per_call: str = "run"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.graph_optimization not in _GRAPH_LEVELS:
            raise BenchError(f"graph_optimization = {self.graph_optimization!r} (expected one of {', '.join(_GRAPH_LEVELS)})")
        if self.execution_mode not in ("sequential", "parallel"):
            raise BenchError(f"execution_mode = {self.execution_mode!r} (expected 'sequential' or 'parallel')")
        if self.per_call not in ("iobinding", "run"):
            raise BenchError(f"per_call = {self.per_call!r} (expected 'iobinding' or 'run')")


def make_ort_session(path: str | os.PathLike, threads: int | None = None, settings: OrtSettings = OrtSettings()) -> Any:
    """Create a CPU ``onnxruntime.InferenceSession`` with ``settings``.

    >>> sess = make_ort_session("runs/x/model.onnx", threads=1)   # doctest: +SKIP
    """
    import onnxruntime as ort

    path = Path(path)
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only (the optimized-model cache otherwise warns on every save)
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = settings.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if settings.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if settings.allow_spinning else "0")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "layout": getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so.graph_optimization_level = levels[settings.graph_optimization]
    providers = ["CPUExecutionProvider"]
    if settings.cache_dir is None or settings.graph_optimization == "disable":
        return ort.InferenceSession(str(path), so, providers=providers)
    from seqdeploy.atomic import sha256_file

    cache = Path(settings.cache_dir)
    key = f"{path.stem}.{sha256_file(path)[:16]}.ort{ort.__version__}.{settings.graph_optimization}.onnx"
    cached = cache / key
    if cached.exists():
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(str(cached), so, providers=providers)
        except Exception:  # a stale or truncated cache entry: rebuild it below
            so.graph_optimization_level = levels[settings.graph_optimization]
    with atomic_path(cached) as tmp:
        so.optimized_model_filepath = str(tmp)
        sess = ort.InferenceSession(str(path), so, providers=providers)
    return sess


# --------------------------------------------------------------------------------------
# runners


class Runner(Protocol):
    """One way of running the model. ``prepare`` (re)creates it for a thread count,
    ``set_batch`` allocates for a batch size (None = ok, else a reason to skip),
    ``infer`` is the timed per-call path."""

    name: str
    family: str  # "onnxruntime" | "keras" | "tflite"
    precision: str
    artifact: str | None
    artifact_bytes: int | None
    deployed: bool
    threads_apply: bool
    notes: list[str]

    def prepare(self, threads: int) -> None: ...
    def set_batch(self, batch: int) -> str | None: ...
    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]: ...
    def close(self) -> None: ...


_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


class OrtRunner:
    """onnxruntime on one ONNX artifact.

    >>> r = OrtRunner("runs/x/model.onnx", precision="fp32")   # doctest: +SKIP
    >>> r.prepare(1); r.set_batch(1); r.infer({"features": x})  # doctest: +SKIP
    """

    family = "onnxruntime"

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", *, settings: OrtSettings = OrtSettings(),
                 deployed: bool = False, session_factory: Callable[[Path, int], Any] | None = None,
                 name: str | None = None):
        self.path = Path(path)
        self.precision = precision
        self.name = name or f"ort:{precision}"
        self.artifact = str(self.path)
        self.artifact_bytes = self.path.stat().st_size if self.path.exists() else None
        self.deployed = deployed
        self.threads_apply = True
        self.settings = settings
        self.notes: list[str] = []
        self._factory = session_factory
        self._sess: Any = None
        self._binding: Any = None
        self._out_bufs: list[np.ndarray] = []
        self._out_names: list[str] = []
        self._in: list[tuple[str, Any]] = []
        self._per_call = settings.per_call
        self._fixed_batch: int | None = None
        self._ready_feeds: Any = None  # the last feeds dict that needed no conversion (reused as is)

    def prepare(self, threads: int) -> None:
        self.close()
        if self._factory is not None:
            self._sess = self._factory(self.path, threads)
        else:
            self._sess = make_ort_session(self.path, threads, self.settings)
        self._in = [(i.name, _ORT_DTYPES.get(i.type, np.float32)) for i in self._sess.get_inputs()]
        self._out_names = [o.name for o in self._sess.get_outputs()]
        first = self._sess.get_inputs()[0].shape
        self._fixed_batch = first[0] if first and isinstance(first[0], int) else None

    def set_batch(self, batch: int) -> str | None:
        if self._fixed_batch is not None and self._fixed_batch != batch:
            return f"the ONNX input has a fixed batch of {self._fixed_batch}"
        self._binding = None
        self._out_bufs = []
        return None

    def _feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if feeds is self._ready_feeds:  # the harness passes the same dict every call: check it once
            return feeds  # type: ignore[return-value]
        out = {}
        for name, dtype in self._in:
            if name in feeds:
                a = feeds[name]
            elif len(self._in) == 1 and len(feeds) == 1:
                a = next(iter(feeds.values()))
            else:
                raise BenchError(f"{self.path.name}: no feed for input {name!r} (received {sorted(feeds)})")
            out[name] = a if a.dtype == dtype else a.astype(dtype)
        if type(feeds) is dict and len(feeds) == len(out) and all(feeds.get(k) is v for k, v in out.items()):
            self._ready_feeds = feeds
            return feeds
        return out

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        f = self._feeds(feeds)
        if self._per_call == "run":
            return self._sess.run(self._out_names, f)
        if self._binding is None:
            return self._init_binding(f)
        b = self._binding
        for name, a in f.items():
            b.bind_cpu_input(name, a)
        self._sess.run_with_iobinding(b)
        return [o.copy() for o in self._out_bufs]

    def _init_binding(self, f: dict[str, np.ndarray]) -> Sequence[np.ndarray]:
        import onnxruntime as ort

        outs = self._sess.run(self._out_names, f)
        try:
            b = self._sess.io_binding()
            self._out_bufs = [np.empty_like(o) for o in outs]
            for name, buf in zip(self._out_names, self._out_bufs):
                b.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buf))
            self._binding = b
        except Exception as exc:  # outputs whose shape depends on the data: fall back to run()
            self._per_call = "run"
            self.notes.append(f"IOBinding unavailable ({type(exc).__name__}); timed session.run instead")
        return outs

    def input_specs(self) -> list[tuple[str, list[Any], Any]]:
        return [(i.name, list(i.shape), _ORT_DTYPES.get(i.type, np.float32)) for i in self._sess.get_inputs()]

    def close(self) -> None:
        self._binding = None
        self._sess = None
        self._ready_feeds = None


class DeployedRunner(OrtRunner):
    """The deployed artifact called the way an application calls it (model-ready feeds in, numpy out).

    With a bundle (``manifest.json`` next to the artifact): ``Predictor.from_bundle(...).run``.
    For a bare ONNX file, or a manifest that does not load: ``seqdeploy.runtime.FastSession``
    on ``make_session``, the same per-call path without the manifest. Its family is
    ``"seqdeploy"`` so the plain ``ort:*`` runners stay the onnxruntime columns.

    >>> r = DeployedRunner("runs/x/model.onnx", "fp32")            # doctest: +SKIP
    >>> r.prepare(1); r.set_batch(1); r.infer({"features": x})     # doctest: +SKIP
    """

    family = "seqdeploy"

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", *, bundle: str | os.PathLike | None = None,
                 name: str | None = None):
        super().__init__(path, precision, deployed=True, name=name or f"deployed:{precision}")
        self.bundle = Path(bundle) if bundle is not None else None
        self._call: Callable[[Mapping[str, np.ndarray]], Any] | None = None
        self._as_list = False
        self.via: str | None = None

    def prepare(self, threads: int) -> None:
        self.close()
        rt = importlib.import_module("seqdeploy.runtime")
        why = None
        if self.bundle is not None and (self.bundle / "manifest.json").is_file():
            try:
                pred = rt.Predictor.from_bundle(self.bundle, artifact=self.path.name, threads=threads)
            except Exception as exc:  # a stale or partial bundle: time the same path without it, and say so
                why = f"Predictor.from_bundle failed ({type(exc).__name__}: {str(exc)[:200]})"
            else:
                self._sess, self._call, self._as_list = pred.session, pred.run, False
                self.via = "Predictor.run"
        if self._call is None:
            fs = rt.FastSession(rt.make_session(self.path, threads=threads))
            self._sess, self._call, self._as_list = fs.session, fs.run, True
            self.via = "FastSession.run"
        note = (f"seqdeploy.runtime {self.via} per call (IOBinding fast path, make_session options): what users get"
                + (f"; {why}" if why else ""))
        if note not in self.notes:
            self.notes.append(note)
        self._in = [(i.name, _ORT_DTYPES.get(i.type, np.float32)) for i in self._sess.get_inputs()]
        self._out_names = [o.name for o in self._sess.get_outputs()]
        first = self._sess.get_inputs()[0].shape
        self._fixed_batch = first[0] if first and isinstance(first[0], int) else None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        assert self._call is not None, "prepare() first"
        out = self._call(self._feeds(feeds))
        return out if self._as_list else list(out.values())

    def close(self) -> None:
        super().close()
        self._call = None


class KerasSource:
    """Loads the Keras model once (timed) for every runner that needs it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._model: Any = None
        self.load_s: float | None = None

    def model(self) -> Any:
        if self._model is None:
            _quiet_tf()
            import keras  # noqa: F401  (import time is not model load time)

            t0 = time.perf_counter()
            self._model = load_keras(self.path)
            self.load_s = time.perf_counter() - t0
        return self._model


def load_keras(path: str | os.PathLike) -> Any:
    """Load a Keras model through ``seqdeploy.export.load_keras_model`` when it exists."""
    _quiet_tf()
    try:
        export = importlib.import_module("seqdeploy.export")
        loader = getattr(export, "load_keras_model", None)
    except ImportError:
        loader = None
    if loader is not None:
        return loader(path)
    import keras

    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        from seqdeploy.errors import ModelLoadError

        raise ModelLoadError(f"{path}: cannot load the Keras model ({type(exc).__name__}: {exc}); "
                             "expected a .keras file written by `seqdeploy train`") from exc


class KerasRunner:
    """Keras: ``mode="direct"`` times ``np.asarray(model(x, training=False))``, ``"predict"`` times ``model.predict``."""

    family = "keras"
    precision = "fp32"

    def __init__(self, source: KerasSource, mode: str):
        if mode not in ("direct", "predict"):
            raise BenchError(f"Keras runner mode {mode!r} (expected 'direct' or 'predict')")
        self.source = source
        self.mode = mode
        self.name = f"keras:{mode}"
        self.artifact = str(source.path)
        self.artifact_bytes = source.path.stat().st_size if source.path.exists() else None
        self.deployed = False
        self.threads_apply = False
        self.notes: list[str] = ["TensorFlow's thread pools are fixed per process: --threads does not apply"]
        self._batch = 1

    def prepare(self, threads: int) -> None:
        self.source.model()

    def set_batch(self, batch: int) -> str | None:
        self._batch = batch
        return None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        model = self.source.model()
        x = next(iter(feeds.values())) if len(feeds) == 1 else list(feeds.values())
        if self.mode == "predict":
            out = model.predict(x, batch_size=self._batch, verbose=0)
        else:
            out = model(x, training=False)
        if isinstance(out, (list, tuple)):
            return [np.asarray(o) for o in out]
        return [np.asarray(out)]

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class TfliteModel:
    """A converted TFLite flatbuffer and how it was made."""

    content: bytes
    precision: str
    fixed_batch: int | None
    convert_s: float
    notes: tuple[str, ...] = ()


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")


_TFLITE_ATTEMPTS = {
    "fp32": (("dynamic", None), ("batch1", None)),
    "int8": (("dynamic", "int8-only"), ("dynamic", "mixed"), ("batch1", "int8-only"), ("batch1", "mixed")),
}


def _convert_attempt(model: Any, precision: str, batch: str, kernels: str | None, representative: np.ndarray | None) -> bytes:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    inp = model.inputs[0]
    dtype = tf.as_dtype(getattr(inp, "dtype", "float32") or "float32")
    sig = [tf.TensorSpec(((None if batch == "dynamic" else 1),) + tuple(inp.shape[1:]), dtype, name="x")]
    fn = tf.function(lambda t: model(t, training=False), input_signature=sig)
    # freeze: with live variables the converter emits READ_VARIABLE ops that calibration cannot run
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if precision == "int8":
        assert representative is not None
        rows = np.asarray(representative)[:200].astype(dtype.as_numpy_dtype)

        def rep() -> Any:
            for r in rows:
                yield [r[None, ...]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if kernels == "mixed":
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
    return conv.convert()


def _tflite_child(spec_path: str) -> int:
    """Child-process entry: convert in isolation (int8 calibration of LSTM/GRU can segfault)."""
    _quiet_tf()
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    rep = np.load(spec["rep"]) if spec.get("rep") else None
    model = load_keras(spec["keras"])
    skip = set(spec.get("skip", []))
    for precision in spec["precisions"]:
        errors: list[str] = list(spec.get("errors", {}).get(precision, []))
        for batch, kernels in _TFLITE_ATTEMPTS[precision]:
            aid = f"{precision}/{batch}/{kernels or 'float'}"
            if aid in skip:
                continue
            (out / "attempt.txt").write_text(aid)
            t0 = time.perf_counter()
            try:
                content = _convert_attempt(model, precision, batch, kernels, rep)
            except Exception as exc:  # converter errors come in many types; keep the first line
                msg = str(exc).strip().splitlines()
                msg = [ln for ln in msg if "error" in ln.lower()] or msg or [type(exc).__name__]
                errors.append(f"{aid}: {re.sub(r'^.*?error: ', '', msg[0].strip())[:300]}")
                continue
            notes = []
            if batch == "batch1":
                notes.append("fixed batch-1 signature: the converter rejects a dynamic batch axis for this model")
            if kernels == "mixed":
                notes.append("int8 with float fallback kernels (integer-only conversion failed)")
            elif kernels == "int8-only":
                notes.append("full-integer int8 kernels, float32 input/output")
            if errors:
                notes.append("earlier attempts failed: " + " | ".join(errors))
            (out / f"{precision}.tflite").write_bytes(content)
            meta = {"fixed_batch": 1 if batch == "batch1" else None, "convert_s": time.perf_counter() - t0, "notes": notes}
            (out / f"{precision}.json").write_text(json.dumps(meta))
            break
        else:
            (out / f"{precision}.failed.json").write_text(json.dumps(errors))
    (out / "attempt.txt").unlink(missing_ok=True)
    return 0


def convert_tflite(keras_path: str | os.PathLike, precisions: Sequence[str] = ("fp32", "int8"),
                   representative: np.ndarray | None = None, *, max_crashes: int = 4,
                   timeout_s: float = 600.0) -> tuple[dict[str, TfliteModel], dict[str, str]]:
    """Convert a saved Keras model to TFLite in a child process; return (models, errors) by precision.

    Tries a dynamic batch axis first, then a fixed batch-1 signature (the only one the
    converter accepts for LSTM/GRU); int8 (calibrated on ``representative`` rows) tries
    integer-only kernels first, then int8 with float fallback. The child isolates the
    converter's segfaults (int8 calibration of recurrent layers): an attempt that crashes
    is skipped and the child restarted.

    >>> models, errors = convert_tflite("runs/x/model.keras", ("fp32", "int8"), x_train[:200])  # doctest: +SKIP
    """
    import subprocess
    import tempfile

    for p in precisions:
        if p not in _TFLITE_ATTEMPTS:
            raise BenchError(f"TFLite precision {p!r} (expected one of {', '.join(_TFLITE_ATTEMPTS)})")
    if "int8" in precisions and representative is None:
        raise BenchError("int8 TFLite conversion needs representative rows (received none); pass representative=x_train[:200]")
    models: dict[str, TfliteModel] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="seqdeploy-tflite-") as tmp:
        d = Path(tmp)
        rep_path = None
        if representative is not None:
            rep_path = d / "rep.npy"
            np.save(rep_path, np.asarray(representative)[:200])
        skip: list[str] = []
        crash_errors: dict[str, list[str]] = {}
        todo = list(precisions)
        for _ in range(max_crashes + 1):
            spec = {"keras": str(Path(keras_path).resolve()), "out": str(d), "precisions": todo,
                    "rep": str(rep_path) if rep_path else None, "skip": skip, "errors": crash_errors}
            (d / "spec.json").write_text(json.dumps(spec))
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
            try:
                proc = subprocess.run([sys.executable, "-m", "seqdeploy.bench", "--tflite-child", str(d / "spec.json")],
                                      capture_output=True, text=True, timeout=timeout_s, env=env)
                rc, tail = proc.returncode, (proc.stderr or "").strip().splitlines()[-1:] or [""]
            except subprocess.TimeoutExpired:
                rc, tail = -9, [f"timed out after {timeout_s:.0f} s"]
            todo = [p for p in todo if not (d / f"{p}.json").exists() and not (d / f"{p}.failed.json").exists()]
            if rc == 0 or not todo:
                break
            attempt = (d / "attempt.txt").read_text() if (d / "attempt.txt").exists() else None
            if attempt is None:  # crashed before any attempt (import or load): nothing to skip
                for p in todo:
                    errors[p] = f"the converter process failed (exit {rc}): {tail[0][:300]}"
                todo = []
                break
            how = f"crashed (signal {-rc})" if rc < 0 else f"failed (exit {rc}): {tail[0][:200]}"
            crash_errors.setdefault(attempt.split("/")[0], []).append(f"{attempt}: converter {how}")
            skip.append(attempt)
            (d / "attempt.txt").unlink()
        for p in precisions:
            if (d / f"{p}.json").exists():
                meta = json.loads((d / f"{p}.json").read_text())
                models[p] = TfliteModel((d / f"{p}.tflite").read_bytes(), p, meta["fixed_batch"], meta["convert_s"],
                                        tuple(meta["notes"]))
            elif p not in errors:
                errs = json.loads((d / f"{p}.failed.json").read_text()) if (d / f"{p}.failed.json").exists() else crash_errors.get(p, [])
                errors[p] = "TFLite conversion failed: " + (" | ".join(errs) or "no attempt succeeded")
    return models, errors


def _tflite_interpreter(content: bytes, threads: int) -> Any:
    _quiet_tf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the LiteRT package replaces tf.lite.Interpreter when installed
            from ai_edge_litert.interpreter import Interpreter  # type: ignore
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        return Interpreter(model_content=content, num_threads=int(threads))


class TfliteRunner:
    """TFLite (XNNPACK, ``num_threads``) on a model converted from the same Keras model."""

    family = "tflite"

    def __init__(self, model: TfliteModel, build_s: float | None = None):
        self.model = model
        self.precision = model.precision
        self.name = f"tflite:{model.precision}"
        self.artifact = None
        self.artifact_bytes = len(model.content)
        self.deployed = False
        self.threads_apply = True
        self.notes = list(model.notes)
        self.build_s = build_s if build_s is not None else model.convert_s
        self._it: Any = None
        self._in_idx = 0
        self._out_idx: list[int] = []
        self._in_dtype: Any = np.float32
        self._threads = 1

    def prepare(self, threads: int) -> None:
        self._threads = threads
        self._it = _tflite_interpreter(self.model.content, threads)
        self._it.allocate_tensors()
        d = self._it.get_input_details()[0]
        self._in_idx = d["index"]
        self._in_dtype = d["dtype"]
        self._out_idx = [o["index"] for o in self._it.get_output_details()]

    def set_batch(self, batch: int) -> str | None:
        if self.model.fixed_batch is not None:
            return None if batch == self.model.fixed_batch else f"converted with a fixed batch of {self.model.fixed_batch} (see notes)"
        d = self._it.get_input_details()[0]
        shape = list(d["shape"])
        shape[0] = batch
        self._it.resize_tensor_input(self._in_idx, shape, strict=True)
        self._it.allocate_tensors()
        return None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        x = next(iter(feeds.values()))
        if x.dtype != self._in_dtype:
            x = x.astype(self._in_dtype)
        it = self._it
        it.set_tensor(self._in_idx, x)
        it.invoke()
        return [it.get_tensor(i) for i in self._out_idx]

    def close(self) -> None:
        self._it = None


# --------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class RunnerInfo:
    name: str
    family: str
    precision: str
    artifact: str | None
    artifact_bytes: int | None
    deployed: bool
    threads_apply: bool
    build_s: float | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measurement:
    """One runner at one (batch, threads): absolute numbers and ratios (speedup > 1 = faster than the reference)."""

    runner: str
    batch: int
    threads: int
    status: str  # "ok" | "skipped" | "error"
    reason: str | None = None
    creation_s: float | None = None
    first_inference_s: float | None = None
    warmup_calls: int = 0
    latency: LatencyStats | None = None
    throughput_sps: float | None = None
    max_abs_diff: float | None = None  # first-call outputs vs the reference runner's (ort:fp32 when present)
    rss_delta_mb: float | None = None  # RSS growth at creation (first batch) + resize/first calls (approximate, in-process)
    speedup: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchResult:
    """Everything ``seqdeploy bench`` measured; ``to_json()`` is the bench.json document."""

    schema_version: int
    target: str
    target_kind: str  # "run_dir" | "onnx"
    created: str
    data: dict[str, Any]
    settings: dict[str, Any]
    machine: dict[str, Any]
    runners: tuple[RunnerInfo, ...]
    results: tuple[Measurement, ...]
    peak_rss_mb: float | None
    wall_s: float
    warnings: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)

    def get(self, runner: str, batch: int, threads: int) -> Measurement | None:
        for m in self.results:
            if m.runner == runner and m.batch == batch and m.threads == threads:
                return m
        return None

    def deployed_runner(self) -> str | None:
        return next((r.name for r in self.runners if r.deployed), None)

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)


def compute_speedups(results: Sequence[Measurement], runners: Sequence[RunnerInfo]) -> list[Measurement]:
    """Attach speedups vs ONNX fp32, Keras direct and the best TFLite runner per (batch, threads).

    >>> # speedup["keras_direct"] == keras_direct.p50 / runner.p50  (> 1 means faster)
    """
    fam = {r.name: r.family for r in runners}
    out = []
    for m in results:
        peers = [p for p in results if p.batch == m.batch and p.threads == m.threads and p.status == "ok" and p.latency]

        def p50(name: str) -> float | None:
            hit = next((p for p in peers if p.runner == name), None)
            return hit.latency.p50_us if hit else None

        tfl = [p.latency.p50_us for p in peers if fam.get(p.runner) == "tflite"]
        refs = {
            REF_ONNX_FP32: p50("ort:fp32"),
            REF_KERAS_DIRECT: p50("keras:direct"),
            REF_TFLITE_BEST: min(tfl) if tfl else None,
        }
        mine = m.latency.p50_us if (m.status == "ok" and m.latency) else None
        out.append(dataclasses.replace(m, speedup={k: speedup(v, mine) for k, v in refs.items()}))
    return out


# --------------------------------------------------------------------------------------
# argument parsing shared with the CLI


def parse_int_list(text: str | Sequence[int], option: str, *, lo: int = 1, hi: int = MAX_BATCH) -> tuple[int, ...]:
    """Parse ``"1,8,64"`` into ``(1, 8, 64)``; reject zero, negatives and non-integers.

    >>> parse_int_list("1, 8,64", "--batch")
    (1, 8, 64)
    """
    items = [str(t).strip() for t in (text.split(",") if isinstance(text, str) else text)]
    out: list[int] = []
    for t in items:
        try:
            v = int(t)
        except ValueError:
            raise UsageError(f"{option} received {t!r} in {text!r} (expected comma-separated integers "
                             f"from {lo} to {hi}); e.g. {option} 1,8,64") from None
        if not lo <= v <= hi:
            raise UsageError(f"{option} received {v} (expected integers from {lo} to {hi}); e.g. {option} 1,8,64")
        if v not in out:
            out.append(v)
    if not out:
        raise UsageError(f"{option} received an empty list (expected e.g. {option} 1,8,64)")
    return tuple(out)


def parse_vs(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Parse ``--vs``: ``"keras,tflite"``, ``"none"``, or None/"auto" (= every peer available).

    >>> parse_vs("tflite, keras")
    ('keras', 'tflite')
    """
    if text is None:
        return None
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items in (["auto"], []):
        return None
    if items == ["none"]:
        return ()
    bad = [t for t in items if t not in PEERS]
    if bad:
        raise UsageError(f"--vs received unknown runner(s) {', '.join(map(repr, bad))} "
                         f"(expected a comma-separated subset of {', '.join(PEERS)}, or none, or auto); e.g. --vs keras,tflite")
    return tuple(p for p in PEERS if p in items)


# --------------------------------------------------------------------------------------
# targets, data, machine


@dataclass(frozen=True)
class Target:
    kind: str  # "run_dir" | "onnx"
    root: Path
    artifacts: tuple[tuple[str, Path], ...]  # (precision label, path), fp32 first
    deployed: Path | None
    keras_path: Path | None


def resolve_target(target: str | os.PathLike) -> Target:
    """Find the ONNX artifacts (model.onnx + quantize.json candidates), the deployed one and model.keras.

    >>> resolve_target("runs/breast_cancer_mlp").artifacts   # doctest: +SKIP
    (('fp32', PosixPath('runs/breast_cancer_mlp/model.onnx')), ('int8-static', ...))
    """
    p = Path(target)
    if not p.exists():
        raise InputFileNotFound(f"{p}: no such file or directory (expected a run directory or a MODEL.onnx file); "
                                "check the path, or run `seqdeploy export` first")
    if p.is_file():
        if p.suffix.lower() != ".onnx":
            raise BenchError(f"{p}: not an .onnx file (expected a run directory or a MODEL.onnx file)")
        keras_path = p.parent / "model.keras"
        return Target("onnx", p.parent, ((_precision_of(p), p),), p, keras_path if keras_path.exists() else None)
    arts: dict[Path, str] = {}
    if (p / "model.onnx").exists():
        arts[(p / "model.onnx").resolve()] = "fp32"
    chosen: Path | None = None
    qj = p / "quantize.json"
    if qj.exists():
        try:
            q = json.loads(qj.read_text())
            for c in q.get("candidates") or []:
                if not c.get("path"):  # a rejected candidate whose file was not kept
                    continue
                cp = (p / c["path"]).resolve()
                if cp.exists():
                    arts.setdefault(cp, str(c.get("recipe") or _precision_of(cp)))
            picks = [q.get("chosen_path"), q.get("chosen")]
            picks += [f"model.{q['chosen']}.onnx", f"model.{q.get('chosen_recipe')}.onnx"] if q.get("chosen") else []
            for pick in picks:
                if pick and (p / str(pick)).is_file():
                    chosen = (p / str(pick)).resolve()
                    arts.setdefault(chosen, str(q.get("chosen_recipe") or _precision_of(chosen)))
                    break
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BenchError(f"{qj}: unreadable ({type(exc).__name__}: {exc}); expected "
                             '{"chosen": name|null, "candidates": [{"recipe", "path", ...}]}; rerun `seqdeploy quantize`') from exc
    for f in sorted(p.glob("model*.onnx")):
        arts.setdefault(f.resolve(), _precision_of(f))
    if not arts:
        raise BenchError(f"{p}: no model.onnx or model.*.onnx (expected a run directory after export); "
                         f"run `seqdeploy export {p}` first")
    fp32 = (p / "model.onnx").resolve()
    deployed = chosen or (fp32 if fp32 in arts else next(iter(arts)))
    ordered = sorted(arts.items(), key=lambda kv: (kv[0] != fp32, kv[1]))
    keras_path = p / "model.keras"
    return Target("run_dir", p, tuple((lab, path) for path, lab in ordered), deployed,
                  keras_path if keras_path.exists() else None)


def _precision_of(path: Path) -> str:
    parts = path.name.split(".")
    return parts[1] if len(parts) >= 3 else "fp32"


@dataclass(frozen=True)
class BenchData:
    """Model-ready inputs: ``test`` rows to time on, ``train`` rows to calibrate TFLite int8."""

    source: str  # "run_splits" | "random"
    input_name: str
    test: np.ndarray
    train: np.ndarray
    note: str | None = None

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        x = self.test
        if len(x) < batch:
            x = np.concatenate([x] * (batch // len(x) + 1))
        return {self.input_name: np.ascontiguousarray(x[:batch])}


def random_data(name: str, shape: Sequence[Any], dtype: Any, n: int = 256, seed: int = 0) -> BenchData:
    """Random model inputs for an ONNX input signature (symbolic non-batch dims become 1).

    >>> random_data("x", ["batch", 10], np.float32).test.shape
    (256, 10)
    """
    rng = np.random.default_rng(seed)
    tail = [d if isinstance(d, int) and d > 0 else 1 for d in list(shape)[1:]]
    note = "random inputs shaped from the ONNX signature"
    if any(not (isinstance(d, int) and d > 0) for d in list(shape)[1:]):
        note += f" (symbolic dims in {list(shape)} set to 1)"
    if np.issubdtype(np.dtype(dtype), np.integer):
        arr = rng.integers(0, 2, size=(n, *tail)).astype(dtype)
    elif np.dtype(dtype) == np.bool_:
        arr = rng.integers(0, 2, size=(n, *tail)).astype(bool)
    else:
        arr = rng.standard_normal((n, *tail)).astype(dtype)
    return BenchData("random", name, arr, arr, note)


def load_data(target: Target, onnx_input: tuple[str, list[Any], Any], seed: int = 0) -> BenchData:
    """Run-dir splits through ``seqdeploy.data.load_run_splits`` when available, else random inputs."""
    name, shape, dtype = onnx_input
    if target.kind == "run_dir":
        try:
            data_mod = importlib.import_module("seqdeploy.data")
            loader = getattr(data_mod, "load_run_splits")
        except (ImportError, AttributeError):
            loader = None
        if loader is not None:
            try:
                s = loader(target.root)
                return BenchData("run_splits", name, np.asarray(s.x_test), np.asarray(s.x_train))
            except Exception as exc:  # keep benchmarking on random inputs, but say so
                d = random_data(name, shape, dtype, seed=seed)
                return dataclasses.replace(d, note=f"{d.note}; load_run_splits failed: {type(exc).__name__}: {exc}")
    return random_data(name, shape, dtype, seed=seed)


def cpu_info() -> dict[str, Any]:
    """CPU model, core count and the SIMD flags that matter for int8 (from /proc/cpuinfo)."""
    from seqdeploy.doctor import cpu_flag_set, read_cpuinfo

    text = read_cpuinfo() or ""
    flags = cpu_flag_set(text)
    model = platform.processor() or platform.machine()
    for line in text.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    return {"model": model, "logical_cores": os.cpu_count(), "flags": {f: f in flags for f in wanted}}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("seqdeploy", "onnxruntime", "numpy", "onnx", "tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "ai-edge-litert"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def output_diff(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float | None:
    """Max |ref - got| over outputs (same sizes; shapes may differ by squeezed axes), None if incomparable.

    >>> output_diff([np.zeros((2, 1))], [np.full((2,), 0.5)])
    0.5
    """
    if len(ref) != len(got):
        return None
    worst = 0.0
    for a, b in zip(ref, got):
        a, b = np.asarray(a), np.asarray(b)
        if a.size != b.size or a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
            return None
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.reshape(-1).astype(np.float64) - b.reshape(-1).astype(np.float64)))))
    return worst


def _rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return None


def _peak_rss_mb() -> float | None:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2**20
    except Exception:
        return None


def _runtime_session_factory() -> Callable[[Path, int], Any] | None:
    try:
        rt = importlib.import_module("seqdeploy.runtime")
    except ImportError:
        return None
    make = getattr(rt, "make_session", None)
    if make is None:
        return None
    return lambda path, threads: make(path, threads=threads)


# --------------------------------------------------------------------------------------
# the benchmark


def build_runners(target: Target, vs: tuple[str, ...] | None, data: BenchData | None, settings: OrtSettings,
                  progress: Callable[[str], None], warns: list[str]) -> list[Any]:
    """ONNX runners for every artifact, then the requested Keras/TFLite peers."""
    runtime_factory = _runtime_session_factory()
    runners: list[Any] = []
    deployed_runner = None
    for precision, path in target.artifacts:
        deployed = target.deployed is not None and path.resolve() == target.deployed.resolve()
        factory = runtime_factory if deployed else None
        r = OrtRunner(path, precision, settings=settings, session_factory=factory)
        r.notes.append("plain InferenceSession.run(output_names, feeds) per call"
                       + (" on a seqdeploy.runtime.make_session session" if factory is not None else ""))
        runners.append(r)
        if deployed and factory is not None:  # the same artifact through seqdeploy.runtime's per-call path
            deployed_runner = DeployedRunner(path, precision, bundle=target.root)
        elif deployed:  # seqdeploy.runtime not importable: the plain runner stands in
            r.deployed = True
    if deployed_runner is not None:
        runners.insert(1, deployed_runner)
    peers = vs if vs is not None else (PEERS if target.keras_path else ())
    if peers and target.keras_path is None:
        raise BenchError(f"--vs {','.join(peers)} needs the Keras model, but there is no model.keras in {target.root} "
                         "(received a bare ONNX file or an untrained run dir); pass --vs none or a run directory")
    if not peers:
        return runners
    assert target.keras_path is not None
    src = KerasSource(target.keras_path)
    if "keras" in peers:
        runners += [KerasRunner(src, "direct"), KerasRunner(src, "predict")]
    if "tflite" in peers:
        progress("converting the Keras model to TFLite (fp32, int8) in a child process")
        rep = data.train if data is not None else None
        if data is not None and data.source == "random":
            warns.append("TFLite int8 calibrated on random inputs (no run splits available)")
        t0 = time.perf_counter()
        models, errors = convert_tflite(target.keras_path, ("fp32", "int8") if rep is not None else ("fp32",), rep)
        build_s = time.perf_counter() - t0
        for prec in ("fp32", "int8"):
            if prec in models:
                runners.append(TfliteRunner(models[prec], build_s=build_s))
            elif prec in errors:
                warns.append(f"tflite:{prec} unavailable: {errors[prec]}")
    return runners


def run_bench(
    target: str | os.PathLike,
    *,
    batches: Sequence[int] = DEFAULT_BATCHES,
    threads: Sequence[int] = DEFAULT_THREADS,
    vs: Sequence[str] | str | None = None,
    rule: StopRule = StopRule(),
    settings: OrtSettings = OrtSettings(),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    runners: Sequence[Any] | None = None,
    data: BenchData | None = None,
) -> BenchResult:
    """Benchmark a run directory (every ONNX artifact + Keras + TFLite) or a bare MODEL.onnx.

    ``vs=None`` benchmarks every peer available (Keras/TFLite when model.keras exists);
    ``vs=()`` only the ONNX artifacts. ``runners``/``data`` override discovery (tests, zoo).

    >>> res = run_bench("runs/breast_cancer_mlp", batches=(1, 64), rule=StopRule(duration_s=1))  # doctest: +SKIP
    >>> res.get("ort:fp32", 1, 1).latency.p50_us                                               # doctest: +SKIP
    """
    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    batches = parse_int_list(batches if isinstance(batches, str) else list(batches), "--batch")
    threads = parse_int_list(threads if isinstance(threads, str) else list(threads), "--threads", hi=MAX_THREADS)
    vs_t = parse_vs(vs) if (vs is None or isinstance(vs, str)) else parse_vs(list(vs))
    tgt = resolve_target(target)
    warns: list[str] = []
    if data is None:
        probe = OrtRunner(tgt.artifacts[0][1], settings=OrtSettings(graph_optimization="basic"))
        try:
            probe.prepare(1)
        except Exception as exc:
            from seqdeploy.errors import ModelLoadError

            raise ModelLoadError(f"{tgt.artifacts[0][1]}: onnxruntime cannot load it ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); expected a valid ONNX model") from exc
        data = load_data(tgt, probe.input_specs()[0], seed=seed)
        probe.close()
    if data.note:
        warns.append(data.note)
    if runners is None:
        runners = build_runners(tgt, vs_t, data, settings, say, warns)
    infos_build: dict[str, float | None] = {}
    results: list[Measurement] = []
    for th in threads:
        # create every runner for this thread count (timed), then every batch size
        # created[name] = (creation seconds, error, RSS growth in MB not yet charged to a measurement)
        created: dict[str, tuple[float | None, str | None, float | None]] = {}
        for r in runners:
            rss0 = _rss_mb()
            t0 = time.perf_counter()
            try:
                r.prepare(th)
                cs: float | None = time.perf_counter() - t0
                err = None
            except Exception as exc:
                cs, err = None, f"{type(exc).__name__}: {exc}"[:500]
            rss1 = _rss_mb()
            if isinstance(r, KerasRunner):  # the model loads once, shared by every Keras runner and the TFLite converter
                cs = r.source.load_s
                infos_build[r.name] = r.source.load_s
            created[r.name] = (cs, err, (rss1 - rss0) if (rss0 is not None and rss1 is not None) else None)
        for b in batches:
            say(f"threads={th} batch={b}: {len(runners)} runners")
            feeds = data.feeds(b)
            live: list[tuple[Any, Callable[[], Any]]] = []
            pre: dict[str, dict[str, Any]] = {}
            ref_out: list[np.ndarray] | None = None
            for r in runners:
                cs, err, rss_pending = created[r.name]
                if err is not None:
                    results.append(Measurement(r.name, b, th, "error", reason=err))
                    continue
                rss_a = _rss_mb()
                try:
                    why = r.set_batch(b)
                    if why is not None:
                        results.append(Measurement(r.name, b, th, "skipped", reason=why, creation_s=cs))
                        continue
                    t0 = time.perf_counter()
                    outs = r.infer(feeds)
                    first = time.perf_counter() - t0
                    if ref_out is None:
                        ref_out = [np.array(o, copy=True) for o in outs]
                    diff = output_diff(ref_out, outs)
                    fn = (lambda r=r: r.infer(feeds))
                    nwarm = warm_up(fn, rule.warmup_s)
                except Exception as exc:
                    results.append(Measurement(r.name, b, th, "error", reason=f"{type(exc).__name__}: {exc}"[:500], creation_s=cs))
                    continue
                rss_b = _rss_mb()
                delta = (rss_b - rss_a + (rss_pending or 0.0)) if (rss_a is not None and rss_b is not None) else None
                created[r.name] = (cs, None, 0.0)
                pre[r.name] = {"creation_s": cs, "first_inference_s": first, "warmup_calls": nwarm, "rss_delta_mb": delta,
                               "max_abs_diff": diff}
                live.append((r, fn))
            samples = run_interleaved([fn for _, fn in live], rule)
            for (r, _), s in zip(live, samples):
                st = latency_stats(s)
                results.append(Measurement(r.name, b, th, "ok", latency=st,
                                           throughput_sps=b / (st.p50_us * 1e-6), **pre[r.name]))
                if len(s) < rule.min_samples:
                    warns.append(f"{r.name} batch={b} threads={th}: only {len(s)} timed calls (slow runner capped)")
    for r in runners:
        with contextlib.suppress(Exception):
            r.close()
    infos = tuple(
        RunnerInfo(r.name, r.family, r.precision, r.artifact, r.artifact_bytes, r.deployed, r.threads_apply,
                   infos_build.get(r.name, getattr(r, "build_s", None)), tuple(dict.fromkeys(r.notes)))
        for r in runners
    )
    results = compute_speedups(results, infos)
    return BenchResult(
        schema_version=SCHEMA_VERSION,
        target=str(target),
        target_kind=tgt.kind,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        data={"source": data.source, "input_name": data.input_name, "input_shape": [None, *data.test.shape[1:]],
              "dtype": str(data.test.dtype)},
        settings={"batches": list(batches), "threads": list(threads), "vs": list(vs_t) if vs_t is not None else "auto",
                  "rule": to_jsonable(rule), "ort": to_jsonable(settings),
                  "timed_call": "full per-call path: feeds in, numpy outputs out"},
        machine={"cpu": cpu_info(), "platform": platform.platform(), "versions": versions()},
        runners=infos,
        results=tuple(results),
        peak_rss_mb=_peak_rss_mb(),
        wall_s=time.perf_counter() - t_start,
        warnings=tuple(dict.fromkeys(warns)),
    )


# --------------------------------------------------------------------------------------
# rendering


def fmt_us(us: float | None) -> str:
    """Human time from microseconds.

    >>> fmt_us(8.123), fmt_us(1430.0), fmt_us(2.5e6)
    ('8.12 us', '1.43 ms', '2.50 s')
    """
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.3g} us" if us < 100 else f"{us:.0f} us"
    if us < 1e6:
        return f"{us / 1e3:.3g} ms" if us < 1e5 else f"{us / 1e3:.0f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_ratio(x: float | None) -> str:
    """Speedup as text.

    >>> fmt_ratio(25.3), fmt_ratio(0.5), fmt_ratio(None)
    ('25.3x', '0.50x', '-')
    """
    if x is None:
        return "-"
    if x < 0.1:
        return f"{x:.2g}x"
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x" if x < 1000 else f"{x:.0f}x"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return "-"


TABLE_COLUMNS = ("runner", "batch", "threads", "p50", "p90", "p99", "p99.9", "mean ± std", "samples/s",
                 "vs ONNX fp32", "vs Keras direct", "vs TFLite best", "create", "first call", "size", "max abs diff", "n")
TERMINAL_COLUMNS = ("runner", "batch", "threads", "p50", "p99", "samples/s", "vs ONNX fp32", "vs Keras direct",
                    "vs TFLite best", "first call", "max abs diff")


def table_rows(result: BenchResult, columns: Sequence[str] = TABLE_COLUMNS) -> list[list[str]]:
    """Rows (strings) of the side-by-side table (``columns`` from TABLE_COLUMNS) for terminal, markdown, reports."""
    idx = [TABLE_COLUMNS.index(c) for c in columns]
    return [[row[i] for i in idx] if len(row) == len(TABLE_COLUMNS) else row[:3] + [row[3]] + [""] * (len(idx) - 4)
            for row in _all_rows(result)]


def _all_rows(result: BenchResult) -> list[list[str]]:
    info = {r.name: r for r in result.runners}
    rows = []
    order = {r.name: i for i, r in enumerate(result.runners)}
    for m in sorted(result.results, key=lambda m: (m.threads, m.batch, order.get(m.runner, 99))):
        ri = info.get(m.runner)
        name = m.runner + (" *" if ri and ri.deployed else "")
        if m.status != "ok" or m.latency is None:
            rows.append([name, str(m.batch), str(m.threads), f"{m.status}: {m.reason}"] + [""] * (len(TABLE_COLUMNS) - 4))
            continue
        L = m.latency
        rows.append([
            name, str(m.batch), str(m.threads) if (ri is None or ri.threads_apply) else "n/a",
            fmt_us(L.p50_us), fmt_us(L.p90_us), fmt_us(L.p99_us), fmt_us(L.p999_us),
            f"{fmt_us(L.mean_us)} ± {fmt_us(L.std_us)}", f"{m.throughput_sps:,.0f}",
            fmt_ratio(m.speedup.get(REF_ONNX_FP32)), fmt_ratio(m.speedup.get(REF_KERAS_DIRECT)),
            fmt_ratio(m.speedup.get(REF_TFLITE_BEST)),
            fmt_us(m.creation_s * 1e6 if m.creation_s is not None else None),
            fmt_us(m.first_inference_s * 1e6 if m.first_inference_s is not None else None),
            fmt_bytes(ri.artifact_bytes if ri else None),
            "-" if m.max_abs_diff is None else f"{m.max_abs_diff:.1e}", str(L.n),
        ])
    return rows


def render_markdown(result: BenchResult) -> str:
    """bench.md: settings, the side-by-side table, notes and warnings.

    >>> md = render_markdown(res); md.startswith("# Benchmark")   # doctest: +SKIP
    """
    cpu = result.machine.get("cpu", {})
    flags = ", ".join(k for k, v in (cpu.get("flags") or {}).items() if v) or "none"
    v = result.machine.get("versions", {})
    rule = result.settings.get("rule", {})
    budget = f"{rule.get('count')} calls per runner" if rule.get("count") else f"{rule.get('duration_s')} s per (batch, threads), split between runners"
    lines = [
        f"# Benchmark: `{result.target}`",
        "",
        f"- created {result.created}, wall {result.wall_s:.1f} s, schema {result.schema_version}",
        f"- machine: {cpu.get('model')} ({cpu.get('logical_cores')} logical cores; flags: {flags})",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- data: {result.data.get('source')} `{result.data.get('input_name')}` {result.data.get('input_shape')} {result.data.get('dtype')}",
        f"- timing: {budget}; interleaved slices of {rule.get('slice_s')} s; warm-up {rule.get('warmup_s')} s; "
        "timed call = feeds in, numpy outputs out",
        "- speedup columns: reference p50 / runner p50 (> 1 = faster than the reference); `*` = deployed artifact",
        f"- peak RSS (whole process): {result.peak_rss_mb:.0f} MB" if result.peak_rss_mb else "- peak RSS: unknown",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(TABLE_COLUMNS))) + "|",
    ]
    for row in table_rows(result):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    notes = [(r.name, n) for r in result.runners for n in r.notes]
    if notes or result.warnings:
        lines += ["", "## Notes", ""]
        lines += [f"- `{name}`: {n}" for name, n in notes]
        lines += [f"- {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def render_png(result: BenchResult, path: str | os.PathLike) -> Path:
    """bench.png: latency distribution per runner (smallest batch) and throughput vs batch size."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = [m for m in result.results if m.status == "ok" and m.latency is not None]
    threads = sorted({m.threads for m in result.results}) or [1]
    th0 = threads[0]
    b0 = min((m.batch for m in ok), default=1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.5 * max(4, len(result.runners)) + 2.5))
    stats = []
    for r in result.runners:
        m = next((m for m in ok if m.runner == r.name and m.batch == b0 and m.threads == th0), None)
        if m is None:
            continue
        q = m.latency.quantiles_us  # type: ignore[union-attr]
        stats.append({"label": r.name + (" *" if r.deployed else ""), "med": q[50], "q1": q[25], "q3": q[75],
                      "whislo": q[1], "whishi": q[99], "fliers": [m.latency.p999_us, m.latency.max_us],  # type: ignore[union-attr]
                      "mean": m.latency.mean_us})  # type: ignore[union-attr]
    if stats:
        ax1.bxp(stats, vert=False, showmeans=True, showfliers=True)
        ax1.set_xscale("log")
    ax1.set_xlabel("latency per call (us, log): box p25-p75, whiskers p1-p99, dots p99.9/max")
    ax1.set_title(f"latency distribution, batch {b0}, threads {th0}")
    ax1.grid(True, axis="x", which="both", alpha=0.3)
    for r in result.runners:
        for th in threads:
            pts = sorted((m.batch, m.throughput_sps) for m in ok if m.runner == r.name and m.threads == th)
            if pts:
                ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                         linestyle="-" if th == th0 else "--", label=f"{r.name} t{th}")
    ax2.set_xscale("log", base=2)
    batches = sorted({m.batch for m in ok})
    if batches:  # label the measured batch sizes, not powers of two
        from matplotlib.ticker import FixedLocator, NullLocator

        ax2.xaxis.set_major_locator(FixedLocator(batches))
        ax2.xaxis.set_minor_locator(NullLocator())
        ax2.set_xticklabels([str(b) for b in batches])
    ax2.set_yscale("log")
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("throughput (samples/s, p50-based)")
    ax2.set_title("throughput vs batch size")
    ax2.grid(True, which="both", alpha=0.3)
    if ok:
        ax2.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from seqdeploy.atomic import atomic_write_bytes

    return atomic_write_bytes(path, buf.getvalue())


def write_outputs(result: BenchResult, out_dir: str | os.PathLike, *, png: bool = True) -> BenchResult:
    """Write bench.json, bench.md and bench.png atomically into ``out_dir``; return the result with ``files``.

    >>> res = write_outputs(run_bench("runs/x"), "runs/x")   # doctest: +SKIP
    """
    out = Path(out_dir)
    files = {"json": str(out / "bench.json"), "md": str(out / "bench.md")}
    if png:
        files["png"] = str(out / "bench.png")
    result = dataclasses.replace(result, files=files)
    atomic_write_text(files["md"], render_markdown(result))
    if png:
        render_png(result, files["png"])
    atomic_write_json(files["json"], result.to_json())
    return result


def _main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "--tflite-child":
        return _tflite_child(argv[1])
    sys.stderr.write("usage: python -m seqdeploy.bench --tflite-child SPEC.json (internal); use `seqdeploy bench`\n")
    return 2


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read a bench.json (as a dict), checking its ``schema_version``."""
    d = json.loads(Path(path).read_text())
    if d.get("schema_version") != SCHEMA_VERSION:
        raise BenchError(f"{path}: schema_version {d.get('schema_version')!r} (expected {SCHEMA_VERSION}); rerun `seqdeploy bench`")
    return d


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
