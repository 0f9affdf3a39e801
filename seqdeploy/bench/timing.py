"""The one interleaved timing loop and its latency statistics (bench and the quantize gate use it).

Runners are *interleaved* -- rounds of A B C A B C, each a short time slice -- so machine
drift hits every runner alike and cancels in the ratios. Each runner gets an equal share
of the time budget, so a 36 ms ``model.predict`` cannot starve an 8 us onnxruntime session.
Pure: the loop takes callables and a clock, so tests can fake both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from seqdeploy.errors import BenchError

QUANTILE_GRID = tuple(range(101))  # stored percentiles 0..100, enough to redraw the distribution


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency summary in microseconds (percentiles use numpy's linear method).

    >>> latency_stats([1e-6, 2e-6, 3e-6]).p50_us
    2.0
    """

    n: int
    mean_us: float
    std_us: float
    min_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    quantiles_us: tuple[float, ...] = ()  # at QUANTILE_GRID percentiles (0..100)


def latency_stats(samples_s: Sequence[float] | np.ndarray) -> LatencyStats:
    """Summarise per-call durations given in seconds.

    >>> s = latency_stats([0.001] * 99 + [0.002])
    >>> (s.p50_us, s.max_us)
    (1000.0, 2000.0)
    """
    a = np.asarray(samples_s, dtype=np.float64) * 1e6
    if a.size == 0:
        raise BenchError("latency_stats received no samples (expected at least 1); run at least one call")
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
    q = np.percentile(a, QUANTILE_GRID)
    return LatencyStats(
        n=int(a.size),
        mean_us=float(a.mean()),
        std_us=float(a.std(ddof=1)) if a.size > 1 else 0.0,
        min_us=float(a.min()),
        p50_us=float(p50),
        p90_us=float(p90),
        p99_us=float(p99),
        p999_us=float(p999),
        max_us=float(a.max()),
        quantiles_us=tuple(float(v) for v in q),
    )


def speedup(reference_us: float | None, candidate_us: float | None) -> float | None:
    """How many times faster ``candidate`` is than ``reference`` (> 1 = faster); None if unknown.

    >>> speedup(100.0, 25.0)
    4.0
    """
    if reference_us is None or candidate_us is None or candidate_us <= 0 or reference_us <= 0:
        return None
    return float(reference_us) / float(candidate_us)


def median_ratio(ratios: Sequence[float]) -> tuple[float, float]:
    """The median of per-round ratios and their robust spread (1.4826 x median absolute deviation).

    >>> median_ratio([1.0, 2.0, 3.0])
    (2.0, 1.4826)
    """
    med = float(np.median(ratios))
    return med, float(1.4826 * np.median([abs(x - med) for x in ratios]))


@dataclass(frozen=True)
class StopRule:
    """When to stop timing one configuration.

    ``duration_s`` is the whole configuration's budget, split equally between runners;
    a runner stops when it used its share *and* has ``min_samples``, or at
    ``max_overrun`` times its share whatever it has (a 2 s call must not eat the run),
    or at ``max_samples``. With ``count`` every runner makes exactly ``count`` timed calls.
    ``alternate`` reverses the runner order every other round (A B, B A, A B ...), so
    no runner always runs right after the same other one.

    >>> StopRule(duration_s=2.0).share(4)
    0.5
    """

    duration_s: float | None = 2.0
    count: int | None = None
    warmup_s: float = 0.1
    slice_s: float = 0.02
    min_samples: int = 5
    max_samples: int = 1_000_000
    max_overrun: float = 3.0
    alternate: bool = False

    def __post_init__(self) -> None:
        if self.count is None and self.duration_s is None:
            raise BenchError("StopRule received neither duration_s nor count; set one of them")
        if self.count is not None and self.count < 1:
            raise BenchError(f"count = {self.count} (expected an integer >= 1); give a count of 1 or more")
        if self.duration_s is not None and not self.duration_s > 0:
            raise BenchError(f"duration = {self.duration_s} s (expected > 0); give e.g. a duration of 2 s")
        if self.slice_s <= 0 or self.warmup_s < 0:
            raise BenchError(f"slice_s = {self.slice_s}, warmup_s = {self.warmup_s} (expected slice > 0, warmup >= 0)")

    def share(self, n_runners: int) -> float:
        return (self.duration_s or 0.0) / max(1, n_runners)


def _is_done(rule: StopRule, n: int, spent: float, share: float) -> bool:
    if rule.count is not None:
        return n >= rule.count
    if n >= rule.max_samples:
        return True
    if spent >= share and n >= rule.min_samples:
        return True
    return spent >= rule.max_overrun * share and n >= 1


def warm_up(fn: Callable[[], Any], warmup_s: float, clock: Callable[[], float] = time.perf_counter,
            min_calls: int = 3) -> int:
    """Call ``fn`` until ``warmup_s`` elapsed and at least ``min_calls`` calls; return the number of calls.

    >>> warm_up(lambda: None, 0.0)
    3
    """
    start = clock()
    calls = 0
    while True:
        fn()
        calls += 1
        if calls >= min_calls and clock() - start >= warmup_s:
            return calls


def run_interleaved(
    calls: Sequence[Callable[[], Any]],
    rule: StopRule,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Time ``calls`` in interleaved rounds of short slices; return per-call seconds per callable.

    Each round gives every unfinished callable one slice of ``rule.slice_s`` (at least one
    call), so slow and fast runners see the same machine state.

    >>> out = run_interleaved([lambda: None, lambda: None], StopRule(count=3))
    >>> [len(s) for s in out]
    [3, 3]
    """
    n = len(calls)
    samples: list[list[float]] = [[] for _ in range(n)]
    spent = [0.0] * n
    share = rule.share(n)
    active = list(range(n))
    rounds = 0
    while active:
        order = active[::-1] if (rule.alternate and rounds % 2) else list(active)
        rounds += 1
        for i in order:
            fn = calls[i]
            slice_start = clock()
            s = samples[i]
            while True:
                t0 = clock()
                fn()
                t1 = clock()
                s.append(t1 - t0)
                spent[i] += t1 - t0
                if _is_done(rule, len(s), spent[i], share) or t1 - slice_start >= rule.slice_s:
                    break
            if _is_done(rule, len(s), spent[i], share):
                active.remove(i)
    return samples


__all__ = ["LatencyStats", "QUANTILE_GRID", "StopRule", "latency_stats", "median_ratio", "run_interleaved",
           "speedup", "warm_up"]
