"""What quantize decides: the candidates, their measurements and the verdicts (``quantize.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqdeploy.atomic import to_jsonable

RecipeSettings = Any  # the settings dataclass of a recipe (seqdeploy.quantize.recipes)


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
        from seqdeploy.quantize.recipes import get_recipe

        return get_recipe(self.recipe).artifact

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


__all__ = ["Candidate", "Float32Report", "LatencyComparison", "LayerDiagnosis", "MetricReport", "QuantizeResult",
           "SkippedRecipe"]
