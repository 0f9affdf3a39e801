"""Timing harness and runners: onnxruntime artifacts vs Keras vs TFLite, side by side.

In the spirit of onnxruntime_perf_test / TFLite benchmark_model: every runner is
created (timed), run once (first-inference time), warmed up, then timed call by
call, interleaved with the others (:mod:`~seqdeploy.bench.timing`).

    >>> from seqdeploy.bench import run_bench, write_outputs        # doctest: +SKIP
    >>> res = run_bench("runs/breast_cancer_mlp", batches=(1, 64))   # doctest: +SKIP
    >>> write_outputs(res, "runs/breast_cancer_mlp")                 # doctest: +SKIP

| module | what |
|---|---|
| ``timing`` | the interleaved timing loop, stop rules, latency statistics (also the quantize gate's) |
| ``runners/`` | one module per runner family (``onnxruntime``, ``keras``, ``tflite``) and their registry |
| ``discover`` | what to benchmark: the bundle's artifacts from its manifest, or one MODEL.onnx; the inputs |
| ``harness`` | building the runners, the benchmark itself, argument parsing shared with the CLI |
| ``schema`` | bench.json (results, speedup references, the pipeline's headline) |
| ``render`` | bench.md, bench.png, table rows |

Importing this package never imports TensorFlow, Keras or onnx: they are imported
inside the runners that need them. What is timed per call is the full per-call
path a user pays: feeds in, outputs out as numpy (set_tensor/invoke/get_tensor for
TFLite, bind/run for onnxruntime, ``np.asarray(model(x))`` for Keras).
"""

from __future__ import annotations

from seqdeploy.bench.discover import BenchData, Target, load_data, random_data, resolve_target
from seqdeploy.bench.harness import (
    DEFAULT_BATCHES, DEFAULT_THREADS, MAX_BATCH, MAX_THREADS, build_runners, cpu_info, output_diff, parse_int_list,
    parse_vs, run_bench, versions,
)
from seqdeploy.bench.render import (
    REFERENCE_COLUMNS, TABLE_COLUMNS, TERMINAL_COLUMNS, fmt_bytes, fmt_ratio, fmt_us, render_markdown, render_png,
    table_rows, write_outputs,
)
from seqdeploy.bench.runners import Runner, families, peers
from seqdeploy.bench.runners.keras import KerasRunner, KerasSource, load_keras
from seqdeploy.bench.runners.onnxruntime import DeployedRunner, OrtRunner, OrtSettings
from seqdeploy.bench.runners.tflite import TfliteModel, TfliteRunner, convert_tflite
from seqdeploy.bench.schema import (
    REF_KERAS_DIRECT, REF_ONNX_FP32, REF_TFLITE_BEST, SCHEMA_VERSION, BenchResult, Measurement, RunnerInfo,
    compute_speedups, headline, load_result,
)
from seqdeploy.bench.timing import (
    QUANTILE_GRID, LatencyStats, StopRule, latency_stats, run_interleaved, speedup, warm_up,
)

__all__ = [
    "BenchData", "BenchResult", "DEFAULT_BATCHES", "DEFAULT_THREADS", "DeployedRunner", "KerasRunner", "KerasSource",
    "LatencyStats", "MAX_BATCH", "MAX_THREADS", "Measurement", "OrtRunner", "OrtSettings", "QUANTILE_GRID",
    "REFERENCE_COLUMNS", "REF_KERAS_DIRECT", "REF_ONNX_FP32", "REF_TFLITE_BEST", "Runner", "RunnerInfo",
    "SCHEMA_VERSION", "StopRule", "TABLE_COLUMNS", "TERMINAL_COLUMNS", "Target", "TfliteModel", "TfliteRunner",
    "build_runners", "compute_speedups", "convert_tflite", "cpu_info", "families", "fmt_bytes", "fmt_ratio", "fmt_us",
    "headline", "latency_stats", "load_data", "load_keras", "load_result", "output_diff",
    "parse_int_list", "parse_vs", "peers", "random_data", "render_markdown", "render_png", "resolve_target",
    "run_bench", "run_interleaved", "speedup", "table_rows", "versions", "warm_up", "write_outputs",
]
