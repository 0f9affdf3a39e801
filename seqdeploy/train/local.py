"""Train a Keras Sequential model from a spec and write the run directory.

    >>> result = train("models/breast_cancer_mlp.toml", epochs=5)  # doctest: +SKIP
    >>> result.test_metrics["accuracy"] > 0.9  # doctest: +SKIP
    True

The run directory (default ``runs/<spec name>``) receives ``spec.toml`` (or
``spec.py``), ``model.keras`` and ``train.json`` (docs/CONTRACTS.md). Everything
that can be checked is checked before the directory is touched, and each file
is written atomically, so a bad spec leaves no half-written run behind.
"""

from __future__ import annotations

import dataclasses
import difflib
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from seqdeploy import __version__
from seqdeploy.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from seqdeploy.data import Splits, load_spec_data
from seqdeploy.errors import SpecError, TrainError, first_line
from seqdeploy.layout import MODEL_KERAS, TRAIN_FILE
from seqdeploy.spec import LayerSpec, Spec, load_spec

EpochCallback = Callable[[int, int, Mapping[str, float]], None]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    spec_name: str
    task: str
    model_path: Path
    test_metrics: dict[str, float]
    history: dict[str, list[float]]
    epochs_run: int
    epochs_requested: int
    seconds: float
    parameters: int
    data_fingerprint: str
    n_train: int
    n_test: int
    synthetic_data: bool
    #: what the data loader decided (inferred categorical columns, skipped files)
    notes: tuple[str, ...] = ()


def default_run_dir(spec: Spec) -> Path:
    return Path("runs") / spec.name


def train(spec_path: str | Path, *, out: str | Path | None = None, epochs: int | None = None,
          seed: int | None = None, on_epoch: EpochCallback | None = None,
          skip_bad_files: bool | None = None) -> TrainResult:
    """Build, compile, fit and evaluate the spec's model; write the run directory.

    ``skip_bad_files`` overrides ``[data] skip_bad_files``: unreadable files of a multi-file table (or images)
    are left out and named in the notes instead of stopping training.
    """
    spec = load_spec(spec_path).with_overrides(epochs=epochs, seed=seed)
    if skip_bad_files is not None:
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, skip_bad_files=skip_bad_files))
    return train_spec(spec, out=out, on_epoch=on_epoch)


def train_spec(spec: Spec, *, out: str | Path | None = None, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Like :func:`train` for an already loaded :class:`Spec`."""
    run_dir = Path(out) if out is not None else default_run_dir(spec)
    splits, plan = load_spec_data(spec)  # plan: a streamed table (splits then hold a sample)

    import keras

    keras.utils.set_random_seed(spec.fit.seed)
    model = build_model(spec, splits)
    compile_model(model, spec)

    callbacks: list[Any] = []
    if spec.fit.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=spec.fit.early_stopping_patience, restore_best_weights=True))
    if on_epoch is not None:
        callbacks.append(_epoch_callback(on_epoch, spec.fit.epochs))

    start = time.perf_counter()
    try:
        if plan is None:
            hist = model.fit(splits.x_train, splits.y_train, epochs=spec.fit.epochs, batch_size=spec.fit.batch_size,
                             validation_split=spec.fit.validation_split, shuffle=True, verbose=0, callbacks=callbacks)
            metrics = model.evaluate(splits.x_test, splits.y_test, batch_size=256, verbose=0, return_dict=True)
        else:
            hist, metrics = _fit_stream(model, spec, plan, callbacks)
    except (ValueError, TypeError) as exc:
        raise TrainError(f"{spec.path}: Keras could not fit the model: {first_line(exc)}; check the loss "
                         "matches the labels (e.g. sparse_categorical_crossentropy for integer classes)") from None
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    if not all(np.isfinite(v) for vals in history.values() for v in vals):
        raise TrainError(f"{spec.path}: training diverged (NaN/inf loss); lower the learning rate")
    test_metrics = test_metrics_of(model, splits, metrics)

    n_val = int(len(splits.x_train) * spec.fit.validation_split)
    counts = {"n_train": len(splits.x_train) - n_val, "n_val": n_val, "n_test": len(splits.x_test)}
    if plan is not None:
        from seqdeploy.data.stream import plan_record

        counts = {"n_train": plan.counts["train"], "n_val": plan.counts["val"], "n_test": plan.counts["test"],
                  "stream": plan_record(plan)}
    info = train_record(spec, splits, model, counts=counts, history=history, epochs_run=len(history.get("loss", [])),
                        seconds=seconds, test_metrics=test_metrics)
    # Everything is known to work: only now touch the run directory.
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / info["spec_file"], spec.path.read_bytes())
    with atomic_path(run_dir / MODEL_KERAS) as tmp:
        model.save(tmp)
    atomic_write_json(run_dir / TRAIN_FILE, info)
    return TrainResult(run_dir=run_dir, spec_name=spec.name, task=splits.task, model_path=run_dir / MODEL_KERAS,
                       test_metrics=test_metrics, history=history, epochs_run=info["epochs_run"],
                       epochs_requested=spec.fit.epochs, seconds=seconds, parameters=info["parameters"],
                       data_fingerprint=splits.fingerprint, n_train=info["data"]["n_train"],
                       n_test=info["data"]["n_test"], synthetic_data=splits.synthetic, notes=splits.notes)


def _fit_stream(model, spec: Spec, plan: Any, callbacks: list[Any]) -> tuple[Any, dict]:
    """Fit on a streamed table's batches (:mod:`seqdeploy.data.stream`); evaluate on its test rows."""
    from seqdeploy.data.stream import SHUFFLE_ROWS, dataset

    bs = spec.fit.batch_size
    train = dataset(plan, "train", bs, shuffle_rows=SHUFFLE_ROWS, seed=spec.fit.seed)
    val = dataset(plan, "val", max(bs, 1024)) if plan.counts["val"] else None
    hist = model.fit(train, epochs=spec.fit.epochs, validation_data=val, shuffle=False, verbose=0, callbacks=callbacks)
    return hist, model.evaluate(dataset(plan, "test", max(bs, 1024)), verbose=0, return_dict=True)



def test_metrics_of(model: Any, splits: Splits, metrics: Mapping[str, float]) -> dict[str, float]:
    """Keras's test metrics, plus the errors in the target's own units where preprocessing scaled it."""
    test_metrics = {k: float(v) for k, v in metrics.items()}
    if splits.preprocessing.get("kind") == "window":
        pred = np.asarray(model(splits.x_test, training=False)).reshape(-1)
        test_metrics["mae_original_units"] = float(np.mean(np.abs(pred - splits.y_test)) * splits.preprocessing["std"])
    elif splits.task == "regression" and splits.preprocessing.get("target_std") is not None:
        test_metrics = target_unit_metrics(model, splits, test_metrics)
    return test_metrics


def train_record(spec: Spec, splits: Splits, model: Any, *, counts: Mapping[str, Any], history: Mapping[str, list],
                 epochs_run: int, seconds: float, test_metrics: Mapping[str, float],
                 extra_versions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``train.json`` record every training engine writes (an engine adds its own keys after these)."""
    return {
        "spec_name": spec.name,
        "spec_file": "spec" + spec.path.suffix,
        "spec_dir": str(spec.path.resolve().parent),
        "task": splits.task,
        "labels": list(splits.labels) if splits.labels else None,
        "target_name": splits.target_name,
        "input": {"name": splits.input_name, "shape": [None, *splits.input_shape], "dtype": splits.input_dtype},
        "preprocessing": splits.preprocessing,
        "data": {"source": splits.source, "fingerprint": splits.fingerprint, "synthetic": splits.synthetic,
                 **counts, "notes": list(splits.notes)},
        "seed": spec.fit.seed,
        "epochs_requested": spec.fit.epochs,
        "epochs_run": epochs_run,
        "seconds": round(seconds, 3),
        "parameters": int(model.count_params()),
        "history": dict(history),
        "test_metrics": dict(test_metrics),
        "versions": {**_versions(), **(extra_versions or {})},
    }

def target_unit_metrics(model: Any, splits: Splits, keras_metrics: Mapping[str, float]) -> dict[str, float]:
    """Test metrics of a model trained on a standardised target, in the target's units.

    ``mae``, ``mse`` and ``rmse`` come from the de-normalised predictions (the runtime's answers) against the
    de-normalised test targets; Keras's own numbers (standardised units) are kept as ``<name>_standardised``.
    """
    from seqdeploy.preprocess import from_record

    pre = from_record(splits.preprocessing, "preprocessing")
    pred = np.asarray(pre.postprocess(np.asarray(model(splits.x_test, training=False)).reshape(-1, 1)),
                      dtype=np.float64).reshape(-1)
    y = np.asarray(pre.postprocess(np.asarray(splits.y_test, dtype=np.float32).reshape(-1, 1)),
                   dtype=np.float64).reshape(-1)
    err = pred - y
    out = {f"{k}_standardised": float(v) for k, v in keras_metrics.items()}
    out.update(mae=float(np.mean(np.abs(err))), mse=float(np.mean(err ** 2)), rmse=float(np.sqrt(np.mean(err ** 2))))
    return out


def build_model(spec: Spec, splits: Splits):
    """The spec's Keras model, checked against the data's input shape and task."""
    import keras

    if spec.input.shape is not None and tuple(spec.input.shape) != splits.input_shape:
        raise SpecError(f"{spec.path}: [input] shape = {list(spec.input.shape)} does not fit the data "
                        f"{spec.data.source!r}, whose samples have shape {list(splits.input_shape)}; "
                        f"set shape = {list(splits.input_shape)} or remove [input] shape")
    if spec.input.dtype is not None and spec.input.dtype != splits.input_dtype:
        raise SpecError(f"{spec.path}: [input] dtype = {spec.input.dtype!r} but the data is "
                        f"{splits.input_dtype}; set dtype = {splits.input_dtype!r}")
    name = spec.input.name or splits.input_name
    if spec.build_model is not None:
        model = spec.build_model()
        if not isinstance(model, keras.Model):
            raise SpecError(f"{spec.path}: build_model() returned {type(model).__name__}; expected a keras.Model")
    else:
        model = keras.Sequential(name=spec.name)
        model.add(keras.Input(shape=splits.input_shape, dtype=splits.input_dtype, name=name))
        for layer_spec in spec.layers:
            layer = make_layer(layer_spec, spec.path)
            try:
                model.add(layer)
            except Exception as exc:  # Keras raises many types here; all mean "this layer does not fit"
                raise SpecError(f"{spec.path}: layers[{layer_spec.index}] ({layer_spec.type}) does not fit the "
                                f"previous output {_shape_before(model)}: {first_line(exc)}") from None
    _check_output(model, spec, splits)
    return model


def make_layer(ls: LayerSpec, path: Path):
    """Instantiate one ``keras.layers`` class from a :class:`LayerSpec`."""
    import keras

    cls = getattr(keras.layers, ls.type, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)) or ls.type in ("Layer", "InputLayer", "Lambda"):
        known = sorted(n for n in dir(keras.layers) if n[:1].isupper() and n not in ("Layer", "InputLayer"))
        close = difflib.get_close_matches(ls.type, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see https://keras.io/api/layers/ for the list"
        extra = " (Lambda layers cannot be written in TOML: use a .py spec)" if ls.type == "Lambda" else ""
        raise SpecError(f"{path}: layers[{ls.index}] type = {ls.type!r} is not a keras.layers class{extra}; {hint}")
    kwargs = {k: (make_layer(v, path) if isinstance(v, LayerSpec) else v) for k, v in ls.kwargs.items()}
    try:
        return cls(**kwargs)
    except Exception as exc:  # Keras validates arguments with TypeError/ValueError and others
        raise SpecError(f"{path}: layers[{ls.index}] ({ls.type}) rejected its arguments "
                        f"{_short(ls.kwargs)}: Keras says: {first_line(exc)}") from None


def compile_model(model, spec: Spec) -> None:
    import keras

    try:
        optimizer = keras.optimizers.get({"class_name": spec.compile.optimizer,
                                          "config": dict(spec.compile.optimizer_kwargs)})
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{spec.path}: [compile] optimizer {spec.compile.optimizer!r} "
                        f"{dict(spec.compile.optimizer_kwargs)}: {first_line(exc)}; use e.g. \"adam\", \"sgd\", "
                        "\"rmsprop\"") from None
    try:
        keras.losses.get(spec.compile.loss)
    except (ValueError, TypeError):
        raise SpecError(f"{spec.path}: [compile] loss = {spec.compile.loss!r} is not a Keras loss; use e.g. "
                        "binary_crossentropy, sparse_categorical_crossentropy, mse, mae") from None
    for m in spec.compile.metrics:
        try:
            keras.metrics.get(m)
        except (ValueError, TypeError):
            if m not in ("accuracy", "acc"):
                raise SpecError(f"{spec.path}: [compile] metrics contains {m!r}, not a Keras metric; "
                                "use e.g. accuracy, mae, mse") from None
    model.compile(optimizer=optimizer, loss=spec.compile.loss, metrics=list(spec.compile.metrics))


def _check_output(model, spec: Spec, splits: Splits) -> None:
    try:
        out_shape = tuple(model.outputs[0].shape)
    except (AttributeError, ValueError, IndexError, TypeError):
        return
    want = {"binary": 1, "regression": 1}.get(splits.task, len(splits.labels or ()) or None)
    if want is not None and out_shape[-1] != want:
        raise SpecError(f"{spec.path}: the model outputs {out_shape[-1]} values per sample but the "
                        f"{splits.task} data {spec.data.source!r} needs {want}; make the last layer "
                        f"Dense({want})")


def _epoch_callback(fn: EpochCallback, total: int):
    """A Keras callback that forwards epoch ends to a plain function (no printing here)."""
    import keras

    class _EpochReporter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            fn(epoch + 1, total, {k: float(v) for k, v in (logs or {}).items()})

    return _EpochReporter()


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"seqdeploy": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _shape_before(model) -> str:
    try:
        return str(list(model.outputs[0].shape))
    except (AttributeError, ValueError, IndexError, TypeError):
        return "(unknown)"


def _short(kwargs: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return "{" + (text if len(text) < 120 else text[:117] + "...") + "}"
