"""`seqdeploy pipeline SPEC`: every stage, one run directory, one summary."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import typer
from rich.table import Table

from seqdeploy.app.cli import CUSTOM_OBJECTS_OPTION, JSON_OPTION, app, console, emit_json, handle_errors


def _fmt_us(v) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.1f} us"


def render_summary(result) -> None:
    s = result.summary
    table = Table(title=f"pipeline {result.spec_name}: {result.seconds:.1f}s", header_style="bold", show_header=True)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("time", justify="right")
    for st in result.stages:
        colour = {"ran": "green", "skipped": "cyan", "not requested": "dim"}.get(st.status, "red")
        table.add_row(st.name, f"[{colour}]{st.status}[/]", f"{st.seconds:.1f}s" if st.status == "ran" else "")
    console.print(table)
    for st in result.stages:
        if st.status == "skipped" and set(st.summary) == {"reason"}:  # a stage that cannot run on this model
            console.print(f"{st.name} skipped: {st.summary['reason']}")
    tm = (s.get("train") or {}).get("test_metrics") or {}
    if tm:
        console.print("test metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in tm.items()))
    v = s.get("verify") or {}
    if v:
        agree = v.get("label_agreement")
        console.print(f"ONNX parity: {'[green]pass[/]' if v.get('passed') else '[red]FAIL[/]'}, max abs error "
                      f"{v.get('max_abs_error', float('nan')):.2g}"
                      + ("" if agree is None else f", label agreement {agree:.1%}"))
    q = s.get("quantize") or {}
    b = s.get("bench") or {}
    chosen = q.get("chosen") or "model.onnx (float32)"
    line = f"deployment artifact: [bold]{chosen}[/]"
    if b.get("deployed_p50_us_b1"):
        line += f", p50 {_fmt_us(b['deployed_p50_us_b1'])} at batch 1"
        if b.get("speedup_vs_fp32"):
            line += f", {b['speedup_vs_fp32']:.2f}x vs plain ONNX float32 session.run"
        if b.get("speedup_vs_keras"):
            line += f", {b['speedup_vs_keras']:.0f}x vs Keras model(x)"
        if b.get("tflite_best_p50_us_b1"):
            line += f" (TFLite best {_fmt_us(b['tflite_best_p50_us_b1'])})"
    console.print(line)
    if q.get("reason") and not q.get("chosen"):
        console.print(f"quantization: {q['reason']}")
    tune = s.get("tune") or {}
    if tune:
        console.print("session settings chosen (Predictor uses batch 1's): "
                      + "; ".join(f"{k}: {v}" for k, v in tune.items()))
    console.print(f"bundle: [bold]{result.run_dir}[/]   report: [bold]{result.report_path}[/]")
    console.print(f"embed it: [cyan]{result.embed_snippet}[/]")


@app.command()
def pipeline(
    spec: Path = typer.Argument(..., help="A .toml (or .py) spec, e.g. models/breast_cancer_mlp.toml; or a trained "
                                          "MODEL.keras with --data SAMPLE."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<spec name>)."),
    stages: Optional[str] = typer.Option(None, "--stages", help="Comma-separated subset of train,export,verify,quantize,tune,bench."),
    force: bool = typer.Option(False, "--force", help="Rerun stages even when their inputs did not change."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override [fit] epochs."),
    max_metric_drop: float = typer.Option(0.01, "--max-metric-drop", help="Quantization accuracy budget."),
    bench_duration: float = typer.Option(1.0, "--bench-duration", help="Seconds per runner and batch size in bench."),
    data: Optional[Path] = typer.Option(None, "--data", help="MODEL.keras only: SAMPLE rows, .csv/.jsonl/.parquet (one "
                                                         "column per model input) or .npy/.npz (keyed by input name)."),
    custom_objects: List[str] = CUSTOM_OBJECTS_OPTION,
    target: Optional[str] = typer.Option(None, "--target", help="MODEL.keras only: SAMPLE's label column (the "
                                                               "quantize gate then also checks accuracy)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="MODEL.keras only: class names in output order, "
                                                               "comma-separated (adds label/class_id outputs)."),
    unsafe: bool = typer.Option(False, "--unsafe", help="MODEL.keras only: allow Lambda layers (runs their code)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train, export, verify, quantize and bench SPEC into one deployment bundle (or a trained MODEL.keras)."""
    from seqdeploy.app.commands.verify import render_verify
    from seqdeploy.app.pipeline import PipelineOptions, run_pipeline

    options = PipelineOptions(epochs=epochs, max_metric_drop=max_metric_drop, bench_duration=bench_duration)
    if spec.suffix.lower() in (".keras", ".h5", ".hdf5") or data is not None:
        return _run_keras_pipeline(spec, data, out=out, custom_objects=custom_objects, target=target,
                                      labels=labels, unsafe=unsafe, options=options, as_json=as_json)
    with handle_errors(as_json=as_json, on_check_failed=render_verify):
        if as_json:
            result = run_pipeline(spec, out=out, stages=stages, force=force, options=options)
            emit_json(result)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[stage]:<9}[/]"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=console)
        tasks: dict[str, int] = {}

        def on_event(ev) -> None:
            if ev.kind == "start":
                tasks[ev.stage] = progress.add_task("running", stage=ev.stage, total=None)
            elif ev.kind == "skip":
                progress.add_task(f"[cyan]skipped[/] ({ev.detail})", stage=ev.stage, total=1, completed=1)
            elif ev.kind == "epoch" and ev.stage in tasks:
                d = ev.detail
                shown = "  ".join(f"{k} {v:.4f}" for k, v in d["logs"].items())
                progress.update(tasks[ev.stage], completed=d["epoch"], total=d["total"], description=shown)
            elif ev.kind == "message" and ev.stage in tasks:
                progress.update(tasks[ev.stage], description=str(ev.detail)[:70])
            elif ev.kind == "done" and ev.stage in tasks:
                t = progress.tasks[tasks[ev.stage]]
                total = t.total or 1
                progress.update(tasks[ev.stage], total=total, completed=total,
                                description=f"[green]done[/] in {ev.detail.get('seconds', 0):.1f}s")

        with progress:
            result = run_pipeline(spec, out=out, stages=stages, force=force, options=options, on_event=on_event)
        render_summary(result)


def _run_keras_pipeline(model_path: Path, data: Path | None, *, out: Path | None, custom_objects: Sequence[str],
                           target: str | None, labels: str | None, unsafe: bool, options,
                           as_json: bool) -> None:
    """The command line's ``pipeline MODEL.keras --data SAMPLE`` (errors: one line, exit 2)."""
    from seqdeploy.app.commands.verify import render_verify
    from seqdeploy.app.pipeline import PipelineEvent
    from seqdeploy.app.pipeline_keras import run_keras_pipeline
    from seqdeploy.errors import UsageError

    with handle_errors(as_json=as_json, on_check_failed=render_verify):
        if model_path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
            raise UsageError(f"--data goes with a trained model file; received {model_path} (expected MODEL.keras, "
                             "or a spec without --data)")
        if data is None:
            raise UsageError(f"pipeline {model_path} needs SAMPLE rows: `seqdeploy pipeline {model_path} --data "
                             "SAMPLE.csv|.jsonl|.parquet|.npz` (one column or array per model input)")
        names = [x.strip() for x in labels.split(",")] if labels is not None else None
        if names is not None and (len(names) < 2 or not all(names)):
            raise UsageError(f"--labels {labels!r}: expected two or more comma-separated class names")

        def on_event(ev: PipelineEvent) -> None:
            if ev.kind == "start" and not as_json:
                console.print(f"[bold]{ev.stage:<9}[/] running")

        result = run_keras_pipeline(model_path, data, out=out, custom_objects=list(custom_objects), target=target,
                                    labels=names, unsafe=unsafe, options=options, on_event=on_event)
        if as_json:
            emit_json(result)
        else:
            render_summary(result)
            p = result.summary.get("portable") or {}
            if p:
                console.print(f"portable graph on {p.get('rows')} raw sample rows: max abs error "
                              f"{p.get('max_abs_error', float('nan')):.2g} vs Keras"
                              + ("" if p.get("label_agreement") is None else
                                 f", labels {p['label_agreement']:.1%}"))
