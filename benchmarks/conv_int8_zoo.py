"""Conv nets with a one-channel input, int8 on onnxruntime vs LiteRT: the keras-io MNIST convnet and FCN time series.

Both models of benchmarks/real_zoo.py (same Keras code), trained a few epochs on LEARNABLE synthetic data (class
templates + noise, so the float model is confident and the gate's accuracy check means something), written as run
directories under ``benchmarks/work/conv_int8_zoo/<model>/``, exported with ``seqdeploy.export.convert.export_onnx``
and quantized with ``seqdeploy.quantize.core.quantize_model`` (the gate: accuracy on the test rows, measured
speedup at batch 1 and 32). Timed in one process, one thread, interleaved rounds (median us per call):

* ``deployed``: the bundle's deployment artifact through ``Predictor.from_bundle(run, graph="model").run``
* ``ort fp32``: ``model.onnx``; ``int8 plain``: the int8-static recipe with ``unfold_input_conv`` and
  ``pad_input_channels`` off (what the recipe built before them)
* ``litert fp32 / int8-dynamic / int8``: ``TFLiteConverter.from_keras_model`` (``seqdeploy.bench.convert_tflite``),
  ``ai_edge_litert`` Interpreter, XNNPACK, one thread

    .venv/bin/python benchmarks/conv_int8_zoo.py [--only mnist_convnet] [--rounds 41] [--fresh]
    taskset -c 0 .venv/bin/python benchmarks/conv_int8_zoo.py --lock /tmp/seqdeploy-timing.lock

Measured (shared 2-core AMD EPYC, AVX-512 VNNI, onnxruntime 1.32, TF 2.21, ``taskset -c 0``, other jobs on the
machine): see the table this prints; the numbers of the change that added it are in its commit message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / "work" / "conv_int8_zoo"

from int8_mlp import _lock, interleaved, machine  # noqa: E402
from real_zoo import fcn_timeseries, mnist_convnet  # noqa: E402,F401 - the zoo's keras-io models


def templates(name: str, rng: np.random.Generator) -> np.ndarray:
    if name == "mnist_convnet":  # 10 blocky binary 28x28 glyphs
        return (rng.uniform(0, 1, (10, 7, 7, 1)) > 0.5).astype(np.float32).repeat(4, 1).repeat(4, 2)
    t = np.linspace(0, 1, 500)
    return np.stack([np.sin(2 * np.pi * 3 * t), np.sign(np.sin(2 * np.pi * 5 * t)) * 0.8])[:, :, None]


def sample(name: str, rng: np.random.Generator, n: int, tpl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, len(tpl), n)
    if name == "mnist_convnet":  # glyph + uniform noise, scaled to [0, 1] as keras-io does
        x = tpl[y] * 0.6 + rng.uniform(0, 0.4, (n, 28, 28, 1))
    else:
        x = tpl[y] + 0.7 * rng.standard_normal((n, 500, 1))
    return x.astype(np.float32), y


MODELS = {"mnist_convnet": (mnist_convnet, 2), "fcn_timeseries": (fcn_timeseries, 8)}  # builder, epochs


def prepare(name: str, run: Path, fresh: bool) -> dict:
    """Train (unless cached), export, quantize (gated), write the bundle; return the gate's verdicts."""
    import keras

    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.quantize.core import quantize_model
    from seqdeploy.quantize.settings import QuantizeSettings

    build, epochs = MODELS[name]
    run.mkdir(parents=True, exist_ok=True)
    if fresh or not (run / "model.keras").is_file():
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        tpl = templates(name, rng)
        model = build()
        model.compile("adam", "sparse_categorical_crossentropy")
        x, y = sample(name, rng, 3200, tpl)
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
        model.save(run / "model.keras")
        x_train, _ = sample(name, rng, 512, tpl)
        x_test, y_test = sample(name, rng, 512, tpl)
        np.savez(run / "data.npz", x_train=x_train, x_test=x_test, y_test=y_test)
        n_out = int(model.outputs[0].shape[-1])
        (run / "train.json").write_text(json.dumps({
            "spec_name": name, "task": "multiclass", "labels": [f"class_{i}" for i in range(n_out)],
            "target_name": None, "seed": 0,
            "input": {"name": model.inputs[0].name, "shape": [None, *[int(d) for d in model.inputs[0].shape[1:]]],
                      "dtype": "float32"},
            "preprocessing": {"kind": "none"}, "versions": {"keras": keras.__version__}}))
    export_onnx(run)
    d = np.load(run / "data.npz")
    iname = json.loads((run / "train.json").read_text())["input"]["name"]
    q = quantize_model(run / "model.onnx", out_dir=run, calibration_inputs={iname: d["x_train"]},
                       test_inputs={iname: d["x_test"]}, test_targets=d["y_test"], task="multiclass",
                       settings=QuantizeSettings(latency_batch_sizes=(1, 32), intra_op_num_threads=1))
    write_bundle_manifest(run)
    return {"chosen": q.chosen, "candidates": [{"recipe": c.recipe, "qualified": c.qualified, "reason": c.reason}
                                               for c in q.candidates]}


def plain_int8(run: Path) -> Path:
    """The int8-static recipe without the one-channel Conv rewrites (for comparison; not a bundle artifact)."""
    import onnx

    from seqdeploy.quantize import QuantizeSettings
    from seqdeploy.quantize.graph import preprocess
    from seqdeploy.quantize.recipes import get_recipe

    out = run / "compare" / "int8-plain.onnx"
    out.parent.mkdir(exist_ok=True)
    d = np.load(run / "data.npz")
    iname = onnx.load(str(run / "model.onnx"), load_external_data=False).graph.input[0].name
    src, _ = preprocess(run / "model.onnx", out.parent / "preprocessed.onnx")
    settings = replace(QuantizeSettings().static_settings(), unfold_input_conv=False, pad_input_channels=False)
    get_recipe("int8-static").build(src, out, settings, {iname: d["x_train"]})
    return out


def ort_call(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from seqdeploy.runtime.fastpath import FastSession
    from seqdeploy.runtime.predictor import make_session
    from seqdeploy.runtime.session import SessionSettings

    fs = FastSession(make_session(path, settings=SessionSettings(threads=1)))
    name = fs.input_names[0]
    return lambda x: fs.run({name: x})[0]


def deployed_call(run: Path) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    from seqdeploy.runtime import Predictor

    p = Predictor.from_bundle(run, graph="model-ready", threads=1)
    name, out = p.input_names[0], p.output_names[0]
    return p.info.artifact, lambda x: p.run({name: x})[out]


def litert_calls(run: Path, rep: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    from seqdeploy.bench import convert_tflite

    models, errors = convert_tflite(run / "model.keras", ("fp32", "int8-dynamic", "int8"), rep[:200])
    for p, e in errors.items():
        print(f"LiteRT {p} conversion failed: {e}", file=sys.stderr)
    calls = {}
    for p, m in models.items():
        cache: dict[int, Any] = {}

        def call(x: np.ndarray, content: bytes = m.content, cache: dict = cache) -> np.ndarray:
            it = cache.get(x.shape[0])
            if it is None:
                it = Interpreter(model_content=content, num_threads=1)
                it.resize_tensor_input(it.get_input_details()[0]["index"], x.shape)
                it.allocate_tensors()
                cache[x.shape[0]] = it
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            return it.get_tensor(it.get_output_details()[0]["index"])
        calls[f"litert {p}"] = call
    return calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(MODELS))
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--slice", type=float, default=0.01, help="seconds per runner per round")
    ap.add_argument("--fresh", action="store_true", help="retrain the models")
    ap.add_argument("--lock", default=None, help="flock this file while timing")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    print(machine())
    for name in args.only.split(","):
        run = WORK / name
        verdict = prepare(name, run, args.fresh)
        d = np.load(run / "data.npz")
        xte, yte = d["x_test"], d["y_test"]
        artifact, deployed = deployed_call(run)
        calls = {f"deployed ({artifact})": deployed, "ort fp32": ort_call(run / "model.onnx"),
                 "int8 plain": ort_call(plain_int8(run)), **litert_calls(run, d["x_train"])}
        ref = calls["ort fp32"](xte)
        acc = {}
        for k, f in calls.items():
            out = np.concatenate([f(np.ascontiguousarray(xte[i:i + 32])) for i in range(0, len(xte), 32)])
            acc[k] = (float(np.mean(out.argmax(1) == yte)), float(np.mean(out.argmax(1) == ref.argmax(1))))
        res = {}
        with _lock(args.lock):
            for b in batches:
                xb = np.ascontiguousarray(np.resize(xte, (b,) + xte.shape[1:]))
                res[b] = interleaved({k: (lambda f=f: f(xb)) for k, f in calls.items()}, args.rounds, args.slice)
        print(f"\n{name}: gate {verdict['chosen'] or 'kept float32'}; "
              + "; ".join(f"{c['recipe']}: {c['reason']}" for c in verdict["candidates"]))
        print("| runner | accuracy | agrees with fp32 | " + " | ".join(f"b{b} us (vs LiteRT int8)" for b in batches) + " |")
        print("|" + "---|" * (3 + len(batches)))
        for k in calls:
            cells = [f"{res[b][k]:.1f} ({res[b]['litert int8'] / res[b][k]:.2f}x)" if "litert int8" in res[b]
                     else f"{res[b][k]:.1f}" for b in batches]
            print(f"| {k} | {acc[k][0]:.4f} | {acc[k][1]:.4f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
