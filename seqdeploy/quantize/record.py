"""Reading ``quantize.json`` back: which candidate files were kept and which one was chosen.

The one reader of the file outside the bundle manifest (:mod:`seqdeploy.runtime.manifest` builds the
bundle's artifact list from it); bench uses it for directories that are not bundles, the pipeline
for its summary and stage keys.

    >>> read_record("runs/digits_mlp").chosen     # doctest: +SKIP
    'model.int8-static.onnx'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from seqdeploy.errors import QuantizeError
from seqdeploy.precision import artifact_name

RECORD_NAME = "quantize.json"


@dataclass(frozen=True)
class QuantizeRecord:
    chosen: str | None  # file name (relative to the run directory) of the chosen artifact, or None
    chosen_recipe: str | None
    kept: tuple[tuple[str, str | None], ...]  # (file name, recipe) of every candidate whose file exists
    summary: str | None


def read_record(run_dir: str | os.PathLike) -> QuantizeRecord | None:
    """The quantize record of ``run_dir`` (None without a quantize.json).

    ``chosen`` is checked against the files present; records that name the chosen candidate by
    recipe instead of file name resolve by the artifact naming rule.
    """
    root = Path(run_dir)
    path = root / RECORD_NAME
    if not path.is_file():
        return None
    try:
        q = json.loads(path.read_text())
        kept: dict[str, str | None] = {}
        for c in q.get("candidates") or []:
            rel = c.get("path")
            if rel and (root / rel).is_file():  # candidates not kept have path null
                rel = Path(rel).name if Path(rel).is_absolute() else str(rel)
                kept.setdefault(rel, c.get("recipe"))
        chosen = None
        recipe = q.get("chosen_recipe")
        picks = [q.get("chosen_path"), q.get("chosen")]
        if q.get("chosen"):
            picks += [artifact_name(str(q["chosen"])), artifact_name(str(recipe)) if recipe else None]
        for pick in picks:
            if pick and (root / str(pick)).is_file():
                chosen = Path(str(pick)).name
                kept.setdefault(chosen, recipe)
                break
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QuantizeError(f"{path}: unreadable ({type(exc).__name__}: {exc}); expected "
                            '{"chosen": name|null, "candidates": [{"recipe", "path", ...}]}; rerun `seqdeploy quantize`') from exc
    summary = q.get("reason") or q.get("summary")
    return QuantizeRecord(chosen, recipe if chosen else None, tuple(kept.items()), summary)


__all__ = ["QuantizeRecord", "RECORD_NAME", "read_record"]
