"""The measured gate: the task metric and its drop, float32 vs candidate latency, the verdict and the choice."""

from __future__ import annotations

import math
import statistics
import time
from typing import Mapping

import numpy as np

from seqdeploy.bench.timing import StopRule, median_ratio, run_interleaved
from seqdeploy.errors import QuantizeError
from seqdeploy.preprocess import NoPreprocessing, task_outputs
from seqdeploy.quantize.feeds import latency_feed
from seqdeploy.quantize.results import Candidate, LatencyComparison, MetricReport
from seqdeploy.quantize.settings import TASKS, QuantizeSettings, _check_choice


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
    if task == "binary" and out.reshape(n, -1).shape[1] != 1:
        raise QuantizeError(f"binary task: model output has shape {out.shape} (expected one sigmoid probability per row, (n, 1)); use task='multiclass' for softmax outputs")
    if task in ("binary", "multiclass"):
        pred = task_outputs(out, task, None, NoPreprocessing())["class_id"]  # the one definition of class ids
        multi_hot = task == "multiclass" and y.ndim == 2 and y.shape[1] > 1
        ids = np.argmax(y.reshape(n, -1), axis=1) if multi_hot else y.reshape(n).astype(np.int64)
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


def measure_latency(float_sess, cand_sess, feeds: Mapping[str, np.ndarray], batch_size: int,
                    settings: QuantizeSettings) -> LatencyComparison:
    """float32 vs candidate at one batch size, interleaved call by call (A B B A ...) by the bench timing loop.

    Each of ``latency_rounds`` rounds lasts about ``latency_round_seconds``; its
    speedup is median(float32 call times) / median(candidate call times). The
    result's ``speedup`` is the median round speedup, ``noise`` 1.4826 x the median
    absolute deviation of the round speedups.
    """
    feed = latency_feed(feeds, batch_size)
    calls = []
    for sess in (float_sess, cand_sess):
        names = [o.name for o in sess.get_outputs()]
        calls.append(lambda s=sess, n=names: s.run(n, feed))
    run_f, run_c = calls
    for _ in range(max(1, settings.latency_warmup)):
        run_f()
        run_c()
    # calls per round from a quick estimate, so every round lasts about latency_round_seconds
    t0 = time.perf_counter()
    run_f()
    run_c()
    per_pair = max(time.perf_counter() - t0, 1e-6)
    n_calls = int(min(10_000, max(settings.latency_min_calls, settings.latency_round_seconds / per_pair)))
    # one call per slice, order reversed every call pair (A B B A A B ...): drift hits both alike
    rule = StopRule(duration_s=None, count=n_calls, warmup_s=0.0, slice_s=1e-12, alternate=True)
    f_all: list[float] = []
    c_all: list[float] = []
    ratios: list[float] = []
    for _ in range(settings.latency_rounds):
        f_s, c_s = run_interleaved(calls, rule)
        f_times, c_times = [t * 1e3 for t in f_s], [t * 1e3 for t in c_s]
        fm, cm = statistics.median(f_times), statistics.median(c_times)
        f_all += f_times
        c_all += c_times
        ratios.append(fm / cm if cm > 0 else float("inf"))
    med, noise = median_ratio(ratios)
    return LatencyComparison(
        batch_size=batch_size,
        float32_p50_ms=round(statistics.median(f_all), 5),
        candidate_p50_ms=round(statistics.median(c_all), 5),
        speedup=round(med, 4),
        noise=round(noise, 4),
        rounds=settings.latency_rounds,
        calls_per_round=n_calls,
        round_speedups=tuple(round(x, 4) for x in ratios),
    )


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


__all__ = ["choose_candidate", "compute_metric", "gate", "measure_latency", "metric_drop", "metric_drop_definition",
           "metric_name_for"]
