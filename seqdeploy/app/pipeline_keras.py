"""``pipeline MODEL.keras --data SAMPLE``: a model trained elsewhere -> a verified, portable bundle.

The stages of :mod:`seqdeploy.app.pipeline` minus training, on the user's model and SAMPLE rows
(:mod:`seqdeploy.bundle.user_model`): export -> verify (Keras vs ONNX on SAMPLE plus generated and edge
inputs) -> manifest + portable graph, checked on SAMPLE's raw rows -> quantize (each candidate against the
float32 model on SAMPLE: top-1 agreement for classifiers, value closeness otherwise; accuracy against the
target column when one is named) -> tune -> bench. Everything is built in a temporary directory beside
``out`` and moved into place only when every stage finished: a failure leaves nothing half-written.

    >>> r = run_keras_pipeline("sentiment.keras", "sample.csv", out="bundles/sentiment",   # doctest: +SKIP
    ...                        custom_objects=["layers.py"], labels=["neg", "pos"])
    >>> r.manifest_path                                                                       # doctest: +SKIP
    PosixPath('bundles/sentiment/manifest.json')
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from seqdeploy.app.pipeline import PipelineEvent, PipelineOptions, PipelineResult, StageOutcome
from seqdeploy.atomic import atomic_write_json, read_json_or_empty
from seqdeploy.errors import CheckFailed, UsageError
from seqdeploy.layout import (
    BENCH_FILE, BENCH_MD, BENCH_PNG, EXPORT_FILE, GOLDEN_JSON, GOLDEN_NPZ, MANIFEST_FILE, MODEL_KERAS, MODEL_ONNX,
    QUANTIZE_FILE, REPORT_FILE, TRAIN_FILE, TUNE_FILE, VERIFY_FILE,
)

STAGES = ("export", "verify", "bundle", "quantize", "tune", "bench")


def run_keras_pipeline(model_path: str | Path, sample_path: str | Path, *, out: str | Path | None = None,
                       custom_objects: Sequence[str | Path] | dict | None = None, target: str | None = None,
                       labels: Sequence[str] | None = None, unsafe: bool = False,
                       options: PipelineOptions = PipelineOptions(),
                       on_event: Callable[[PipelineEvent], None] | None = None) -> PipelineResult:
    """Build a bundle from a saved Keras model and SAMPLE rows (see the module docstring)."""
    import keras

    from seqdeploy.bundle.user_model import infer_task, read_sample
    from seqdeploy.export.convert import load_keras_model
    from seqdeploy.export.custom_objects import load_custom_objects
    from seqdeploy.verify.feeds import input_specs

    start = time.perf_counter()
    emit = on_event or (lambda _e: None)
    model_path = Path(model_path)
    out = Path(out) if out is not None else Path("bundles") / model_path.stem
    _check_out(out)
    objs = custom_objects if isinstance(custom_objects, dict) else load_custom_objects(custom_objects)
    with keras.saving.custom_object_scope(objs):  # every stage that loads the model by path finds them
        model = load_keras_model(model_path, unsafe=unsafe, custom_objects=objs)
        specs = input_specs(model)
        sample = read_sample(sample_path, specs, target)
        labels = list(labels) if labels is not None else None
        task = infer_task(model, labels)
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            outcomes = _stages(model, model_path, specs, sample, task, labels, target, work, unsafe, options, emit)
            if out.exists():
                shutil.rmtree(out)  # a previous bundle of ours (checked by _check_out)
            work.rename(out)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    from seqdeploy.app.pipeline import pipeline_summary

    summary = pipeline_summary(out)
    summary["portable"] = read_json_or_empty(out / VERIFY_FILE).get("portable")
    snippet = (f"from seqdeploy.runtime import Predictor; p = Predictor.from_bundle({str(out)!r}); "
               f"p.predict({_example_arg(specs)})")
    return PipelineResult(run_dir=out, spec_name=model_path.stem, stages=tuple(outcomes),
                          seconds=time.perf_counter() - start, summary=summary,
                          manifest_path=out / MANIFEST_FILE, report_path=out / REPORT_FILE, embed_snippet=snippet)


def _check_out(out: Path) -> None:
    from seqdeploy.bundle.user_model import load_user_run

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and load_user_run(out) is None)):
        raise UsageError(f"output {out} exists and is not a bundle made from a model file; choose a new directory "
                         "(an earlier such bundle is replaced)")


def _example_arg(specs: Sequence[Any]) -> str:
    return "{" + ", ".join(f"{s.name!r}: ..." for s in specs) + "}" if len(specs) > 1 else "x"


def _stages(model: Any, model_path: Path, specs: Sequence[Any], sample: Any, task: str, labels: list[str] | None,
            target: str | None, work: Path, unsafe: bool, options: PipelineOptions,
            emit: Callable[[PipelineEvent], None]) -> list[StageOutcome]:
    from seqdeploy.bundle.user_model import check_portable_parity, train_record

    outcomes: list[StageOutcome] = []

    @contextlib.contextmanager
    def stage(name: str, files: list[str], summary: dict):
        emit(PipelineEvent("start", name))
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        emit(PipelineEvent("done", name, dict(summary) | {"seconds": seconds}))
        outcomes.append(StageOutcome(name, "ran", seconds, dict(summary), tuple(files)))

    keras_file = work / MODEL_KERAS
    if model_path.suffix.lower() == ".keras":
        shutil.copyfile(model_path, keras_file)  # the very bytes the user trained
    else:
        model.save(keras_file)  # a legacy .h5: the bundle carries the Keras 3 format
    atomic_write_json(work / TRAIN_FILE, train_record(model_path.stem, task, labels, specs, model_path.name, target))

    summary: dict[str, Any] = {}
    with stage("export", [MODEL_ONNX, EXPORT_FILE], summary):
        from seqdeploy.export.convert import export_onnx

        r = export_onnx(keras_file, out=work / MODEL_ONNX, opset=options.opset, unsafe=unsafe)
        summary.update(opset=r.opset, warnings=list(r.warnings))

    summary = {}
    with stage("verify", [VERIFY_FILE, GOLDEN_NPZ, GOLDEN_JSON], summary):
        from seqdeploy.verify.parity import verify_models

        v = verify_models(keras_file, work / MODEL_ONNX, real_inputs=sample.inputs, task=task, out_dir=work,
                          unsafe=unsafe)
        summary.update(passed=v.passed, max_abs_error=v.max_abs_error, label_agreement=v.label_agreement)

    summary = {}
    with stage("bundle", [MANIFEST_FILE, "model.portable.onnx"], summary):
        from seqdeploy.bundle.write import write_bundle_manifest

        write_bundle_manifest(work)
        parity = check_portable_parity(work, model, sample.inputs, task, labels)
        report = read_json_or_empty(work / VERIFY_FILE)
        atomic_write_json(work / VERIFY_FILE, report | {"portable": parity})
        write_bundle_manifest(work)  # verify.json changed: the manifest lists it again
        summary.update(dataclasses.asdict(parity))
        if not parity.passed:
            raise CheckFailed(f"the portable graph differs from Keras on the raw sample rows (max abs error "
                              f"{parity.max_abs_error:.3g} > {parity.tolerance:g})", v)

    summary = {}
    skip = quantize_skip_reason(work)
    if skip is not None:
        emit(PipelineEvent("skip", "quantize", skip))
        outcomes.append(StageOutcome("quantize", "skipped", 0.0, {"reason": skip}))
    else:
        _quantize(model, sample, task, labels, target, work, options, stage, summary)
    summary = {}
    with stage("tune", [TUNE_FILE], summary):
        from seqdeploy.bench.tune import tune_bundle

        tune_bundle(work, batches=options.tune_batches, duration_s=options.tune_duration)

    summary = {}
    with stage("bench", [BENCH_FILE, BENCH_MD, BENCH_PNG], summary):
        from seqdeploy.bench import StopRule, run_bench, write_outputs

        result = run_bench(work, batches=options.bench_batches, threads=options.bench_threads,
                           vs=[v for v in options.bench_vs if v == "keras"] or "none",
                           rule=StopRule(duration_s=options.bench_duration), data=bench_data(sample.inputs))
        write_outputs(result, work)
    from seqdeploy.app.report import write_report
    from seqdeploy.bundle.write import write_bundle_manifest

    write_bundle_manifest(work)
    write_report(work)
    return outcomes


def _quantize(model: Any, sample: Any, task: str, labels: list[str] | None, target: str | None, work: Path,
              options: PipelineOptions, stage: Any, summary: dict) -> None:
    from seqdeploy.bundle.user_model import reference_targets, target_ids
    from seqdeploy.bundle.write import write_bundle_manifest

    with stage("quantize", [QUANTIZE_FILE], summary):
        from seqdeploy.quantize import QuantizeSettings
        from seqdeploy.quantize.core import quantize_model

        if sample.targets is not None:
            gate_targets = target_ids(sample.targets, task, labels, f"{sample.path}: column {target!r}")
        else:
            gate_targets = reference_targets(model, sample.inputs, task)
        settings = QuantizeSettings(mode=options.quantize_mode, max_metric_drop=options.max_metric_drop,
                                    latency_rounds=options.quantize_rounds)
        q = quantize_model(work / MODEL_ONNX, out_dir=work, calibration_inputs=sample.inputs,
                           test_inputs=sample.inputs, test_targets=gate_targets, task=task, settings=settings)
        write_bundle_manifest(work)
        summary.update(chosen=q.chosen, reason=q.summary,
                       gate="accuracy on the target column" if sample.targets is not None else
                       ("top-1 agreement with float32" if task != "regression" else "closeness to float32"))


def quantize_skip_reason(bundle: Path) -> str | None:
    """Why the quantize stage cannot run on this bundle's graph, or None when it can.

    onnxruntime's quantization tools load the graph without custom-op libraries, so a graph with
    onnxruntime-extensions ops (TextVectorization's standardize/split) stays float32. onnxruntime's own
    contrib ops (``com.microsoft``, e.g. the fused ``Attention`` of a Transformer) need no library: they quantize.
    """
    from seqdeploy.runtime.extensions import domains_of
    from seqdeploy.runtime.manifest import load_manifest

    contrib = load_manifest(bundle, check_files=False).contrib_ops
    domains = set(domains_of(contrib))
    library_ops = [op for op in contrib if op.rsplit(":", 1)[0] in domains]
    if not library_ops:
        return None
    return (f"the graph uses onnxruntime-extensions ops ({', '.join(library_ops)}), which onnxruntime's quantization "
            f"tools cannot load; the bundle serves the verified float32 model")


def bench_data(inputs: dict[str, np.ndarray]) -> Any:
    """The SAMPLE rows as the benchmark's feeds (every input, tiled up to the batch size)."""
    from seqdeploy.bench.discover import BenchData

    @dataclasses.dataclass(frozen=True)
    class SampleData(BenchData):
        inputs: dict = dataclasses.field(default_factory=dict)

        def feeds(self, batch: int) -> dict[str, np.ndarray]:
            return {k: np.ascontiguousarray(np.resize(v, (batch, *v.shape[1:]))) for k, v in self.inputs.items()}

    first = next(iter(inputs))
    return SampleData("sample", first, inputs[first], inputs[first], None, dict(inputs))
