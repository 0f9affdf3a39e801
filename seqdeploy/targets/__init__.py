"""Output targets: where a checked bundle can be written for a serving system.

One module per target in this package; each registers its writer with
:func:`register`, so adding a target is adding a file. Writers take a bundle
directory and a destination, check the bundle (manifest + sha256 of every file)
before writing anything, write atomically and return a frozen dataclass.

    >>> from seqdeploy.targets import get_target
    >>> get_target("triton").write("runs/breast_cancer_mlp", "model_repository")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from seqdeploy.errors import UsageError

__all__ = ["Target", "register", "get_target", "available_targets"]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    write: Callable[..., Any]


_TARGETS: dict[str, Target] = {}


def register(name: str, description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``write(bundle, destination, **options)`` as the target ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _TARGETS[name] = Target(name, description, fn)
        return fn

    return deco


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def available_targets() -> dict[str, Target]:
    _discover()
    return dict(_TARGETS)


def get_target(name: str) -> Target:
    targets = available_targets()
    if name not in targets:
        raise UsageError(f"unknown output target {name!r} (expected one of {sorted(targets)})")
    return targets[name]
