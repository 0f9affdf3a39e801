"""Datasets: the built-in ones (no network), CSV/NPZ loaders, splits and preprocessing.

Built-in sources, one per seed use case:

=================  =========================================================  ===========
source             what                                                       task
=================  =========================================================  ===========
``breast_cancer``  Wisconsin diagnostic breast cancer (569 x 30), shipped      binary
                   with scikit-learn
``digits``         8x8 handwritten digits (1797 images), shipped with         multiclass
                   scikit-learn
``sentiment``      SYNTHETIC short reviews from a seeded template generator   binary
                   (no labelled text corpus ships in an installable package;
                   it is named synthetic everywhere it appears)
``sunspots``       yearly mean sunspot numbers 1700-2008 (public domain,      regression
                   SIDC via statsmodels), shipped as seqdeploy/datasets/sunspots.csv
=================  =========================================================  ===========

Every loader returns :class:`Splits`: model-ready train/test arrays, the raw
test inputs, and the preprocessing record (docs/CONTRACTS.md) that the runtime
replays. Statistics are computed on the training split only.

    >>> splits = load_dataset(DataSpec(source="breast_cancer"), seed=42)  # doctest: +SKIP
    >>> splits.x_train.shape  # doctest: +SKIP
    (455, 30)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from seqdeploy.errors import DataError, InputFileNotFound
from seqdeploy.layout import TRAIN_FILE
from seqdeploy.preprocess import from_record
from seqdeploy.spec import DataSpec, Spec

from seqdeploy.data.builtin import breast_cancer, digits, sentiment, sunspots, synth_review  # noqa: F401
from seqdeploy.data.common import Splits, n_classes
from seqdeploy.data.images import images_source
from seqdeploy.data.tables import npz_source, table_source, read_csv_table, read_table  # noqa: F401

#: data source name (``[data] source``) -> loader(DataSpec, seed) -> Splits; add a source here
SOURCES = {
    "breast_cancer": breast_cancer,
    "digits": digits,
    "sentiment": sentiment,
    "sunspots": sunspots,
    "csv": table_source,
    "jsonl": table_source,
    "parquet": table_source,
    "npz": npz_source,
    "images": images_source,
}


def load_dataset(data: DataSpec, *, seed: int = 42, labels: Sequence[str] | None = None) -> Splits:
    """Load a data source and split it into train/test with a fixed seed."""
    return _named(SOURCES[data.source](data, seed), labels)


def _named(splits: Splits, labels: Sequence[str] | None) -> Splits:
    """The splits with the spec's class names (checked against the number of classes)."""
    if labels is not None:
        classes = n_classes(splits)
        if classes is not None and len(labels) != classes:
            raise DataError(f"labels has {len(labels)} names {list(labels)!r} but the data has "
                            f"{classes} classes; give one name per class")
        splits = dataclasses.replace(splits, labels=tuple(labels))
    return splits


def load_spec_splits(spec: Spec) -> Splits:
    """The splits a spec trains on (its data source, its seed, its label names); a sample of a streamed table."""
    return load_spec_data(spec)[0]


def load_spec_data(spec: Spec) -> tuple[Splits, Any]:
    """The splits a spec trains on and, for a streamed table (:mod:`seqdeploy.data.stream`), its ``StreamPlan``:
    the splits then hold a sample of the rows and training reads the plan's batches. ``None`` otherwise."""
    from seqdeploy.data import stream

    if not stream.wants_stream(spec.data):
        return load_dataset(spec.data, seed=spec.fit.seed, labels=spec.labels), None
    plan = stream.fitted(spec.data, seed=spec.fit.seed, validation_split=spec.fit.validation_split)
    return _named(stream.sample_splits(plan), spec.labels), plan


def load_run_splits(run_dir: str | Path) -> Splits:
    """Reproduce a run directory's splits from its ``spec`` copy and ``train.json``.

    Raises :class:`DataError` when the data no longer matches the fingerprint
    recorded at training time.

    >>> load_run_splits("runs/breast_cancer_mlp").task  # doctest: +SKIP
    'binary'
    """
    from seqdeploy.spec import load_spec

    run_dir = Path(run_dir)
    info_path = run_dir / TRAIN_FILE
    if not info_path.exists():
        raise InputFileNotFound(f"{run_dir}: no train.json; expected a run directory written by "
                                "`seqdeploy train` (or pass the data explicitly)")
    info = json.loads(info_path.read_text())
    spec_file = run_dir / info.get("spec_file", "spec.toml")
    spec = load_spec(spec_file, base_dir=info.get("spec_dir") or run_dir)
    if info.get("data", {}).get("stream"):  # trained from a stream: a sample, no second fit pass
        from seqdeploy.data import stream

        plan = stream.plan_from_record(spec.data, info["data"]["stream"], task=info["task"],
                                       preprocessing=info["preprocessing"], fingerprint=info["data"].get("fingerprint"))
        return _named(stream.sample_splits(plan), spec.labels)
    splits = load_spec_splits(spec)
    expected = info.get("data", {}).get("fingerprint")
    if expected and expected != splits.fingerprint:
        raise DataError(f"{run_dir}: the data source {spec.data.source!r} changed since training "
                        f"(fingerprint {splits.fingerprint[:12]} != recorded {expected[:12]}); "
                        "retrain with `seqdeploy train`")
    return splits


# --- preprocessing: one definition, in seqdeploy.preprocess --------------------------------

def apply_preprocessing(record: dict, raw: Any) -> np.ndarray:
    """Turn raw inputs into model inputs according to a preprocessing record (:mod:`seqdeploy.preprocess`)."""
    kind = from_record(record, "preprocessing record")
    return kind.apply(kind.coerce(raw) if kind.kind in ("tokenize", "categorical") else np.asarray(raw))
