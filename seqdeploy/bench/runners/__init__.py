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

    >>> sorted(families())                 # doctest: +SKIP
    ['keras', 'onnxruntime', 'tflite']
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


def register(family: Family) -> Family:
    """Add a runner family (call it at import time of the family's module)."""
    return _REGISTRY.add(family.name, family)


def families() -> dict[str, Family]:
    """Every registered family, by name, in ``order``."""
    return _REGISTRY.all()


def peers() -> tuple[str, ...]:
    """The families ``--vs`` selects, in order.

    >>> peers()
    ('keras', 'tflite')
    """
    return tuple(name for name, f in families().items() if f.peer)


def references() -> tuple[tuple[str, Reference], ...]:
    """``(family name, reference)`` of every speedup reference, in family order."""
    return tuple((name, ref) for name, f in families().items() for ref in f.references)


__all__ = ["BuildContext", "Family", "Reference", "Runner", "families", "peers", "references", "register"]
