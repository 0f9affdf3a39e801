"""`seqdeploy train SPEC`: fit a Keras Sequential model from a spec into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from seqdeploy.app.cli import JSON_OPTION, app, console, emit_json, handle_errors


def epoch_progress(total_hint: int = 0):
    """A rich progress bar plus the callback that drives it: (progress, on_epoch)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]training[/]"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True)
    task = progress.add_task("", total=total_hint or None)

    def on_epoch(epoch: int, total: int, logs) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        progress.update(task, completed=epoch, total=total, description=shown)

    return progress, on_epoch


def render_train(result) -> None:
    table = Table(title=f"trained {result.spec_name}", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("test", justify="right")
    for k, v in result.test_metrics.items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)
    stopped = "" if result.epochs_run == result.epochs_requested else " (early stopping)"
    data_note = " [yellow](synthetic data)[/]" if result.synthetic_data else ""
    console.print(f"{result.epochs_run}/{result.epochs_requested} epochs{stopped} in {result.seconds:.1f}s, "
                  f"{result.parameters} parameters, {result.n_train} train / {result.n_test} test rows{data_note}")
    for note in getattr(result, "notes", ()):
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"run directory: [bold]{result.run_dir}[/]")


@app.command()
def train(
    spec: Path = typer.Argument(..., help="A .toml (or .py) spec, e.g. models/breast_cancer_mlp.toml."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<spec name>)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override [fit] epochs."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override [fit] seed."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files",
                                        help="Leave out unreadable files of a multi-file table (or image folder) "
                                             "and name them in the notes, instead of stopping."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train the spec's Keras model and write spec, model.keras and train.json to the run directory."""
    from seqdeploy.train.local import train as run_train

    with handle_errors(as_json=as_json):
        if as_json:
            result = run_train(spec, out=out, epochs=epochs, seed=seed, skip_bad_files=skip_bad_files or None)
            emit_json(result)
            return
        progress, on_epoch = epoch_progress()
        with progress:
            result = run_train(spec, out=out, epochs=epochs, seed=seed, on_epoch=on_epoch,
                               skip_bad_files=skip_bad_files or None)
        render_train(result)
