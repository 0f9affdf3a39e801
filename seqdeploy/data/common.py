"""What every data source shares: the Splits it returns, the split, checks, targets and fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from seqdeploy.errors import DataError
from seqdeploy.preprocess import Standardize
from seqdeploy.spec import DataSpec

_DATASETS = Path(__file__).resolve().parent.parent / "datasets"


@dataclasses.dataclass(frozen=True)
class Splits:
    """Model-ready splits plus what is needed to reproduce them outside Keras."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    raw_test: np.ndarray
    input_name: str
    task: str
    labels: tuple[str, ...] | None
    target_name: str | None
    preprocessing: dict
    fingerprint: str
    source: str
    synthetic: bool = False
    #: what the loader decided for the user (inferred categorical columns, skipped files), shown by train
    notes: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def input_dtype(self) -> str:
        return str(self.x_train.dtype)


def _encode_target(values: list[Any], task: str, where: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    if task == "regression":
        try:
            y = np.asarray([float(v) for v in values], dtype=np.float32)
        except ValueError:
            raise DataError(f"{where}: regression target has non-numeric values; expected numbers") from None
        _check_finite(y, where + " target")
        return y, None
    classes = sorted({str(v) for v in values}, key=lambda s: (_num_key(s), s))
    if len(classes) < 2:
        raise DataError(f"{where}: the target has a single class {classes}; a classifier needs at least two")
    if task == "binary" and len(classes) != 2:
        raise DataError(f"{where}: task = \"binary\" but the target has {len(classes)} classes "
                        f"{classes[:10]}; use task = \"multiclass\"")
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[str(v)] for v in values], dtype=np.int64), tuple(classes)


def _num_key(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return math.inf


def _tabular(x: np.ndarray, y: np.ndarray, names: list[str], task: str, labels: tuple[str, ...] | None,
             data: DataSpec, seed: int, *, source: str, target_name: str | None = None) -> Splits:
    _check_finite(x, source)
    _check_enough(len(x), source)
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y if task != "regression" else None)
    kind = Standardize.fit(x[tr], names)
    if task == "regression":  # the model learns the standardised target; outputs are de-normalised
        kind = kind.with_target(y[tr])
        y = ((y - kind.target_mean) / kind.target_std).astype(np.float32)
    record = kind.to_record()
    xm = kind.apply(x)
    return Splits(x_train=xm[tr], y_train=y[tr], x_test=xm[te], y_test=y[te], raw_test=x[te].astype(np.float32),
                  input_name="features", task=task, labels=labels, target_name=target_name,
                  preprocessing=record, fingerprint=_fingerprint(source, x, y), source=source)


def _split_indices(n: int, test_fraction: float, seed: int, stratify: np.ndarray | None = None):
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    try:
        tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    except ValueError:  # a class too small to stratify: fall back to a plain shuffled split
        tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed)
    return np.sort(tr) if stratify is None else tr, te


def _check_finite(x: np.ndarray, where: str) -> None:
    if x.size == 0:
        raise DataError(f"{where}: no data (shape {x.shape}); expected at least a few rows")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{where}: non-finite value {x[tuple(bad)]} at row {bad[0]}"
                        + (f", column {bad[1]}" if len(bad) > 1 else "")
                        + "; remove or impute NaN/inf before training")


def _check_enough(n: int, where: str) -> None:
    if n < 10:
        raise DataError(f"{where}: only {n} rows; expected at least 10 to split into train and test")


def n_classes(s: Splits) -> int | None:
    if s.task == "regression":
        return None
    if s.labels is not None:
        return len(s.labels)
    return int(max(s.y_train.max(), s.y_test.max())) + 1


def _fingerprint(source: str, *arrays: np.ndarray) -> str:
    h = hashlib.sha256(source.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(a.tobytes() if a.dtype.kind != "U" else "\x00".join(a.reshape(-1).tolist()).encode())
    return h.hexdigest()


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    try:
        float(str(v))
        return True
    except ValueError:
        return False


def _mostly_text(values: list[Any]) -> bool:
    """A column is categorical when at least half of its non-empty cells are not numbers."""
    filled = [v for v in values if v is not None and str(v).strip() != ""]
    if not filled:
        return False
    return sum(not _is_number(v) for v in filled) * 2 >= len(filled)


TEXT_AS_CATEGORICAL = ("column(s) {} hold text: treated as categorical (one-hot over the training values, unseen "
                       "values go to an out-of-vocabulary bucket); set [data] categorical = [...] to choose")


def spec_features(data: DataSpec, where: Any, header: list[str]) -> tuple[list[str], list[str] | None]:
    """The spec's feature columns checked against a table's ``header`` (named ``where`` in messages), and its
    categorical columns (None: the caller detects them from the values)."""
    features = list(data.features) if data.features else [h for h in header if h != data.target]
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(f"{where}: feature columns {missing} not found; columns are {header}")
    if not features:
        raise DataError(f"{where}: no feature columns besides the target {data.target!r}")
    if data.categorical is None:
        return features, None
    unknown = [c for c in data.categorical if c not in features]
    if unknown:
        raise DataError(f"{where}: categorical columns {unknown} are not feature columns {features}; "
                        "name columns of the table (not the target)")
    return features, list(data.categorical)
