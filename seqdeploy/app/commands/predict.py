"""`seqdeploy predict BUNDLE --input FILES`: score files with the TensorFlow-free runtime, here or on Ray.

The local engine streams the input (CSV/JSONL line by line, NPY memory-mapped,
Parquet record batch by record batch) and writes predictions as they come (CSV,
JSONL or Parquet by the --output suffix, a directory of Parquet parts for a path
without suffix, CSV on stdout otherwise). ``--engine ray`` runs the same scoring
in a Ray actor pool. Never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seqdeploy.app.cli import JSON_OPTION, app, console, emit_json, handle_errors


@app.command("predict")
def predict_command(
    bundle: Path = typer.Argument(..., help="Bundle (run) directory holding manifest.json."),
    input: str = typer.Option(..., "--input", "-i", help="Raw inputs: a .csv (header with the feature names, or a "
                                                         "'text' column), .jsonl (one object per line), .npy or "
                                                         ".parquet file, a directory of such files, or a glob."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Where to write predictions: .csv, .jsonl, "
                                                                      ".parquet, or a directory (Parquet parts + "
                                                                      "_SUCCESS). Default: CSV on stdout."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1,
                                             help="Rows per chunk (memory stays bounded). Default 1024; 4096 with "
                                                  "--engine ray."),
    artifact: Optional[str] = typer.Option(None, "--artifact", help="Artifact file name or precision (default: the "
                                                                    "manifest's deployment artifact)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads (default 1; "
                                                                         "per actor with --engine ray)."),
    keep: Optional[str] = typer.Option(None, "--keep", help="Input columns copied beside the predictions, e.g. "
                                                            "id,customer, or 'all'."),
    on_bad_row: str = typer.Option("fail", "--on-bad-row", help="fail: stop at the first row that cannot be scored; "
                                                                "skip: list such rows with the reason in a side file "
                                                                "(<output>.skipped.jsonl or <dir>/_skipped.jsonl)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (a Ray actor pool)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: 'auto' or ray://host:port "
                                                                  "(default: start a local Ray for this run)."),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help="Ray actors (default: CPUs / threads)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Predict with a bundle on CSV / JSONL / NPY / Parquet files, streaming in chunks.

    Examples: seqdeploy predict runs/breast_cancer_mlp --input new_patients.csv --output preds.csv
              seqdeploy predict runs/breast_cancer_mlp -i rows/ -o preds/ --keep id --engine ray --actors 2
    """
    from seqdeploy.errors import UsageError

    with handle_errors(as_json=as_json):
        if engine not in ("local", "ray"):
            raise UsageError(f"--engine {engine!r} (expected local or ray)")
        if on_bad_row not in ("fail", "skip"):
            raise UsageError(f"--on-bad-row {on_bad_row!r} (expected fail or skip)")
        if engine == "local" and (address is not None or actors is not None):
            raise UsageError("--address and --actors need --engine ray; add --engine ray")
        if as_json and output is None:
            raise UsageError("--json prints the run summary on stdout, so the predictions need a file: "
                             "add --output preds.csv (or .jsonl, .parquet, a directory)")
        if on_bad_row == "skip" and output is None:
            raise UsageError("--on-bad-row skip writes the skipped rows beside the output: add --output")
        if output is not None and Path(output).exists() and not overwrite:
            raise UsageError(f"output {output} already exists (expected a new path); choose another --output or "
                             f"add --overwrite to replace it")
        if engine == "ray":
            result = _run_ray(bundle, input, output, batch_size, artifact, threads, keep, on_bad_row, overwrite,
                              address, actors)
        else:
            result = _run_local(bundle, input, output, batch_size, artifact, threads, keep, on_bad_row, overwrite,
                                as_json)
    if as_json:
        emit_json(result)
        return
    where = result.output or "stdout"
    extra = f", {result.skipped} skipped -> {result.skipped_output}" if result.skipped_output else ""
    how = f" on Ray ({result.actors} actors)" if result.engine == "ray" else ""
    console.print(f"[green]ok[/] {result.rows} rows from {result.files} file(s) -> {where}{extra} with "
                  f"{result.artifact}{how} in {result.seconds:.2f}s ({result.rows_per_second:,.0f} rows/s)")


def _run_local(bundle, input, output, batch_size, artifact, threads, keep, on_bad_row, overwrite, as_json):
    from seqdeploy.runtime.predictor import Predictor
    from seqdeploy.scoring import predict_file

    predictor = Predictor.from_bundle(bundle, artifact=artifact, threads=threads)
    kwargs = dict(keep=keep, on_bad_row=on_bad_row, overwrite=overwrite)
    out = Path(output) if output is not None and not output.endswith("/") else output
    if console.is_terminal and not as_json:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]predict[/]"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task("predict", total=None)
            return predict_file(predictor, input, out, batch_size, **kwargs,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    return predict_file(predictor, input, out, batch_size, **kwargs)


def _run_ray(bundle, input, output, batch_size, artifact, threads, keep, on_bad_row, overwrite, address, actors):
    from seqdeploy.errors import UsageError

    if output is None:
        raise UsageError("--engine ray writes Parquet parts into a directory: add --output DIR")
    try:
        from seqdeploy.scoring.ray import DEFAULT_RAY_BATCH_SIZE, predict_files_ray

        import ray  # noqa: F401
        import pyarrow  # noqa: F401
    except ModuleNotFoundError as exc:
        raise UsageError(f"--engine ray needs {exc.name!r}, which is not installed; install it with: "
                         f"pip install 'seqdeploy[distributed]'") from None
    import contextlib
    import sys

    # Ray prints worker and raylet notices (a restarted actor, ...) on stdout: keep stdout for --json
    with contextlib.redirect_stdout(sys.stderr):
        return predict_files_ray(bundle, input, output, artifact=artifact, keep=keep, on_bad_row=on_bad_row,
                                 overwrite=overwrite, address=address, actors=actors,
                                 batch_size=batch_size or DEFAULT_RAY_BATCH_SIZE, threads=threads or 1)
