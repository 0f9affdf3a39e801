"""Quantize a float32 ONNX model, measure every candidate, keep one only if it wins.

Whether int8 or float16 helps depends on the model (Conv nets gain from static
QDQ and lose with dynamic ConvInteger; wide MatMuls gain from both; LSTMs gain
from dynamic; tiny models lose with every recipe), so seqdeploy *measures*
instead of guessing. Each candidate is built with ``onnxruntime.quantization``
and judged against the float32 model on:

* the task metric on the test split -- the **metric drop** is
  ``accuracy_float32 - accuracy_candidate`` in absolute fractions (0.01 = one
  point) for ``binary``/``multiclass``, and the *relative MAE increase*
  ``(mae_candidate - mae_float32) / mae_float32`` for ``regression`` (0.01 = the
  MAE grew by 1 %; RMSE is reported too). A negative drop is an improvement.
* latency at batch 1 and at a larger batch (default 64), measured in the same
  process with float32 and candidate interleaved round by round; the per-round
  speedups give a median speedup and a noise estimate (their robust spread).

A candidate qualifies only if ``metric_drop <= max_metric_drop`` and at every
latency batch size ``speedup >= 1 + max(min_speedup, noise_multiplier * noise)``.
The fastest qualifying candidate (geometric mean of its speedups) is written as
``model.<recipe>.onnx``; if none qualifies float32 stays the deployment
artifact, which is a normal outcome, not an error.

When a candidate loses too much accuracy, the activations of the float32 and
quantized models are compared tensor by tensor (SQNR, via
``onnxruntime.quantization.qdq_loss_debug``), the layers that add the most noise
are listed, and the recipe is retried once with those nodes left in float32.

    >>> from seqdeploy.quantize import QuantizeSettings, quantize_model
    >>> result = quantize_model("model.onnx", out_dir="runs/x",          # doctest: +SKIP
    ...     calibration_inputs={"x": x_train}, test_inputs={"x": x_test},
    ...     test_targets=y_test, task="multiclass", settings=QuantizeSettings())
    >>> result.chosen                                                    # doctest: +SKIP
    'model.int8-static.onnx'
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import numpy as np

from seqdeploy.atomic import atomic_path, atomic_write_json, to_jsonable
from seqdeploy.errors import InputFileNotFound, QuantizeError

Task = Literal["binary", "multiclass", "regression"]
Mode = Literal["auto", "dynamic", "static", "fp16"]
CalibrationMethodName = Literal["minmax", "entropy", "percentile"]
QuantTypeName = Literal["int8", "uint8"]

TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
MODES: tuple[str, ...] = ("auto", "dynamic", "static", "fp16")
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
QUANT_TYPES: tuple[str, ...] = ("int8", "uint8")

#: recipe name -> artifact file name (the contract in docs/ARCHITECTURE.md).
RECIPE_FILES: dict[str, str] = {
    "int8-static": "model.int8-static.onnx",
    "int8-dynamic": "model.int8-dynamic.onnx",
    "fp16": "model.fp16.onnx",
}
MODE_RECIPES: dict[str, str] = {"static": "int8-static", "dynamic": "int8-dynamic", "fp16": "fp16"}

#: Op types that mark a model as already quantized (or quantized-ish).
QUANTIZED_OP_TYPES = frozenset(
    {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
        "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "MatMulIntegerToFloat", "QGemm", "QAttention",
        "MatMulNBits", "MatMulFpQ4", "QOrderedMatMul",
    }
)

_CONV_OPS = frozenset({"Conv", "ConvTranspose"})
_MATMUL_OPS = frozenset({"MatMul", "Gemm"})
_RNN_OPS = frozenset({"LSTM", "GRU", "RNN"})
_SQNR_CAP_DB = 100.0


# --------------------------------------------------------------------------- settings


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise QuantizeError(f"{name} = {value!r} (expected one of {', '.join(choices)}); pick one of those")


def _check_nodes(name: str, nodes: Any) -> None:
    if not isinstance(nodes, tuple) or not all(isinstance(n, str) for n in nodes):
        raise QuantizeError(f"{name} = {nodes!r} (expected a tuple of node-name strings); pass e.g. ('dense/MatMul',)")


@dataclass(frozen=True)
class DynamicInt8Settings:
    """Dynamic int8 (weights quantized offline, activations at run time).

    ``op_types`` leaves out Conv on purpose: dynamic ConvInteger was measured
    4-10x *slower* than float32 Conv on CPU; use the static recipe for Conv nets.

        >>> DynamicInt8Settings(per_channel=True).op_types
        ('MatMul', 'LSTM', 'Attention')
    """

    per_channel: bool = False
    reduce_range: bool = False
    weight_type: QuantTypeName = "int8"
    op_types: tuple[str, ...] = ("MatMul", "LSTM", "Attention")  # onnxruntime has no dynamic Gemm/GRU kernels
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("weight_type", self.weight_type, QUANT_TYPES)
        _check_nodes("op_types", self.op_types)
        _check_nodes("nodes_to_exclude", self.nodes_to_exclude)
        if not self.op_types:
            raise QuantizeError("DynamicInt8Settings.op_types is empty (expected at least one op type); e.g. ('MatMul',)")


@dataclass(frozen=True)
class StaticInt8Settings:
    """Static int8 in QDQ format, calibrated on training rows.

    ``percentile`` is used by the percentile method only (the share of the
    activation histogram kept, in percent).

        >>> StaticInt8Settings(calibration_method="percentile", percentile=99.99).calibration_method
        'percentile'
    """

    calibration_method: CalibrationMethodName = "minmax"
    calibration_samples: int = 256
    calibration_batch_size: int = 32
    percentile: float = 99.999
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: QuantTypeName = "int8"
    weight_type: QuantTypeName = "int8"
    op_types: tuple[str, ...] | None = None  # None = every op type ORT's QDQ quantizer handles
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        _check_choice("activation_type", self.activation_type, QUANT_TYPES)
        _check_choice("weight_type", self.weight_type, QUANT_TYPES)
        for name in ("calibration_samples", "calibration_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise QuantizeError(f"{name} = {value!r} (expected an integer >= 1); e.g. {name}=256")
        if not (isinstance(self.percentile, (int, float)) and 50.0 < float(self.percentile) <= 100.0):
            raise QuantizeError(f"percentile = {self.percentile!r} (expected 50 < p <= 100); e.g. 99.999")
        if self.op_types is not None:
            _check_nodes("op_types", self.op_types)
        _check_nodes("nodes_to_exclude", self.nodes_to_exclude)


@dataclass(frozen=True)
class Float16Settings:
    """Float16 weights and arithmetic; inputs and outputs stay float32 (``keep_io_types``).

        >>> Float16Settings().keep_io_types
        True
    """

    keep_io_types: bool = True
    op_block_list: tuple[str, ...] | None = None  # None = onnxconverter-common's default block list
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op_block_list is not None:
            _check_nodes("op_block_list", self.op_block_list)
        _check_nodes("nodes_to_exclude", self.nodes_to_exclude)


RecipeSettings = Union[DynamicInt8Settings, StaticInt8Settings, Float16Settings]


@dataclass(frozen=True)
class QuantizeSettings:
    """Everything ``quantize_model`` needs besides data.

    ``calibration_samples``, ``calibration_method`` and ``per_channel`` fill the
    recipe settings unless a full recipe object (``static=``, ``dynamic=``,
    ``fp16=``) is given. ``per_channel=None`` keeps each recipe's default
    (static: per channel, dynamic: per tensor).

    ``min_speedup`` is the smallest accepted gain (0.05 = 5 % faster);
    ``noise_multiplier`` scales the measured noise that the gain must also beat.
    ``exclude_worst_layers`` nodes are left in float32 on the automatic retry
    (0 disables diagnosis and retry).

        >>> QuantizeSettings(mode="static", max_metric_drop=0.005).mode
        'static'
    """

    mode: Mode = "auto"
    max_metric_drop: float = 0.01
    calibration_samples: int = 256
    calibration_method: CalibrationMethodName = "minmax"
    per_channel: bool | None = None
    reduce_range: bool | None = None
    latency_batch_sizes: tuple[int, ...] = (1, 64)
    latency_rounds: int = 7
    latency_round_seconds: float = 0.2
    latency_warmup: int = 5
    latency_min_calls: int = 10
    min_speedup: float = 0.05
    noise_multiplier: float = 1.0
    intra_op_num_threads: int | None = None
    exclude_worst_layers: int = 2
    diagnosis_samples: int = 64
    seed: int = 0
    static: StaticInt8Settings | None = None
    dynamic: DynamicInt8Settings | None = None
    fp16: Float16Settings | None = None

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        drop = self.max_metric_drop
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not math.isfinite(drop) or drop < 0:
            raise QuantizeError(
                f"max_metric_drop = {drop!r} (expected a finite number >= 0: 0.01 = one accuracy point, "
                "or a 1 % relative MAE increase for regression); pass e.g. --max-metric-drop 0.01"
            )
        for name, low in (("calibration_samples", 1), ("latency_rounds", 2), ("latency_warmup", 0),
                          ("exclude_worst_layers", 0), ("diagnosis_samples", 1), ("latency_min_calls", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise QuantizeError(f"{name} = {value!r} (expected an integer >= {low}); e.g. {name}={max(low, 3)}")
        sizes = self.latency_batch_sizes
        if (not isinstance(sizes, tuple) or not sizes
                or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes)):
            raise QuantizeError(f"latency_batch_sizes = {sizes!r} (expected a non-empty tuple of integers >= 1); e.g. (1, 64)")
        for name in ("latency_round_seconds", "min_speedup", "noise_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise QuantizeError(f"{name} = {value!r} (expected a finite number >= 0)")
        if self.intra_op_num_threads is not None and (not isinstance(self.intra_op_num_threads, int) or self.intra_op_num_threads < 1):
            raise QuantizeError(f"intra_op_num_threads = {self.intra_op_num_threads!r} (expected None for the onnxruntime default, or an integer >= 1)")
        for name, kind in (("static", StaticInt8Settings), ("dynamic", DynamicInt8Settings), ("fp16", Float16Settings)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise QuantizeError(f"{name} = {value!r} (expected a {kind.__name__} or None)")

    def static_settings(self) -> StaticInt8Settings:
        if self.static is not None:
            return self.static
        kw: dict[str, Any] = {"calibration_samples": self.calibration_samples, "calibration_method": self.calibration_method,
                              "reduce_range": self.effective_reduce_range()}
        if self.per_channel is not None:
            kw["per_channel"] = self.per_channel
        return StaticInt8Settings(**kw)

    def dynamic_settings(self) -> DynamicInt8Settings:
        if self.dynamic is not None:
            return self.dynamic
        kw: dict[str, Any] = {"reduce_range": self.effective_reduce_range()}
        if self.per_channel is not None:
            kw["per_channel"] = self.per_channel
        return DynamicInt8Settings(**kw)

    def effective_reduce_range(self) -> bool:
        """``reduce_range`` as given, else :func:`default_reduce_range` for this CPU."""
        return default_reduce_range() if self.reduce_range is None else bool(self.reduce_range)

    def fp16_settings(self) -> Float16Settings:
        return self.fp16 if self.fp16 is not None else Float16Settings()

    def recipe_settings(self, recipe: str) -> RecipeSettings:
        return {"int8-static": self.static_settings, "int8-dynamic": self.dynamic_settings, "fp16": self.fp16_settings}[recipe]()


def default_reduce_range(cpuinfo: str | None = None) -> bool:
    """7-bit weights on x86 CPUs without VNNI/AMX, 8-bit elsewhere.

    Without VNNI onnxruntime's int8 GEMM/Conv kernels use ``vpmaddubsw``, whose
    16-bit intermediate sums saturate with full-range weights. Measured on the
    AVX2 build machine: static QDQ on the 32/64/128 conv net lost 5.8 accuracy
    points with 8-bit weights and none with ``reduce_range``, at the same speed.

        >>> default_reduce_range("flags : avx2 avx512_vnni")
        False
    """
    import platform

    from seqdeploy.doctor import cpu_flags

    flags = cpu_flags(cpuinfo)
    if not any(flags.values()) or (cpuinfo is None and platform.machine().lower() not in ("x86_64", "amd64")):
        return False
    return not (flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8"))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MetricReport:
    """The task metric of one model on the test split (``rmse`` for regression only)."""

    name: str
    value: float
    rmse: float | None = None


@dataclass(frozen=True)
class LatencyComparison:
    """float32 vs candidate at one batch size, interleaved round by round.

    ``speedup`` is the median of the per-round ratios float32/candidate; ``noise``
    their robust spread (1.4826 x median absolute deviation).
    """

    batch_size: int
    float32_p50_ms: float
    candidate_p50_ms: float
    speedup: float
    noise: float
    rounds: int
    calls_per_round: int
    round_speedups: tuple[float, ...] = ()


@dataclass(frozen=True)
class LayerDiagnosis:
    """How much quantization noise one node adds (SQNR in dB; higher is cleaner)."""

    node: str
    op_type: str
    tensor: str
    sqnr_db: float
    sqnr_loss_db: float


@dataclass(frozen=True)
class Candidate:
    """One quantized model and the verdict on it."""

    recipe: str
    attempt: int
    settings: RecipeSettings
    path: str | None  # file name relative to out_dir when written (chosen only), else None
    size_bytes: int | None
    metric: float | None
    rmse: float | None
    metric_drop: float | None
    latency: tuple[LatencyComparison, ...]
    qualified: bool
    chosen: bool
    reason: str
    worst_layers: tuple[LayerDiagnosis, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def file_name(self) -> str:
        return RECIPE_FILES[self.recipe]

    def speedup_at(self, batch_size: int) -> float | None:
        return next((lat.speedup for lat in self.latency if lat.batch_size == batch_size), None)


@dataclass(frozen=True)
class Float32Report:
    path: str
    size_bytes: int
    metric: float
    rmse: float | None
    latency_p50_ms: dict[str, float]
    op_counts: dict[str, int]


@dataclass(frozen=True)
class SkippedRecipe:
    recipe: str
    reason: str


@dataclass(frozen=True)
class QuantizeResult:
    """What ``quantize_model`` decided; ``to_json()`` is the content of ``quantize.json``."""

    chosen: str | None
    chosen_recipe: str | None
    chosen_path: str | None
    task: str
    metric_name: str
    max_metric_drop: float
    metric_drop_definition: str
    mode: str
    float32: Float32Report
    candidates: tuple[Candidate, ...]
    skipped: tuple[SkippedRecipe, ...]
    summary: str
    json_path: str | None
    warnings: tuple[str, ...] = ()
    removed_stale: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = to_jsonable(self)
        data.pop("json_path", None)
        return {"schema": "seqdeploy.quantize/1", **data}


# --------------------------------------------------------------------------- metrics


def metric_name_for(task: str) -> str:
    _check_choice("task", task, TASKS)
    return "mae" if task == "regression" else "accuracy"


def compute_metric(task: str, outputs: np.ndarray, targets: np.ndarray) -> MetricReport:
    """Task metric of model ``outputs`` against ``targets``.

    binary: one sigmoid probability per row, threshold 0.5; multiclass: argmax of
    the scores (targets as ids or one-hot); regression: MAE (and RMSE).

        >>> compute_metric("binary", np.array([[0.2], [0.7]]), np.array([0, 0])).value
        0.5
    """
    _check_choice("task", task, TASKS)
    out = np.asarray(outputs, dtype=np.float64)
    y = np.asarray(targets)
    n = out.shape[0] if out.ndim else 0
    if n == 0 or y.shape[0] != n:
        raise QuantizeError(f"{n} model outputs vs {y.shape[0] if y.ndim else 0} targets (expected the same non-zero number of rows)")
    if task == "binary":
        prob = out.reshape(n, -1)
        if prob.shape[1] != 1:
            raise QuantizeError(f"binary task: model output has shape {out.shape} (expected one sigmoid probability per row, (n, 1)); use task='multiclass' for softmax outputs")
        pred = (prob[:, 0] >= 0.5).astype(np.int64)
        return MetricReport("accuracy", float(np.mean(pred == y.reshape(n).astype(np.int64))))
    if task == "multiclass":
        scores = out.reshape(n, -1)
        pred = np.argmax(scores, axis=1)
        ids = np.argmax(y.reshape(n, -1), axis=1) if (y.ndim == 2 and y.shape[1] > 1) else y.reshape(n).astype(np.int64)
        return MetricReport("accuracy", float(np.mean(pred == ids)))
    diff = out.reshape(n, -1) - y.astype(np.float64).reshape(n, -1)
    return MetricReport("mae", float(np.mean(np.abs(diff))), rmse=float(np.sqrt(np.mean(diff**2))))


def metric_drop(task: str, float32: float, candidate: float) -> float:
    """How much worse ``candidate`` is than ``float32`` (positive = worse).

    Accuracy tasks: absolute drop in fractions (0.01 = one point). Regression:
    relative MAE increase ((mae_c - mae_f) / mae_f; absolute if mae_f is 0).

        >>> round(metric_drop("multiclass", 0.95, 0.94), 4), round(metric_drop("regression", 2.0, 2.1), 4)
        (0.01, 0.05)
    """
    if task == "regression":
        return float((candidate - float32) / float32) if float32 > 0 else float(candidate - float32)
    return float(float32 - candidate)


def metric_drop_definition(task: str) -> str:
    if task == "regression":
        return "relative MAE increase: (mae_candidate - mae_float32) / mae_float32"
    return "absolute accuracy drop: accuracy_float32 - accuracy_candidate (0.01 = 1 point)"


# --------------------------------------------------------------------------- gate


def gate(metric_drop_value: float | None, latency: tuple[LatencyComparison, ...] | list[LatencyComparison],
         settings: QuantizeSettings) -> tuple[bool, str]:
    """Decide whether a candidate qualifies; return ``(qualified, reason)``.

    Pure function of the numbers, so it can be tested with injected values.

        >>> lat = LatencyComparison(1, 1.0, 0.4, 2.5, 0.05, 7, 100)
        >>> gate(0.002, [lat], QuantizeSettings(latency_batch_sizes=(1,)))
        (True, 'qualified: metric drop 0.0020 <= 0.0100; b=1 2.50x')
    """
    reasons: list[str] = []
    if metric_drop_value is None or not math.isfinite(metric_drop_value):
        reasons.append("metric could not be computed")
    elif metric_drop_value > settings.max_metric_drop + 1e-12:
        reasons.append(f"metric drop {metric_drop_value:.4f} > budget {settings.max_metric_drop:.4f}")
    by_batch = {lat.batch_size: lat for lat in latency}
    speed_notes: list[str] = []
    for b in settings.latency_batch_sizes:
        lat = by_batch.get(b)
        if lat is None:
            reasons.append(f"no latency measured at batch {b}")
            continue
        need = 1.0 + max(settings.min_speedup, settings.noise_multiplier * lat.noise)
        if not (lat.speedup >= need):
            what = "slower than" if lat.speedup < 1.0 else "not clearly faster than"
            reasons.append(f"{what} float32 at b={b}: {lat.speedup:.2f}x (needs >= {need:.2f}x: "
                           f"min gain {settings.min_speedup:.0%}, noise {lat.noise:.3f})")
        else:
            speed_notes.append(f"b={b} {lat.speedup:.2f}x")
    if reasons:
        return False, "; ".join(reasons)
    return True, f"qualified: metric drop {metric_drop_value:.4f} <= {settings.max_metric_drop:.4f}; " + ", ".join(speed_notes)


def _score(c: Candidate) -> float:
    speeds = [lat.speedup for lat in c.latency if lat.speedup > 0]
    return math.exp(sum(math.log(s) for s in speeds) / len(speeds)) if speeds else 0.0


def choose_candidate(candidates: list[Candidate] | tuple[Candidate, ...]) -> Candidate | None:
    """The qualified candidate with the highest geometric-mean speedup, or None."""
    qualified = [c for c in candidates if c.qualified]
    return max(qualified, key=_score) if qualified else None


# --------------------------------------------------------------------------- model inspection


def _load_onnx(path: Path):

    if not path.exists():
        raise InputFileNotFound(f"{path}: no such ONNX model (expected a float32 model.onnx; run `seqdeploy export` first)")
    from seqdeploy.export import load_checked_onnx

    return load_checked_onnx(path)


def op_counts(model) -> dict[str, int]:
    """Count node op types in the main graph and in subgraphs (Loop/Scan bodies)."""
    from seqdeploy.export import op_counts as graph_op_counts

    return graph_op_counts(model)


def is_quantized_op(op_type: str) -> bool:
    """Whether an op type (optionally domain-qualified) only appears in quantized graphs.

        >>> is_quantized_op("QLinearConv"), is_quantized_op("com.microsoft.QGemm"), is_quantized_op("Conv")
        (True, True, False)
    """
    op = op_type.rsplit(".", 1)[-1]
    return op in QUANTIZED_OP_TYPES or op.startswith("QLinear")


def check_not_quantized(model, path: str | os.PathLike = "model") -> None:
    """Raise :class:`QuantizeError` if ``model`` already holds quantized ops or float16 weights."""
    from onnx import TensorProto

    found = sorted(op for op in op_counts(model) if is_quantized_op(op))
    if found:
        raise QuantizeError(
            f"{path}: already quantized (found {', '.join(found)}); expected a float32 model. "
            "Quantize the float32 model.onnx from `seqdeploy export` instead"
        )
    fp16 = [init.name for init in model.graph.initializer if init.data_type == TensorProto.FLOAT16]
    if fp16:
        raise QuantizeError(
            f"{path}: already converted to float16 ({len(fp16)} float16 initializers, e.g. {fp16[0]!r}); "
            "expected a float32 model. Quantize the float32 model.onnx from `seqdeploy export` instead"
        )


def plan_recipes(counts: Mapping[str, int], mode: str) -> tuple[list[str], list[SkippedRecipe]]:
    """Which recipes to try for this op mix (``auto``) or the one asked for.

        >>> plan_recipes({"Conv": 3, "MatMul": 1, "Relu": 4}, "auto")[0]
        ['int8-static']
    """
    if mode != "auto":
        return [MODE_RECIPES[mode]], []
    n_conv = sum(counts.get(op, 0) for op in _CONV_OPS)
    n_mm = sum(counts.get(op, 0) for op in _MATMUL_OPS)
    n_rnn = sum(counts.get(op, 0) for op in _RNN_OPS)
    n_dyn = counts.get("MatMul", 0) + counts.get("LSTM", 0) + counts.get("Attention", 0)
    run: list[str] = []
    skipped: list[SkippedRecipe] = []
    if n_conv or n_mm:
        run.append("int8-static")
    else:
        skipped.append(SkippedRecipe("int8-static", "no Conv/MatMul/Gemm to quantize"))
    if n_conv and n_conv >= n_mm and not n_rnn:
        skipped.append(SkippedRecipe("int8-dynamic", f"Conv-heavy ({n_conv} Conv vs {n_mm} MatMul/Gemm): dynamic ConvInteger is slower than float32 on CPU"))
    elif n_dyn:
        run.append("int8-dynamic")
    else:
        skipped.append(SkippedRecipe("int8-dynamic", "no MatMul/LSTM to quantize (onnxruntime has no dynamic int8 Gemm/GRU kernels)"))
    if _cpu_has_native_fp16():
        run.append("fp16")
    else:
        skipped.append(SkippedRecipe("fp16", "this CPU has no native float16 arithmetic (avx512_fp16 / ARM fphp): onnxruntime would emulate it; use --mode fp16 to measure anyway"))
    return run, skipped


def _cpu_has_native_fp16() -> bool:
    from seqdeploy.doctor import cpu_flag_set, read_cpuinfo

    text = read_cpuinfo()
    return bool(text and cpu_flag_set(text) & {"avx512_fp16", "fphp", "asimdhp"})


# --------------------------------------------------------------------------- sessions and data


def make_session(path: str | os.PathLike, *, intra_op_num_threads: int | None = None):
    """onnxruntime CPU session for float32 and candidates alike: the runtime's own defaults,
    so the gate measures what a deployed ``Predictor`` will run."""
    from seqdeploy.runtime import make_session as runtime_session

    return runtime_session(path, threads=intra_op_num_threads)


def _n_rows(feeds: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0]) if feeds else 0


def _slice(feeds: Mapping[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}


def _check_feeds(kind: str, feeds: Mapping[str, np.ndarray] | None, model_inputs: dict[str, int], fix: str) -> dict[str, np.ndarray]:
    if feeds is None or not len(feeds):
        raise QuantizeError(f"no {kind} data (received {feeds!r}); expected a dict {{input name: array}} for inputs {sorted(model_inputs)}; {fix}")
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    if set(feeds) != set(model_inputs):
        raise QuantizeError(f"{kind} inputs {sorted(feeds)} do not match the model inputs {sorted(model_inputs)}; key the arrays by the model's input names")
    rows = {k: (v.shape[0] if v.ndim else 0) for k, v in feeds.items()}
    if len(set(rows.values())) != 1 or min(rows.values()) == 0:
        raise QuantizeError(f"{kind} data has rows {rows} (expected the same non-zero number of rows for every input); {fix}")
    out = {}
    for k, v in feeds.items():
        want = model_inputs[k]
        if v.dtype != _np_dtype(want):
            v = v.astype(_np_dtype(want))
        if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
            raise QuantizeError(f"{kind} data for input {k!r} holds NaN or inf values (expected finite numbers); clean the data")
        out[k] = v
    return out


def _np_dtype(onnx_elem_type: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(onnx_elem_type)


def _run_batched(sess, feeds: Mapping[str, np.ndarray], batch: int = 256) -> np.ndarray:
    out_name = sess.get_outputs()[0].name
    n = _n_rows(feeds)
    parts = [sess.run([out_name], _slice(feeds, slice(i, i + batch)))[0] for i in range(0, n, batch)]
    return np.concatenate(parts, axis=0)


class _ArrayReader:
    """A CalibrationDataReader over in-memory arrays: ``get_next()`` returns a feed dict or None."""

    def __init__(self, feeds: Mapping[str, np.ndarray], batch_size: int):
        self._feeds = feeds
        self._batch = batch_size
        self.rewind()

    def rewind(self) -> None:
        n = _n_rows(self._feeds)
        self._iter = iter([_slice(self._feeds, slice(i, i + self._batch)) for i in range(0, n, self._batch)])

    def get_next(self):
        return next(self._iter, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _calibration_reader(feeds: Mapping[str, np.ndarray], batch_size: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_ArrayReader, CalibrationDataReader):
        pass

    return Reader(feeds, batch_size)


def _subset(feeds: Mapping[str, np.ndarray], k: int, seed: int) -> dict[str, np.ndarray]:
    n = _n_rows(feeds)
    if n <= k:
        return dict(feeds)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    return _slice(feeds, idx)


def _latency_feed(feeds: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    n = _n_rows(feeds)
    idx = np.arange(batch_size) % n
    return _slice(feeds, idx)


# --------------------------------------------------------------------------- latency


def measure_latency(float_sess, cand_sess, feeds: Mapping[str, np.ndarray], batch_size: int,
                    settings: QuantizeSettings) -> LatencyComparison:
    """float32 vs candidate at one batch size, interleaved call by call (A B B A ...).

    Each of ``latency_rounds`` rounds lasts about ``latency_round_seconds``; its
    speedup is median(float32 call times) / median(candidate call times). The
    result's ``speedup`` is the median round speedup, ``noise`` 1.4826 x the median
    absolute deviation of the round speedups.
    """
    feed = _latency_feed(feeds, batch_size)
    runners = {}
    for key, sess in (("f", float_sess), ("c", cand_sess)):
        names = [o.name for o in sess.get_outputs()]
        runners[key] = (lambda s=sess, n=names: s.run(n, feed))
    for _ in range(max(1, settings.latency_warmup)):
        runners["f"]()
        runners["c"]()
    # calls per round from a quick estimate, so every round lasts about latency_round_seconds
    t0 = time.perf_counter()
    runners["f"]()
    runners["c"]()
    per_pair = max(time.perf_counter() - t0, 1e-6)
    calls = int(min(10_000, max(settings.latency_min_calls, settings.latency_round_seconds / per_pair)))

    run_f, run_c = runners["f"], runners["c"]
    clock = time.perf_counter_ns
    f_all: list[float] = []
    c_all: list[float] = []
    ratios: list[float] = []
    for _ in range(settings.latency_rounds):
        f_times: list[float] = []
        c_times: list[float] = []
        for i in range(calls):  # A B B A A B ...: call-level interleaving, so drift hits both alike
            for key in (("f", "c") if i % 2 == 0 else ("c", "f")):
                t = clock()
                (run_f if key == "f" else run_c)()
                (f_times if key == "f" else c_times).append((clock() - t) / 1e6)
        fm, cm = statistics.median(f_times), statistics.median(c_times)
        f_all += f_times
        c_all += c_times
        ratios.append(fm / cm if cm > 0 else float("inf"))
    med = statistics.median(ratios)
    noise = 1.4826 * statistics.median(abs(x - med) for x in ratios)
    return LatencyComparison(
        batch_size=batch_size,
        float32_p50_ms=round(statistics.median(f_all), 5),
        candidate_p50_ms=round(statistics.median(c_all), 5),
        speedup=round(med, 4),
        noise=round(noise, 4),
        rounds=settings.latency_rounds,
        calls_per_round=calls,
        round_speedups=tuple(round(x, 4) for x in ratios),
    )


# --------------------------------------------------------------------------- recipes


def preprocess(src: Path, dst: Path) -> tuple[Path, list[str]]:
    """Run ``quant_pre_process`` (shape inference + graph optimisation); fall back to ``src``.

    Returns the model to quantize and the warnings collected.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    warnings: list[str] = []
    try:
        quant_pre_process(str(src), str(dst))
        return dst, warnings
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation, never a blocker
        warnings.append(f"quant_pre_process failed ({type(exc).__name__}: {str(exc)[:200]}); retrying without symbolic shape inference")
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst, warnings
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"quant_pre_process failed again ({type(exc).__name__}: {str(exc)[:200]}); quantizing the model as exported")
    return src, warnings


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def build_candidate(recipe: str, src: Path, dst: Path, settings: RecipeSettings,
                    calibration: Mapping[str, np.ndarray] | None, seed: int = 0) -> None:
    """Write the quantized model for one recipe from ``src`` to ``dst``."""
    if recipe == "int8-dynamic":
        assert isinstance(settings, DynamicInt8Settings)
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(
            str(src), str(dst), op_types_to_quantize=list(settings.op_types), per_channel=settings.per_channel,
            reduce_range=settings.reduce_range, weight_type=_qtype(settings.weight_type),
            nodes_to_exclude=list(settings.nodes_to_exclude) or None,
        )
    elif recipe == "int8-static":
        assert isinstance(settings, StaticInt8Settings)
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        if not calibration:
            raise QuantizeError("int8-static needs calibration data (received none); pass calibration_inputs rows from the training split")
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[settings.calibration_method]
        extra: dict[str, Any] = {}
        if settings.calibration_method == "percentile":
            extra["CalibPercentile"] = float(settings.percentile)
        rows = _subset(calibration, settings.calibration_samples, seed)
        quantize_static(
            str(src), str(dst), _calibration_reader(rows, settings.calibration_batch_size),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
            per_channel=settings.per_channel, reduce_range=settings.reduce_range,
            activation_type=_qtype(settings.activation_type), weight_type=_qtype(settings.weight_type),
            nodes_to_exclude=list(settings.nodes_to_exclude) or None, calibrate_method=method,
            extra_options=extra or None,
        )
    elif recipe == "fp16":
        assert isinstance(settings, Float16Settings)
        import onnx
        from onnxconverter_common import float16

        model = onnx.load(str(src))
        kw: dict[str, Any] = {"keep_io_types": settings.keep_io_types}
        if settings.op_block_list is not None:
            kw["op_block_list"] = list(settings.op_block_list)
        if settings.nodes_to_exclude:
            kw["node_block_list"] = list(settings.nodes_to_exclude)
        onnx.save(float16.convert_float_to_float16(model, **kw), str(dst))
    else:  # pragma: no cover - recipes come from RECIPE_FILES
        raise QuantizeError(f"unknown recipe {recipe!r} (expected one of {', '.join(RECIPE_FILES)})")


# --------------------------------------------------------------------------- diagnosis


def _quantizable_ops(recipe: str, settings: RecipeSettings) -> frozenset[str] | None:
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    if recipe == "int8-dynamic":
        assert isinstance(settings, DynamicInt8Settings)
        return frozenset(settings.op_types) & frozenset(IntegerOpsRegistry)
    if recipe == "int8-static":
        assert isinstance(settings, StaticInt8Settings)
        return frozenset(settings.op_types) if settings.op_types else frozenset(QDQRegistry)
    return None  # fp16: any node can be blocked


def diagnose_layers(float_model: str | os.PathLike, quant_model: str | os.PathLike, feeds: Mapping[str, np.ndarray],
                    *, op_types: frozenset[str] | None = None, work_dir: str | os.PathLike | None = None) -> list[LayerDiagnosis]:
    """Per-node quantization noise, worst first.

    Both models are augmented to output every float tensor
    (``qdq_loss_debug.modify_model_output_intermediate_tensors``); QDQ tensors are
    matched to their float originals (``create_activation_matching``), other
    recipes by tensor name. A node's ``sqnr_loss_db`` is how much SQNR its output
    lost relative to its noisiest input: the noise that node itself added.

        >>> worst = diagnose_layers("pre.onnx", "model.int8-static.onnx", {"x": x})  # doctest: +SKIP
        >>> worst[0].node                                                            # doctest: +SKIP
        'sequential/dense_1/MatMul'
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    own_tmp = None
    if work_dir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="seqdeploy-diag-")
        work_dir = own_tmp.name
    try:
        work = Path(work_dir)
        aug_f, aug_q = work / "diag.float.onnx", work / "diag.quant.onnx"
        dbg.modify_model_output_intermediate_tensors(str(float_model), str(aug_f))
        dbg.modify_model_output_intermediate_tensors(str(quant_model), str(aug_q))
        f_act = dbg.collect_activations(str(aug_f), _ArrayReader(feeds, 32))
        q_act = dbg.collect_activations(str(aug_q), _ArrayReader(feeds, 32))
        matched = dbg.create_activation_matching(q_act, f_act)
        sqnr: dict[str, float] = {}
        for name, m in matched.items():
            if m.get("float") is not None and len(m["float"]):
                sqnr[name] = dbg.compute_signal_to_quantization_noice_ratio(
                    [np.asarray(a, np.float32) for a in m["float"]], [np.asarray(a, np.float32) for a in m["post_qdq"]])
        for name, f_vals in f_act.items():  # dynamic / fp16: same tensor names in both models
            if name not in sqnr and name in q_act:
                sqnr[name] = dbg.compute_signal_to_quantization_noice_ratio(
                    [np.asarray(a, np.float32) for a in f_vals], [np.asarray(a, np.float32) for a in q_act[name]])
        sqnr = {k: min(_SQNR_CAP_DB, v) for k, v in sqnr.items()}
        model = onnx.load(str(float_model), load_external_data=False)
        out: list[LayerDiagnosis] = []
        for node in model.graph.node:
            if not node.name or (op_types is not None and node.op_type not in op_types):
                continue
            outs = [t for t in node.output if t in sqnr]
            if not outs:
                continue
            s_out = min(sqnr[t] for t in outs)
            ins = [sqnr.get(t, _SQNR_CAP_DB) for t in node.input if t in sqnr or t in {i.name for i in model.graph.input}]
            s_in = min(ins) if ins else _SQNR_CAP_DB
            out.append(LayerDiagnosis(node.name, node.op_type, outs[0], round(s_out, 2), round(max(0.0, s_in - s_out), 2)))
        out.sort(key=lambda d: (-d.sqnr_loss_db, d.sqnr_db))
        return out
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


# --------------------------------------------------------------------------- the core


@dataclass
class _Ctx:
    tmp: Path
    source: Path
    float_sess: Any
    float_metric: MetricReport
    calibration: dict[str, np.ndarray] | None
    test_inputs: dict[str, np.ndarray]
    test_targets: np.ndarray
    task: str
    settings: QuantizeSettings
    float_latency: dict[int, list[float]] = field(default_factory=dict)


def _evaluate(ctx: _Ctx, recipe: str, rsettings: RecipeSettings, attempt: int) -> tuple[Candidate, Path | None]:
    dst = ctx.tmp / f"attempt{attempt}.{RECIPE_FILES[recipe]}"
    try:
        build_candidate(recipe, ctx.source, dst, rsettings, ctx.calibration, ctx.settings.seed)
        sess = make_session(dst, intra_op_num_threads=ctx.settings.intra_op_num_threads)
    except QuantizeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a recipe that cannot handle this model is a verdict, not a crash
        reason = f"could not build: {type(exc).__name__}: {str(exc)[:300]}"
        return Candidate(recipe, attempt, rsettings, None, None, None, None, None, (), False, False, reason), None
    metric = compute_metric(ctx.task, _run_batched(sess, ctx.test_inputs), ctx.test_targets)
    drop = metric_drop(ctx.task, ctx.float_metric.value, metric.value)
    latency = tuple(measure_latency(ctx.float_sess, sess, ctx.test_inputs, b, ctx.settings) for b in ctx.settings.latency_batch_sizes)
    for lat in latency:
        ctx.float_latency.setdefault(lat.batch_size, []).append(lat.float32_p50_ms)
    del sess
    qualified, reason = gate(drop, latency, ctx.settings)
    cand = Candidate(recipe, attempt, rsettings, None, dst.stat().st_size, metric.value, metric.rmse, round(drop, 6),
                     latency, qualified, False, reason)
    return cand, dst


def _try_recipe(ctx: _Ctx, recipe: str) -> list[tuple[Candidate, Path | None]]:
    rsettings = ctx.settings.recipe_settings(recipe)
    first, path = _evaluate(ctx, recipe, rsettings, 1)
    attempts = [(first, path)]
    over_budget = first.metric_drop is not None and first.metric_drop > ctx.settings.max_metric_drop
    if path is None or not over_budget or ctx.settings.exclude_worst_layers == 0:
        return attempts
    feeds = _subset(ctx.test_inputs, ctx.settings.diagnosis_samples, ctx.settings.seed)
    try:
        layers = diagnose_layers(ctx.source, path, feeds, op_types=_quantizable_ops(recipe, rsettings), work_dir=ctx.tmp)
    except Exception as exc:  # noqa: BLE001 - diagnosis is best effort
        attempts[0] = (dataclasses.replace(first, warnings=first.warnings + (f"layer diagnosis failed: {type(exc).__name__}: {str(exc)[:200]}",)), path)
        return attempts
    worst = tuple(layers[: max(ctx.settings.exclude_worst_layers, 5)])
    attempts[0] = (dataclasses.replace(first, worst_layers=worst), path)
    exclude = tuple(d.node for d in layers[: ctx.settings.exclude_worst_layers])
    if not exclude:
        return attempts
    merged = tuple(dict.fromkeys(rsettings.nodes_to_exclude + exclude))
    retry, retry_path = _evaluate(ctx, recipe, dataclasses.replace(rsettings, nodes_to_exclude=merged), 2)
    attempts.append((retry, retry_path))
    return attempts


def quantize_model(
    onnx_path: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    calibration_inputs: Mapping[str, np.ndarray] | None,
    test_inputs: Mapping[str, np.ndarray],
    test_targets: np.ndarray,
    task: str,
    settings: QuantizeSettings = QuantizeSettings(),
    write_json: bool = True,
) -> QuantizeResult:
    """Build, measure and gate quantized candidates of a float32 ONNX model.

    Writes ``out_dir/model.<recipe>.onnx`` for the chosen candidate only (atomically)
    and ``out_dir/quantize.json`` listing every candidate. Temporary candidates live
    in a temp dir that is removed. Nothing qualifying is a normal result
    (``result.chosen is None``), not an error.

        >>> r = quantize_model("runs/mlp/model.onnx", out_dir="runs/mlp",     # doctest: +SKIP
        ...                    calibration_inputs={"x": x_train}, test_inputs={"x": x_test},
        ...                    test_targets=y_test, task="multiclass",
        ...                    settings=QuantizeSettings(mode="auto", max_metric_drop=0.01))
        >>> r.chosen, [c.recipe for c in r.candidates]                        # doctest: +SKIP
        ('model.int8-dynamic.onnx', ['int8-static', 'int8-dynamic'])
    """
    if not isinstance(settings, QuantizeSettings):
        raise QuantizeError(f"settings = {settings!r} (expected a QuantizeSettings)")
    _check_choice("task", task, TASKS)
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    model = _load_onnx(onnx_path)
    check_not_quantized(model, onnx_path)
    init_names = {i.name for i in model.graph.initializer}
    model_inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input if i.name not in init_names}
    counts = op_counts(model)
    del model

    test = _check_feeds("test", test_inputs, model_inputs, "pass the test split's model-ready inputs")
    targets = np.asarray(test_targets)
    if targets.ndim == 0 or targets.shape[0] != _n_rows(test):
        raise QuantizeError(f"test_targets has {targets.shape[0] if targets.ndim else 0} rows but test inputs have {_n_rows(test)} (expected one target per test row)")
    recipes, skipped = plan_recipes(counts, settings.mode)
    calibration = None
    if "int8-static" in recipes:
        calibration = _check_feeds("calibration", calibration_inputs, model_inputs,
                                   "static int8 needs rows from the training split (or use --mode dynamic)")
    elif calibration_inputs:
        calibration = {k: np.asarray(v) for k, v in calibration_inputs.items()}

    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="seqdeploy-quantize-") as tmp_name:
        tmp = Path(tmp_name)
        source, pre_warnings = preprocess(onnx_path, tmp / "preprocessed.onnx")
        warnings += pre_warnings
        float_sess = make_session(onnx_path, intra_op_num_threads=settings.intra_op_num_threads)
        float_metric = compute_metric(task, _run_batched(float_sess, test), targets)
        ctx = _Ctx(tmp, source, float_sess, float_metric, calibration, test, targets, task, settings)

        attempts: list[tuple[Candidate, Path | None]] = []
        for recipe in recipes:
            attempts += _try_recipe(ctx, recipe)

        best = choose_candidate([c for c, _ in attempts])
        candidates: list[Candidate] = []
        chosen_path: Path | None = None
        for cand, path in attempts:
            if best is not None and cand is best and path is not None:
                chosen_path = out_dir / cand.file_name
                with atomic_path(chosen_path) as tmp_out:
                    shutil.copyfile(path, tmp_out)
                cand = dataclasses.replace(cand, chosen=True, path=chosen_path.name, reason=cand.reason.replace("qualified", "chosen", 1))
            elif cand.qualified:
                cand = dataclasses.replace(cand, reason=f"qualified but slower than {best.recipe} (attempt {best.attempt})" if best else cand.reason)
            candidates.append(cand)

        float_report = Float32Report(
            path=str(onnx_path), size_bytes=onnx_path.stat().st_size, metric=float_metric.value, rmse=float_metric.rmse,
            latency_p50_ms={str(b): round(statistics.median(v), 5) for b, v in sorted(ctx.float_latency.items())},
            op_counts=counts,
        )
        del float_sess, ctx

    chosen_cand = next((c for c in candidates if c.chosen), None)
    if chosen_cand is not None:
        speeds = ", ".join(f"{lat.speedup:.2f}x at b={lat.batch_size}" for lat in chosen_cand.latency)
        summary = (f"chose {chosen_cand.file_name}: {metric_name_for(task)} {chosen_cand.metric:.4f} "
                   f"(drop {chosen_cand.metric_drop:+.4f}), {speeds}")
    elif not candidates:
        summary = "no recipe applies to this model; float32 model.onnx stays the deployment artifact"
    else:
        summary = "no candidate qualified; float32 model.onnx stays the deployment artifact"

    removed: list[str] = []
    result = QuantizeResult(
        chosen=chosen_cand.file_name if chosen_cand else None,
        chosen_recipe=chosen_cand.recipe if chosen_cand else None,
        chosen_path=str(chosen_path) if chosen_path else None,
        task=task, metric_name=metric_name_for(task), max_metric_drop=float(settings.max_metric_drop),
        metric_drop_definition=metric_drop_definition(task), mode=settings.mode, float32=float_report,
        candidates=tuple(candidates), skipped=tuple(skipped), summary=summary,
        json_path=str(out_dir / "quantize.json") if write_json else None, warnings=tuple(warnings),
    )
    if write_json:
        # Stale artifacts of other recipes would contradict quantize.json: list them, then remove them.
        stale = [out_dir / name for name in RECIPE_FILES.values() if name != result.chosen and (out_dir / name).exists()]
        removed = [p.name for p in stale]
        result = dataclasses.replace(result, removed_stale=tuple(removed))
        atomic_write_json(out_dir / "quantize.json", result.to_json())
        for p in stale:
            p.unlink(missing_ok=True)
    return result


def quantize_run(run_dir: str | os.PathLike, settings: QuantizeSettings = QuantizeSettings()) -> QuantizeResult:
    """Quantize ``run_dir/model.onnx`` with the run's own training/test split.

        >>> quantize_run("runs/digits_mlp", QuantizeSettings(mode="auto")).chosen  # doctest: +SKIP
        'model.int8-dynamic.onnx'
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputFileNotFound(f"{run_dir}: no such run directory (expected the output of `seqdeploy train` + `seqdeploy export`)")
    model_path = run_dir / "model.onnx"
    if not model_path.exists():
        raise InputFileNotFound(f"{model_path}: missing (expected the float32 export); run `seqdeploy export {run_dir}` first")
    from seqdeploy.data import load_run_splits  # lazy: data pulls in the toolchain

    splits = load_run_splits(run_dir)
    name = splits.input_name
    return quantize_model(
        model_path, out_dir=run_dir,
        calibration_inputs={name: splits.x_train} if splits.x_train is not None and len(splits.x_train) else None,
        test_inputs={name: splits.x_test}, test_targets=splits.y_test, task=splits.task, settings=settings,
    )


__all__ = [
    "Candidate", "DynamicInt8Settings", "Float16Settings", "Float32Report", "LatencyComparison", "LayerDiagnosis",
    "MetricReport", "QuantizeResult", "QuantizeSettings", "SkippedRecipe", "StaticInt8Settings",
    "check_not_quantized", "choose_candidate", "compute_metric", "diagnose_layers", "gate", "measure_latency",
    "metric_drop", "op_counts", "plan_recipes", "quantize_model", "quantize_run",
]
