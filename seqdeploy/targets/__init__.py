"""Output targets: where a checked bundle can be written for a serving system.

One module per target in this package, each registering its writer with :func:`register` on the
package's :class:`~seqdeploy.registry.Registry`, so adding a target is adding a file: ``seqdeploy export``
gets a ``--<name> DIR`` option for it (help: the target's ``option_help``) and prints its ``describe``
lines. Writers take a bundle directory and a destination, check the bundle (manifest + sha256 of every
file) before writing anything, write atomically and return a frozen dataclass.

    >>> from seqdeploy.targets import get_target
    >>> get_target("triton").write("runs/breast_cancer_mlp", "model_repository")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from seqdeploy.errors import UsageError
from seqdeploy.registry import Registry

__all__ = ["Target", "register", "get_target", "available_targets"]


@dataclass(frozen=True)
class Target:
    """One output target: ``write(bundle, destination, **options)`` and how the command line offers it."""

    name: str
    description: str
    write: Callable[..., Any]
    #: help of ``seqdeploy export --<name> DIR``
    option_help: str = ""
    #: the lines the command line prints for a result of ``write`` (None: the result's repr)
    describe: Callable[[Any], list[str]] | None = None

    def describe_result(self, result: Any) -> list[str]:
        return self.describe(result) if self.describe is not None else [repr(result)]


_REGISTRY: Registry[Target] = Registry(__name__)


def register(name: str, description: str, *, option_help: str | None = None,
             describe: Callable[[Any], list[str]] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``write(bundle, destination, **options)`` as the target ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY.add(name, Target(name, description, fn,
                                   option_help or f"Write the bundle into this directory as: {description}.", describe))
        return fn

    return deco


def available_targets() -> dict[str, Target]:
    """Every registered target by name (the package's modules are imported on first use)."""
    return _REGISTRY.all()


def get_target(name: str) -> Target:
    targets = available_targets()
    if name not in targets:
        raise UsageError(f"unknown output target {name!r} (expected one of {sorted(targets)})")
    return targets[name]
