"""Tables with categorical columns: ``categorical`` (standardised numbers + one-hot or index categories).

Two raw inputs in the portable graph: ``features`` float32 (n, F), the numeric
columns in ``feature_names`` order, and ``categories`` string (n, C), the
categorical columns in ``categorical_names`` order. Each categorical column has a
vocabulary from the training split (most frequent first, ties by text); id 0 is
the out-of-vocabulary bucket, so a category never seen in training is not an
error but goes to OOV (:meth:`Categorical.oov_counts` counts them).

Model input: float32 ``[(x - mean) / std, block_1, ..., block_C]`` where a block
is the one-hot of the id (width ``len(vocabulary) + 1``, OOV first) or, with
``encoding = "index"``, the id itself as one float column.

Canonical raw form (what :meth:`Categorical.coerce` returns and ``Splits.raw_test``
holds): a numpy structured array with fields ``features`` (F,) float32 and
``categories`` (C,) strings, one element per row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from seqdeploy.errors import InputValidationError
from seqdeploy.preprocess.base import Kind, register
from seqdeploy.preprocess.checks import check_finite, _err, _finite_float32, _floats, short_list
from seqdeploy.preprocess.tabular import TargetScaling, _target_stats, fit_target

OOV_CATEGORY = 0
ENCODINGS = ("onehot", "index")


@register
@dataclass(frozen=True)
class Categorical(TargetScaling, Kind):
    """Numeric columns standardised, categorical columns one-hot (or index) encoded with an OOV bucket."""

    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    categorical_names: tuple[str, ...]
    vocabularies: tuple[tuple[str, ...], ...]
    encoding: str = "onehot"
    target_mean: float | None = None
    target_std: float | None = None
    kind: ClassVar[str] = "categorical"
    raw_name: ClassVar[str] = "features"
    categories_name: ClassVar[str] = "categories"

    # ------------------------------------------------------------------ fit / record

    @classmethod
    def fit(cls, x_train: np.ndarray, feature_names: Sequence[str], cats_train: np.ndarray,
            categorical_names: Sequence[str], encoding: str = "onehot",
            max_categories: int | None = None) -> "Categorical":
        """Statistics and vocabularies from the training split only."""
        x = np.asarray(x_train, dtype=np.float64).reshape(len(cats_train), -1)
        mean = x.mean(axis=0) if x.shape[1] else np.zeros(0)
        std = x.std(axis=0) if x.shape[1] else np.ones(0)
        std[std == 0] = 1.0
        vocabs = []
        cats = np.asarray(cats_train, dtype=object).reshape(len(cats_train), -1)
        for c in range(cats.shape[1]):
            counts: dict[str, int] = {}
            for v in cats[:, c].tolist():
                counts[str(v)] = counts.get(str(v), 0) + 1
            ranked = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
            vocabs.append(tuple(ranked[:max_categories] if max_categories else ranked))
        return cls(tuple(feature_names), tuple(float(v) for v in mean), tuple(float(v) for v in std),
                   tuple(categorical_names), tuple(vocabs), encoding)

    def with_target(self, y_train: np.ndarray) -> "Categorical":
        mean, std = fit_target(y_train)
        return dataclasses.replace(self, target_mean=mean, target_std=std)

    def to_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "feature_names": list(self.feature_names), "mean": list(self.mean),
                               "std": list(self.std), "categorical_names": list(self.categorical_names),
                               "vocabularies": [list(v) for v in self.vocabularies], "encoding": self.encoding}
        if self.target_mean is not None:
            out.update(target_mean=self.target_mean, target_std=self.target_std)
        return out

    @classmethod
    def from_record(cls, d: Mapping[str, Any], where: str) -> "Categorical":
        names = d.get("feature_names", [])
        cat_names = d.get("categorical_names")
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise _err(where, f"feature_names = {names!r} (expected a list of strings)")
        if not isinstance(cat_names, (list, tuple)) or not cat_names or not all(isinstance(n, str) for n in cat_names):
            raise _err(where, f"categorical_names = {cat_names!r} (expected a non-empty list of strings)")
        if len(set(names) | set(cat_names)) != len(names) + len(cat_names):
            raise _err(where, "column names repeat across feature_names and categorical_names; they must be unique")
        vocabs = d.get("vocabularies")
        if not isinstance(vocabs, (list, tuple)) or len(vocabs) != len(cat_names) or not all(
                isinstance(v, (list, tuple)) and v and all(isinstance(t, str) for t in v) and len(set(v)) == len(v)
                for v in vocabs):
            raise _err(where, f"vocabularies (expected {len(cat_names)} non-empty lists of unique strings, one per "
                              f"categorical column)")
        encoding = d.get("encoding", "onehot")
        if encoding not in ENCODINGS:
            raise _err(where, f"encoding = {encoding!r} (expected one of {', '.join(ENCODINGS)})")
        n = len(names)
        mean = _floats(list(d.get("mean", [])), where, "mean", n)
        std = _floats(list(d.get("std", [])), where, "std", n, positive=True)
        t_mean, t_std = _target_stats(d, where)
        return cls(tuple(names), mean, std, tuple(cat_names), tuple(tuple(v) for v in vocabs), encoding,
                   t_mean, t_std)

    # ------------------------------------------------------------------ shapes

    @property
    def width(self) -> int:
        """Model input width: numeric columns plus one block per categorical column."""
        if self.encoding == "index":
            return len(self.feature_names) + len(self.categorical_names)
        return len(self.feature_names) + sum(len(v) + 1 for v in self.vocabularies)

    @property
    def raw_dtype(self) -> np.dtype:
        return np.dtype([("features", np.float32, (len(self.feature_names),)),
                         ("categories", object, (len(self.categorical_names),))])

    def raw_spec(self, model_shape, model_dtype):
        return "float32", (len(self.feature_names),)

    def raw_inputs(self, model_shape, model_dtype):
        out = [("features", "float32", (len(self.feature_names),))] if self.feature_names else []
        return out + [(self.categories_name, "str", (len(self.categorical_names),))]

    def feeds(self, x: Any, name: str | None = None) -> dict[str, np.ndarray]:
        x = self.coerce(x) if not (isinstance(x, np.ndarray) and x.dtype == self.raw_dtype) else x
        out = {"features": np.ascontiguousarray(x["features"])} if self.feature_names else {}
        out[self.categories_name] = np.ascontiguousarray(x["categories"])
        return out

    @property
    def columns(self) -> tuple[str, ...]:
        """Every raw column, numeric first."""
        return self.feature_names + self.categorical_names

    # ------------------------------------------------------------------ raw input

    def coerce(self, raw: Any, offset: int = 0) -> np.ndarray:
        """Rows (dicts keyed by column name, a DataFrame, a structured array, or ``{"features", "categories"}``)
        -> the canonical structured array."""
        # canonical order: self.feature_names (numeric), then self.categorical_names
        if isinstance(raw, np.ndarray) and raw.dtype.names:
            fields = set(raw.dtype.names)
            if {"categories"} <= fields and fields <= {"features", "categories"}:
                parts = {"categories": raw["categories"], "features": raw["features"] if "features" in fields
                         else np.zeros((len(raw), 0), np.float32)}
                return self._from_parts(parts, offset)
            return self._from_columns({k: raw[k] for k in raw.dtype.names}, len(raw), offset)
        if isinstance(raw, Mapping):
            if "categories" in raw and set(raw) <= {"features", "categories"}:
                return self._from_parts(raw, offset)
            raise InputValidationError("received one dict (expected a list of dicts keyed by column name, a "
                                       "DataFrame, or {'features': (n, F) numbers, 'categories': (n, C) strings}); "
                                       "wrap a single row in a list: [row]")
        if hasattr(raw, "columns") and hasattr(raw, "to_numpy"):  # a DataFrame, without importing pandas
            missing = [c for c in self.columns if c not in set(raw.columns)]
            if missing:
                raise InputValidationError(f"the table is missing column(s) {missing} (expected {list(self.columns)}; "
                                           f"extra columns are ignored)")
            return self._from_columns({c: raw[c].to_numpy() for c in self.columns}, len(raw), offset)
        if isinstance(raw, np.ndarray):
            raw = raw.tolist()
        if not isinstance(raw, (list, tuple)) or not raw:
            raise InputValidationError(f"received {type(raw).__name__}{' (empty)' if not raw else ''} (expected a "
                                       f"non-empty list of rows keyed by column names {short_list(self.columns)})")
        cols: dict[str, list[Any]] = {c: [] for c in self.columns}
        for i, row in enumerate(raw):
            if not isinstance(row, Mapping):
                raise InputValidationError(f"row {i + offset} is {type(row).__name__} (expected a dict keyed by "
                                           f"column names {short_list(self.columns)})")
            for c in self.columns:
                if c not in row:
                    raise InputValidationError(f"row {i + offset} is missing column {c!r} (expected keys "
                                               f"{short_list(self.columns)}; got {list(row)[:10]})")
                cols[c].append(row[c])
        return self._from_columns(cols, len(raw), offset)

    def _from_columns(self, cols: Mapping[str, Any], n: int, offset: int) -> np.ndarray:
        missing = [c for c in self.columns if c not in cols]
        if missing:
            raise InputValidationError(f"missing column(s) {missing} (expected {list(self.columns)})")
        x = np.empty((n, len(self.feature_names)), dtype=np.float64)
        for j, name in enumerate(self.feature_names):
            for i, v in enumerate(list(cols[name])):
                if isinstance(v, (bool, np.bool_)) or v is None or not isinstance(
                        v, (int, float, np.integer, np.floating, str)):
                    raise InputValidationError(f"row {i + offset} column {name!r} = {v!r:.40} (expected a number)")
                try:
                    x[i, j] = float(v)
                except ValueError:
                    raise InputValidationError(f"row {i + offset} column {name!r} = {v!r:.40} is not a number "
                                               f"(expected a number; {name!r} was numeric in training)") from None
        c = np.empty((n, len(self.categorical_names)), dtype=object)
        for j, name in enumerate(self.categorical_names):
            for i, v in enumerate(list(cols[name])):
                c[i, j] = _category(v, i + offset, name)
        return self._pack(x, c, offset)

    def _from_parts(self, parts: Mapping[str, Any], offset: int) -> np.ndarray:
        f = np.asarray(parts.get("features", np.zeros((0, 0))))
        c = np.asarray(parts["categories"], dtype=object)
        n = c.shape[0] if c.ndim else 0
        if f.size == 0 and not self.feature_names:
            f = np.zeros((n, 0), np.float32)
        if f.ndim != 2 or f.shape[1] != len(self.feature_names) or f.dtype.kind not in "iuf":
            raise InputValidationError(f"features has shape {f.shape} dtype {f.dtype} (expected numbers of shape "
                                       f"(n, {len(self.feature_names)}): {short_list(self.feature_names)})")
        if c.ndim != 2 or c.shape[1] != len(self.categorical_names):
            raise InputValidationError(f"categories has shape {c.shape} (expected (n, {len(self.categorical_names)}): "
                                       f"{short_list(self.categorical_names)})")
        if f.shape[0] != c.shape[0]:
            raise InputValidationError(f"features has {f.shape[0]} rows but categories has {c.shape[0]}")
        out = np.empty(c.shape, dtype=object)
        for (i, j), v in np.ndenumerate(c):
            out[i, j] = _category(v, i + offset, self.categorical_names[j])
        return self._pack(f, out, offset)

    def _pack(self, x: np.ndarray, c: np.ndarray, offset: int) -> np.ndarray:
        if c.shape[0] == 0:
            raise InputValidationError("received 0 rows (expected at least one sample)")
        if x.size:
            check_finite(np.asarray(x, dtype=np.float64), offset, "raw input")
        out = np.empty(c.shape[0], dtype=self.raw_dtype)
        out["features"] = _finite_float32(np.asarray(x, dtype=np.float64), offset) if x.size else x
        out["categories"] = c
        return out

    def oov_counts(self, x: Any) -> dict[str, int]:
        """How many values of each categorical column are outside its training vocabulary (they go to OOV)."""
        cats = self._parts(x)[1]
        return {name: int(sum(1 for v in cats[:, j].tolist() if v not in set(vocab)))
                for j, (name, vocab) in enumerate(zip(self.categorical_names, self.vocabularies))}

    # ------------------------------------------------------------------ apply / ONNX

    def _parts(self, raw: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(raw, Mapping):
            f = raw.get("features", np.zeros((len(raw["categories"]), 0), np.float32))
            return np.asarray(f, dtype=np.float32), np.asarray(raw["categories"], dtype=object)
        if isinstance(raw, np.ndarray) and raw.dtype.names:
            return np.asarray(raw["features"], dtype=np.float32), np.asarray(raw["categories"], dtype=object)
        if not self.feature_names:  # the only raw input
            c = np.asarray(raw, dtype=object)
            return np.zeros((c.shape[0], 0), np.float32), c
        raise InputValidationError(f"received {type(raw).__name__} (expected the structured array coerce() returns)")

    def ids(self, cats: np.ndarray) -> np.ndarray:
        """Category ids (n, C) int64: 1.. in vocabulary order, 0 for values outside the vocabulary."""
        out = np.zeros(cats.shape, dtype=np.int64)
        for j, vocab in enumerate(self.vocabularies):
            index = {v: i + 1 for i, v in enumerate(vocab)}
            out[:, j] = [index.get(v, OOV_CATEGORY) for v in cats[:, j].tolist()]
        return out

    def apply(self, raw, model_dtype=np.float32, model_shape=None):
        x, cats = self._parts(raw)
        blocks = []
        if self.feature_names:
            with np.errstate(over="ignore", invalid="ignore"):
                blocks.append((x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32))
        ids = self.ids(cats)
        for j, vocab in enumerate(self.vocabularies):
            if self.encoding == "index":
                blocks.append(ids[:, j:j + 1].astype(np.float32))
            else:
                blocks.append((ids[:, j:j + 1] == np.arange(len(vocab) + 1)).astype(np.float32))
        return np.concatenate(blocks, axis=1).astype(model_dtype, copy=False)

    def to_onnx(self, g, raw, out, model_dtype, model_shape):
        blocks = []
        if self.feature_names:
            blocks.append(g.node("Div", [g.node("Sub", ["features", g.const("mean", np.asarray(self.mean, np.float32))]),
                                         g.const("std", np.asarray(self.std, np.float32))]))
        axis1 = g.const("axis1", np.asarray([1], np.int64))
        for j, vocab in enumerate(self.vocabularies):
            col = g.node("Slice", [self.categories_name, g.const("start", np.asarray([j], np.int64)),
                                   g.const("end", np.asarray([j + 1], np.int64)), axis1])
            ids = g.node("LabelEncoder", [col], domain="ai.onnx.ml", keys_strings=list(vocab),
                         values_int64s=list(range(1, len(vocab) + 1)), default_int64=OOV_CATEGORY)
            if self.encoding == "index":
                blocks.append(g.cast(ids, np.float32))
            else:
                hot = g.node("Equal", [ids, g.const("range", np.arange(len(vocab) + 1, dtype=np.int64))])
                blocks.append(g.cast(hot, np.float32))
        z = g.node("Concat", blocks, axis=1) if len(blocks) > 1 else blocks[0]
        g.cast(z, model_dtype, out)



def _category(v: Any, row: int, column: str) -> str:
    """One categorical cell as text: strings as they are, integers (and integral floats) as their digits."""
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)) or v is None:
        raise InputValidationError(f"row {row} column {column!r} = {v!r} (expected a category: a string or an "
                                   f"integer)")
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (bytes, np.bytes_)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise InputValidationError(f"row {row} column {column!r} holds bytes that are not UTF-8 (expected "
                                       f"text)") from None
    raise InputValidationError(f"row {row} column {column!r} = {v!r:.40} (expected a category: a string or an "
                               f"integer)")
