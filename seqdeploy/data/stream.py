"""Training tables that do not fit in memory: Parquet / CSV / JSONL files, a directory or a glob, streamed.

Two passes over Arrow record batches, memory independent of the table's size:

1. :func:`fit_stream` reads every file once and fits the preprocessing on the training rows: per-feature
   mean and std merged batch by batch (Chan et al.'s parallel update, the same numbers as ``np.std`` on the
   whole column to float tolerance), category vocabularies from counts, the class labels, the regression
   target's mean and std. Bad files (unreadable, a column missing, text in a numeric column) stop the pass
   with a :class:`~seqdeploy.errors.BadDataFile` naming the file and row, or are left out with
   ``skip_bad_files``.
2. :func:`batches` yields model-ready ``(x, y)`` batches of one part (``train`` / ``val`` / ``test``) of any
   subset of the files, shuffled through a buffer of ``shuffle_rows`` rows; :func:`dataset` wraps it in a
   ``tf.data.Dataset``.

Rows go to test / validation / train by a hash of their content and the seed (:func:`row_hash`), so the
split is the same in every run and whatever the order of the files; equal rows share a part.

When: :func:`wants_stream` — a directory or glob always streams; a single file streams from
:data:`STREAM_MIN_BYTES` on when pyarrow is installed (smaller files load in memory as before: measured faster
below about 150k rows of 24 floats, ~21 MB of Parquet; see benchmarks/STREAM_TRAIN.md). Text-column
tables always load in memory. Needs pyarrow (``pip install 'seqdeploy[distributed]'``).

    >>> plan = fit_stream(spec.data, seed=42, validation_split=0.2)  # doctest: +SKIP
    >>> for x, y in batches(plan, "train", 256, files=plan.files[:4]): ...  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqdeploy.data.common import TEXT_AS_CATEGORICAL, Splits, _mostly_text, _num_key, spec_features
from seqdeploy.errors import BadDataFile, DataError, InputFileNotFound
from seqdeploy.data.stream_read import Rows, decode, file_batches, require_pyarrow, row_hash, split_of  # noqa: F401
from seqdeploy.io.inputs import InputFile, resolve_inputs
from seqdeploy.spec import DataSpec

#: a single table file at least this large streams (measured: benchmarks/STREAM_TRAIN.md)
STREAM_MIN_BYTES = 32 << 20
#: rows of each part kept by :func:`sample_splits` (export, verify, quantize and bench read these)
SAMPLE_ROWS = 2048
PARTS = ("train", "val", "test")
#: rows in the shuffle buffer of training batches (about 100 MB at 100 float32 features)
SHUFFLE_ROWS = 262_144


@dataclasses.dataclass(frozen=True)
class StreamPlan:
    """What the fit pass learned: the files used, the columns, the preprocessing record, the row counts."""

    files: tuple[InputFile, ...]
    skipped: tuple[str, ...]  # "path: reason" of files left out
    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    task: str
    labels: tuple[str, ...] | None
    preprocessing: dict
    counts: dict[str, int]  # rows per part
    fingerprint: str
    source: str
    seed: int
    test_fraction: float
    val_fraction: float
    notes: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, self.target]

    @property
    def width(self) -> int:
        pre = self.preprocessing
        return len(self.numeric) + sum(len(v) + 1 if pre.get("encoding", "onehot") == "onehot" else 1
                                       for v in pre.get("vocabularies", ()))


def wants_stream(data: DataSpec) -> bool:
    """True when ``data`` is read by this module rather than loaded into memory (see the module docstring)."""
    if data.source not in ("csv", "jsonl", "parquet") or data.path is None or data.text is not None:
        return False
    p = Path(data.path)
    if p.is_dir() or (not p.exists() and glob.has_magic(str(p))):
        return True
    if not (p.is_file() and p.stat().st_size >= STREAM_MIN_BYTES):
        return False
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None  # without it a single file still loads in memory


def table_files(data: DataSpec) -> tuple[InputFile, ...]:
    """The files ``[data] path`` names (a file, a directory searched recursively, or a glob)."""
    try:
        return resolve_inputs(data.path)  # type: ignore[arg-type]
    except InputFileNotFound as exc:
        raise InputFileNotFound(f"[data] path: {exc}") from None


# --------------------------------------------------------------------------- pass 1: fit


class _Moments:
    """Count, mean and M2 of columns, merged batch by batch (Chan, Golub and LeVeque)."""

    def __init__(self, k: int):
        self.n, self.mean, self.m2 = 0, np.zeros(k), np.zeros(k)

    def add(self, x: np.ndarray) -> None:
        if not len(x):
            return
        nb, mb = len(x), x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        self.merge(nb, mb, m2b)

    def merge(self, nb: int, mb: np.ndarray, m2b: np.ndarray) -> None:
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta ** 2 * (self.n * nb / n)
        self.n = n

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.n) if self.n else np.ones_like(self.mean)


class _FileStats:
    def __init__(self, n_numeric: int, n_cat: int):
        self.x = _Moments(n_numeric)
        self.y = _Moments(1)
        self.classes: set[str] = set()
        self.cat_counts: list[dict[str, int]] = [{} for _ in range(n_cat)]
        self.counts = dict.fromkeys(PARTS, 0)

    def merge(self, other: "_FileStats") -> None:
        self.x.merge(other.x.n, other.x.mean, other.x.m2) if other.x.n else None
        self.y.merge(other.y.n, other.y.mean, other.y.m2) if other.y.n else None
        self.classes |= other.classes
        for mine, theirs in zip(self.cat_counts, other.cat_counts):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for k in PARTS:
            self.counts[k] += other.counts[k]


def _columns(data: DataSpec, f: InputFile) -> tuple[list[str], list[str], list[str]]:
    """(numeric, categorical, notes) from the spec and the first file's first batch."""
    from seqdeploy.io.arrow import file_columns

    header = file_columns(f)
    if data.target not in header:
        raise DataError(f"{f.path}: target column {data.target!r} not found; columns are {header}")
    features, categorical = spec_features(data, f.path, header)
    notes: list[str] = []
    if categorical is None:
        table, _ = next(iter(file_batches(f, features)))
        categorical = [c for c in features if _mostly_text(table.column(c).to_pylist())]
        if categorical:
            notes.append(TEXT_AS_CATEGORICAL.format(categorical))
    return [c for c in features if c not in categorical], categorical, notes


def fit_stream(data: DataSpec, *, seed: int = 42, validation_split: float = 0.0,
               files: Sequence[InputFile] | None = None) -> StreamPlan:
    """One streaming pass over ``data``'s files: the preprocessing record, labels and row counts.

    ``validation_split`` is the share of the non-test rows held out for validation (Keras's
    ``validation_split``). Bad files raise :class:`BadDataFile` unless ``data.skip_bad_files``.
    """
    from seqdeploy.preprocess import Categorical, Standardize

    require_pyarrow()
    if data.target is None or data.task is None:
        raise DataError(f"{data.path}: [data] target and task are needed to train on a table")
    if data.text is not None:
        raise DataError(f"{data.path}: a text column table loads in memory; give one file (a directory or glob "
                        f"streams numeric and categorical features only)")
    files = tuple(files) if files is not None else table_files(data)
    numeric, categorical, notes = _columns(data, files[0])
    total = _FileStats(len(numeric), len(categorical))
    used, skipped = [], []
    for f in files:
        stats = _FileStats(len(numeric), len(categorical))
        try:
            for table, row0 in file_batches(f, [*numeric, *categorical, data.target]):
                r = decode(f, table, row0, numeric, categorical, data.target, data.task, seed,
                            data.test_fraction, validation_split)
                fit = r.part != 2
                stats.x.add(r.x[fit])
                if data.task == "regression":
                    stats.y.add(r.target[fit].reshape(-1, 1))
                else:
                    stats.classes.update(set(r.target.tolist()))
                for counts, col in zip(stats.cat_counts, r.cats):
                    for v, keep in zip(col, fit.tolist()):
                        if keep:
                            counts[v] = counts.get(v, 0) + 1
                for k, name in enumerate(PARTS):
                    stats.counts[name] += int((r.part == k).sum())
        except DataError as exc:
            if not data.skip_bad_files:
                if isinstance(exc, BadDataFile):
                    raise
                raise BadDataFile(str(exc), f.path) from None
            skipped.append(f"{f.path}: {exc}")
            continue
        total.merge(stats)
        used.append(f)
    if not used:
        raise DataError(f"{data.path}: every file was left out as unreadable ({len(skipped)} files; first: "
                        f"{skipped[0]}); fix the files")
    n = sum(total.counts.values())
    if n < 10:
        raise DataError(f"{data.path}: only {n} rows; expected at least 10 to split into train and test")
    if total.counts["train"] == 0 or total.counts["test"] == 0:
        raise DataError(f"{data.path}: {n} rows give no {'train' if not total.counts['train'] else 'test'} rows "
                        f"with test_fraction = {data.test_fraction}; use more rows or another test_fraction")
    labels = None
    if data.task != "regression":
        labels = tuple(sorted(total.classes, key=lambda s: (_num_key(s), s)))
        if len(labels) < 2:
            raise DataError(f"{data.path}: the target has a single class {list(labels)}; a classifier needs at least "
                            "two")
        if data.task == "binary" and len(labels) != 2:
            raise DataError(f"{data.path}: task = \"binary\" but the target has {len(labels)} classes "
                            f"{list(labels)[:10]}; use task = \"multiclass\"")
    std = total.x.std()
    std[std == 0] = 1.0
    mean = tuple(float(v) for v in total.x.mean)
    if categorical:
        vocabs = tuple(tuple(v for v, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))
                       for c in total.cat_counts)
        kind: Any = Categorical(tuple(numeric), mean, tuple(float(v) for v in std), tuple(categorical), vocabs,
                                data.encoding)
    else:
        kind = Standardize(tuple(numeric), mean, tuple(float(v) for v in std))
    if data.task == "regression":
        kind = dataclasses.replace(kind, target_mean=float(total.y.mean[0]), target_std=float(total.y.std()[0]) or 1.0)
    if skipped:
        notes.append(f"{len(skipped)} unreadable file(s) left out: " + "; ".join(skipped[:3])
                     + (" ..." if len(skipped) > 3 else ""))
    return StreamPlan(files=tuple(used), skipped=tuple(skipped), target=data.target, numeric=tuple(numeric),
                      categorical=tuple(categorical), task=data.task, labels=labels,
                      preprocessing=kind.to_record(), counts=dict(total.counts),
                      fingerprint=files_fingerprint(used), source=f"{data.source}:{Path(str(data.path)).name}",
                      seed=seed, test_fraction=data.test_fraction, val_fraction=validation_split, notes=tuple(notes))


def files_fingerprint(files: Sequence[InputFile]) -> str:
    """A cheap fingerprint of a set of files: names, sizes and the first and last 64 KiB of each."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: Path(f.path).name):
        h.update(f"{Path(f.path).name}|{f.size}|".encode())
        with open(f.path, "rb") as fh:
            h.update(fh.read(1 << 16))
            if f.size > 1 << 16:
                fh.seek(max(f.size - (1 << 16), 1 << 16))
                h.update(fh.read())
    return h.hexdigest()


# --------------------------------------------------------------------------- pass 2: batches


def _model_rows(plan: StreamPlan, kind: Any, r: Rows, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """(model inputs, model targets, raw inputs) of the rows in ``mask``."""
    x = r.x[mask].astype(np.float32)
    if plan.categorical:
        raw: Any = np.empty(len(x), dtype=kind.raw_dtype)
        raw["features"] = x
        raw["categories"] = np.asarray(r.cats, dtype=object).T[mask]
    else:
        raw = x
    if plan.task == "regression":
        y = ((r.target[mask] - kind.target_mean) / kind.target_std).astype(np.float32)
    else:
        labels = np.asarray(plan.labels or (), dtype=str)
        order = np.argsort(labels)
        y = order[np.searchsorted(labels[order], r.target[mask].astype(str))].astype(np.int64)
    return kind.apply(raw), y, raw


def batches(plan: StreamPlan, part: str, batch_size: int, *, files: Sequence[InputFile] | None = None,
            shuffle_rows: int = 0, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Model-ready ``(x, y)`` batches of one part (``train`` | ``val`` | ``test``) of ``files`` (default: all
    the plan's files, for instance one worker's shard).

    With ``shuffle_rows`` > 0 the file order is shuffled by ``seed`` and rows pass through a buffer of that
    many rows, shuffled before they leave; batches then have ``batch_size`` rows except the last.
    """
    from seqdeploy.preprocess import from_record

    if part not in PARTS:
        raise ValueError(f"part {part!r} (expected one of {PARTS})")
    kind = from_record(plan.preprocessing, "preprocessing record")
    want = PARTS.index(part)
    files = list(files if files is not None else plan.files)
    rng = np.random.default_rng(seed)
    if shuffle_rows:
        rng.shuffle(files)  # type: ignore[arg-type]
    buf_x: list[np.ndarray] = []
    buf_y: list[np.ndarray] = []
    held = 0
    for f in files:
        for table, row0 in file_batches(f, plan.columns):
            r = decode(f, table, row0, plan.numeric, plan.categorical, plan.target, plan.task, plan.seed,
                        plan.test_fraction, plan.val_fraction)
            mask = r.part == want
            if not mask.any():
                continue
            x, y, _ = _model_rows(plan, kind, r, mask)
            buf_x.append(x)
            buf_y.append(y)
            held += len(x)
            if held >= max(shuffle_rows, batch_size):
                x, y = np.concatenate(buf_x), np.concatenate(buf_y)
                if shuffle_rows:
                    order = rng.permutation(len(x))
                    x, y = x[order], y[order]
                cut = len(x) - len(x) % batch_size
                for s in range(0, cut, batch_size):
                    yield x[s:s + batch_size], y[s:s + batch_size]
                buf_x, buf_y, held = [x[cut:]], [y[cut:]], len(x) - cut
    if held:
        x, y = np.concatenate(buf_x), np.concatenate(buf_y)
        if shuffle_rows:
            order = rng.permutation(len(x))
            x, y = x[order], y[order]
        for s in range(0, len(x), batch_size):
            yield x[s:s + batch_size], y[s:s + batch_size]


def dataset(plan: StreamPlan, part: str, batch_size: int, *, files: Sequence[InputFile] | None = None,
            shuffle_rows: int = 0, seed: int = 0):
    """:func:`batches` as a ``tf.data.Dataset`` (a new shuffle order each time it is iterated: each epoch); of
    known length when it reads all the plan's files."""
    import tensorflow as tf

    epoch = [0]

    def gen():
        epoch[0] += 1
        yield from batches(plan, part, batch_size, files=files, shuffle_rows=shuffle_rows,
                           seed=seed * 1_000_003 + epoch[0])

    y_spec = tf.TensorSpec((None,), tf.float32 if plan.task == "regression" else tf.int64)
    sig = (tf.TensorSpec((None, plan.width), tf.float32), y_spec)
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    if files is None:  # every batch has batch_size rows but the last: Keras then knows the steps per epoch
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-plan.counts[part] // batch_size)))
    return ds.prefetch(2)


# --------------------------------------------------------------------------- a sample for later stages


def sample_splits(plan: StreamPlan, rows: int = SAMPLE_ROWS) -> Splits:
    """Splits holding the first ``rows`` train and test rows (in file order) with the plan's preprocessing.

    Model building, export, verify, quantize and bench read these instead of the whole table.
    """
    from seqdeploy.preprocess import from_record

    kind = from_record(plan.preprocessing, "preprocessing record")
    got: dict[int, list[tuple[np.ndarray, np.ndarray, Any]]] = {0: [], 2: []}
    have = {0: 0, 2: 0}
    for f in plan.files:
        for table, row0 in file_batches(f, plan.columns):
            r = decode(f, table, row0, plan.numeric, plan.categorical, plan.target, plan.task, plan.seed,
                        plan.test_fraction, plan.val_fraction)
            for k in (0, 2):
                need = rows - have[k]
                if need > 0:
                    mask = r.part == k
                    mask &= np.cumsum(mask) <= need
                    if mask.any():
                        got[k].append(_model_rows(plan, kind, r, mask))
                        have[k] += int(mask.sum())
            if min(have.values()) >= rows:
                break
        if min(have.values()) >= rows:
            break

    def cat(k: int, i: int) -> np.ndarray:
        return np.concatenate([g[i] for g in got[k]]) if got[k] else np.empty((0, plan.width), np.float32)

    return Splits(x_train=cat(0, 0), y_train=cat(0, 1), x_test=cat(2, 0), y_test=cat(2, 1), raw_test=cat(2, 2),
                  input_name="features", task=plan.task, labels=plan.labels,
                  target_name=plan.target if plan.task == "regression" else None,
                  preprocessing=plan.preprocessing, fingerprint=plan.fingerprint, source=plan.source,
                  notes=plan.notes)


# --------------------------------------------------------------------------- the plan in train.json


def plan_record(plan: StreamPlan) -> dict:
    """What ``train.json`` keeps of a plan (``data.stream``) so later stages need no second fit pass."""
    return {"files": [str(Path(f.path).resolve()) for f in plan.files], "skipped": list(plan.skipped), "target": plan.target,
            "numeric": list(plan.numeric), "categorical": list(plan.categorical), "counts": plan.counts,
            "classes": list(plan.labels) if plan.labels else None,
            "test_fraction": plan.test_fraction, "val_fraction": plan.val_fraction, "seed": plan.seed}


def plan_from_record(data: DataSpec, record: dict, *, task: str, preprocessing: dict,
                     fingerprint: str | None) -> StreamPlan:
    """The plan of a finished run from its ``train.json`` (files re-resolved; a changed set of files is a
    :class:`DataError`)."""
    require_pyarrow()
    kept = set(record.get("files", ()))
    files = tuple(f for f in table_files(data) if str(Path(f.path).resolve()) in kept) if kept else table_files(data)
    now = files_fingerprint(files)
    if fingerprint and now != fingerprint:
        raise DataError(f"{data.path}: the files changed since training (fingerprint {now[:12]} != recorded "
                        f"{fingerprint[:12]}); retrain")
    return StreamPlan(files=files, skipped=tuple(record.get("skipped", ())), target=record["target"],
                      numeric=tuple(record["numeric"]), categorical=tuple(record["categorical"]), task=task,
                      labels=tuple(record["classes"]) if record.get("classes") else None, preprocessing=preprocessing,
                      counts=dict(record["counts"]), fingerprint=now,
                      source=f"{data.source}:{Path(str(data.path)).name}", seed=int(record["seed"]),
                      test_fraction=float(record["test_fraction"]), val_fraction=float(record["val_fraction"]))


_FITTED: dict[tuple, StreamPlan] = {}


def fitted(data: DataSpec, *, seed: int, validation_split: float = 0.0) -> StreamPlan:
    """:func:`fit_stream`, remembered in this process for unchanged files (a pipeline asks more than once)."""
    files = table_files(data)
    key = (data, seed, validation_split, files_fingerprint(files))
    if key not in _FITTED:
        _FITTED.clear()
        _FITTED[key] = fit_stream(data, seed=seed, validation_split=validation_split, files=files)
    return _FITTED[key]
