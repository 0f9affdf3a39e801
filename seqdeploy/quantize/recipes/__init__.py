"""Quantization recipes: one module per recipe, registered here.

A recipe (:class:`Recipe`) declares its name, the ``--mode`` that asks for it alone, its
precision (which fixes its artifact name, ``model.<name>.onnx``), its settings dataclass and
how the generic :class:`~seqdeploy.quantize.settings.QuantizeSettings` fill it
(``settings_for``), why it does not fit a model (``skip_reason(op_counts, cpu_flags)``), how it
builds the quantized model (``build``; it raises :class:`RecipeDoesNotFit` when the graph turns out not to
fit, which lists the recipe as skipped) and which ops the layer diagnosis may blame
(``quantizable_ops``). Every module in this package is imported on first use, so adding a
recipe is adding one file with a ``@register``ed class: its precision becomes known
(:func:`seqdeploy.precision.register_precision`), ``QuantizeSettings`` accepts its ``mode`` and a
full settings object under its ``override_field``, and ``seqdeploy quantize --help`` lists it.

    >>> list(recipes())
    ['int8-static', 'int8-dynamic', 'int8-qgemm', 'fp16']
    >>> get_recipe("int8-dynamic").artifact
    'model.int8-dynamic.onnx'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from seqdeploy.errors import QuantizeError
from seqdeploy.precision import Precision, register_precision
from seqdeploy.registry import Registry


class RecipeDoesNotFit(QuantizeError):
    """Raised by a recipe's ``build`` when the model's graph does not fit it (found only once built):
    the recipe is listed as skipped with this message, not as a failure."""


class Recipe:
    """Base of the recipes (see the package docstring)."""

    name: ClassVar[str]
    mode: ClassVar[str]
    precision: ClassVar[Precision]
    settings_type: ClassVar[type]
    #: the QuantizeSettings field that may hold a full settings object for this recipe
    override_field: ClassVar[str | None] = None
    #: planning order under ``mode="auto"`` (and the order candidates are listed in)
    order: ClassVar[int] = 50
    #: whether ``build`` needs calibration rows (the flow checks them before building)
    needs_calibration: ClassVar[bool] = False

    @property
    def artifact(self) -> str:
        return self.precision.artifact

    def settings_for(self, qs: Any) -> Any:
        """The settings from ``qs`` (a QuantizeSettings): its override object when given, else the defaults."""
        given = qs.override(self.name)
        return given if given is not None else self.default_settings(qs)

    def default_settings(self, qs: Any) -> Any:
        return self.settings_type()

    def skip_reason(self, op_counts: Mapping[str, int], cpu_flags: frozenset[str]) -> str | None:
        """Why ``mode="auto"`` should not try this recipe on a model with ``op_counts`` on this CPU (None = try it)."""
        return None

    def build(self, src: Path, dst: Path, settings: Any, calibration: Mapping[str, np.ndarray] | None,
              seed: int = 0) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def quantizable_ops(self, settings: Any) -> frozenset[str] | None:
        """Op types the diagnosis may leave in float32 (None = any node)."""
        return None


_REGISTRY: Registry[Recipe] = Registry(__name__, order=lambda r: r.order)
_RECIPES = _REGISTRY.entries


def register(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: add a recipe to the registry under its ``name`` (and its precision to the known ones)."""
    register_precision(cls.precision)
    _REGISTRY.add(cls.name, cls())
    return cls


def recipes() -> dict[str, Recipe]:
    """Every registered recipe by name, in planning order."""
    return _REGISTRY.all()


def get_recipe(name: str) -> Recipe:
    known = recipes()
    if name not in known:
        raise QuantizeError(f"unknown recipe {name!r} (expected one of {', '.join(known)})")
    return known[name]


def recipe_for_mode(mode: str) -> Recipe:
    r = next((r for r in recipes().values() if r.mode == mode), None)
    if r is None:
        raise QuantizeError(f"mode = {mode!r} (expected one of auto, {', '.join(x.mode for x in recipes().values())})")
    return r


def recipe_files() -> dict[str, str]:
    """Recipe name -> artifact file name (the naming rule of :mod:`seqdeploy.precision`)."""
    return {name: r.artifact for name, r in recipes().items()}


def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (/proc/cpuinfo; empty where unknown)."""
    from seqdeploy.cpu import cpu_flag_set, read_cpuinfo

    text = read_cpuinfo()
    return frozenset(cpu_flag_set(text)) if text else frozenset()


__all__ = ["Recipe", "RecipeDoesNotFit", "cpu_flags", "get_recipe", "recipe_files", "recipe_for_mode", "recipes", "register"]
