"""onnxruntime CPU session settings: one definition for the runtime, the bundle's recorded choice,
the tuner and the benchmark runners.

:class:`SessionSettings` is what a deployment may choose per model: intra-op threads, whether
idle threads spin, and the graph optimisation level. :func:`build_session_options` turns it into
``onnxruntime.SessionOptions`` with the runtime's fixed parts (one inter-op thread, sequential
execution, errors-only logging).

    >>> SessionSettings().describe()
    '1 thread, spinning off, graph all'
    >>> SessionSettings(threads=2, allow_spinning=True, graph_optimization="extended").describe()
    '2 threads, spinning on, graph extended'

Importing this module needs only the standard library (onnxruntime inside the builder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from seqdeploy.errors import InputValidationError

#: onnxruntime's graph optimisation levels, least to most
GRAPH_LEVELS = ("disable", "basic", "extended", "layout", "all")
DEFAULT_GRAPH_LEVEL = "all"


@dataclass(frozen=True)
class SessionSettings:
    """Per-model onnxruntime CPU settings (defaults: the runtime's measured defaults, see :mod:`seqdeploy.runtime.predictor`)."""

    threads: int = 1
    allow_spinning: bool = False
    graph_optimization: str = DEFAULT_GRAPH_LEVEL

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            raise InputValidationError(f"threads = {self.threads!r} (expected an integer >= 1)")
        if not isinstance(self.allow_spinning, bool):
            raise InputValidationError(f"allow_spinning = {self.allow_spinning!r} (expected true or false)")
        if self.graph_optimization not in GRAPH_LEVELS:
            raise InputValidationError(f"graph_optimization = {self.graph_optimization!r} "
                                       f"(expected one of {', '.join(GRAPH_LEVELS)})")

    def describe(self) -> str:
        return (f"{self.threads} thread{'s' if self.threads != 1 else ''}, "
                f"spinning {'on' if self.allow_spinning else 'off'}, graph {self.graph_optimization}")

    def with_threads(self, threads: int | None) -> "SessionSettings":
        """These settings with ``threads`` intra-op threads (None keeps them)."""
        return self if threads is None or threads == self.threads else dataclasses.replace(self, threads=threads)

    @property
    def cost(self) -> tuple[int, int]:
        """What the setting costs the host application (cores held, a core kept busy): lower is cheaper."""
        return (self.threads, int(self.allow_spinning))

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str = "settings") -> "SessionSettings":
        """From the JSON object :func:`dataclasses.asdict` writes; raises ``InputValidationError`` naming ``where``."""
        if not isinstance(d, Mapping):
            raise InputValidationError(f"{where}: {d!r} (expected an object with threads, allow_spinning, "
                                       f"graph_optimization)")
        unknown = set(d) - {"threads", "allow_spinning", "graph_optimization"}
        if unknown:
            raise InputValidationError(f"{where}: unknown keys {sorted(unknown)} (expected threads, allow_spinning, "
                                       f"graph_optimization)")
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


def build_session_options(settings: SessionSettings = SessionSettings()) -> Any:
    """``onnxruntime.SessionOptions`` for ``settings`` plus the fixed parts (see the module docstring)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = graph_level(ort, settings.graph_optimization)
    spin = "1" if settings.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: no warnings on the host application's stderr
    return so


__all__ = ["DEFAULT_GRAPH_LEVEL", "GRAPH_LEVELS", "SessionSettings", "build_session_options", "graph_level"]
