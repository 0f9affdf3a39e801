"""bench.json: what one benchmark measured (runners, measurements), the speedup references and the
batch-1 headline the pipeline and the report print."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from seqdeploy.atomic import to_jsonable
from seqdeploy.bench.runners import references
from seqdeploy.bench.timing import LatencyStats, speedup
from seqdeploy.errors import BenchError

SCHEMA_VERSION = 1
REF_ONNX_FP32 = "onnx_fp32"
REF_KERAS_DIRECT = "keras_direct"
REF_TFLITE_BEST = "tflite_best"


@dataclass(frozen=True)
class RunnerInfo:
    name: str
    family: str
    precision: str
    artifact: str | None
    artifact_bytes: int | None
    deployed: bool
    threads_apply: bool
    build_s: float | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measurement:
    """One runner at one (batch, threads): absolute numbers and ratios (speedup > 1 = faster than the reference)."""

    runner: str
    batch: int
    threads: int
    status: str  # "ok" | "skipped" | "error"
    reason: str | None = None
    creation_s: float | None = None
    first_inference_s: float | None = None
    warmup_calls: int = 0
    latency: LatencyStats | None = None
    throughput_sps: float | None = None
    max_abs_diff: float | None = None  # first-call outputs vs the reference runner's (ort:fp32 when present)
    rss_delta_mb: float | None = None  # RSS growth at creation (first batch) + resize/first calls (approximate, in-process)
    speedup: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchResult:
    """Everything ``seqdeploy bench`` measured; ``to_json()`` is the bench.json document."""

    schema_version: int
    target: str
    target_kind: str  # "run_dir" | "onnx"
    created: str
    data: dict[str, Any]
    settings: dict[str, Any]
    machine: dict[str, Any]
    runners: tuple[RunnerInfo, ...]
    results: tuple[Measurement, ...]
    peak_rss_mb: float | None
    wall_s: float
    warnings: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)

    def get(self, runner: str, batch: int, threads: int) -> Measurement | None:
        for m in self.results:
            if m.runner == runner and m.batch == batch and m.threads == threads:
                return m
        return None

    def deployed_runner(self) -> str | None:
        return next((r.name for r in self.runners if r.deployed), None)

    def to_json(self) -> dict[str, Any]:
        return to_jsonable(self)


def _reference_p50s(p50: Mapping[str, float], family_of: Mapping[str, str]) -> dict[str, tuple[str, float | None]]:
    """``{reference key: (headline name, p50 us)}``: a named runner's p50, or the fastest of its family."""
    out: dict[str, tuple[str, float | None]] = {}
    for fam, ref in references():
        if ref.runner is not None:
            value = p50.get(ref.runner)
        else:
            mine = [v for name, v in p50.items() if family_of.get(name) == fam]
            value = min(mine) if mine else None
        out[ref.key] = (ref.headline, value)
    return out


def compute_speedups(results: Sequence[Measurement], runners: Sequence[RunnerInfo]) -> list[Measurement]:
    """Attach the speedup vs every reference (ONNX fp32, Keras direct, the best TFLite runner) per (batch, threads).

    >>> # speedup["keras_direct"] == keras_direct.p50 / runner.p50  (> 1 means faster)
    """
    fam = {r.name: r.family for r in runners}
    out = []
    for m in results:
        p50 = {p.runner: p.latency.p50_us for p in results
               if p.batch == m.batch and p.threads == m.threads and p.status == "ok" and p.latency}
        refs = _reference_p50s(p50, fam)
        mine = m.latency.p50_us if (m.status == "ok" and m.latency) else None
        out.append(dataclasses.replace(m, speedup={k: speedup(v, mine) for k, (_, v) in refs.items()}))
    return out


def headline(bench: Mapping[str, Any], batch: int = 1) -> dict[str, Any]:
    """The deployed runner's p50 at ``batch`` beside every reference's, and the ratios, from a bench.json dict.

    Keys: ``deployed_runner``, ``deployed_p50_us_b1``, ``<reference>_p50_us_b1`` and
    ``speedup_vs_<headline>`` (reference p50 / deployed p50) for every reference measured.
    """
    if not bench:
        return {}
    p50: dict[str, float] = {}
    for m in bench.get("results", []):
        if m.get("batch") == batch and m.get("status") == "ok" and m.get("latency") and m["runner"] not in p50:
            p50[m["runner"]] = m["latency"]["p50_us"]
    runners = bench.get("runners", [])
    family_of = {r.get("name"): r.get("family") for r in runners}
    if not any(family_of.values()):  # bench.json without families: a family is the runner name's prefix
        family_of = {name: {"ort": "onnxruntime"}.get(name.split(":")[0], name.split(":")[0]) for name in p50}
    deployed_name = next((r["name"] for r in runners if r.get("deployed")), None)
    deployed = p50.get(deployed_name) if deployed_name else None
    out: dict[str, Any] = {"deployed_runner": deployed_name, f"deployed_p50_us_b{batch}": deployed}
    refs = _reference_p50s(p50, family_of)
    for key, (_, value) in refs.items():
        out[f"{key}_p50_us_b{batch}"] = value
    for key, (name, value) in refs.items():
        if deployed and value:
            out[f"speedup_vs_{name}"] = value / deployed
    return out


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read a bench.json (as a dict), checking its ``schema_version``."""
    d = json.loads(Path(path).read_text())
    if d.get("schema_version") != SCHEMA_VERSION:
        raise BenchError(f"{path}: schema_version {d.get('schema_version')!r} (expected {SCHEMA_VERSION}); rerun `seqdeploy bench`")
    return d


__all__ = ["BenchResult", "Measurement", "RunnerInfo", "SCHEMA_VERSION", "REF_ONNX_FP32", "REF_KERAS_DIRECT",
           "REF_TFLITE_BEST", "compute_speedups", "headline", "load_result"]
