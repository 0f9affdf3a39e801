"""The built-in sources (no network): breast_cancer, digits, sentiment (synthetic), sunspots."""

from __future__ import annotations

import csv
import re

import numpy as np

from seqdeploy.errors import DataError
from seqdeploy.preprocess import Scale, Tokenize, Window
from seqdeploy.spec import DataSpec


from seqdeploy.data.common import (
    _DATASETS, Splits, _fingerprint, _split_indices, _tabular,
)


def breast_cancer(data: DataSpec, seed: int) -> Splits:
    from sklearn.datasets import load_breast_cancer

    ds = load_breast_cancer()
    names = [re.sub(r"\W+", "_", n).strip("_") for n in ds.feature_names]
    return _tabular(ds.data, ds.target.astype(np.int64), names, "binary", tuple(ds.target_names),
                    data, seed, source="breast_cancer")


def digits(data: DataSpec, seed: int) -> Splits:
    from sklearn.datasets import load_digits

    ds = load_digits()
    raw = ds.images.astype(np.float32)  # (n, 8, 8), values 0..16
    size, ch = data.image_size, data.channels
    if size != 8:  # nearest-neighbour upsampling, for benchmark models with realistic input sizes
        idx = np.arange(size) * 8 // size
        raw = raw[:, idx][:, :, idx]
    raw_shape = [size, size]
    if ch == 3:
        raw = np.repeat(raw[..., None], 3, axis=-1)
        raw_shape = [size, size, 3]
    y = ds.target.astype(np.int64)
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y)
    kind = Scale(1.0 / 16.0, 0.0, tuple(raw_shape), model_shape=(size, size, ch))
    record = kind.to_record()
    x = kind.apply(raw)
    return Splits(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], raw_test=raw[te],
                  input_name="image", task="multiclass", labels=tuple(str(i) for i in range(10)),
                  target_name=None, preprocessing=record, fingerprint=_fingerprint(f"digits:{size}x{ch}", ds.images, y),
                  source="digits")


_POS = ["good", "great", "excellent", "wonderful", "delightful", "superb", "enjoyable", "brilliant",
        "charming", "moving", "fun", "beautiful", "solid", "clever", "fantastic", "pleasant"]
_NEG = ["bad", "terrible", "awful", "boring", "dull", "poor", "disappointing", "horrible", "weak",
        "messy", "tedious", "bland", "clumsy", "annoying", "forgettable", "lousy"]
_NOUNS = ["movie", "film", "plot", "acting", "story", "soundtrack", "ending", "cast", "script",
          "direction", "pacing", "dialogue", "cinematography", "characters", "sequel", "premise"]
_FILLER = ["honestly", "overall", "really", "i", "think", "the", "this", "that", "it", "was", "is",
           "quite", "truly", "somewhat", "and", "in", "my", "opinion", "to", "be", "fair"]
_INTENS = ["very", "really", "extremely", "rather", "so", "pretty"]


def sentiment(data: DataSpec, seed: int) -> Splits:
    """SYNTHETIC reviews: sentiment words, negation ("not good") and contrast ("x but y")."""
    rng = np.random.default_rng(seed + 7919)
    texts, labels = [], []
    for _ in range(data.samples):
        label = int(rng.integers(0, 2))
        texts.append(synth_review(rng, label))
        labels.append(label)
    y = np.asarray(labels, dtype=np.int64)
    raw = np.asarray(texts, dtype=object)
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y)
    kind = Tokenize.fit(list(raw[tr]), data.vocabulary_size, data.sequence_length)
    record = kind.to_record()
    x = kind.apply(raw)
    return Splits(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
                  raw_test=np.asarray(raw[te], dtype=str), input_name="tokens", task="binary",
                  labels=("negative", "positive"), target_name=None, preprocessing=record,
                  fingerprint=_fingerprint("sentiment", np.asarray(raw, dtype=str), y),
                  source="sentiment", synthetic=True)


def synth_review(rng: np.random.Generator, label: int) -> str:
    def pick(words: list[str]) -> str:
        return words[int(rng.integers(0, len(words)))]

    def clause(positive: bool) -> list[str]:
        negate = rng.random() < 0.3
        word_pos = positive != negate  # "not bad" is positive
        adj = pick(_POS if word_pos else _NEG)
        words = ["the", pick(_NOUNS), "was"]
        if negate:
            words.append("not")
        if rng.random() < 0.4:
            words.append(pick(_INTENS))
        return words + [adj]

    words: list[str] = [pick(_FILLER) for _ in range(int(rng.integers(0, 3)))]
    if rng.random() < 0.3:  # contrast: the clause after "but" decides
        words += clause(not bool(label)) + ["but"] + clause(bool(label))
    else:
        words += clause(bool(label))
    words += [pick(_FILLER) for _ in range(int(rng.integers(0, 3)))]
    return " ".join(words)


def sunspots(data: DataSpec, seed: int) -> Splits:
    path = _DATASETS / "sunspots.csv"
    if not path.exists():
        raise DataError(f"built-in sunspots series not found at {path}; reinstall seqdeploy from the repository")
    years, values = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            years.append(int(float(row["YEAR"])))
            values.append(float(row["SUNACTIVITY"]))
    series = np.asarray(values, dtype=np.float64)
    return _windows(series, data, source="sunspots", target_name="sunspots")


def _windows(series: np.ndarray, data: DataSpec, *, source: str, target_name: str) -> Splits:
    w = data.window
    if len(series) < w + 10:
        raise DataError(f"{source}: series of {len(series)} values is too short for window = {w}; "
                        "use a smaller [data] window")
    raw = np.stack([series[i:i + w] for i in range(len(series) - w)])
    target = series[w:]
    n_test = max(1, int(round(len(raw) * data.test_fraction)))
    n_train = len(raw) - n_test  # chronological: the test split is the most recent stretch
    kind = Window.fit(series[: n_train + w], w)
    record = kind.to_record()
    x = kind.apply(raw)
    y = ((target - kind.mean) / kind.std).astype(np.float32)
    return Splits(x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:],
                  raw_test=raw[n_train:].astype(np.float32), input_name="window", task="regression",
                  labels=None, target_name=target_name, preprocessing=record,
                  fingerprint=_fingerprint(source, series), source=source)
