"""int8 at batch 1 on the 784-1024-1024-10 MLP: onnxruntime int8 recipes vs TFLite int8 (issue 18, part 3).

Trains the zoo's digits MLP (784-1024-1024-10, ReLU, softmax; ``quantize_larger.build_models``'
recipe), exports it, builds each candidate and times it against TFLite int8 and fp32
(converted by the bench harness's ``convert_tflite``, XNNPACK) in one process:

* ``ort fp32``: ``model.onnx``
* ``int8-dynamic``: the shipped recipe with this CPU's defaults (``reduce_range`` from
  ``QuantizeSettings.effective_reduce_range``); onnxruntime fuses it into
  DynamicQuantizeMatMul, Relu, ..., Softmax
* ``int8-dynamic per-channel``
* ``int8-static``: the shipped recipe's defaults (QDQ, int8 activations, per-channel weights)
* ``qgemm u8s8``: the shipped ``int8-qgemm`` recipe (``seqdeploy.quantize.recipes.int8_qgemm``) with
  this CPU's defaults: MatMul+Add rewritten as Gemm, then static QOperator, uint8 activations,
  int8 per-tensor weights: QuantizeLinear, QGemm x3 (bias as int32, Relu absorbed by the uint8
  range), the last QGemm giving float directly, Softmax (5 nodes, the same shape as TFLite's
  int8 graph)
* ``nbits4``: weight-only MatMulNBits, 4 bits, block 256, accuracy_level 4 (int8 compute);
  only when ``onnxruntime.quantization.matmul_nbits_quantizer`` imports (it needs ``onnx_ir``)

ORT candidates run through ``seqdeploy.runtime.predictor.make_session`` + ``FastSession`` (the
Predictor's per-call path, the runtime's default settings: intra-op spinning off; at more
than one thread int8-dynamic and qgemm-u8s8 are also timed with spinning on, ``... spin``),
TFLite through ``TfliteRunner.infer`` (set_tensor/invoke/get_tensor).
Each (batch, threads) configuration times all runners in interleaved rounds of 20 ms
slices; the table shows medians over rounds (us per call) and the speed relative to
TFLite int8 (> 1 = faster than TFLite int8). Accuracy is on the test split.

``--floor`` (default on) adds, at batch 1 and 1 thread, where the gap comes from:
the same topology with tiny dims (784-16-16-10: per-call and per-node overhead only) and
one 784x1024 Dense layer (kernel vs kernel, plus one call's overhead).

    .venv/bin/python benchmarks/int8_mlp.py [--batches 1,64] [--threads 1,2] [--rounds 15]
                     [--no-floor] [--fresh] [--lock /tmp/seqdeploy-timing.lock]

``--lock FILE`` holds an exclusive ``flock`` on FILE while timing (not while training).

Measured (shared 2-core AMD EPYC, AVX2 + AVX-512 VNNI, onnxruntime 1.32, TF 2.21, three runs,
batch 1, 1 thread): TFLite int8 32.6-33.0 us; qgemm-u8s8 33.8-34.2 (0.96-0.98x); nbits4
33.8-34.0 (0.96-0.98x, but 0.45x at batch 64); int8-dynamic 35.4-35.7 (0.92-0.93x);
int8-dynamic per-channel 0.78x; int8-static (per-channel) 0.75x; all at TFLite's accuracy
(0.9778; nbits4 0.9796). At batch 64, 1 thread: qgemm-u8s8 1.03x, int8-dynamic 1.00x.
Floor: 784-16-16-10 costs 6.2-7.0 us in onnxruntime vs 2.5 us in TFLite, so ~4 us of
per-call and per-node overhead; subtracting it, onnxruntime's kernels are on par with
XNNPACK's (full MLP: ~28 vs ~30 us). Nothing reaches 1.0x at batch 1 and 1 thread.
Built through the int8-qgemm recipe (the same 5-node graph), one run, 9 rounds, 1 thread: batch 1
qgemm-u8s8 34.5 us, int8-dynamic 37.7, TFLite int8 32.8; batch 64: 606, 625, 624 us; accuracy 0.9778 for all.
Two-thread numbers depend on what else runs on the other core (TFLite int8 at batch 1
ranged 16-66 us between runs) and are not comparable across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORK = HERE / "work" / "int8_mlp"


# ---------------------------------------------------------------- building

def _train(work: Path, name: str, dims: tuple[int, ...], xtr, ytr, epochs: int, seed: int = 0):
    """A Dense stack 784-dims..., ReLU between, softmax last (no activation for a single layer); saved + exported."""
    import keras
    from keras import layers

    from quantize_larger import _export

    keras.utils.set_random_seed(seed)
    last = len(dims) - 1
    stack = [keras.Input((xtr.shape[1],))]
    for i, n in enumerate(dims):
        act = None if len(dims) == 1 else ("softmax" if i == last else "relu")
        stack.append(layers.Dense(n, activation=act, bias_initializer="random_normal" if epochs == 0 else "zeros"))
    model = keras.Sequential(stack)
    if epochs:
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(xtr, ytr, epochs=epochs, batch_size=64, verbose=0)
    model.save(work / f"{name}.keras")
    _export(model, (xtr.shape[1],), work / f"{name}.onnx")


def _nbits4(src: Path, dst: Path) -> str | None:
    try:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    except ImportError as exc:
        return f"skipped: {exc}"
    cfg = DefaultWeightOnlyQuantConfig(block_size=256, is_symmetric=True, accuracy_level=4, bits=4)
    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=256, is_symmetric=True, accuracy_level=4,
                             algo_config=cfg)
    q.process()
    q.model.save_model_to_file(str(dst))
    return None


def build(work: Path, fresh: bool, floor: bool) -> dict[str, Any]:
    """Train/export/quantize into ``work`` (reused unless ``fresh``); returns data and candidate files."""
    from quantize_larger import digits

    from seqdeploy.quantize import QuantizeSettings
    from seqdeploy.quantize.recipes import get_recipe

    work.mkdir(parents=True, exist_ok=True)
    xtr, xte, ytr, yte = digits(28, None, 0)
    specs = [("mlp", (1024, 1024, 10), 4)] + ([("tiny", (16, 16, 10), 0), ("fc1", (1024,), 0)] if floor else [])
    notes: list[str] = []
    for name, dims, epochs in specs:
        if fresh or not (work / f"{name}.onnx").exists():
            _train(work, name, dims, xtr, ytr, epochs)
    qs = QuantizeSettings()
    calib = {"x": xtr[:256]}
    for name, _, _ in specs:
        src = work / f"{name}.onnx"
        todo: dict[str, Callable[[Path], Any]] = {
            "int8-dynamic": lambda d, s=src: get_recipe("int8-dynamic").build(s, d, qs.recipe_settings("int8-dynamic"), None),
            "qgemm-u8s8": lambda d, s=src: get_recipe("int8-qgemm").build(s, d, qs.recipe_settings("int8-qgemm"), calib),
        }
        if name == "mlp":
            todo["int8-dynamic-pc"] = lambda d, s=src: get_recipe("int8-dynamic").build(
                s, d, QuantizeSettings(per_channel=True).recipe_settings("int8-dynamic"), None)
            todo["int8-static"] = lambda d, s=src: get_recipe("int8-static").build(
                s, d, qs.recipe_settings("int8-static"), calib)
            todo["nbits4"] = lambda d, s=src: _nbits4(s, d)
        for cand, make in todo.items():
            dst = work / f"{name}.{cand}.onnx"
            if fresh or not dst.exists():
                note = make(dst)
                if note:
                    notes.append(f"{cand}: {note}")
    return {"xtr": xtr, "xte": xte, "yte": yte, "notes": notes,
            "reduce_range": qs.effective_reduce_range()}


# ---------------------------------------------------------------- timing

def _ort_runner(path: Path, threads: int, spin: bool = False):
    from seqdeploy.runtime.fastpath import FastSession
    from seqdeploy.runtime.session import SessionSettings
    from seqdeploy.runtime.predictor import make_session

    fs = FastSession(make_session(path, settings=SessionSettings(threads=threads, allow_spinning=spin)))
    name = fs.input_names[0]
    return lambda x: fs.run({name: x})[0]


def _tflite_runners(work: Path, name: str, xtr: np.ndarray) -> dict[str, Any]:
    from seqdeploy.bench import convert_tflite

    models, errors = convert_tflite(work / f"{name}.keras", ("fp32", "int8"), xtr[:200])
    for p, e in errors.items():
        print(f"TFLite {p} conversion failed: {e}", file=sys.stderr)
    return {f"tflite {p}": m for p, m in models.items()}


def _make_calls(work: Path, name: str, cands: list[str], tfl: dict[str, Any], batch: int, threads: int,
                x: np.ndarray) -> dict[str, Callable[[], Any]]:
    from seqdeploy.bench import TfliteRunner

    calls: dict[str, Callable[[], Any]] = {}
    xb = np.ascontiguousarray(x[:batch])
    for c in cands:
        path = work / (f"{name}.onnx" if c == "ort fp32" else f"{name}.{c}.onnx")
        if path.exists():
            f = _ort_runner(path, threads)
            calls[c] = lambda f=f: f(xb)
            if threads > 1 and c in SPIN_CANDS:
                g = _ort_runner(path, threads, spin=True)
                calls[f"{c} spin"] = lambda g=g: g(xb)
    for label, model in tfl.items():
        r = TfliteRunner(model)
        r.prepare(threads)
        if r.set_batch(batch) is None:
            feeds = {"x": xb}
            calls[label] = lambda r=r, feeds=feeds: r.infer(feeds)
    return calls


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int, slice_s: float = 0.02) -> dict[str, float]:
    """Median us per call over ``rounds`` rounds of A B C ..., each runner a ``slice_s`` slice."""
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for f in calls.values():
        for _ in range(20):
            f()
    for _ in range(rounds):
        for k, f in calls.items():
            t0 = time.perf_counter_ns()
            n = 0
            while True:
                f()
                n += 1
                dt = time.perf_counter_ns() - t0
                if dt > slice_s * 1e9:
                    break
            samples[k].append(dt / n / 1e3)
    return {k: float(np.median(v)) for k, v in samples.items()}


def accuracy(work: Path, cands: list[str], tfl: dict[str, Any], xte: np.ndarray, yte: np.ndarray) -> dict[str, float]:
    from seqdeploy.bench import TfliteRunner

    acc = {}
    for c in cands:
        path = work / ("mlp.onnx" if c == "ort fp32" else f"mlp.{c}.onnx")
        if path.exists():
            f = _ort_runner(path, 1)
            acc[c] = float((f(xte).argmax(1) == yte).mean())
    for label, model in tfl.items():
        r = TfliteRunner(model)
        r.prepare(1)
        r.set_batch(1)
        pred = [r.infer({"x": xte[i:i + 1]})[0].argmax(1)[0] for i in range(len(xte))]
        acc[label] = float((np.array(pred) == yte).mean())
    return acc


def _lock(path: str | None):
    if not path:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def held():
        import fcntl

        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    return held()


def machine() -> str:
    import onnxruntime as ort

    from seqdeploy.cpu import cpu_flags, cpu_model_name

    flags = cpu_flags()
    on = [k for k, v in flags.items() if v] or ["none of avx2/avx512f/avx512_vnni/avx_vnni/amx_int8"]
    try:
        import tensorflow as tf
        tfv = tf.__version__
    except ImportError:
        tfv = "n/a"
    return (f"CPU: {cpu_model_name()}, {os.cpu_count()} logical cores; flags: {', '.join(on)}; "
            f"onnxruntime {ort.__version__}, TensorFlow {tfv}")


SPIN_CANDS = ("int8-dynamic", "qgemm-u8s8")  # also timed with intra-op spinning on at threads > 1
MLP_CANDS = ["int8-dynamic", "int8-dynamic-pc", "int8-static", "qgemm-u8s8", "nbits4", "ort fp32"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-floor", dest="floor", action="store_false")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--lock", default=None, help="flock this file while timing")
    ap.add_argument("--work", type=Path, default=WORK)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]

    data = build(args.work, args.fresh, args.floor)
    tfl = {n: _tflite_runners(args.work, n, data["xtr"]) for n in (["mlp", "tiny", "fc1"] if args.floor else ["mlp"])}
    acc = accuracy(args.work, MLP_CANDS, tfl["mlp"], data["xte"], data["yte"])
    results: dict[tuple[int, int], dict[str, float]] = {}
    floors: dict[str, dict[str, float]] = {}
    with _lock(args.lock):
        for t in threads:
            for b in batches:
                calls = _make_calls(args.work, "mlp", MLP_CANDS, tfl["mlp"], b, t, data["xte"])
                results[(b, t)] = interleaved(calls, args.rounds)
        if args.floor:
            for name in ("tiny", "fc1"):
                calls = _make_calls(args.work, name, ["int8-dynamic", "qgemm-u8s8", "ort fp32"], tfl[name], 1, 1,
                                    data["xte"])
                floors[name] = interleaved(calls, args.rounds)

    print(f"\n{machine()}; int8-dynamic and qgemm reduce_range={data['reduce_range']} (effective_reduce_range on this CPU)")
    for n in data["notes"]:
        print(f"note: {n}")
    configs = [(b, t) for t in threads for b in batches]
    head = "| candidate | accuracy | " + " | ".join(f"b{b} t{t} us (vs TFLite int8)" for b, t in configs) + " |"
    print("\n784-1024-1024-10 MLP, digits 28x28; median us per call over interleaved rounds\n")
    print(head)
    print("|" + "---|" * (2 + len(configs)))
    labels = list(dict.fromkeys([k for r in results.values() for k in r]))
    for k in sorted(labels, key=lambda k: results[configs[0]].get(k, 1e18 + len(k))):
        cells = []
        for cfg in configs:
            r = results[cfg]
            ref = r.get("tflite int8")
            cells.append(f"{r[k]:.1f} ({ref / r[k]:.2f}x)" if k in r and ref else (f"{r[k]:.1f}" if k in r else "-"))
        a = acc.get(k.removesuffix(" spin"))
        print(f"| {k} | {a:.4f} | " if a is not None else f"| {k} | - | ", end="")
        print(" | ".join(cells) + " |")
    if floors:
        print("\nWhere the gap is (batch 1, 1 thread): same topology with tiny dims = overhead only; "
              "one 784x1024 Dense = kernel + one call\n")
        print("| model | " + " | ".join(["int8-dynamic", "qgemm-u8s8", "ort fp32", "tflite int8", "tflite fp32"]) + " |")
        print("|---|---|---|---|---|---|")
        for name, desc in (("tiny", "784-16-16-10"), ("fc1", "Dense 784x1024")):
            r = floors[name]
            print(f"| {desc} | " + " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in
                                                ["int8-dynamic", "qgemm-u8s8", "ort fp32", "tflite int8", "tflite fp32"]) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
