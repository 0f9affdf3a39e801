"""onnxruntime CPU sessions: the one factory, its one settings type and the one map of onnxruntime
type names, for the runtime, the bundle's recorded choice, the tuner, the benchmark runners,
quantize, verify, export and serve.

:class:`SessionSettings` is what a deployment may choose per model: intra-op threads, whether
idle threads spin, the graph optimisation level (and, for experiments, inter-op threads and the
execution mode). :func:`build_session_options` turns it into ``onnxruntime.SessionOptions`` with
the fixed parts (errors-only logging); :func:`make_session` creates every ``InferenceSession``
(CPU provider, from a path or model bytes, optionally with the optimised graph cached on disk).

    >>> SessionSettings().describe()
    '1 thread, spinning off, graph all'
    >>> SessionSettings(threads=2, allow_spinning=True, graph_optimization="extended").describe()
    '2 threads, spinning on, graph extended'
    >>> ORT_TYPES["tensor(float)"]
    <class 'numpy.float32'>

Importing this module needs numpy and the standard library (onnxruntime inside the functions).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seqdeploy.errors import BundleError, InputValidationError

#: onnxruntime's graph optimisation levels, least to most
GRAPH_LEVELS = ("disable", "basic", "extended", "layout", "all")
DEFAULT_GRAPH_LEVEL = "all"
#: onnxruntime's execution modes (the graphs are chains: sequential is the default)
EXECUTION_MODES = ("sequential", "parallel")
#: errors only: no warnings on the host application's stderr
DEFAULT_LOG_SEVERITY = 3
PROVIDERS = ("CPUExecutionProvider",)

#: onnxruntime tensor type names (``NodeArg.type``) -> numpy scalar types
ORT_TYPES: Mapping[str, type] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_, "tensor(string)": np.object_,
}

_EXTRA_DEFAULTS = {"inter_op_threads": 1, "execution_mode": "sequential"}  # written to records only when changed


@dataclass(frozen=True)
class SessionSettings:
    """Per-model onnxruntime CPU settings (defaults: the runtime's measured defaults, see :mod:`seqdeploy.runtime.predictor`)."""

    threads: int = 1
    allow_spinning: bool = False
    graph_optimization: str = DEFAULT_GRAPH_LEVEL
    inter_op_threads: int = 1
    execution_mode: str = "sequential"

    def __post_init__(self) -> None:
        for name in ("threads", "inter_op_threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputValidationError(f"{name} = {v!r} (expected an integer >= 1)")
        if not isinstance(self.allow_spinning, bool):
            raise InputValidationError(f"allow_spinning = {self.allow_spinning!r} (expected true or false)")
        if self.graph_optimization not in GRAPH_LEVELS:
            raise InputValidationError(f"graph_optimization = {self.graph_optimization!r} "
                                       f"(expected one of {', '.join(GRAPH_LEVELS)})")
        if self.execution_mode not in EXECUTION_MODES:
            raise InputValidationError(f"execution_mode = {self.execution_mode!r} "
                                       f"(expected one of {', '.join(EXECUTION_MODES)})")

    def describe(self) -> str:
        extra = "".join(f", {k.replace('_', '-')} {getattr(self, k)}" for k, v in _EXTRA_DEFAULTS.items()
                        if getattr(self, k) != v)
        return (f"{self.threads} thread{'s' if self.threads != 1 else ''}, "
                f"spinning {'on' if self.allow_spinning else 'off'}, graph {self.graph_optimization}{extra}")

    def with_threads(self, threads: int | None) -> "SessionSettings":
        """These settings with ``threads`` intra-op threads (None keeps them)."""
        return self if threads is None or threads == self.threads else dataclasses.replace(self, threads=threads)

    @property
    def cost(self) -> tuple[int, int]:
        """What the setting costs the host application (cores held, a core kept busy): lower is cheaper."""
        return (self.threads, int(self.allow_spinning))

    def to_record(self) -> dict[str, Any]:
        """The JSON object for manifests and ``tune.json``: threads, allow_spinning, graph_optimization,
        and the inter-op fields only when they differ from the defaults (so older readers keep reading it)."""
        rec: dict[str, Any] = {"threads": self.threads, "allow_spinning": self.allow_spinning,
                               "graph_optimization": self.graph_optimization}
        rec.update({k: getattr(self, k) for k, v in _EXTRA_DEFAULTS.items() if getattr(self, k) != v})
        return rec

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str = "settings") -> "SessionSettings":
        """From the JSON object :meth:`to_record` writes; raises ``InputValidationError`` naming ``where``."""
        known = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, Mapping):
            raise InputValidationError(f"{where}: {d!r} (expected an object with {', '.join(known)})")
        unknown = set(d) - set(known)
        if unknown:
            raise InputValidationError(f"{where}: unknown keys {sorted(unknown)} (expected {', '.join(known)})")
        try:
            return cls(**dict(d))
        except InputValidationError as exc:
            raise InputValidationError(f"{where}: {exc}") from None


def graph_level(ort: Any, name: str) -> Any:
    """onnxruntime's ``GraphOptimizationLevel`` for a :data:`GRAPH_LEVELS` name."""
    levels = ort.GraphOptimizationLevel
    return {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "layout": getattr(levels, "ORT_ENABLE_LAYOUT", levels.ORT_ENABLE_ALL),
        "all": levels.ORT_ENABLE_ALL,
    }[name]


def build_session_options(settings: SessionSettings = SessionSettings(), *, log_severity: int = DEFAULT_LOG_SEVERITY,
                          optimized_model_path: str | os.PathLike | None = None,
                          custom_ops_libraries: Sequence[str | os.PathLike] = ()) -> Any:
    """``onnxruntime.SessionOptions`` for ``settings`` plus the fixed parts (see the module docstring);
    ``optimized_model_path`` makes onnxruntime write the optimised graph there; ``custom_ops_libraries``
    are registered (shared libraries of custom ops, e.g. onnxruntime-extensions')."""
    import onnxruntime as ort

    parallel = settings.execution_mode == "parallel"
    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.threads
    so.inter_op_num_threads = settings.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = graph_level(ort, settings.graph_optimization)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if settings.allow_spinning and parallel else "0")
    so.log_severity_level = log_severity
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    for library in custom_ops_libraries:
        so.register_custom_ops_library(str(library))
    return so


def session_options(threads: int | None = None, settings: SessionSettings | None = None) -> Any:
    """The measured CPU defaults (see :mod:`seqdeploy.runtime.predictor`), or ``settings``, as
    ``SessionOptions``; ``threads`` overrides the thread count of either.

    >>> session_options().intra_op_num_threads
    1
    """
    return build_session_options(_chosen(settings, threads))


def _chosen(settings: SessionSettings | None, threads: int | None) -> SessionSettings:
    if settings is not None and not isinstance(settings, SessionSettings):
        raise InputValidationError(f"settings = {settings!r} (expected a SessionSettings or None; "
                                   f"give a thread count as threads=...)")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputValidationError(f"threads = {threads!r} (expected an integer >= 1, or None for the default 1)")
    return (settings or SessionSettings()).with_threads(threads)


def make_session(model: str | os.PathLike | bytes, settings: SessionSettings | None = None, *,
                 threads: int | None = None, log_severity: int = DEFAULT_LOG_SEVERITY,
                 optimized_model_path: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 custom_ops_libraries: Sequence[str | os.PathLike] = (), wrap_errors: bool = True) -> Any:
    """One CPU ``onnxruntime.InferenceSession`` for a model file or model bytes with ``settings``
    (default: the runtime's measured defaults); ``threads`` overrides their thread count.

    ``optimized_model_path`` writes the optimised graph there; ``custom_ops_libraries`` registers custom-op
    libraries (for graphs with e.g. ``ai.onnx.contrib`` ops). ``cache_dir`` keeps the optimised graph on disk
    keyed by the model's sha256, the onnxruntime version and the level; later sessions load it with optimisations off
    (a stale entry is rebuilt). A model onnxruntime refuses raises :class:`BundleError` with its message,
    or onnxruntime's own exception with ``wrap_errors=False`` (for callers that read that message).

    >>> sess = make_session("runs/breast_cancer_mlp/model.onnx")                    # doctest: +SKIP
    >>> sess = make_session(data, SessionSettings(graph_optimization="basic"), threads=2)  # doctest: +SKIP
    """
    import onnxruntime as ort

    from seqdeploy import compat

    chosen = _chosen(settings, threads)
    src = model if isinstance(model, bytes) else str(model)
    try:
        opts = {"log_severity": log_severity, "custom_ops_libraries": tuple(custom_ops_libraries)}
        if cache_dir is not None and chosen.graph_optimization != "disable":
            return _cached(ort, src, chosen, opts, Path(cache_dir))
        return _open(ort, src, build_session_options(chosen, optimized_model_path=optimized_model_path, **opts))
    except compat.ort_error_types() as exc:
        if not wrap_errors:
            raise
        where = "model bytes" if isinstance(model, bytes) else str(model)
        raise BundleError(f"onnxruntime {ort.__version__} cannot load {where}: {str(exc).strip()[:400]}; "
                          f"check the bundle's min_onnxruntime and upgrade onnxruntime if needed") from None


def _cached(ort: Any, src: str | bytes, settings: SessionSettings, opts: dict[str, Any], cache: Path) -> Any:
    from seqdeploy.atomic import atomic_path, sha256_bytes, sha256_file

    if isinstance(src, bytes):
        stem, digest = "model", sha256_bytes(src)
    else:
        stem, digest = Path(src).stem, sha256_file(src)
    cached = cache / f"{stem}.{digest[:16]}.ort{ort.__version__}.{settings.graph_optimization}.onnx"
    if cached.exists():
        so = build_session_options(dataclasses.replace(settings, graph_optimization="disable"), **opts)
        try:
            return _open(ort, str(cached), so)
        except Exception:  # noqa: BLE001 - a stale or truncated cache entry: rebuild it below
            pass
    with atomic_path(cached) as tmp:
        so = build_session_options(settings, optimized_model_path=tmp, **opts)
        return _open(ort, src, so)


def _open(ort: Any, src: str | bytes, so: Any) -> Any:
    """The one place an ``onnxruntime.InferenceSession`` is created."""
    return ort.InferenceSession(src, sess_options=so, providers=list(PROVIDERS))


__all__ = ["DEFAULT_GRAPH_LEVEL", "DEFAULT_LOG_SEVERITY", "EXECUTION_MODES", "GRAPH_LEVELS",
           "ORT_TYPES", "PROVIDERS", "SessionSettings", "build_session_options", "graph_level", "make_session",
           "session_options"]
