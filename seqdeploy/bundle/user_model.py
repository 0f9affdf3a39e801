"""A bundle from a Keras model trained elsewhere: its sample data, its task and its ``train.json`` record.

A model trained in a notebook has no spec and no preprocessing record: its raw inputs ARE its model
inputs (preprocessing kind ``none``, one portable-graph input per model input, as declared: strings stay
strings, variable-length axes stay variable). This module reads the user's SAMPLE (the rows verify and the
quantize gate run on), decides the task from the model's first output and the class names given, and
writes the ``train.json`` record that the bundle manifest is derived from
(:func:`seqdeploy.bundle.write.write_bundle_manifest`).

SAMPLE formats:

* ``.npy``: the one input of a single-input model; ``.npz``: arrays keyed by input name;
* ``.csv`` / ``.jsonl`` / ``.parquet``: one column per model input, named like the input (a single-input
  model takes its one column; a single vector input may also be given as one numeric column per
  feature). A sequence cell is a JSON list (``[3, 17, 5]``) or space-separated numbers; variable-length
  sequences are right-padded with 0 to the longest. ``target`` names a label column (not an input).

    >>> sample = read_sample("reviews.csv", input_specs(model), target="label")  # doctest: +SKIP
    >>> sorted(sample.inputs), sample.targets[:3]                                # doctest: +SKIP
    (['tokens'], array(['neg', 'pos', 'pos'], dtype=object))
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from seqdeploy.errors import DataError, InputFileNotFound, VerifyInputError
from seqdeploy.layout import MODEL_ONNX, TRAIN_FILE
from seqdeploy.verify.feeds import InputSpec, check_data

SAMPLE_TYPES = (".npy", ".npz", ".csv", ".jsonl", ".parquet")
PORTABLE_ATOL = 1e-4  # float32 portable graph vs Keras on raw rows
SOURCE_KIND = "keras-model"  # train.json "source" of a bundle made from a user's model file


@dataclasses.dataclass(frozen=True)
class Sample:
    """The SAMPLE rows: model-ready inputs keyed by input name, and the label column when one was named."""

    path: Path
    inputs: dict[str, np.ndarray]
    targets: np.ndarray | None
    rows: int


def read_sample(path: str | Path, specs: Sequence[InputSpec], target: str | None = None) -> Sample:
    """Read SAMPLE and check it against the model's inputs (names, shapes, dtypes, rows)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFound(f"sample file {str(path)!r} does not exist; expected {', '.join(SAMPLE_TYPES)} "
                                "with one column (or array) per model input")
    suffix = path.suffix.lower()
    targets = None
    if suffix in (".npy", ".npz"):
        if target is not None:
            raise DataError(f"{path}: a target column needs a table (.csv, .jsonl, .parquet); an array file has "
                            "no columns")
        from seqdeploy.verify.feeds import load_data_file

        data: Any = load_data_file(path)
    elif suffix in (".csv", ".jsonl", ".parquet"):
        data, targets = _table_inputs(path, suffix[1:], specs, target)
    else:
        raise DataError(f"{path}: unsupported sample type {suffix or '(none)'!r}; expected one of "
                        f"{', '.join(SAMPLE_TYPES)}")
    try:
        inputs = check_data(data, specs, str(path))
    except VerifyInputError as exc:
        raise DataError(str(exc)) from None
    rows = len(next(iter(inputs.values())))
    return Sample(path, inputs, targets, rows)


def _table_inputs(path: Path, fmt: str, specs: Sequence[InputSpec],
                  target: str | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    from seqdeploy.data.tables import read_table

    header, rows, where = read_table(path, fmt)
    cols = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    targets = None
    if target is not None:
        if target not in cols:
            raise DataError(f"{path}: no target column {target!r} (columns: {header}); name the label column")
        targets = np.asarray(cols.pop(target), dtype=object)
    names = [s.name for s in specs]
    if len(specs) == 1 and names[0] not in cols:
        s = specs[0]
        if len(cols) == 1:
            cols = {names[0]: next(iter(cols.values()))}
        elif len(s.shape) == 1 and s.shape[0] == len(cols) and not s.is_string:  # one column per feature
            return {names[0]: np.asarray([[_number(v, path, where[i], c) for c, v in zip(cols, r)]
                                          for i, r in enumerate(zip(*cols.values()))])}, targets
    missing = [n for n in names if n not in cols]
    if missing:
        raise DataError(f"{path}: columns {list(cols)} do not match the model inputs {names} (missing {missing}); "
                        "name one column per model input after it")
    extra = [c for c in cols if c not in names]
    if extra and len(specs) > 1:
        raise DataError(f"{path}: unexpected column(s) {extra}; the model inputs are {names} (name a label "
                        "column as the target, or drop the others)")
    return {s.name: _column(cols[s.name], s, path, where) for s in specs}, targets


def _column(values: list[Any], s: InputSpec, path: Path, where: list[str]) -> np.ndarray:
    if s.is_string:
        x = np.empty(len(values), dtype=object)
        x[:] = ["" if v is None else str(v) for v in values]  # text as it is: empty and blank strings stay
        if s.shape and all(d == 1 for d in s.shape):  # Input(shape=(1,), dtype="string"): one string per row
            x = x.reshape((len(values), *s.shape))
        return x
    if not s.shape:
        return np.asarray([_number(v, path, where[i], s.name) for i, v in enumerate(values)])
    cells = [_sequence(v, path, where[i], s.name) for i, v in enumerate(values)]
    if len(s.shape) == 1:
        longest = max(len(c) for c in cells)
        fixed = s.shape[0]
        if fixed is not None and any(len(c) != fixed for c in cells):
            i = next(i for i, c in enumerate(cells) if len(c) != fixed)
            raise DataError(f"{path}: {where[i]}: column {s.name!r} holds {len(cells[i])} values, the model "
                            f"input takes {fixed}")
        out = np.zeros((len(cells), fixed or longest), np.float64)
        for i, c in enumerate(cells):
            out[i, : len(c)] = c  # right-padded with 0 (the padding id of mask_zero embeddings)
        return out
    try:
        return np.asarray(cells, dtype=np.float64)
    except ValueError:
        raise DataError(f"{path}: column {s.name!r} holds ragged nested lists; the input takes shape "
                        f"{list(s.shape)}") from None


def _sequence(v: Any, path: Path, where: str, name: str) -> list[Any]:
    if isinstance(v, str):
        text = v.strip()
        try:
            v = json.loads(text) if text.startswith("[") else [float(t) for t in text.replace(",", " ").split()]
        except ValueError:
            raise DataError(f"{path}: {where}: column {name!r} holds {text[:40]!r}; expected a JSON list or "
                            "space-separated numbers") from None
    if not isinstance(v, (list, tuple)):
        v = [v]
    return list(v)


def _number(v: Any, path: Path, where: str, name: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {where}: column {name!r} holds {str(v)[:40]!r}; expected a number") from None


# --------------------------------------------------------------------------- task and record


def infer_task(model: Any, labels: Sequence[str] | None) -> str:
    """``binary`` / ``multiclass`` / ``regression`` from the first output (units, final activation) and the
    class names given: names make it a classifier; a softmax over several units or one sigmoid unit
    is one without names too; anything else is regression (values as the model computes them)."""
    out = model.outputs[0]
    shape = tuple(out.shape[1:])
    units = shape[-1] if len(shape) == 1 and isinstance(shape[-1], int) else None
    activation = _final_activation(model)
    if labels is not None:
        if units is None:
            raise DataError(f"class names {list(labels)} given but the model's first output has shape "
                            f"{['batch', *shape]}; class names need an output of shape (batch, classes)")
        n = 2 if units == 1 else units
        if len(labels) != n:
            raise DataError(f"{len(labels)} class names {list(labels)} for an output of {units} unit(s) "
                            f"({n} classes); give one name per class")
        return "binary" if units == 1 else "multiclass"
    if units == 1 and activation == "sigmoid":
        return "binary"
    if units is not None and units > 1 and activation == "softmax":
        return "multiclass"
    return "regression"


def _final_activation(model: Any) -> str | None:
    import keras

    try:
        layer = model.get_layer(model.output_names[0])
    except (ValueError, IndexError, AttributeError):
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", None) if act is not None else None


def target_ids(targets: np.ndarray, task: str, labels: Sequence[str] | None, where: str) -> np.ndarray:
    """A label column as class ids (names from ``labels`` or integer ids) or regression values."""
    if task == "regression":
        try:
            return targets.astype(np.float64)
        except ValueError:
            raise DataError(f"{where}: the target column holds non-numbers; a regression target must be numeric") from None
    index = {str(name): i for i, name in enumerate(labels or [])}
    out = []
    for v in targets:
        key = str(v)
        if key in index:
            out.append(index[key])
            continue
        try:
            out.append(int(float(key)))
        except ValueError:
            raise DataError(f"{where}: target value {key!r} is neither a class name {list(index) or ''} nor a "
                            "class id; give the class names in the order of the model's outputs") from None
    return np.asarray(out, np.int64)


def train_record(name: str, task: str, labels: Sequence[str] | None, specs: Sequence[InputSpec],
                 model_file: str, target: str | None) -> dict[str, Any]:
    """The ``train.json`` of a user-model bundle: what the manifest needs (task, labels, preprocessing)."""
    return {"spec_name": name, "source": SOURCE_KIND, "model_file": model_file, "task": task,
            "labels": list(labels) if labels is not None else None, "target_name": target,
            "preprocessing": {"kind": "none"},
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in specs]}


def load_user_run(run_dir: str | Path) -> dict[str, Any] | None:
    """``train.json`` of a bundle made from a user's model (None for a spec-trained run directory)."""
    p = Path(run_dir) / TRAIN_FILE
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("source") == SOURCE_KIND else None


# --------------------------------------------------------------------------- checks on raw rows


@dataclasses.dataclass(frozen=True)
class PortableParity:
    """The deployment graph on raw rows (the model's own inputs) against Keras."""

    passed: bool
    rows: int
    max_abs_error: float
    label_agreement: float | None
    tolerance: float
    tokenizer_strings: int = 0  # no tokenizer in these bundles (the fields verify's report shows)
    tokenizer_mismatches: int = 0


def keras_outputs(model: Any, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs on ``inputs`` (keyed by input name), ``training=False``, in the ONNX graph's output
    order (a dict output flattened as Keras flattens it: by key)."""
    import keras

    from seqdeploy.bench.runners.keras import keras_call_inputs
    from seqdeploy.verify.feeds import input_specs

    y = model(keras_call_inputs(model, inputs, [s.name for s in input_specs(model)]), training=False)
    return [np.asarray(o) for o in keras.tree.flatten(y)]


def keras_first_output(model: Any, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The model's first output on ``inputs`` (keyed by input name), ``training=False``."""
    return keras_outputs(model, inputs)[0]


def reference_targets(model: Any, inputs: dict[str, np.ndarray], task: str) -> np.ndarray:
    """What the float32 model answers on ``inputs``: class ids for classifiers, values otherwise."""
    from seqdeploy.preprocess import NoPreprocessing, task_outputs

    y = keras_first_output(model, inputs)
    if task == "regression":
        return y.reshape(len(y), -1)
    return task_outputs(y, task, None, NoPreprocessing())["class_id"]


def check_portable_parity(bundle: str | Path, model: Any, inputs: dict[str, np.ndarray], task: str,
                          labels: Sequence[str] | None, atol: float = PORTABLE_ATOL) -> PortableParity:
    """The bundle's float32 portable graph (through :class:`seqdeploy.runtime.Predictor`) on raw rows vs Keras."""
    from seqdeploy.preprocess import NoPreprocessing, task_outputs
    from seqdeploy.runtime import Predictor

    predictor = Predictor.from_bundle(bundle, artifact=MODEL_ONNX)
    got = predictor.answers(inputs if len(inputs) > 1 else next(iter(inputs.values())))
    ys = keras_outputs(model, inputs)
    want = task_outputs(ys[0], task, list(labels) if labels else None, NoPreprocessing())
    key = "prediction" if task == "regression" else "probabilities"
    diff = np.abs(np.asarray(got[key], np.float64) - np.asarray(want[key], np.float64))
    err = float(diff.max()) if diff.size else 0.0
    for name, y in zip(predictor.output_names[1:], ys[1:]):  # the model's further outputs, passed through
        if name not in got or np.shape(got[name]) != np.shape(y):
            err = float("inf")
            continue
        g = np.asarray(got[name])
        if g.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":  # strings: equal or not
            err = err if np.array_equal(g.astype(str), y.astype(str)) else float("inf")
        elif y.size:
            err = max(err, float(np.max(np.abs(g.astype(np.float64) - y.astype(np.float64)))))
    agreement = None if task == "regression" else float(np.mean(got["label"] == want["label"]))
    passed = err <= atol and (agreement is None or agreement == 1.0)
    return PortableParity(passed, len(diff), err, agreement, atol)
