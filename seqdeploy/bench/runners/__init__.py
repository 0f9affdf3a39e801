"""Benchmark runner families: one module per family, registered here by name.

A family (:class:`Family`) declares whether it can run on this install (``available``),
how its runners are built for a benchmark target (``build``), its label, whether it is a
peer that ``--vs`` selects, and the references the speedup columns divide by. Every
module in this package is imported on first use, so adding a family is adding one file
that calls :func:`register`.

A runner has one interface: ``prepare(threads)`` (create, timed), ``set_batch(batch)``
(allocate; None or a reason to skip), ``infer(feeds) -> list`` (the timed per-call path,
outputs in graph order) and ``infer_named(feeds) -> dict`` (outputs keyed by name, for
comparisons such as verify), ``close()``.

Every runner's answers are checked against Keras on the same inputs before it is timed
(:func:`disagreement`): a runner whose answers differ beyond its precision's tolerance is listed
with the difference as its error, never timed as a win.

    >>> sorted(families())                 # doctest: +SKIP
    ['keras', 'onnxruntime', 'openvino', 'tflite']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from seqdeploy.registry import Registry


class Runner(Protocol):
    """One way of running the model (see the package docstring)."""

    name: str
    family: str
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


@dataclass(frozen=True)
class Reference:
    """A speedup reference: ``key`` in bench.json's ``speedup``, the table column ``title``/``short``,
    the runner whose p50 is the reference (``runner``) or, when None, the fastest runner of the family;
    ``headline`` names it in the pipeline summary (``speedup_vs_<headline>``)."""

    key: str
    title: str
    short: str
    headline: str
    runner: str | None = None


@dataclass
class BuildContext:
    """What a family needs to build its runners: the target, its data, the ONNX settings, and where
    to report progress and warnings."""

    target: Any  # seqdeploy.bench.discover.Target
    data: Any  # seqdeploy.bench.discover.BenchData | None
    settings: Any  # seqdeploy.bench.runners.onnxruntime.OrtSettings
    progress: Callable[[str], None]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    build: Callable[[BuildContext], list[Any]]
    available: Callable[[], str | None] = lambda: None  # None = usable, else why not
    peer: bool = False  # a peer of the ONNX artifacts, selected with --vs
    needs_keras: bool = False  # built from the run's model.keras
    references: tuple[Reference, ...] = ()
    order: int = 50


_REGISTRY: Registry[Family] = Registry(__name__, order=lambda f: f.order)
_FAMILIES = _REGISTRY.entries


#: (relative, absolute) tolerance of a runner's answers vs Keras, by precision: float32 graphs agree to
#: rounding; reduced-precision ones (fp16/bf16, int8 recipes) only to a fraction of the output scale
TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-3, 1e-4), "fp16": (3e-2, 1e-3), "bf16": (3e-2, 1e-3)}
QUANTIZED_TOLERANCE: tuple[float, float] = (0.25, 1e-2)


def tolerance(precision: str) -> tuple[float, float]:
    """``(relative, absolute)`` tolerance for a runner of ``precision`` (any int8 flavour: the quantized one).

    >>> tolerance("fp32"), tolerance("int8-dynamic")
    ((0.001, 0.0001), (0.25, 0.01))
    """
    return TOLERANCES.get(precision, QUANTIZED_TOLERANCE)


def disagreement(reference: Sequence[np.ndarray], got: Sequence[np.ndarray], precision: str = "fp32") -> str | None:
    """Why ``got`` does not answer like ``reference`` (Keras's outputs on the same inputs), or None when it does.

    Each output must have the reference's size, be finite where the reference is, and stay within
    ``rel * scale + abs`` of it, ``scale`` being the reference output's largest magnitude
    (tolerances by precision: :func:`tolerance`).

    >>> disagreement([np.array([0.2, 0.8])], [np.array([0.2, 0.8])]) is None
    True
    >>> disagreement([np.array([0.2, 0.8])], [np.array([np.nan, 0.8])])
    'output 0: 1 non-finite value(s) where Keras has finite ones'
    """
    rel, atol = tolerance(precision)
    if len(reference) != len(got):
        return f"{len(got)} output(s) (Keras has {len(reference)})"
    for k, (a, b) in enumerate(zip(reference, got)):
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        b = np.asarray(b).reshape(-1)
        if a.size != b.size:
            return f"output {k}: {b.size} values (Keras has {a.size})"
        if b.dtype.kind not in "fiub":
            return f"output {k}: dtype {b.dtype} (expected numbers)"
        b = b.astype(np.float64)
        bad = np.isfinite(a) & ~np.isfinite(b)
        if bad.any():
            return f"output {k}: {int(bad.sum())} non-finite value(s) where Keras has finite ones"
        if not a.size:
            continue
        fin = np.isfinite(a)
        scale = float(np.max(np.abs(a[fin]))) if fin.any() else 0.0
        diff = float(np.max(np.abs(a[fin] - b[fin]))) if fin.any() else 0.0
        if diff > rel * scale + atol:
            return (f"output {k}: max |diff| vs Keras {diff:.3g} > tolerance {rel * scale + atol:.3g} "
                    f"({rel:g} x output scale {scale:.3g} + {atol:g}, {precision})")
    return None


def register(family: Family) -> Family:
    """Add a runner family (call it at import time of the family's module)."""
    return _REGISTRY.add(family.name, family)


def families() -> dict[str, Family]:
    """Every registered family, by name, in ``order``."""
    return _REGISTRY.all()


def peers() -> tuple[str, ...]:
    """The families ``--vs`` selects, in order.

    >>> peers()
    ('keras', 'tflite', 'openvino')
    """
    return tuple(name for name, f in families().items() if f.peer)


def references() -> tuple[tuple[str, Reference], ...]:
    """``(family name, reference)`` of every speedup reference, in family order."""
    return tuple((name, ref) for name, f in families().items() for ref in f.references)


__all__ = ["BuildContext", "Family", "QUANTIZED_TOLERANCE", "Reference", "Runner", "TOLERANCES", "disagreement", "families",
           "peers", "references", "register", "tolerance"]
