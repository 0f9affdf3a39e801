"""The stages in order on one run directory, skipping what has not changed.

    >>> result = run_pipeline("models/breast_cancer_mlp.toml")  # doctest: +SKIP
    >>> [s.status for s in result.stages]  # doctest: +SKIP
    ['ran', 'ran', 'ran', 'ran', 'ran', 'ran']

Each stage has a key: the sha256 of everything it depends on (the spec file,
the data fingerprint, upstream artifacts, the seqdeploy version and the stage's
options). After a stage succeeds its key and the sha256 of every file it wrote
are recorded in ``pipeline.json`` (atomically). A later run skips a stage whose
key is unchanged and whose files are intact; ``force`` reruns everything.
Because every file is written atomically and the record is written only after
the stage's files, an interrupted run (Ctrl-C, crash, SIGKILL) resumes at the
first unfinished stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from seqdeploy import __version__
from seqdeploy.atomic import atomic_write_json, read_json_or_empty, sha256_file
from seqdeploy.errors import UsageError
from seqdeploy.layout import (
    BENCH_FILE, BENCH_MD, BENCH_PNG, EXPORT_FILE, GOLDEN_FILES, MANIFEST_FILE, MODEL_KERAS, MODEL_ONNX, PIPELINE_FILE,
    QUANTIZE_FILE, TRAIN_FILE, TUNE_FILE, VERIFY_FILE, read_quantize_record,
)

STATE_FILE = PIPELINE_FILE


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """Options that change what the stages produce (they are part of the stage keys)."""

    epochs: int | None = None
    seed: int | None = None
    opset: int | None = None
    max_metric_drop: float = 0.01
    quantize_mode: str = "auto"
    quantize_rounds: int = 7
    bench_batches: tuple[int, ...] = (1, 64)
    bench_duration: float = 1.0
    bench_threads: tuple[int, ...] = (1,)
    tune_batches: tuple[int, ...] = (1, 64)
    tune_duration: float = 1.0  # seconds per batch size, split between the candidate configurations
    bench_vs: tuple[str, ...] = ("keras", "tflite")


@dataclasses.dataclass(frozen=True)
class StageOutcome:
    name: str
    status: str  # "ran" | "skipped" | "failed" | "not requested"
    seconds: float
    summary: dict
    files: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PipelineEvent:
    kind: str  # "start" | "skip" | "done" | "epoch" | "message"
    stage: str
    detail: Any = None


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    run_dir: Path
    spec_name: str
    stages: tuple[StageOutcome, ...]
    seconds: float
    summary: dict
    manifest_path: Path | None
    report_path: Path | None
    embed_snippet: str


EventCallback = Callable[[PipelineEvent], None]


def parse_stages(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"train,export"`` -> ("train", "export"), validated and in pipeline order."""
    if text is None:
        return STAGES
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [s for s in items if s not in STAGES]
    if unknown or not items:
        raise UsageError(f"stages {text!r}: unknown stage(s) {unknown}; expected a comma-separated subset of "
                         f"{','.join(STAGES)}")
    return tuple(s for s in STAGES if s in items)


def run_pipeline(spec_path: str | Path, *, out: str | Path | None = None, stages: Sequence[str] | str | None = None,
                 force: bool = False, options: PipelineOptions = PipelineOptions(),
                 on_event: EventCallback | None = None) -> PipelineResult:
    """Run train -> export -> verify -> quantize -> tune -> bench and write the bundle (manifest + report).

    Raises :class:`seqdeploy.errors.CheckFailed` when verify fails (the stages
    after it do not run); a quantize gate that keeps float32 is a result, not a failure.
    """
    from seqdeploy.spec import load_spec
    from seqdeploy.train.local import default_run_dir

    start = time.perf_counter()
    emit = on_event or (lambda _e: None)
    wanted = parse_stages(stages)
    spec = load_spec(spec_path).with_overrides(epochs=options.epochs, seed=options.seed)
    run_dir = Path(out) if out is not None else default_run_dir(spec)
    _remove_orphaned_temp_files(run_dir)
    state = _load_state(run_dir)
    outcomes: list[StageOutcome] = []

    for name in STAGES:
        if name not in wanted:
            outcomes.append(StageOutcome(name, "not requested", 0.0, _existing_summary(run_dir, name)))
            continue
        key = _stage_key(name, spec, run_dir, options)
        prev = state.get(name)
        if not force and prev and prev.get("key") == key and _files_intact(run_dir, prev.get("files", {})):
            emit(PipelineEvent("skip", name, "inputs unchanged"))
            outcomes.append(StageOutcome(name, "skipped", 0.0, _existing_summary(run_dir, name),
                                         tuple(prev.get("files", {}))))
            continue
        emit(PipelineEvent("start", name))
        t0 = time.perf_counter()
        state.pop(name, None)  # a stage that starts is unfinished until its record is written again
        _save_state(run_dir, state)
        files = _BY_NAME[name].run(spec, run_dir, options, emit)
        seconds = time.perf_counter() - t0
        # Downstream keys hash the upstream files, so they are re-derived after this stage wrote them.
        record = {"key": _stage_key(name, spec, run_dir, options) if name == "train" else key,
                  "files": {f: sha256_file(run_dir / f) for f in files if (run_dir / f).exists()},
                  "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        state[name] = record
        _save_state(run_dir, state)
        summary = _existing_summary(run_dir, name)
        emit(PipelineEvent("done", name, summary | {"seconds": seconds}))
        outcomes.append(StageOutcome(name, "ran", seconds, summary, tuple(files)))

    manifest_path, report_path = _write_bundle(run_dir, emit)
    summary = pipeline_summary(run_dir)
    snippet = (f"from seqdeploy.runtime import Predictor; "
               f"p = Predictor.from_bundle({str(run_dir)!r}); p.predict(rows)")
    return PipelineResult(run_dir=run_dir, spec_name=spec.name, stages=tuple(outcomes),
                          seconds=time.perf_counter() - start, summary=summary, manifest_path=manifest_path,
                          report_path=report_path, embed_snippet=snippet)


# --- stage runners -------------------------------------------------------------------------

def _run_train(spec, run_dir: Path, options: PipelineOptions, emit: EventCallback) -> list[str]:
    from seqdeploy.train.local import train_spec

    def on_epoch(epoch: int, total: int, logs) -> None:
        emit(PipelineEvent("epoch", "train", {"epoch": epoch, "total": total, "logs": dict(logs)}))

    train_spec(spec, out=run_dir, on_epoch=on_epoch)
    return ["spec" + spec.path.suffix, MODEL_KERAS, TRAIN_FILE]


def _run_export(spec, run_dir: Path, options: PipelineOptions, emit: EventCallback) -> list[str]:
    from seqdeploy.export.convert import export_onnx

    export_onnx(run_dir, opset=options.opset)
    return [MODEL_ONNX, EXPORT_FILE]


def _run_verify(spec, run_dir: Path, options: PipelineOptions, emit: EventCallback) -> list[str]:
    from seqdeploy.bundle.write import refresh_bundle_manifest
    from seqdeploy.verify.parity import verify_run

    verify_run(run_dir)  # a check: it writes its report and golden files, never the manifest
    refresh_bundle_manifest(run_dir)  # the bundle carries the verification and the golden files
    return [VERIFY_FILE] + [name for name, _ in GOLDEN_FILES]


def _run_quantize(spec, run_dir: Path, options: PipelineOptions, emit: EventCallback) -> list[str]:
    from seqdeploy.quantize import QuantizeSettings, quantize_run

    settings = QuantizeSettings(mode=options.quantize_mode, max_metric_drop=options.max_metric_drop,
                                latency_rounds=options.quantize_rounds)
    # quantize_run itself removes artifacts of an earlier, different choice
    result = quantize_run(run_dir, settings)
    return [QUANTIZE_FILE] + ([result.chosen] if result.chosen else [])


def _run_bench(spec, run_dir: Path, options: PipelineOptions, emit: EventCallback) -> list[str]:
    from seqdeploy.bench import StopRule, run_bench, write_outputs

    def progress(msg: str) -> None:
        emit(PipelineEvent("message", "bench", msg))

    result = run_bench(run_dir, batches=options.bench_batches, threads=options.bench_threads,
                       vs=list(options.bench_vs), rule=StopRule(duration_s=options.bench_duration),
                       progress=progress)
    write_outputs(result, run_dir)
    return [BENCH_FILE, BENCH_MD, BENCH_PNG]


def _run_tune(spec, run_dir: Path, options: PipelineOptions, emit: EventCallback) -> list[str]:
    from seqdeploy.bench.tune import tune_bundle

    tune_bundle(run_dir, batches=options.tune_batches, duration_s=options.tune_duration,
                progress=lambda msg: emit(PipelineEvent("message", "tune", msg)))
    return [TUNE_FILE, MANIFEST_FILE]


def _tune_summary(run_dir: Path) -> dict:
    d = read_json_or_empty(run_dir / TUNE_FILE)
    return {f"batch {c['batch']}": _describe_settings(c["settings"]) for c in d.get("choices", [])} if d else {}


def _describe_settings(record: dict) -> str:
    from seqdeploy.runtime.session import SessionSettings

    try:
        return SessionSettings.from_record(record).describe()
    except ValueError:
        return str(record)


def _train_key(spec, run_dir: Path) -> bytes:
    from seqdeploy.data import load_spec_splits

    return (spec.path.read_bytes() + load_spec_splits(spec).fingerprint.encode()
            + f"|epochs={spec.fit.epochs}|seed={spec.fit.seed}".encode())


def _bench_inputs(run_dir: Path) -> tuple[str, ...]:
    record = _quantize_record(run_dir)
    return (record.chosen,) if record is not None and record.chosen else ()


def _summary_of(file: str, keys: tuple[str, ...]) -> Callable[[Path], dict]:
    def summary(run_dir: Path) -> dict:
        d = read_json_or_empty(run_dir / file)
        return {k: d.get(k) for k in keys} if d else {}
    return summary


def _quantize_summary(run_dir: Path) -> dict:
    record = _quantize_record(run_dir)
    return {"chosen": record.chosen, "reason": record.summary} if record is not None else {}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One pipeline stage: what its key hashes, how it runs, how it is summarised."""

    name: str
    run: Callable[[Any, Path, "PipelineOptions", EventCallback], list[str]]
    summary: Callable[[Path], dict]
    inputs: tuple[str, ...] = ()  # run-directory files whose content is part of the key
    options: tuple[str, ...] = ()  # PipelineOptions fields that are part of the key
    extra_key: Callable[[Any, Path], bytes] | None = None  # anything else the key depends on
    extra_inputs: Callable[[Path], tuple[str, ...]] | None = None  # input files known only at run time


#: the stages in order (STAGES are their names)
PIPELINE: tuple[Stage, ...] = (
    Stage("train", _run_train, _summary_of(TRAIN_FILE, ("test_metrics", "epochs_run")), extra_key=_train_key),
    Stage("export", _run_export, _summary_of(EXPORT_FILE, ("opset", "op_counts", "warnings")),
          inputs=(MODEL_KERAS, TRAIN_FILE), options=("opset",)),
    Stage("verify", _run_verify, _summary_of(VERIFY_FILE, ("passed", "max_abs_error", "label_agreement")),
          inputs=(MODEL_KERAS, MODEL_ONNX)),
    Stage("quantize", _run_quantize, _quantize_summary, inputs=(MODEL_ONNX, TRAIN_FILE),
          options=("quantize_mode", "max_metric_drop", "quantize_rounds")),
    Stage("tune", _run_tune, _tune_summary, inputs=(MODEL_ONNX, QUANTIZE_FILE), extra_inputs=_bench_inputs,
          options=("tune_batches", "tune_duration")),
    Stage("bench", _run_bench, lambda run_dir: bench_headline(run_dir),
          inputs=(MODEL_KERAS, MODEL_ONNX, QUANTIZE_FILE), extra_inputs=_bench_inputs,
          options=("bench_batches", "bench_threads", "bench_duration", "bench_vs")),
)
_BY_NAME = {st.name: st for st in PIPELINE}
STAGES = tuple(st.name for st in PIPELINE)


def _write_bundle(run_dir: Path, emit: EventCallback) -> tuple[Path | None, Path | None]:
    from seqdeploy.bundle.write import refresh_bundle_manifest
    from seqdeploy.app.report import write_report

    manifest_path = run_dir / MANIFEST_FILE if refresh_bundle_manifest(run_dir) else None
    report_path = write_report(run_dir)
    emit(PipelineEvent("message", "bundle", f"manifest and report written to {run_dir}"))
    return manifest_path, report_path


# --- keys and state ------------------------------------------------------------------------

def _stage_key(name: str, spec, run_dir: Path, options: PipelineOptions) -> str:
    stage = _BY_NAME[name]
    h = hashlib.sha256(f"{name}|{__version__}".encode())
    if stage.extra_key is not None:
        h.update(stage.extra_key(spec, run_dir))
    files = stage.inputs + (stage.extra_inputs(run_dir) if stage.extra_inputs is not None else ())
    for rel in files:
        p = run_dir / rel
        h.update(f"|{rel}=".encode() + (sha256_file(p).encode() if p.exists() else b"missing"))
    for opt in stage.options:
        h.update(f"|{opt}={getattr(options, opt)!r}".encode())
    return h.hexdigest()


def _load_state(run_dir: Path) -> dict:
    data = read_json_or_empty(run_dir / STATE_FILE)
    return data.get("stages", {}) if data.get("seqdeploy") == __version__ else {}


def _save_state(run_dir: Path, stages: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / STATE_FILE, {"seqdeploy": __version__, "stages": stages})


def _remove_orphaned_temp_files(run_dir: Path) -> None:
    # A killed process can leave the temporary of an atomic write behind (never a target file).
    if run_dir.is_dir():
        for tmp in run_dir.glob(".*.tmp*"):
            if tmp.is_file():
                tmp.unlink()


def _files_intact(run_dir: Path, files: dict) -> bool:
    return all((run_dir / f).exists() and sha256_file(run_dir / f) == digest for f, digest in files.items())



# --- summaries ------------------------------------------------------------------------------

def _existing_summary(run_dir: Path, stage: str) -> dict:
    return _BY_NAME[stage].summary(run_dir)


def _quantize_record(run_dir: Path):
    """quantize.json as :func:`seqdeploy.layout.read_quantize_record` reads it; None when missing or unreadable."""
    from seqdeploy.errors import QuantizeError

    try:
        return read_quantize_record(run_dir)
    except QuantizeError:
        return None


def bench_headline(run_dir: Path) -> dict:
    """Batch-1 p50 of the deployed artifact beside every speedup reference (plain ONNX float32, Keras's
    direct call, TFLite best), from bench.json (:func:`seqdeploy.bench.schema.headline`)."""
    from seqdeploy.bench.schema import headline

    return headline(read_json_or_empty(Path(run_dir) / BENCH_FILE))


def pipeline_summary(run_dir: Path) -> dict:
    """One dict with the headline numbers of a run directory (what the CLI prints at the end)."""
    s: dict[str, Any] = {"run_dir": str(run_dir)}
    for stage in STAGES:
        s[stage] = _existing_summary(Path(run_dir), stage)
    return s

