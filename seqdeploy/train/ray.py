"""Train a spec's model data-parallel on a Ray cluster (Ray Train's ``TensorflowTrainer``).

    >>> result = train_ray("models/breast_cancer_mlp.toml", workers=2)  # doctest: +SKIP
    >>> result.run_dir / "model.keras", result.rows_per_worker  # doctest: +SKIP

The driver loads the spec's data once and fits its preprocessing once (the same
:func:`seqdeploy.data.load_spec_splits` as local training), then hands the
model-ready rows to Ray Data; Ray Train gives each worker an equal shard
(``get_dataset_shard(...).iter_tf_batches()``) and sets ``TF_CONFIG``.

Each worker builds the model under ``tf.distribute.MultiWorkerMirroredStrategy``
and runs a synchronous step: its replica's loss (``model.compute_loss``, scaled by
1/workers as Keras does under a strategy) and gradients, summed across workers by
the strategy's collective all-reduce inside ``optimizer.apply_gradients``, so every
worker holds the same weights after every step. ``model.fit`` is not used: with
Keras 3 it fails under this strategy (it reduces nested per-replica batches and
concatenates scalar per-replica results, which the multi-worker strategy refuses).

Worker 0 saves ``model.keras`` (weights and optimizer state) plus the loop state
every epoch and reports it as a Ray Train checkpoint (not Ray's
``TensorflowCheckpoint``, which writes the legacy H5 format). A killed worker
restarts the whole group from the last checkpoint, up to ``max_failures`` times.
The run directory gets the same files as local training; ``train.json`` adds
``engine``, ``workers``, ``rows_per_worker``, ``restarts`` and ``resumed_from_epochs``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from seqdeploy.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from seqdeploy.errors import TrainError, UsageError, first_line
from seqdeploy.layout import MODEL_KERAS, TRAIN_FILE
from seqdeploy.spec import Spec, load_spec
from seqdeploy.train.local import (
    TrainResult, build_model, compile_model, default_run_dir, test_metrics_of, train_record,
)

#: the loop state saved beside ``model.keras`` in each checkpoint
STATE_FILE = "state.json"
BEST_WEIGHTS = "best.weights.h5"


@dataclasses.dataclass(frozen=True)
class RayTrainResult(TrainResult):
    engine: str = "ray"
    workers: int = 1
    #: training rows each worker trained on per epoch (equal shards: the remainder is dropped)
    rows_per_worker: int = 0
    #: times the worker group was restarted from a checkpoint after a failure
    restarts: int = 0
    resumed_from_epochs: tuple[int, ...] = ()
    address: str = "local"


def train_ray(spec_path: str | Path, *, workers: int = 2, address: str | None = None,
              out: str | Path | None = None, epochs: int | None = None, seed: int | None = None,
              storage: str | Path | None = None, max_failures: int = 2,
              keep_shards: bool = False) -> RayTrainResult:
    """Train the spec's model on ``workers`` Ray Train workers; write the run directory.

    ``address``: None starts (or reuses) a Ray on this machine, ``"auto"`` joins one started with
    ``ray start``, ``ray://host:port`` a remote cluster. ``storage`` holds Ray Train's checkpoints
    (a directory every node can reach on a cluster; default a temporary one, removed on success).
    ``keep_shards``: each worker keeps the shard it streamed in its first epoch in memory for the
    later ones instead of streaming it from Ray Data every epoch (measured: no faster on small data,
    see benchmarks/RAY_TRAIN.md).
    """
    spec = load_spec(spec_path).with_overrides(epochs=epochs, seed=seed)
    return train_spec_ray(spec, workers=workers, address=address, out=out, storage=storage,
                          max_failures=max_failures, keep_shards=keep_shards)


def train_spec_ray(spec: Spec, *, workers: int = 2, address: str | None = None, out: str | Path | None = None,
                   storage: str | Path | None = None, max_failures: int = 2,
                   keep_shards: bool = False) -> RayTrainResult:
    """Like :func:`train_ray` for an already loaded :class:`Spec`."""
    from seqdeploy.data import load_spec_splits

    if not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers = {workers!r}; expected a whole number >= 1")
    if not isinstance(max_failures, int) or max_failures < 0:
        raise UsageError(f"max_failures = {max_failures!r}; expected a whole number >= 0")
    run_dir = Path(out) if out is not None else default_run_dir(spec)
    splits = load_spec_splits(spec)  # preprocessing is fitted here, once, on the driver
    n_all = len(splits.x_train)
    n_val = int(n_all * spec.fit.validation_split)
    n_train = n_all - n_val
    if n_train < workers:
        raise UsageError(f"{spec.path}: {n_train} training rows cannot be shared by {workers} workers; "
                         "use fewer workers or more data")
    if 0 < n_val < workers:
        n_val = 0  # too few validation rows to give every worker one: train without validation
    # Build and compile once here: a spec that cannot make a model fails before Ray starts.
    meta = _shapes_only(splits)
    compile_model(build_model(spec, meta), spec)

    from seqdeploy.scoring.ray import ray_started_here

    started = ray_started_here(address)
    own_storage = storage is None
    storage_dir = Path(tempfile.mkdtemp(prefix="seqdeploy-ray-train-")) if own_storage else Path(storage)
    try:
        result, seconds = _fit(spec, splits, meta, workers=workers, n_val=n_val, storage=storage_dir,
                               max_failures=max_failures, keep_shards=keep_shards)
        out_result = _write_run(spec, splits, run_dir, result, seconds=seconds, workers=workers, n_val=n_val,
                                address=address or "local")
    finally:
        if started:
            import ray

            ray.shutdown()
    if own_storage:
        shutil.rmtree(storage_dir, ignore_errors=True)
    return out_result


def worker_record_dir(storage: str | Path, run_name: str) -> Path:
    """Where each worker writes ``rank-<r>.json`` (pid, host, finished epochs, seconds) while it trains."""
    return Path(storage) / run_name / "workers"


def _shapes_only(splits):
    """The splits with zero rows: what a worker needs to build the model (shapes, dtypes, task, labels)."""
    return dataclasses.replace(splits, x_train=splits.x_train[:0], y_train=splits.y_train[:0],
                               x_test=splits.x_test[:0], y_test=splits.y_test[:0], raw_test=splits.raw_test[:0])


def _table(x: np.ndarray, y: np.ndarray):
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    col = (lambda a: pa.array(a) if a.ndim == 1 else ArrowTensorArray.from_numpy(np.ascontiguousarray(a)))
    return pa.table({"x": ArrowTensorArray.from_numpy(np.ascontiguousarray(x)), "y": col(np.asarray(y))})


def _fit(spec: Spec, splits, meta, *, workers: int, n_val: int, storage: Path, max_failures: int,
         keep_shards: bool):
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    n_train = len(splits.x_train) - n_val
    datasets = {"train": ray.data.from_arrow(_table(splits.x_train[:n_train], splits.y_train[:n_train]))}
    if n_val:
        datasets["val"] = ray.data.from_arrow(_table(splits.x_train[n_train:], splits.y_train[n_train:]))
    # A fresh name per run: Ray Train resumes a run whose name it finds in the storage.
    name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    config = {"spec": spec, "meta": meta, "workers": workers, "has_val": bool(n_val),
              "keep_shards": keep_shards, "record_dir": str(worker_record_dir(storage, name))}
    trainer = TensorflowTrainer(
        train_worker, train_loop_config=config, datasets=datasets,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=str(storage.resolve()),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    start = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors in its own types (TrainingFailedError and others)
        raise TrainError(f"{spec.path}: Ray Train failed: {first_line(exc)}") from None
    seconds = time.perf_counter() - start
    if getattr(result, "error", None) is not None:
        raise TrainError(f"{spec.path}: Ray Train failed: {first_line(result.error)}")
    if result.checkpoint is None:
        raise TrainError(f"{spec.path}: Ray Train finished without a checkpoint; expected one per epoch")
    return result, seconds


def train_worker(config: dict) -> None:
    """One Ray Train worker: MultiWorkerMirroredStrategy, a synchronous step per batch, a checkpoint per epoch."""
    entered = time.perf_counter()
    import keras
    import ray.train
    import tensorflow as tf

    spec: Spec = config["spec"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG, set by Ray Train
    keras.utils.set_random_seed(spec.fit.seed)
    with strategy.scope():
        model = build_model(spec, config["meta"])
        compile_model(model, spec)
        model.optimizer.build(model.trainable_variables)

    state = {"epoch": 0, "history": {}, "best_val": None, "best_epoch": 0, "wait": 0, "resumed_from_epochs": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            model.load_weights(os.path.join(d, "model.keras"))
            state = json.loads(Path(d, STATE_FILE).read_text())
            best = Path(d, BEST_WEIGHTS)
            best_bytes = best.read_bytes() if best.exists() else None
        state["resumed_from_epochs"].append(state["epoch"])
    else:
        best_bytes = None

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        def replica(x, y):
            with tf.GradientTape() as tape:
                pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=pred, training=True)
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss * tf.cast(tf.shape(x)[0], loss.dtype)
        return strategy.reduce("SUM", strategy.run(replica, args=(x, y)), axis=None)

    @tf.function(reduce_retracing=True)
    def val_step(x, y):
        def replica(x, y):
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=False), training=False)
            return loss * tf.cast(tf.shape(x)[0], loss.dtype)
        return strategy.reduce("SUM", strategy.run(replica, args=(x, y)), axis=None)

    def batches(name, shard, shuffle_seed):
        """This worker's batches: streamed from its Ray Data shard, or from memory once kept."""
        if name in kept:
            x, y = kept[name]
            order = np.random.default_rng(shuffle_seed).permutation(len(x)) if shuffle_seed else np.arange(len(x))
            for i in range(0, len(x), local_batch):
                idx = order[i:i + local_batch]
                yield tf.constant(x[idx]), tf.constant(y[idx])
            return
        kw = {"local_shuffle_buffer_size": 4 * local_batch, "local_shuffle_seed": shuffle_seed} if shuffle_seed else {}
        seen = []
        for batch in shard.iter_tf_batches(batch_size=local_batch, drop_last=False, **kw):
            if config["keep_shards"]:
                seen.append((batch["x"].numpy(), batch["y"].numpy()))
            yield batch["x"], batch["y"]
        if seen:
            kept[name] = (np.concatenate([b[0] for b in seen]), np.concatenate([b[1] for b in seen]))

    def run_epoch(step, name, shard, shuffle_seed):
        total, rows, t0 = 0.0, 0, time.perf_counter()
        for x, y in batches(name, shard, shuffle_seed):
            t1 = time.perf_counter()
            total += float(step(x, y))
            timing["step"] += time.perf_counter() - t1
            rows += int(x.shape[0])
        timing["epoch"] += time.perf_counter() - t0
        # each replica's loss was scaled by 1/world; every worker has the same number of rows
        return total * world / max(rows * world, 1), rows

    kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    # seconds: start-up (strategy, model, restore), the first epoch loop (train + val), all epoch loops, the
    # steps in them, checkpoint + report
    timing = {"startup": 0.0, "first_epoch": 0.0, "epoch": 0.0, "step": 0.0, "report": 0.0}
    local_batch = max(1, spec.fit.batch_size // world)  # the spec's batch size is the global one
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if config["has_val"] else None
    patience = spec.fit.early_stopping_patience
    record_dir = Path(config["record_dir"])
    _record(record_dir, rank, state["epoch"])
    stopped = False
    timing["startup"] = time.perf_counter() - entered
    first = state["epoch"]
    for epoch in range(first, spec.fit.epochs):
        loss, rows = run_epoch(train_step, "train", train_shard, spec.fit.seed * 1000 + epoch + 1)
        logs = {"loss": loss}
        if val_shard is not None:
            logs["val_loss"], _ = run_epoch(val_step, "val", val_shard, 0)
        if epoch == first:
            timing["first_epoch"] = timing["epoch"]
        for k, v in logs.items():
            state["history"].setdefault(k, []).append(v)
        state["epoch"] = epoch + 1
        if not np.isfinite(loss):
            raise TrainError(f"{spec.path}: training diverged (NaN/inf loss); lower the learning rate")
        if patience > 0 and "val_loss" in logs:
            if state["best_val"] is None or logs["val_loss"] < state["best_val"]:
                state.update(best_val=logs["val_loss"], best_epoch=epoch + 1, wait=0)
                best_bytes = _weights_bytes(model)
            else:
                state["wait"] += 1
                stopped = state["wait"] >= patience
        if stopped or state["epoch"] == spec.fit.epochs:
            if best_bytes is not None:
                _load_weights_bytes(model, best_bytes)
        t0 = time.perf_counter()
        _report(model, state, best_bytes, rank, rows, logs)
        timing["report"] += time.perf_counter() - t0
        _record(record_dir, rank, state["epoch"], timing)
        if stopped:
            break


def _report(model, state: dict, best_bytes: bytes | None, rank: int, rows: int, logs: dict) -> None:
    import ray.train

    metrics = {**logs, "epoch": state["epoch"], "rows": rows, "rank": rank}
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="seqdeploy-ckpt-") as d:
        model.save(os.path.join(d, "model.keras"))
        Path(d, STATE_FILE).write_text(json.dumps(state))
        if best_bytes is not None:
            Path(d, BEST_WEIGHTS).write_bytes(best_bytes)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _weights_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, BEST_WEIGHTS)
        model.save_weights(path)
        return Path(path).read_bytes()


def _load_weights_bytes(model, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, BEST_WEIGHTS)
        Path(path).write_bytes(data)
        model.load_weights(path)


def _record(record_dir: Path, rank: int, epoch: int, timing: dict | None = None) -> None:
    """Best effort: a worker's pid, host and finished epochs, for operators (and fault tests) to find it."""
    try:
        record_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record_dir / f"rank-{rank}.json",
                          {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "epoch": epoch,
                           "seconds": {k: round(v, 3) for k, v in (timing or {}).items()}})
    except OSError:
        pass


def _write_run(spec: Spec, splits, run_dir: Path, result, *, seconds: float, workers: int, n_val: int,
               address: str) -> RayTrainResult:
    import keras

    with result.checkpoint.as_directory() as d:
        model_bytes = Path(d, MODEL_KERAS).read_bytes()
        state = json.loads(Path(d, STATE_FILE).read_text())
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, MODEL_KERAS)
        path.write_bytes(model_bytes)
        model = keras.models.load_model(path)
    metrics = model.evaluate(splits.x_test, splits.y_test, batch_size=256, verbose=0, return_dict=True)
    test_metrics = test_metrics_of(model, splits, metrics)
    n_train = len(splits.x_train) - n_val
    rows_per_worker = n_train // workers
    history = {k: [float(v) for v in vals] for k, vals in state["history"].items()}
    counts = {"n_train": n_train, "n_val": n_val, "n_test": len(splits.x_test)}
    info = train_record(spec, splits, model, counts=counts, history=history, epochs_run=int(state["epoch"]),
                        seconds=seconds, test_metrics=test_metrics, extra_versions={"ray": _ray_version()})
    info |= {
        "engine": "ray",
        "address": address,
        "workers": workers,
        "rows_per_worker": {"train": rows_per_worker, "val": n_val // workers,
                            "train_dropped": n_train - rows_per_worker * workers},
        "restarts": len(state["resumed_from_epochs"]),
        "resumed_from_epochs": list(state["resumed_from_epochs"]),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / info["spec_file"], spec.path.read_bytes())
    with atomic_path(run_dir / MODEL_KERAS) as tmp:
        Path(tmp).write_bytes(model_bytes)
    atomic_write_json(run_dir / TRAIN_FILE, info)
    return RayTrainResult(
        run_dir=run_dir, spec_name=spec.name, task=splits.task, model_path=run_dir / MODEL_KERAS,
        test_metrics=test_metrics, history=history, epochs_run=info["epochs_run"], epochs_requested=spec.fit.epochs,
        seconds=seconds, parameters=info["parameters"], data_fingerprint=splits.fingerprint, n_train=n_train,
        n_test=len(splits.x_test), synthetic_data=splits.synthetic, notes=splits.notes, workers=workers,
        rows_per_worker=rows_per_worker, restarts=info["restarts"],
        resumed_from_epochs=tuple(info["resumed_from_epochs"]), address=address)


def _ray_version() -> str:
    import ray

    return ray.__version__
