"""int8 conv nets on onnxruntime vs TFLite int8 (issue 18): int8-static candidates, batch 1 and 64, interleaved.

Reads a zoo run directory (``benchmarks/work/runs/<model>``: ``model.keras``, ``model.onnx``,
``train.json``; never written), builds each candidate into ``benchmarks/work/int8_conv/<model>/``
and times them against TFLite fp32/int8 (``convert_tflite``, XNNPACK) in one process with
``int8_mlp``'s runners and interleaved loop (median us per call over rounds of 20 ms slices):

* ``ort fp32``: ``model.onnx``
* ``int8-static``: the shipped recipe with this CPU's defaults (QDQ, int8 activations, per-channel
  weights; ``pad_input_channels`` and ``reduce_range`` from the CPU rules)
* ``int8-static no-pad`` / ``int8-static pad``: the same with ``pad_input_channels`` off / on
* ``int8-static u8``: uint8 activations (padded as the CPU rule says)
* ``int8-static per-tensor``: per-tensor weights (padded as the CPU rule says)

Accuracy is on the run's test split (batch-1 TFLite).

    .venv/bin/python benchmarks/int8_conv.py [--model conv_32x32x3_32_64_128] [--batches 1,64]
                     [--rounds 9] [--fresh] [--lock /tmp/seqdeploy-timing.lock]

Measured (shared 2-core AMD EPYC, AVX2 + AVX-512 VNNI, onnxruntime 1.32, TF 2.21, 1 thread), conv
32/64/128 on 32x32x3: the first QLinearConv (3 input channels) took 37 of ~97 us at batch 1 (profiler):
MLAS's VNNI indirect conv needs input channels % 4 == 0, so it ran as im2col + a K=27 GEMM.
Padded to 4 channels (float MatMul [I|0] on the NHWC input + zero weights), one run, 9 rounds:
int8-static 83.2 us at b1 (no-pad 100.2, TFLite int8 69.1, ort fp32 191) and 4.84 ms at b64 (no-pad
5.68, TFLite int8 4.49, ort fp32 12.6); uint8 activations 81.5 us / 4.79 ms, per-tensor 85.1 / 4.83;
accuracy 0.9417 for all (per-tensor 0.9444; TFLite int8 0.9417). QOperator int8 activations: 10x slower.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RUNS = HERE / "work" / "runs"
WORK = HERE / "work" / "int8_conv"

from int8_mlp import _lock, _ort_runner, interleaved, machine  # noqa: E402


def candidates() -> dict[str, Any]:
    from seqdeploy.quantize import QuantizeSettings, StaticInt8Settings

    base = QuantizeSettings().static_settings()
    from dataclasses import replace

    return {
        "int8-static": base,
        "int8-static no-pad": replace(base, pad_input_channels=False),
        "int8-static pad": replace(base, pad_input_channels=True),
        "int8-static u8": replace(base, activation_type="uint8"),
        "int8-static per-tensor": replace(base, per_channel=False),
    } if isinstance(base, StaticInt8Settings) else {}


def build(run: Path, work: Path, fresh: bool) -> dict[str, Any]:
    from seqdeploy.data import load_run_splits
    from seqdeploy.quantize.recipes import get_recipe

    sp = load_run_splits(run)
    work.mkdir(parents=True, exist_ok=True)
    import onnx

    name = onnx.load(str(run / "model.onnx"), load_external_data=False).graph.input[0].name
    calib = {name: np.asarray(sp.x_train, np.float32)}
    paths = {"ort fp32": run / "model.onnx"}
    for label, s in candidates().items():
        dst = work / (label.replace(" ", "_") + ".onnx")
        if fresh or not dst.exists():
            get_recipe("int8-static").build(run / "model.onnx", dst, s, calib)
        paths[label] = dst
    return {"paths": paths, "xtr": np.asarray(sp.x_train, np.float32), "xte": np.asarray(sp.x_test, np.float32),
            "yte": np.asarray(sp.y_test)}


def main(argv: list[str] | None = None) -> int:
    from seqdeploy.bench import TfliteRunner, convert_tflite

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="conv_32x32x3_32_64_128", help="a run directory name under --runs")
    ap.add_argument("--runs", type=Path, default=RUNS)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--lock", default=None, help="flock this file while timing")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    run = args.runs / args.model
    d = build(run, WORK / args.model, args.fresh)
    tfl, errors = convert_tflite(run / "model.keras", ("fp32", "int8"), d["xtr"][:200])
    for p, e in errors.items():
        print(f"TFLite {p} conversion failed: {e}", file=sys.stderr)
    xte, yte = d["xte"], d["yte"]
    acc: dict[str, float] = {}
    for label, path in d["paths"].items():
        acc[label] = float((_ort_runner(path, 1)(xte).argmax(1) == yte).mean())
    for p, m in tfl.items():
        r = TfliteRunner(m)
        r.prepare(1)
        r.set_batch(1)
        pred = [r.infer({"x": xte[i:i + 1]})[0].argmax(1)[0] for i in range(len(xte))]
        acc[f"tflite {p}"] = float((np.array(pred) == yte).mean())
    results: dict[int, dict[str, float]] = {}
    with _lock(args.lock):
        for b in batches:
            xb = np.ascontiguousarray(np.resize(xte, (b,) + xte.shape[1:]))
            calls: dict[str, Callable[[], Any]] = {}
            for label, path in d["paths"].items():
                f = _ort_runner(path, 1)
                calls[label] = lambda f=f: f(xb)
            for p, m in tfl.items():
                r = TfliteRunner(m)
                r.prepare(1)
                if r.set_batch(b) is None:
                    calls[f"tflite {p}"] = lambda r=r: r.infer({"x": xb})
            results[b] = interleaved(calls, args.rounds)
    print(f"\n{machine()}\n\n{args.model}, 1 thread; median us per call over interleaved rounds (x = vs TFLite int8)\n")
    print("| candidate | accuracy | " + " | ".join(f"b{b} us" for b in batches) + " |")
    print("|" + "---|" * (2 + len(batches)))
    for k in results[batches[0]]:
        cells = []
        for b in batches:
            r, ref = results[b], results[b].get("tflite int8")
            cells.append(f"{r[k]:.1f} ({ref / r[k]:.2f}x)" if ref else f"{r[k]:.1f}")
        print(f"| {k} | {acc.get(k, float('nan')):.4f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
