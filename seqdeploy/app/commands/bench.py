"""`seqdeploy bench`: time every ONNX artifact of a run (or one MODEL.onnx) against the peer runner families (Keras, TFLite)."""

from __future__ import annotations

import contextlib

from pathlib import Path
from typing import Any, List, Optional

import typer

from seqdeploy.app.cli import CUSTOM_OBJECTS_OPTION, JSON_OPTION, app, console, emit_json, handle_errors


def render_table(result: Any) -> None:
    """The side-by-side table on the terminal (stderr, so --json keeps stdout clean)."""
    from rich.table import Table

    from seqdeploy.bench import REFERENCE_COLUMNS, TERMINAL_COLUMNS, table_rows

    t = Table(title=f"bench {result.target}", show_lines=False, header_style="bold")
    short = {"threads": "thr", "first call": "1st call", "max abs diff": "|diff|",
             **{title: short_title for _, title, short_title in REFERENCE_COLUMNS}}
    for i, col in enumerate(TERMINAL_COLUMNS):
        t.add_column(short.get(col, col), justify="left" if i < 3 else "right", no_wrap=True)
    prev = None
    for row in table_rows(result, TERMINAL_COLUMNS):
        key = (row[1], row[2])
        if prev is not None and key != prev:
            t.add_section()
        prev = key
        style = "bold" if row[0].endswith(" *") else None
        if len(row) > 3 and row[3].startswith(("skipped", "error")):
            style = "dim"
        t.add_row(*row, style=style)
    console.print(t)
    console.print("[dim]speedup = reference p50 / runner p50 (> 1 = faster); * = deployed artifact[/]")
    for w in result.warnings:
        console.print(f"[yellow]note:[/] {w}", soft_wrap=True)
    for name, path in result.files.items():
        console.print(f"wrote {path}")


@app.command("bench")
def bench_cmd(
    target: Path = typer.Argument(..., help="A run directory (every model*.onnx + Keras/TFLite peers) or a MODEL.onnx."),
    batch: str = typer.Option("1,8,64", "--batch", "-b", help="Comma-separated batch sizes."),
    threads: str = typer.Option("1", "--threads", "-t", help="Comma-separated intra-op thread counts (onnxruntime, TFLite)."),
    vs: str = typer.Option("auto", "--vs", help="Peers timed beside the ONNX artifacts: comma-separated runner families "
                           "(e.g. keras,tflite); 'none'; or 'auto' (every peer installed)."),
    duration: Optional[float] = typer.Option(None, "--duration", "-d", help="Seconds per (batch, threads), split between runners [default 2]."),
    count: Optional[int] = typer.Option(None, "--count", "-n", help="Timed calls per runner instead of a duration."),
    warmup: float = typer.Option(0.1, "--warmup", help="Warm-up seconds per runner before timing."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where bench.json/md/png go [default: the run dir or the model's dir]."),
    no_files: bool = typer.Option(False, "--no-files", help="Do not write bench.json/md/png."),
    graph_opt: str = typer.Option("all", "--graph-opt", help="onnxruntime graph optimisation for the plain ONNX runners: all|extended|basic|disable."),
    spinning: bool = typer.Option(False, "--spinning/--no-spinning", help="onnxruntime intra-op thread spinning (plain ONNX runners)."),
    per_call: str = typer.Option("run", "--per-call", help="Plain ONNX runners' call path: run | iobinding."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Cache the optimised graph on disk here (optimized_model_filepath)."),
    custom_objects: List[str] = CUSTOM_OBJECTS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Time onnxruntime (every artifact), Keras (predict and direct call) and TFLite side by side.

    Example: seqdeploy bench runs/breast_cancer_mlp --batch 1,64 --threads 1,2 --vs keras,tflite
    """
    with handle_errors(as_json=as_json), contextlib.ExitStack() as scope:
        from seqdeploy.bench import MAX_THREADS, OrtSettings, StopRule, parse_int_list, parse_vs, run_bench, write_outputs
        from seqdeploy.errors import UsageError

        from seqdeploy.export.custom_objects import custom_objects_scope

        scope.enter_context(custom_objects_scope(custom_objects))  # the Keras loads below find them
        batches = parse_int_list(batch, "--batch")
        thr = parse_int_list(threads, "--threads", hi=MAX_THREADS)
        peers = parse_vs(vs)
        if duration is not None and count is not None:
            raise UsageError(f"--duration {duration} and --count {count} received together (expected one); drop one of them")
        rule = StopRule(duration_s=None if count is not None else (duration if duration is not None else 2.0),
                        count=count, warmup_s=warmup)
        status = console.status("benchmarking", spinner="dots") if not as_json else None
        progress = (lambda msg: status.update(msg)) if status is not None else None
        if status is not None:
            status.start()
        try:
            settings = OrtSettings(allow_spinning=spinning, graph_optimization=graph_opt, per_call=per_call,
                                   cache_dir=str(cache_dir) if cache_dir is not None else None)
            result = run_bench(target, batches=batches, threads=thr, vs=("auto" if peers is None else (",".join(peers) or "none")),
                               rule=rule, progress=progress, settings=settings)
        finally:
            if status is not None:
                status.stop()
        if not no_files:
            out_dir = out if out is not None else (target if target.is_dir() else target.parent)
            result = write_outputs(result, out_dir)
        if as_json:
            emit_json(result.to_json())
        else:
            render_table(result)
