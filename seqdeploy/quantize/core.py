"""The quantize flow: plan the recipes for the model's op mix, build each candidate, measure it against
float32, diagnose and retry once when accuracy dropped, keep the fastest qualifying one."""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqdeploy.atomic import atomic_path, atomic_write_json
from seqdeploy.errors import InputFileNotFound, QuantizeError
from seqdeploy.layout import MODEL_ONNX, QUANTIZE_FILE
from seqdeploy.quantize.diagnose import diagnose_layers
from seqdeploy.quantize.feeds import check_feeds, n_rows, run_batched, subset
from seqdeploy.quantize.gating import (
    choose_candidate, compute_metric, gate, measure_latency, metric_drop, metric_drop_definition, metric_name_for,
)
from seqdeploy.quantize.graph import check_not_quantized, load_onnx, op_counts, preprocess
from seqdeploy.quantize.recipes import RecipeDoesNotFit, cpu_flags, get_recipe, recipe_files, recipe_for_mode, recipes
from seqdeploy.quantize.results import (
    Candidate, Float32Report, MetricReport, QuantizeResult, RecipeSettings, SkippedRecipe,
)
from seqdeploy.quantize.settings import TASKS, QuantizeSettings, _check_choice
from seqdeploy.runtime.session import make_session


def plan_recipes(counts: Mapping[str, int], mode: str, cpu: frozenset[str] | None = None
                 ) -> tuple[list[str], list[SkippedRecipe]]:
    """Which recipes to try for this op mix (``auto``: every recipe without a ``skip_reason``) or the one asked for.

        >>> plan_recipes({"Conv": 3, "MatMul": 1, "Relu": 4}, "auto", cpu=frozenset())[0]
        ['int8-static']
    """
    if mode != "auto":
        return [recipe_for_mode(mode).name], []
    flags = cpu_flags() if cpu is None else cpu
    run: list[str] = []
    skipped: list[SkippedRecipe] = []
    for name, recipe in recipes().items():
        why = recipe.skip_reason(counts, flags)
        if why is None:
            run.append(name)
        else:
            skipped.append(SkippedRecipe(name, why))
    return run, skipped


def build_candidate(recipe: str, src: Path, dst: Path, settings: RecipeSettings,
                    calibration: Mapping[str, np.ndarray] | None, seed: int = 0) -> None:
    """Write the quantized model for one recipe from ``src`` to ``dst``."""
    get_recipe(recipe).build(src, dst, settings, calibration, seed)


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
    dst = ctx.tmp / f"attempt{attempt}.{get_recipe(recipe).artifact}"
    try:
        build_candidate(recipe, ctx.source, dst, rsettings, ctx.calibration, ctx.settings.seed)
        sess = make_session(dst, threads=ctx.settings.intra_op_num_threads)  # what a deployed Predictor runs
    except QuantizeError:  # a user error, or RecipeDoesNotFit (quantize_model lists the recipe as skipped)
        raise
    except Exception as exc:  # noqa: BLE001 - a recipe that cannot handle this model is a verdict, not a crash
        reason = f"could not build: {type(exc).__name__}: {str(exc)[:300]}"
        return Candidate(recipe, attempt, rsettings, None, None, None, None, None, (), False, False, reason), None
    metric = compute_metric(ctx.task, run_batched(sess, ctx.test_inputs), ctx.test_targets)
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
    feeds = subset(ctx.test_inputs, ctx.settings.diagnosis_samples, ctx.settings.seed)
    try:
        layers = diagnose_layers(ctx.source, path, feeds, op_types=get_recipe(recipe).quantizable_ops(rsettings), work_dir=ctx.tmp)
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
    model = load_onnx(onnx_path)
    check_not_quantized(model, onnx_path)
    init_names = {i.name for i in model.graph.initializer}
    model_inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input if i.name not in init_names}
    counts = op_counts(model)
    del model

    test = check_feeds("test", test_inputs, model_inputs, "pass the test split's model-ready inputs")
    targets = np.asarray(test_targets)
    if targets.ndim == 0 or targets.shape[0] != n_rows(test):
        raise QuantizeError(f"test_targets has {targets.shape[0] if targets.ndim else 0} rows but test inputs have {n_rows(test)} (expected one target per test row)")
    recipes, skipped = plan_recipes(counts, settings.mode)
    calibration = None
    if any(get_recipe(r).needs_calibration for r in recipes):
        calibration = check_feeds("calibration", calibration_inputs, model_inputs,
                                   "static int8 needs rows from the training split (or use the dynamic mode)")
    elif calibration_inputs:
        calibration = {k: np.asarray(v) for k, v in calibration_inputs.items()}

    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="seqdeploy-quantize-") as tmp_name:
        tmp = Path(tmp_name)
        source, pre_warnings = preprocess(onnx_path, tmp / "preprocessed.onnx")
        warnings += pre_warnings
        float_sess = make_session(onnx_path, threads=settings.intra_op_num_threads)
        float_metric = compute_metric(task, run_batched(float_sess, test), targets)
        ctx = _Ctx(tmp, source, float_sess, float_metric, calibration, test, targets, task, settings)

        attempts: list[tuple[Candidate, Path | None]] = []
        for recipe in recipes:
            try:
                attempts += _try_recipe(ctx, recipe)
            except RecipeDoesNotFit as exc:  # the graph, not the op mix, rules the recipe out
                skipped.append(SkippedRecipe(recipe, str(exc)))

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
        json_path=str(out_dir / QUANTIZE_FILE) if write_json else None, warnings=tuple(warnings),
    )
    if write_json:
        # Stale artifacts of other recipes would contradict quantize.json: list them, then remove them.
        stale = [out_dir / name for name in recipe_files().values() if name != result.chosen and (out_dir / name).exists()]
        removed = [p.name for p in stale]
        result = dataclasses.replace(result, removed_stale=tuple(removed))
        atomic_write_json(out_dir / QUANTIZE_FILE, result.to_json())
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
    model_path = run_dir / MODEL_ONNX
    if not model_path.exists():
        raise InputFileNotFound(f"{model_path}: missing (expected the float32 export); run `seqdeploy export {run_dir}` first")
    from seqdeploy.data import load_run_splits  # lazy: data pulls in the toolchain

    splits = load_run_splits(run_dir)
    name = splits.input_name
    result = quantize_model(
        model_path, out_dir=run_dir,
        calibration_inputs={name: splits.x_train} if splits.x_train is not None and len(splits.x_train) else None,
        test_inputs={name: splits.x_test}, test_targets=splits.y_test, task=splits.task, settings=settings,
    )
    from seqdeploy.bundle.write import refresh_bundle_manifest

    refresh_bundle_manifest(run_dir)  # the deployed artifact (and its portable graph) follow the choice
    return result


__all__ = ["build_candidate", "plan_recipes", "quantize_model", "quantize_run"]
