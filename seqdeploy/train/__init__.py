"""Training: a Keras model from a spec, fitted into a run directory.

Engines: ``local`` (this process, ``local.py``) and ``ray`` (data-parallel workers on a Ray cluster,
``ray.py``); :func:`train_with` picks one by name and imports it only then.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from seqdeploy.errors import UsageError
from seqdeploy.train.local import (  # noqa: F401  (the public training API)
    TrainResult, build_model, default_run_dir, make_layer, target_unit_metrics, train, train_spec,
)

#: engine name -> the function that trains a spec file with it ("module:function", imported on use)
ENGINES: dict[str, str] = {
    "local": "seqdeploy.train.local:train",
    "ray": "seqdeploy.train.ray:train_ray",
}


def train_with(engine: str, spec_path: str | Path, **options: Any) -> TrainResult:
    """Train ``spec_path`` with the named engine; ``options`` are that engine's keyword arguments."""
    target = ENGINES.get(engine)
    if target is None:
        raise UsageError(f"training engine {engine!r} is not known; expected one of {', '.join(ENGINES)}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(spec_path, **options)
