"""One column per model input, by input name: how files feed models trained elsewhere.

A bundle of a model trained outside seqdeploy (preprocessing ``none``) whose graph
takes raw strings (its own TextVectorization / StringLookup) or several named
inputs (a dict-input model such as a FeatureSpace) reads each input from the
column (CSV, Parquet) or key (JSONL) of the same name: strings as text, numbers
as numbers. A single numeric input keeps the older layouts (values in order, or
an ``input`` list). Runtime only (numpy); the Arrow side lives in
:mod:`seqdeploy.scoring.tables`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seqdeploy.runtime.manifest import Manifest, NoPreprocessing


@dataclass(frozen=True)
class InputColumn:
    """One raw model input read from the column of the same name.

    ``text``: the input takes strings (cells are used as they are, whitespace
    included); else numbers. ``shape``: the per-row shape of the input (``()`` or
    ``(1,)`` for one value per row; larger fixed shapes take a list per cell).
    """

    name: str
    text: bool
    shape: tuple[Any, ...]

    @property
    def scalar(self) -> bool:
        """One value per row (a plain cell), rather than a list."""
        return all(isinstance(d, int) for d in self.shape) and math.prod(self.shape) == 1


def input_columns(manifest: Manifest) -> tuple[InputColumn, ...] | None:
    """The inputs read by name for this bundle, or None when its files use the older layouts.

    By name: bundles without preprocessing whose graph has a string input or more than one input.
    """
    if not isinstance(manifest.preprocessing, NoPreprocessing):
        return None
    tensors = manifest.portable.inputs if manifest.portable is not None else manifest.inputs
    cols = tuple(InputColumn(t.name, t.dtype in ("str", "object", "string"), tuple(t.shape[1:])) for t in tensors)
    if len(cols) > 1 or any(c.text for c in cols):
        return cols
    return None


def missing_columns(cols: Sequence[InputColumn], present: Sequence[str]) -> list[str]:
    """Names of the inputs with no column among ``present``."""
    have = set(present)
    return [c.name for c in cols if c.name not in have]


def describe(cols: Sequence[InputColumn]) -> str:
    """``'text' (text), 'age' (number)``: the columns expected, for messages."""
    return ", ".join(f"{c.name!r} ({'text' if c.text else 'number'}"
                     f"{'' if c.scalar else ' list of ' + 'x'.join(map(str, c.shape))})" for c in cols)


def parse_cell(col: InputColumn, cell: Any) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(placeholder, reason)`` for one cell of one row.

    Text inputs take strings as they are (empty and whitespace-only strings are
    valid text); numeric inputs take numbers, or text holding a number (CSV).
    """
    if col.text:
        if isinstance(cell, str):
            return cell, None
        if cell is None:
            return "", f"column {col.name!r} is empty (null; expected a string)"
        return "", f"column {col.name!r} holds {type(cell).__name__} {cell!r:.40} (expected a string)"
    if not col.scalar:
        if isinstance(cell, (list, tuple)):
            return list(cell), None
        return None, f"column {col.name!r} holds {type(cell).__name__} (expected a list of numbers)"
    if isinstance(cell, bool) or not isinstance(cell, (int, float, str)):
        what = "is empty (null; a missing value)" if cell is None else f"holds {type(cell).__name__}"
        return 0.0, f"column {col.name!r} {what} (expected a number)"
    if isinstance(cell, str):
        text = cell.strip()
        try:
            cell = float(text)
        except ValueError:
            what = "is empty (a missing value)" if not text else f"= {text[:40]!r} is not a number"
            return 0.0, f"column {col.name!r} {what}"
    if not math.isfinite(float(cell)):
        return 0.0, f"column {col.name!r} = {cell} (expected a finite number)"
    return cell, None


def assemble(cols: Sequence[InputColumn], values: Mapping[str, list[Any]]) -> dict[str, np.ndarray]:
    """The model's input dict from each input's parsed cells (strings as object arrays, numbers as float64)."""
    out: dict[str, np.ndarray] = {}
    for c in cols:
        cells = values[c.name]
        if c.text:
            x = np.empty(len(cells), dtype=object)
            x[:] = cells
        else:
            x = np.asarray(cells, dtype=np.float64)
        if c.scalar and c.shape:
            x = x.reshape((len(cells), *c.shape))
        out[c.name] = x
    return out


def take_rows(raw: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``idx`` of every input of an input dict."""
    return {k: v[idx] for k, v in raw.items()}


def rows_in(raw: Mapping[str, Any]) -> int:
    """Number of rows in an input dict (0 when empty)."""
    return len(next(iter(raw.values()))) if raw else 0
