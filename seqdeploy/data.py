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

import csv
import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from seqdeploy.errors import DataError, InputFileNotFound
from seqdeploy.preprocess import TOKEN_PATTERN, Categorical, Scale, Standardize, Tokenize, Window, from_record
from seqdeploy.spec import DataSpec, Spec

# Shipped inside the package (not under models/) so that a pip-installed seqdeploy has it too.
_DATASETS = Path(__file__).resolve().parent / "datasets"


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


def load_dataset(data: DataSpec, *, seed: int = 42, labels: Sequence[str] | None = None) -> Splits:
    """Load a data source and split it into train/test with a fixed seed."""
    loaders = {
        "breast_cancer": _breast_cancer,
        "digits": _digits,
        "sentiment": _sentiment,
        "sunspots": _sunspots,
        "csv": _table_source,
        "jsonl": _table_source,
        "parquet": _table_source,
        "npz": _npz_source,
        "images": _images_source,
    }
    splits = loaders[data.source](data, seed)
    if labels is not None:
        n_classes = _n_classes(splits)
        if n_classes is not None and len(labels) != n_classes:
            raise DataError(f"labels has {len(labels)} names {list(labels)!r} but the data has "
                            f"{n_classes} classes; give one name per class")
        splits = dataclasses.replace(splits, labels=tuple(labels))
    return splits


def load_spec_splits(spec: Spec) -> Splits:
    """The splits a spec trains on (its data source, its seed, its label names)."""
    return load_dataset(spec.data, seed=spec.fit.seed, labels=spec.labels)


def load_run_splits(run_dir: str | Path) -> Splits:
    """Reproduce a run directory's splits from its ``spec`` copy and ``train.json``.

    Raises :class:`DataError` when the data no longer matches the fingerprint
    recorded at training time.

    >>> load_run_splits("runs/breast_cancer_mlp").task  # doctest: +SKIP
    'binary'
    """
    from seqdeploy.spec import load_spec

    run_dir = Path(run_dir)
    info_path = run_dir / "train.json"
    if not info_path.exists():
        raise InputFileNotFound(f"{run_dir}: no train.json; expected a run directory written by "
                                "`seqdeploy train` (or pass the data explicitly)")
    info = json.loads(info_path.read_text())
    spec_file = run_dir / info.get("spec_file", "spec.toml")
    spec = load_spec(spec_file, base_dir=info.get("spec_dir") or run_dir)
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


# --- built-in sources ----------------------------------------------------------------------

def _breast_cancer(data: DataSpec, seed: int) -> Splits:
    from sklearn.datasets import load_breast_cancer

    ds = load_breast_cancer()
    names = [re.sub(r"\W+", "_", n).strip("_") for n in ds.feature_names]
    return _tabular(ds.data, ds.target.astype(np.int64), names, "binary", tuple(ds.target_names),
                    data, seed, source="breast_cancer")


def _digits(data: DataSpec, seed: int) -> Splits:
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


def _sentiment(data: DataSpec, seed: int) -> Splits:
    """SYNTHETIC reviews: sentiment words, negation ("not good") and contrast ("x but y")."""
    rng = np.random.default_rng(seed + 7919)
    texts, labels = [], []
    for _ in range(data.samples):
        label = int(rng.integers(0, 2))
        texts.append(_synth_review(rng, label))
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


def _synth_review(rng: np.random.Generator, label: int) -> str:
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


def _sunspots(data: DataSpec, seed: int) -> Splits:
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


# --- user files ----------------------------------------------------------------------------

def read_csv_table(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Read a CSV file into (header, rows) with clear errors for empty/ragged files."""
    path = Path(path)
    if not path.exists():
        raise InputFileNotFound(f"data file {str(path)!r} does not exist; check [data] path in the spec")
    header, rows, _ = _read_csv(path)
    return header, rows


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, line number of each row) of a UTF-8 CSV file."""
    import io

    csv.field_size_limit(1 << 24)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at line {line}); save the CSV as UTF-8") from None
    lines: list[int] = []
    try:
        with io.StringIO(text, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise DataError(f"{path}: empty file; expected a header row of column names and data rows")
            header = [h.strip() for h in header]
            rows = []
            for lineno, row in enumerate(reader, start=2):
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}: line {reader.line_num} has {len(row)} fields, the header has "
                                    f"{len(header)}; fix the row or the header")
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column names {dupes}; column names must be unique")
    if not rows:
        raise DataError(f"{path}: header only, no data rows; expected at least a few rows")
    return header, rows, lines


def read_table(path: str | Path, fmt: str) -> tuple[list[str], list[list[Any]], list[str]]:
    """A CSV / JSONL / Parquet table as ``(header, rows, where)``; ``where[i]`` names row i ("line 7", "row 6").

    CSV cells are strings; JSONL and Parquet cells keep their JSON / Arrow types.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileNotFound(f"data file {str(path)!r} does not exist; check [data] path in the spec")
    if fmt == "csv":
        header, rows, lines = _read_csv(path)
        return header, rows, [f"line {n}" for n in lines]
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            raise DataError(f"{path}: reading Parquet needs pyarrow; install it with: pip install "
                            "'seqdeploy[distributed]'") from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for unreadable files
            raise DataError(f"{path}: not a readable Parquet file ({str(exc).strip()[:200]})") from None
        header = list(table.column_names)
        cols = [table.column(c).to_pylist() for c in header]
        rows = [list(r) for r in zip(*cols)]
        if not rows:
            raise DataError(f"{path}: no data rows; expected at least a few rows")
        return header, rows, [f"row {i}" for i in range(len(rows))]
    raise DataError(f"{path}: unknown table format {fmt!r} (expected csv, jsonl or parquet)")


def _read_jsonl(path: Path) -> tuple[list[str], list[list[Any]], list[str]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at line {line}); save the file as UTF-8") from None
    header: list[str] | None = None
    rows, where = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {n} is not valid JSON ({exc.msg}); expected one JSON object per "
                            "line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {n} holds {type(obj).__name__} (expected a JSON object keyed by column "
                            "name)")
        if header is None:
            header = list(obj)
        missing = [h for h in header if h not in obj]
        if missing:
            raise DataError(f"{path}: line {n} lacks key(s) {missing} that the first line has; give every line the "
                            "same keys")
        rows.append([obj[h] for h in header])
        where.append(f"line {n}")
    if header is None:
        raise DataError(f"{path}: empty file; expected one JSON object per line")
    return header, rows, where


def _table_source(data: DataSpec, seed: int) -> Splits:
    """A CSV / JSONL / Parquet table: numeric (+ categorical) feature columns, or one text column."""
    assert data.path is not None and data.target is not None and data.task is not None
    header, rows, where = read_table(data.path, data.source)
    if data.target not in header:
        raise DataError(f"{data.path}: target column {data.target!r} not found; columns are {header}")
    ti = header.index(data.target)
    target = [_cell_text(row[ti]) for row in rows]
    if data.text is not None:
        return _text_table(data, seed, header, rows, where, target)
    features = list(data.features) if data.features else [h for h in header if h != data.target]
    missing = [f for f in features if f not in header]
    if missing:
        raise DataError(f"{data.path}: feature columns {missing} not found; columns are {header}")
    if not features:
        raise DataError(f"{data.path}: no feature columns besides the target {data.target!r}")
    cols = [header.index(f) for f in features]
    notes: list[str] = []
    if data.categorical is not None:
        unknown = [c for c in data.categorical if c not in features]
        if unknown:
            raise DataError(f"{data.path}: categorical columns {unknown} are not feature columns {features}; "
                            "name columns of the table (not the target)")
        categorical = list(data.categorical)
    else:
        categorical = [f for f, ci in zip(features, cols) if _mostly_text([row[ci] for row in rows])]
        if categorical:
            notes.append(f"column(s) {categorical} hold text: treated as categorical (one-hot over the training "
                         f"values, unseen values go to an out-of-vocabulary bucket); set [data] categorical = [...] "
                         f"to choose")
    numeric = [f for f in features if f not in categorical]
    x = np.empty((len(rows), len(numeric)), dtype=np.float64)
    for c, name in enumerate(numeric):
        ci = header.index(name)
        for r, row in enumerate(rows):
            x[r, c] = _number(row[ci], data.path, where[r], name)
    y, labels = _encode_target(target, data.task, str(data.path))
    source = f"{data.source}:{Path(data.path).name}"
    target_name = data.target if data.task == "regression" else None
    if not categorical:
        splits = _tabular(x, y, [re.sub(r"\W+", "_", f) for f in numeric], data.task, labels, data, seed,
                          source=source, target_name=target_name)
        return dataclasses.replace(splits, notes=tuple(notes))
    cats = np.empty((len(rows), len(categorical)), dtype=object)
    for c, name in enumerate(categorical):
        ci = header.index(name)
        for r, row in enumerate(rows):
            cats[r, c] = _category_cell(row[ci], data.path, where[r], name)
    _check_finite(x, source) if x.size else None
    _check_enough(len(rows), source)
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y if data.task != "regression" else None)
    kind = Categorical.fit(x[tr], numeric, cats[tr], categorical, data.encoding)
    y_model = y
    if data.task == "regression":
        kind = kind.with_target(y[tr])
        y_model = ((y - kind.target_mean) / kind.target_std).astype(np.float32)
    width = max((len(v) for c in cats.T for v in c.tolist()), default=1) or 1
    raw = np.empty(len(rows), dtype=[("features", np.float32, (len(numeric),)),
                                     ("categories", f"<U{width}", (len(categorical),))])
    raw["features"] = x.astype(np.float32)
    raw["categories"] = cats.astype(str)
    xm = kind.apply(raw)
    return Splits(x_train=xm[tr], y_train=y_model[tr], x_test=xm[te], y_test=y_model[te], raw_test=raw[te],
                  input_name="features", task=data.task, labels=labels, target_name=target_name,
                  preprocessing=kind.to_record(), fingerprint=_fingerprint(source, x, cats.astype(str), y),
                  source=source, notes=tuple(notes))


def _text_table(data: DataSpec, seed: int, header: list[str], rows: list[list[Any]], where: list[str],
                target: list[str]) -> Splits:
    col = data.text
    if col not in header:
        raise DataError(f"{data.path}: text column {col!r} not found; columns are {header}; set [data] text to the "
                        "column holding the texts")
    if col == data.target:
        raise DataError(f"{data.path}: text = target = {col!r}; the text column and the label column must differ")
    ci = header.index(col)
    texts = []
    for r, row in enumerate(rows):
        v = row[ci]
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise DataError(f"{data.path}: {where[r]}, column {col!r}: {v!r:.40} is not text (expected a string)")
        texts.append(v)
    if not any(t.strip() for t in texts):
        raise DataError(f"{data.path}: text column {col!r} is empty in all {len(texts)} rows; expected texts to "
                        "learn from (check [data] text names the right column)")
    y, labels = _encode_target(target, data.task, str(data.path))
    _check_enough(len(y), str(data.path))
    raw = np.asarray(texts, dtype=object)
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y)
    kind = Tokenize.fit(list(raw[tr]), data.vocabulary_size, data.sequence_length, data.lowercase,
                        data.token_pattern or TOKEN_PATTERN)
    if len(kind.vocabulary) <= 2:
        raise DataError(f"{data.path}: text column {col!r} has no tokens in the training rows (token pattern "
                        f"{kind.token_pattern!r}); check the column or set [data] token_pattern")
    kind = dataclasses.replace(kind, column=col)
    x = kind.apply(raw)
    source = f"{data.source}:{Path(data.path).name}"
    return Splits(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
                  raw_test=np.asarray(raw[te], dtype=str), input_name="tokens", task=data.task, labels=labels,
                  target_name=None, preprocessing=kind.to_record(),
                  fingerprint=_fingerprint(source, np.asarray(texts, dtype=str), y), source=source)


def _cell_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "" if v is None else str(v).strip()


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


def _number(v: Any, path: Any, where: str, name: str) -> float:
    if isinstance(v, bool) or v is None or (isinstance(v, str) and not v.strip()):
        what = "is empty (a missing value)" if v is None or isinstance(v, str) else f"{v!r} is not a number"
        raise DataError(f"{path}: {where}, column {name!r}: {what}; impute or drop such rows before training")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {where}, column {name!r}: {str(v)[:40]!r} is not a number; feature columns must be "
                        "numeric (or list the column in [data] categorical)") from None


def _category_cell(v: Any, path: Any, where: str, name: str) -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or isinstance(v, (list, dict)):
        raise DataError(f"{path}: {where}, column {name!r}: {v!r:.40} is not a category (expected text or an "
                        "integer)")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _images_source(data: DataSpec, seed: int) -> Splits:
    """An image folder, one subfolder per class (Keras ``image_dataset_from_directory``'s layout)."""
    from seqdeploy.preprocess.image_files import BadImage, ImageLoader, class_folders

    root = Path(data.path) if data.path is not None else Path(".")
    if not root.exists():
        raise InputFileNotFound(f"image folder {str(root)!r} does not exist; check [data] path in the spec")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a folder with one subfolder of images per class")
    try:
        import PIL  # noqa: F401
    except ModuleNotFoundError:
        raise DataError("image folders need Pillow; install it with: pip install 'seqdeploy[images]'") from None
    size = data.image_size
    h, w = (size, size) if isinstance(size, int) else size
    loader = ImageLoader(h, w, data.channels, data.resize, data.alpha)
    folders = class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class subfolders; expected {root}/<class name>/<image files> (one subfolder per "
                        "class)")
    images, ids, names, skipped = [], [], [], []
    for name, files in folders:
        got = 0
        for f in files:
            try:
                images.append(loader.load(f))
            except BadImage as exc:
                if not data.skip_bad_files:
                    raise DataError(f"{exc.path}: {exc.reason}; remove or fix the file, or set skip_bad_files = "
                                    "true in [data] to skip such files") from None
                skipped.append(exc.path)
                continue
            ids.append(len(names))
            got += 1
        if not got:
            what = "no images" if not files else f"no readable images ({len(files)} bad file(s) skipped)"
            raise DataError(f"{root / name}: class folder has {what}; put PNG/JPEG/BMP/GIF images in it or remove "
                            "the folder")
        names.append(name)
    if len(names) < 2:
        raise DataError(f"{root}: only one class folder {names[0]!r}; a classifier needs at least two (one subfolder "
                        "per class)")
    if data.task == "binary" and len(names) != 2:
        raise DataError(f"{root}: task = \"binary\" but there are {len(names)} class folders {names[:10]}; use "
                        "task = \"multiclass\"")
    raw = np.stack(images).astype(np.uint8)
    y = np.asarray(ids, dtype=np.int64)
    _check_enough(len(y), str(root))
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y)
    kind = Scale(1.0 / 255.0, 0.0, loader.shape, "uint8", model_shape=(h, w, data.channels), resize=data.resize,
                 alpha=data.alpha)
    x = kind.apply(raw)
    notes = (f"skipped {len(skipped)} bad file(s), e.g. {skipped[0]}",) if skipped else ()
    return Splits(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], raw_test=raw[te], input_name="image",
                  task=data.task or "multiclass", labels=tuple(names), target_name=None,
                  preprocessing=kind.to_record(),
                  fingerprint=_fingerprint(f"images:{kind.to_record()}:{names}", raw, y),
                  source=f"images:{root.name}", notes=notes)


def _npz_source(data: DataSpec, seed: int) -> Splits:
    assert data.path is not None and data.task is not None
    if not Path(data.path).exists():
        raise InputFileNotFound(f"data file {str(data.path)!r} does not exist; check [data] path in the spec")
    try:
        with np.load(data.path, allow_pickle=False) as npz:
            if "x" not in npz or "y" not in npz:
                raise DataError(f"{data.path}: expected arrays named 'x' and 'y', found {list(npz.keys())}")
            x, y_raw = npz["x"], npz["y"]
    except (ValueError, OSError) as exc:
        raise DataError(f"{data.path}: not a readable .npz file ({exc})") from None
    if len(x) != len(y_raw):
        raise DataError(f"{data.path}: x has {len(x)} rows but y has {len(y_raw)}; they must match")
    if x.dtype.kind not in "fiu":
        raise DataError(f"{data.path}: x has dtype {x.dtype}; expected numbers")
    _check_finite(x, str(data.path))
    y, labels = _encode_target(list(y_raw), data.task, str(data.path))
    _check_enough(len(y), str(data.path))
    tr, te = _split_indices(len(y), data.test_fraction, seed, stratify=y if data.task != "regression" else None)
    xm = x.astype(np.int32 if x.dtype.kind in "iu" else np.float32)
    return Splits(x_train=xm[tr], y_train=y[tr], x_test=xm[te], y_test=y[te], raw_test=xm[te],
                  input_name="inputs", task=data.task, labels=labels, target_name=None,
                  preprocessing={"kind": "none"}, fingerprint=_fingerprint("npz", x, y), source="npz")


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


# --- helpers ------------------------------------------------------------------------------

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


def _n_classes(s: Splits) -> int | None:
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
