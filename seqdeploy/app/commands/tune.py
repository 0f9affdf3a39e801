"""`seqdeploy tune`: measure onnxruntime settings on a bundle's deployed artifact and record the fastest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seqdeploy.app.cli import JSON_OPTION, app, console, emit_json, handle_errors


def render_tune(result) -> None:
    from rich.table import Table

    t = Table(title=f"tune {result.run_dir} ({result.artifact}; {result.cpu}, onnxruntime {result.onnxruntime})",
              header_style="bold")
    for col in ("batch", "settings", "deployed p50", "plain run p50", "chosen"):
        t.add_column(col, justify="left" if col in ("settings", "chosen") else "right", no_wrap=True)
    chosen = {c.batch: c.settings for c in result.choices}
    prev = None
    for p in result.points:
        if prev is not None and p.batch != prev:
            t.add_section()
        prev = p.batch
        mark = "*" if chosen.get(p.batch) == p.settings else ""
        t.add_row(str(p.batch), p.settings.describe(), f"{p.deployed_p50_us:.1f} us", f"{p.plain_p50_us:.1f} us", mark,
                  style="bold" if mark else None)
    console.print(t)
    for c in result.choices:
        console.print(f"batch {c.batch}: {c.settings.describe()} ({c.reason}); vs best plain onnxruntime "
                      f"({c.plain_best_settings.describe()}): {c.vs_plain_best:.2f}x", soft_wrap=True)
    if result.path:
        console.print(f"wrote {result.path}; the manifest records the choice (Predictor uses batch 1's)")


@app.command("tune")
def tune_cmd(
    run_dir: Path = typer.Argument(..., help="A bundle (run directory with manifest.json)."),
    batch: str = typer.Option("1,64", "--batch", "-b", help="Comma-separated batch sizes (a choice per batch size)."),
    threads: Optional[str] = typer.Option(None, "--threads", "-t", help="Comma-separated thread counts to try [default 1,2 capped by the CPU count]."),
    graph_opt: str = typer.Option("all,extended,basic", "--graph-opt", help="Comma-separated graph optimisation levels to try."),
    spinning: bool = typer.Option(False, "--spinning/--no-spinning", help="Also try spinning intra-op threads (more than one thread; they keep a core busy between calls)."),
    duration: float = typer.Option(2.0, "--duration", "-d", help="Timing seconds per batch size, split between the configurations."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Time the deployed artifact under each onnxruntime configuration and record the fastest per batch size.

    Example: seqdeploy tune runs/breast_cancer_mlp --batch 1,64 --threads 1,2
    """
    with handle_errors(as_json=as_json):
        from seqdeploy.bench import MAX_THREADS, parse_int_list
        from seqdeploy.bench.tune import tune_bundle

        batches = parse_int_list(batch, "--batch")
        thr = parse_int_list(threads, "--threads", hi=MAX_THREADS) if threads else None
        levels = tuple(x.strip() for x in graph_opt.split(",") if x.strip())
        status = console.status("tuning", spinner="dots") if not as_json else None
        if status is not None:
            status.start()
        try:
            result = tune_bundle(run_dir, batches=batches, threads=thr, levels=levels, spinning=spinning,
                                 duration_s=duration, progress=(lambda m: status.update(m)) if status else None)
        finally:
            if status is not None:
                status.stop()
        if as_json:
            emit_json(result)
        else:
            render_tune(result)
