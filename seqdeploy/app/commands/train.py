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
    if getattr(result, "engine", "local") == "ray":
        restarts = f", {result.restarts} restart(s) from a checkpoint" if result.restarts else ""
        console.print(f"Ray Train: {result.workers} workers x {result.rows_per_worker} train rows{restarts}")
    console.print(f"run directory: [bold]{result.run_dir}[/]")


@app.command()
def train(
    spec: Path = typer.Argument(..., help="A .toml (or .py) spec, e.g. models/breast_cancer_mlp.toml."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<spec name>)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override [fit] epochs."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override [fit] seed."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (data-parallel workers "
                                                         "on a Ray cluster)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Ray Train workers (--engine ray; "
                                                                         "default 2)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto or ray://host:port "
                                                                  "(--engine ray; default a local Ray)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Checkpoint storage every node can reach "
                                                                  "(--engine ray; default a temporary directory)."),
    max_failures: int = typer.Option(2, "--max-failures", min=0, help="Worker-group restarts from the last "
                                                                      "checkpoint (--engine ray)."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files",
                                        help="Leave out unreadable files of a multi-file table (or image folder) "
                                             "and name them in the notes, instead of stopping."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train the spec's Keras model and write spec, model.keras and train.json to the run directory.

    --engine ray trains data-parallel on Ray Train workers (each on its own shard, gradients averaged every
    step), checkpoints every epoch and restarts from the last checkpoint when a worker dies:

          seqdeploy train models/breast_cancer_mlp.toml --engine ray --workers 2
    """
    from seqdeploy.errors import UsageError
    from seqdeploy.train import ENGINES, train_with

    with handle_errors(as_json=as_json):
        if engine not in ENGINES:
            raise UsageError(f"--engine {engine!r} (expected {' or '.join(ENGINES)})")
        if engine == "ray":
            if skip_bad_files:
                raise UsageError("--skip-bad-files works with --engine local only (Ray Data reads the table itself)")
            result = _run_ray(spec, as_json=as_json, out=out, epochs=epochs, seed=seed, workers=workers or 2,
                              address=address, storage=storage, max_failures=max_failures)
        else:
            given = [flag for flag, value in (("--workers", workers), ("--address", address), ("--storage", storage))
                     if value is not None]
            if given:
                raise UsageError(f"{', '.join(given)} need --engine ray; add --engine ray")
            if as_json:
                result = train_with(engine, spec, out=out, epochs=epochs, seed=seed, skip_bad_files=skip_bad_files or None)
            else:
                progress, on_epoch = epoch_progress()
                with progress:
                    result = train_with(engine, spec, out=out, epochs=epochs, seed=seed, on_epoch=on_epoch,
                                        skip_bad_files=skip_bad_files or None)
        if as_json:
            emit_json(result)
            return
        render_train(result)


def _run_ray(spec: Path, *, as_json: bool, **options):
    import contextlib
    import sys

    from seqdeploy.errors import UsageError

    try:
        import ray.train  # noqa: F401
        from ray.train.tensorflow import TensorflowTrainer  # noqa: F401
    except ModuleNotFoundError as exc:
        raise UsageError(f"--engine ray needs {exc.name!r}, which is not installed; install it with: "
                         f"pip install 'seqdeploy[distributed]'") from None
    from seqdeploy.train import train_with

    # Ray prints worker and raylet notices (a restarted worker, ...) on stdout: keep stdout for --json
    with contextlib.redirect_stdout(sys.stderr):
        if as_json:
            return train_with("ray", spec, **options)
        with console.status(f"training on Ray ({options['workers']} workers)"):
            return train_with("ray", spec, **options)
