"""A registry whose entries are the modules of one package: each module registers itself on import, and
the package's modules are imported on first use, so adding an entry is adding a file.

    >>> reg = Registry("seqdeploy.quantize.recipes")     # doctest: +SKIP
    >>> reg.add("name", entry); reg.all()                # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, ordered by ``order(entry)`` then name; ``all()`` imports the package's modules once
    (those whose names start with ``_`` are helpers, not entries)."""

    def __init__(self, package: str, order: Callable[[T], Any] = lambda entry: 0):
        self.package = package
        self._order = order
        self.entries: dict[str, T] = {}
        self._loaded = False

    def add(self, name: str, entry: T) -> T:
        self.entries[name] = entry
        return entry

    def all(self) -> dict[str, T]:
        if not self._loaded:
            self._loaded = True
            pkg = importlib.import_module(self.package)
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{mod.name}")
        return dict(sorted(self.entries.items(), key=lambda kv: (self._order(kv[1]), kv[0])))


__all__ = ["Registry"]
