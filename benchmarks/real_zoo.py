"""Real-model zoo: keras-io architectures at realistic small sizes, the deployed artifact side by side with
LiteRT, OpenVINO and Keras; writes benchmarks/REAL_ZOO.md and benchmarks/real_zoo.png.

Usage:
    .venv/bin/python benchmarks/real_zoo.py                      # every model, batch 1 and 32, 1 and 2 threads
    .venv/bin/python benchmarks/real_zoo.py --only fcn_timeseries,mnist_convnet --threads 1 --duration 2
    .venv/bin/python benchmarks/real_zoo.py --render-only         # rewrite REAL_ZOO.md from the saved bench.json

The models (keras-io examples, Keras code; no downloads): an Xception-like CNN with residual separable
convs on 48x48x3, the FCN time-series classifier (Conv1D+BN x3, GAP) on 500 steps, the Transformer
classifier (MultiHeadAttention, custom TokenAndPositionEmbedding/TransformerBlock, 200 ids), a 2-layer
BiLSTM on 200 ids, a GRU forecaster (120 steps x 7 features), the MNIST convnet and a FeatureSpace-like
numeric MLP. Each is trained a few steps on synthetic data; the quantize gate's task targets are the
float model's own answers on the test rows (so its metric drop is the int8 model's disagreement).

Each run directory (benchmarks/work/real_zoo/NAME) is a bundle: model.keras, train.json, model.onnx from
seqdeploy.export.convert.export_onnx (the graph fixes and the graph optimization included), quantize.json
from seqdeploy.quantize (gated int8 per model) and manifest.json. Runners: the deployed artifact through
Predictor.run (``deployed:*``), the float32 deployed graph too when int8 was chosen, ORT fp32
(session.run), LiteRT fp32 / int8-dynamic / int8 (from_keras_model, ai_edge_litert Interpreter),
OpenVINO (the bundle's float32 ONNX, LATENCY hint) and Keras's direct call, timed by seqdeploy.bench's
harness: answers checked against Keras first, interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "real_zoo"
REPORT = HERE / "REAL_ZOO.md"
PLOT = HERE / "real_zoo.png"
LAYERS = HERE / "real_zoo_layers.py"
BEFORE = HERE / "work" / "real_zoo_before"  # bench.json/prepare.json of a run without the graph cleanup (--save-before)
PEER_FAMILIES = ("tflite", "openvino")


@dataclass(frozen=True)
class ZooModel:
    name: str
    what: str
    build: Callable[[], Any]
    inputs: Callable[[np.random.Generator, int], np.ndarray]
    task: str  # "multiclass" | "binary" | "regression"
    input_name: str


# ----------------------------------------------------------------------------- the models (keras-io code)


def xception_48() -> Any:
    """keras-io "Image classification from scratch" (make_model), entry flow narrowed for 48x48x3, 5 classes."""
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous = x
    for size in (64, 128):
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(size, 1, strides=2, padding="same")(previous)
        x = layers.add([x, residual])
        previous = x
    x = layers.SeparableConv2D(256, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.25)(x)
    outputs = layers.Dense(5, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="xception_48")


def fcn_timeseries() -> Any:
    """keras-io "Timeseries classification from scratch" (FordA): Conv1D(64,3)+BN+ReLU x3, GAP, softmax 2."""
    import keras
    from keras import layers

    inp = keras.Input((500, 1), name="series")
    x = inp
    for _ in range(3):
        x = layers.Conv1D(64, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling1D()(x)
    out = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out, name="fcn_timeseries")


def transformer_text() -> Any:
    """keras-io "Text classification with Transformer": vocab 20000, 200 ids, embed 32, 2 heads, ff 32."""
    import keras
    from keras import layers

    import runpy

    ns = runpy.run_path(str(LAYERS))
    inp = keras.Input((200,), dtype="int32", name="tokens")
    x = ns["TokenAndPositionEmbedding"](200, 20000, 32)(inp)
    x = ns["TransformerBlock"](32, 2, 32)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    out = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out, name="transformer_text")


def bilstm_ids() -> Any:
    """keras-io "Bidirectional LSTM on IMDB": Embedding(20000,128), BiLSTM(64) x2, sigmoid; 200 ids."""
    import keras
    from keras import layers

    inp = keras.Input((200,), dtype="int32", name="tokens")
    x = layers.Embedding(20000, 128)(inp)
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(64))(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out, name="bilstm_ids")


def gru_forecaster() -> Any:
    """keras-io "Timeseries forecasting for weather prediction" with a GRU(32): 120 steps x 7 features -> 1."""
    import keras
    from keras import layers

    inp = keras.Input((120, 7), name="series")
    x = layers.GRU(32)(inp)
    out = layers.Dense(1)(x)
    return keras.Model(inp, out, name="gru_forecaster")


def mnist_convnet() -> Any:
    """keras-io "Simple MNIST convnet": Conv2D(32)+pool, Conv2D(64)+pool, Flatten, Dropout, softmax 10."""
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, kernel_size=(3, 3), activation="relu")(inp)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Conv2D(64, kernel_size=(3, 3), activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out, name="mnist_convnet")


def featurespace_mlp() -> Any:
    """keras-io "Structured data classification with FeatureSpace" after encoding: 41 numeric features
    (normalized numbers + one-hot/hashed categories), Dense(32, relu), Dropout(0.5), sigmoid."""
    import keras
    from keras import layers

    inp = keras.Input((41,), name="features")
    x = layers.Dense(32, activation="relu")(inp)
    x = layers.Dropout(0.5)(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out, name="featurespace_mlp")


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(1, 20000, size=(n, 200)).astype(np.int32)


ZOO = (
    ZooModel("xception_48", "Xception-like CNN, residual separable convs, 48x48x3", xception_48,
             lambda rng, n: rng.uniform(0, 255, (n, 48, 48, 3)).astype(np.float32), "multiclass", "image"),
    ZooModel("fcn_timeseries", "FCN time-series (Conv1D+BN x3, GAP), 500 steps", fcn_timeseries,
             lambda rng, n: rng.standard_normal((n, 500, 1)).astype(np.float32), "multiclass", "series"),
    ZooModel("transformer_text", "Transformer classifier (MHA, LayerNorm, custom embedding), 200 ids",
             transformer_text, _ids, "multiclass", "tokens"),
    ZooModel("bilstm_ids", "BiLSTM(64) x2 on 200 ids", bilstm_ids, _ids, "binary", "tokens"),
    ZooModel("gru_forecaster", "GRU(32) forecaster, 120 steps x 7", gru_forecaster,
             lambda rng, n: rng.standard_normal((n, 120, 7)).astype(np.float32), "regression", "series"),
    ZooModel("mnist_convnet", "MNIST convnet (keras-io sizes)", mnist_convnet,
             lambda rng, n: rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32), "multiclass", "image"),
    ZooModel("featurespace_mlp", "FeatureSpace-like numeric MLP (41 -> 32 -> 1)", featurespace_mlp,
             lambda rng, n: rng.standard_normal((n, 41)).astype(np.float32), "binary", "features"),
)


# ----------------------------------------------------------------------------- build: train, export, quantize


def _targets(model: Any, task: str, x: np.ndarray) -> np.ndarray:
    """The float model's own answers: labels (classification) or values (regression)."""
    p = np.asarray(model.predict(x, batch_size=64, verbose=0))
    if task == "multiclass":
        return p.argmax(-1)
    if task == "binary":
        return (p.reshape(-1) > 0.5).astype(np.int64)
    return p.reshape(len(p), -1)[:, 0]


def prepare(z: ZooModel, run: Path, *, steps: int, quantize: bool, fresh: bool, reexport: bool,
            say: Callable[[str], None]) -> dict:
    """Train a few steps on synthetic data (unless model.keras is there), export, quantize (gated), write the
    bundle; return what was done. ``reexport`` keeps the trained model and its data, redoing the rest."""
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.export.convert import export_onnx

    done: dict[str, Any] = {}
    trained = (run / "model.keras").is_file() and (run / "data.npz").is_file() and (run / "train.json").is_file()
    if not fresh and not reexport and trained and (run / "manifest.json").is_file():
        return json.loads((run / "prepare.json").read_text()) if (run / "prepare.json").is_file() else {"cached": True}
    run.mkdir(parents=True, exist_ok=True)
    keep = {"model.keras", "data.npz", "train.json", "litert.json"} if (trained and not fresh) else set()
    for old in run.glob("*"):
        if old.is_file() and old.name not in keep and not (keep and old.name.startswith("litert.")):
            old.unlink()
    if not keep:
        train_model(z, run, steps, done)
    say(f"{z.name}: export")
    t0 = time.perf_counter()
    exp = export_onnx(run)
    done["export_s"] = round(time.perf_counter() - t0, 1)
    done["onnx_nodes"] = sum(exp.op_counts.values())
    done["ops"] = dict(sorted(exp.op_counts.items(), key=lambda kv: -kv[1]))
    d = np.load(run / "data.npz")
    x_train, x_test, y_test = d["x_train"], d["x_test"], d["y_test"]
    if quantize:
        from seqdeploy.quantize.core import quantize_model
        from seqdeploy.quantize.settings import QuantizeSettings

        say(f"{z.name}: quantize (gated)")
        t0 = time.perf_counter()
        try:
            q = quantize_model(run / "model.onnx", out_dir=run, calibration_inputs={z.input_name: x_train},
                               test_inputs={z.input_name: x_test}, test_targets=y_test, task=z.task,
                               settings=QuantizeSettings(latency_batch_sizes=(1, 32), intra_op_num_threads=1))
            done["quantize"] = {"chosen": q.chosen, "candidates": [
                {"recipe": c.recipe, "accepted": c.chosen, "qualified": c.qualified, "reason": c.reason,
                 "metric_drop": c.metric_drop, "speedup": {lat.batch_size: lat.speedup for lat in c.latency}}
                for c in q.candidates],
                "skipped": [str(s) for s in getattr(q, "skipped", ())]}
        except Exception as exc:  # report it; the float32 artifact stays deployed
            done["quantize"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        done["quantize_s"] = round(time.perf_counter() - t0, 1)
    write_bundle_manifest(run)
    (run / "prepare.json").write_text(json.dumps(done, default=str))
    return done


def train_model(z: ZooModel, run: Path, steps: int, done: dict) -> None:
    """Build, train ``steps`` batches on synthetic data, save model.keras, data.npz and train.json."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = z.build()
    loss = {"multiclass": "sparse_categorical_crossentropy", "binary": "binary_crossentropy",
            "regression": "mse"}[z.task]
    model.compile("adam", loss)
    n_out = int(model.outputs[0].shape[-1])
    x_fit = z.inputs(rng, 32 * steps)
    y_fit = (rng.integers(0, n_out, len(x_fit)) if z.task == "multiclass" else
             rng.integers(0, 2, len(x_fit)).astype(np.float32) if z.task == "binary" else
             rng.standard_normal(len(x_fit)).astype(np.float32))
    t0 = time.perf_counter()
    model.fit(x_fit, y_fit, batch_size=32, epochs=1, verbose=0)
    done["train_s"] = round(time.perf_counter() - t0, 1)
    model.save(run / "model.keras")
    x_train, x_test = z.inputs(rng, 256), z.inputs(rng, 256)
    y_test = _targets(model, z.task, x_test)
    np.savez(run / "data.npz", x_train=x_train, x_test=x_test, y_test=y_test)
    shape = [None, *[int(d) for d in model.inputs[0].shape[1:]]]
    labels = None if z.task == "regression" else ([f"class_{i}" for i in range(n_out)] if z.task == "multiclass"
                                                  else ["negative", "positive"])
    (run / "train.json").write_text(json.dumps({
        "spec_name": z.name, "task": z.task, "labels": labels, "target_name": None, "seed": 0,
        "input": {"name": z.input_name, "shape": shape, "dtype": str(x_test.dtype)},
        "preprocessing": {"kind": "none"}, "versions": {"keras": keras.__version__}}))


# ----------------------------------------------------------------------------- bench


class CapiFloor:
    """The floor of an onnxruntime call: a C-level ``RunWithBinding`` of the same graph (seqdeploy.runtime.ort_capi,
    buffers bound once; per call only the input copy in, the run and the output copy out)."""

    family = "floor"
    deployed = False
    threads_apply = True

    def __init__(self, path: Path, precision: str):
        self.path, self.precision = path, precision
        self.name = f"capi-floor:{precision}"
        self.artifact, self.artifact_bytes = str(path), path.stat().st_size
        self.notes = ["C API RunWithBinding on the deployed graph (seqdeploy.runtime.ort_capi): the per-call floor"]
        self._cs: Any = None
        self._bound: Any = None

    def prepare(self, threads: int) -> None:
        from seqdeploy.runtime.ort_capi import CapiSession

        self._cs = CapiSession(self.path.read_bytes(), intra_op_num_threads=threads)
        self._batch = None

    def set_batch(self, batch: int) -> str | None:
        self._bound, self._batch = None, batch
        return None

    def infer(self, feeds: Any) -> list[np.ndarray]:
        xs = [np.ascontiguousarray(feeds[n]).astype(t, copy=False) for n, t in zip(self._cs.input_names, self._cs.input_types)]
        if self._bound is None:
            outs = self._cs.run(xs)
            self._ins = [np.empty_like(x) for x in xs]
            self._outs = [np.empty_like(o) for o in outs]
            self._bound = self._cs.bind(self._ins, self._outs)
            return outs
        for buf, x in zip(self._ins, xs):
            np.copyto(buf, x)
        self._bound()
        return [o.copy() for o in self._outs]

    def close(self) -> None:
        self._bound = None
        if self._cs is not None:
            self._cs.close()
        self._cs = None


def litert_models(run: Path, rep: np.ndarray, say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, str]]:
    """LiteRT conversions of run/model.keras, cached beside it (litert.json + litert.PRECISION.tflite)."""
    from seqdeploy.atomic import sha256_file
    from seqdeploy.bench.runners.tflite import TfliteModel, convert_tflite

    key = sha256_file(run / "model.keras")
    meta_path = run / "litert.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("keras_sha256") == key:
            models = {p: TfliteModel((run / f"litert.{p}.tflite").read_bytes(), p, m["fixed_batch"], m["convert_s"],
                                     tuple(m["notes"])) for p, m in meta["models"].items()}
            return models, meta["errors"]
    say(f"{run.name}: LiteRT conversion (fp32, int8-dynamic, int8)")
    models, errors = convert_tflite(run / "model.keras", ("fp32", "int8-dynamic", "int8"), rep, preload=(LAYERS,))
    for p, m in models.items():
        (run / f"litert.{p}.tflite").write_bytes(m.content)
    meta_path.write_text(json.dumps({"keras_sha256": key, "errors": errors, "models": {
        p: {"fixed_batch": m.fixed_batch, "convert_s": m.convert_s, "notes": list(m.notes)} for p, m in models.items()}}))
    return models, errors


def bench_one(z: ZooModel, run: Path, *, batches: tuple[int, ...], threads: tuple[int, ...], duration: float,
              say: Callable[[str], None]) -> dict:
    from seqdeploy.bench import StopRule, run_bench
    from seqdeploy.bench.discover import BenchData, resolve_target
    from seqdeploy.bench.runners.keras import KerasRunner, KerasSource
    from seqdeploy.bench.runners.onnxruntime import DeployedRunner, OrtRunner
    from seqdeploy.bench.runners.openvino import OpenvinoRunner
    from seqdeploy.bench.runners.tflite import TfliteRunner

    d = np.load(run / "data.npz")
    data = BenchData("synthetic", z.input_name, d["x_test"], d["x_train"])
    tgt = resolve_target(run)
    dep_prec, dep_path = next((p, a) for p, a in tgt.artifacts if tgt.deployed and a.resolve() == tgt.deployed.resolve())
    runners: list[Any] = [DeployedRunner(dep_path, dep_prec, bundle=run), CapiFloor(dep_path, dep_prec)]
    if dep_prec != "fp32":
        runners.append(DeployedRunner(run / "model.onnx", "fp32", bundle=run))
    runners += [OrtRunner(run / "model.onnx", "fp32"), KerasRunner(KerasSource(run / "model.keras"), "direct"),
                OpenvinoRunner(run / "model.onnx")]
    models, errors = litert_models(run, d["x_train"][:200], say)
    runners += [TfliteRunner(models[p]) for p in ("fp32", "int8-dynamic", "int8") if p in models]
    say(f"{z.name}: bench {len(runners)} runners")
    res = run_bench(run, batches=batches, threads=threads, runners=runners, data=data,
                    rule=StopRule(duration_s=duration, warmup_s=0.2))
    out = res.to_json()
    out["litert_errors"] = errors
    (run / "zoo_bench.json").write_text(json.dumps(out, default=str))
    return out


# ----------------------------------------------------------------------------- report


def _fmt(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us" if us >= 100 else f"{us:.1f} us"


def summarize(bench: dict, batch: int, threads: int) -> dict:
    """p50 per runner, the best agreeing peer, and the deployed/peer ratio at (batch, threads)."""
    fam = {r["name"]: r["family"] for r in bench["runners"]}
    rows = [m for m in bench["results"] if m["batch"] == batch and m["threads"] == threads]
    ok = {m["runner"]: m["latency"]["p50_us"] for m in rows if m["status"] == "ok"}
    bad = {m["runner"]: m["reason"] for m in rows if m["status"] != "ok"}
    deployed = next((r["name"] for r in bench["runners"] if r["deployed"]), None)
    floor = next((v for n, v in ok.items() if fam.get(n) == "floor"), None)
    dep_fp32 = "deployed:fp32" if "deployed:fp32" in ok and deployed != "deployed:fp32" else None
    peers = {n: v for n, v in ok.items() if fam.get(n) in PEER_FAMILIES}
    best = min(peers, key=peers.get) if peers else None

    def best_of(family: str) -> tuple[str | None, float | None]:
        mine = {n: v for n, v in ok.items() if fam.get(n) == family}
        n = min(mine, key=mine.get) if mine else None
        return n, (mine[n] if n else None)

    return {"deployed": deployed, "deployed_us": ok.get(deployed), "deployed_fp32_us": ok.get(dep_fp32) if dep_fp32 else None,
            "ort_us": ok.get("ort:fp32"), "floor_us": floor, "keras_us": ok.get("keras:direct"), "litert": best_of("tflite"),
            "openvino": best_of("openvino"), "best_peer": best, "best_peer_us": peers.get(best) if best else None,
            "ratio": (peers[best] / ok[deployed]) if best and ok.get(deployed) else None, "errors": bad,
            "floor_ratio": (peers[best] / floor) if best and floor else None}


def render(names: list[str], batches: tuple[int, ...], threads: tuple[int, ...], cpu: dict, versions: dict,
           wall_s: float | None) -> str:
    benches = {n: json.loads((WORK / n / "zoo_bench.json").read_text()) for n in names if (WORK / n / "zoo_bench.json").is_file()}
    preps = {n: json.loads((WORK / n / "prepare.json").read_text()) for n in names if (WORK / n / "prepare.json").is_file()}
    whats = {z.name: z.what for z in ZOO}
    flags = ", ".join(k for k, v in cpu.get("flags", {}).items() if v)
    lines = ["# Real-model zoo: the deployed artifact vs LiteRT, OpenVINO and Keras", "",
             "Regenerated by `benchmarks/real_zoo.py` (do not edit). keras-io architectures at realistic small sizes, "
             "trained a few steps on synthetic data; see the script's docstring for the models and runners.", "",
             f"- CPU (as `python -m seqdeploy doctor` reports it): {cpu.get('model')}, {cpu.get('logical_cores')} logical cores; "
             f"flags: {flags}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
             "- `deployed` = the bundle's deployed artifact (the quantize gate's choice, else model.onnx) through "
             "`Predictor.run`; `deployed fp32` = the float32 graph the same way when int8 was chosen; `ORT fp32` = "
             "plain `session.run`; LiteRT best of fp32 / int8-dynamic / int8 (from_keras_model, ai_edge_litert "
             "Interpreter); OpenVINO on the bundle's float32 ONNX (LATENCY hint, static batch); Keras = "
             "`model(x, training=False)`.",
             "- every runner's answers are checked against Keras on the same inputs before timing (fp32: 1e-3 x output "
             "scale + 1e-4; int8: 0.25 x scale + 0.01); a runner that disagrees is listed under the table, not timed.",
             "- `C API floor` = the deployed graph through onnxruntime's C API (`RunWithBinding`, buffers bound once): "
             "what one onnxruntime call costs at least; `peer/floor` says whether the graph itself could win "
             "where the Python per-call path does not.",
             "- p50 of interleaved rounds (seqdeploy.bench.timing.run_interleaved); `peer/deployed` = best agreeing "
             "peer's p50 / deployed p50 (>= 1.00 means the deployed artifact is at least as fast: the goal)."
             + (f" Wall time {wall_s / 60:.1f} min." if wall_s else ""),
             "- the machine is a shared 2-core VM: batch-32 calls (tens of ms) get few samples per runner in the "
             "time budget and the load of other work moves them between runs (see the before/after table); read "
             "batch 1 first and batch 32 as indicative.", ""]
    goal_lines = []
    for th in threads:
        for b in batches:
            rs = [summarize(benches[n], b, th)["ratio"] for n in names if n in benches]
            met = [r for r in rs if r is not None and r >= 1.0]
            goal_lines.append(f"batch {b}/{th} thread{'s' if th > 1 else ''}: {len(met)} of {len([r for r in rs if r is not None])}")
    lines += ["**Goal** (deployed no slower than the best agreeing peer), models meeting it: " + "; ".join(goal_lines) + ".", ""]
    for th in threads:
        for b in batches:
            lines += [f"## batch {b}, {th} thread{'s' if th > 1 else ''}", "",
                      "| model | deployed | deployed fp32 | ORT fp32 | C API floor | LiteRT best | OpenVINO | Keras | peer/deployed | peer/floor | goal |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            notes = []
            for n in names:
                if n not in benches:
                    lines.append(f"| {n} | not measured | | | | | | | | | |")
                    continue
                s = summarize(benches[n], b, th)
                lit_n, lit_v = s["litert"]
                ov_n, ov_v = s["openvino"]
                ratio = s["ratio"]
                goal = "-" if ratio is None else ("met" if ratio >= 1.0 else "missed")
                dep = f"{_fmt(s['deployed_us'])} ({(s['deployed'] or '').split(':')[-1]})"
                lit = _fmt(lit_v) + (" (" + lit_n.split(":")[-1] + ")" if lit_n else "")
                fr = s["floor_ratio"]
                lines.append(f"| {n} | {dep} | {_fmt(s['deployed_fp32_us'])} | {_fmt(s['ort_us'])} | {_fmt(s['floor_us'])} | "
                             f"{lit} | {_fmt(ov_v)} | "
                             f"{_fmt(s['keras_us'])} | {f'{ratio:.2f}x' if ratio else '-'} | {f'{fr:.2f}x' if fr else '-'} | {goal} |")
                for r, why in s["errors"].items():
                    notes.append(f"- {n} `{r}`: {why[:240]}")
                if benches[n].get("litert_errors") and th == threads[0] and b == batches[0]:
                    for p, why in benches[n]["litert_errors"].items():
                        notes.append(f"- {n} LiteRT {p} not converted: {why[:240]}")
            lines += [""] + (["Not timed (error or disagreement with Keras):", ""] + notes + [""] if notes else [])
    before = {n: (json.loads((BEFORE / n / "zoo_bench.json").read_text()), json.loads((BEFORE / n / "prepare.json").read_text()))
              for n in names if (BEFORE / n / "zoo_bench.json").is_file() and (BEFORE / n / "prepare.json").is_file()}
    if before:
        th = threads[0]
        note = BEFORE / "NOTE.md"  # what the saved 'before' run was, when it was not the plain export
        what = (note.read_text().strip() if note.is_file()
                else "The same trained models exported without and with the cleanup")
        lines += ["## The graph cleanup (seqdeploy/export/optimize.py): before and after", "",
                  f"{what}, 1 thread, separate runs (p50; "
                  f"machine load differs between runs: compare within a row with care).", "",
                  "| model | nodes before | nodes after | ORT fp32 b1 before | after | ORT fp32 b32 before | after "
                  "| deployed b1 before | after | deployed b32 before | after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, (bb, bp) in before.items():
            if n not in benches:
                continue
            row = [n, str(bp.get("onnx_nodes", "-")), str(preps.get(n, {}).get("onnx_nodes", "-"))]
            for key in ("ort_us", "deployed_us"):
                for b in batches:
                    row += [_fmt(summarize(bb, b, th)[key]), _fmt(summarize(benches[n], b, th)[key])]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Models, graphs and the int8 gate", "",
              "| model | what | ONNX nodes | top ops | int8 gate chose | candidates |", "|---|---|---|---|---|---|"]
    for n in names:
        p = preps.get(n, {})
        ops = ", ".join(f"{k} {v}" for k, v in list(p.get("ops", {}).items())[:6])
        q = p.get("quantize", {})
        cands = "; ".join(f"{c['recipe']}: {'chosen' if c.get('accepted') else 'qualified' if c.get('qualified') else 'rejected'}"
                          + f" ({str(c.get('reason'))[:110]})" for c in q.get("candidates", [])) or q.get("error", "-")
        lines.append(f"| {n} | {whats.get(n, '')} | {p.get('onnx_nodes', '-')} | {ops} | {q.get('chosen') or 'float32 kept'} | {cands} |")
    lines += ["", f"![peer/deployed p50 ratio per model]({PLOT.name})", ""]
    return "\n".join(lines)


def plot(names: list[str], batches: tuple[int, ...], threads: tuple[int, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = {n: json.loads((WORK / n / "zoo_bench.json").read_text()) for n in names if (WORK / n / "zoo_bench.json").is_file()}
    names = [n for n in names if n in benches]
    combos = [(b, th) for th in threads for b in batches]
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(names)), 4.5))
    w = 0.8 / max(1, len(combos))
    for k, (b, th) in enumerate(combos):
        vals = [summarize(benches[n], b, th)["ratio"] or np.nan for n in names]
        ax.bar(np.arange(len(names)) + k * w - 0.4 + w / 2, vals, w, label=f"batch {b}, {th} thread{'s' if th > 1 else ''}")
    ax.axhline(1.0, color="k", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel("best agreeing peer p50 / deployed p50")
    ax.set_title("Deployed artifact vs best of LiteRT / OpenVINO (>= 1: deployed at least as fast)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--duration", type=float, default=3.0, help="timing budget per (batch, threads), seconds")
    ap.add_argument("--steps", type=int, default=8, help="training steps on synthetic data")
    ap.add_argument("--no-quantize", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="rebuild the run directories (train again)")
    ap.add_argument("--reexport", action="store_true", help="keep the trained models, export and quantize again")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--save-before", action="store_true",
                    help="copy this run's bench.json/prepare.json to work/real_zoo_before (the 'before' columns)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from seqdeploy.bench.harness import cpu_info, versions

    batches = tuple(int(b) for b in args.batch.split(","))
    threads = tuple(int(t) for t in args.threads.split(","))
    names = [z.name for z in ZOO]
    if args.only:
        wanted = args.only.split(",")
        bad = [w for w in wanted if w not in names]
        if bad:
            ap.error(f"unknown model(s) {bad} (expected some of {names})")
        names = wanted
    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    t0 = time.perf_counter()
    if not args.render_only:
        import runpy

        runpy.run_path(str(LAYERS))  # register the custom layers before any model.keras loads
        for z in ZOO:
            if z.name not in names:
                continue
            run = WORK / z.name
            try:
                say(f"{z.name}: prepare")
                prepare(z, run, steps=args.steps, quantize=not args.no_quantize, fresh=args.fresh,
                        reexport=args.reexport, say=say)
                bench_one(z, run, batches=batches, threads=threads, duration=args.duration, say=say)
            except Exception:
                traceback.print_exc()
                say(f"{z.name}: FAILED (see the traceback)")
    all_names = [z.name for z in ZOO if (WORK / z.name / "zoo_bench.json").is_file()]
    if args.save_before:
        import shutil

        for n in all_names:
            (BEFORE / n).mkdir(parents=True, exist_ok=True)
            for f in ("zoo_bench.json", "prepare.json"):
                shutil.copy2(WORK / n / f, BEFORE / n / f)
    REPORT.write_text(render(all_names, batches, threads, cpu_info(), versions(),
                             None if args.render_only else time.perf_counter() - t0))
    plot(all_names, batches, threads)
    say(f"wrote {REPORT} and {PLOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
