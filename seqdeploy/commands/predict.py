"""`seqdeploy predict BUNDLE --input FILE`: score a file with the TensorFlow-free runtime.

Streams the input (CSV/JSONL line by line, NPY memory-mapped) and writes the
predictions as they come (CSV or JSONL by the --output suffix, CSV on stdout
otherwise). Imports seqdeploy.runtime only: never TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seqdeploy.cli import JSON_OPTION, app, console, emit_json, handle_errors


@app.command("predict")
def predict_command(
    bundle: Path = typer.Argument(..., help="Bundle (run) directory holding manifest.json."),
    input: Path = typer.Option(..., "--input", "-i", help="Raw inputs: .csv (header with the feature names, or a "
                                                          "'text' column), .npy, or .jsonl (one object per line)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write predictions (.csv or .jsonl; "
                                                                       "written atomically). Default: CSV on stdout."),
    batch_size: int = typer.Option(1024, "--batch-size", "-b", min=1, help="Rows per chunk (memory stays bounded)."),
    artifact: Optional[str] = typer.Option(None, "--artifact", help="Artifact file name or precision (default: the "
                                                                    "manifest's deployment artifact)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="onnxruntime intra-op threads (default 1)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Predict with a bundle on a CSV / NPY / JSONL file, streaming in chunks.

    Example: seqdeploy predict runs/breast_cancer_mlp --input new_patients.csv --output preds.csv
    """
    from seqdeploy.errors import UsageError
    from seqdeploy.runtime import Predictor
    from seqdeploy.scoring import predict_file

    with handle_errors(as_json=as_json):
        if as_json and output is None:
            raise UsageError("--json prints the run summary on stdout, so the predictions need a file: "
                             "add --output preds.csv (or .jsonl)")
        predictor = Predictor.from_bundle(bundle, artifact=artifact, threads=threads)
        show = console.is_terminal and not as_json
        if show:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("[bold]predict[/]"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                task = bar.add_task("predict", total=None)
                result = predict_file(predictor, input, output, batch_size,
                                      progress=lambda done, total: bar.update(task, completed=done, total=total))
        else:
            result = predict_file(predictor, input, output, batch_size)
    if as_json:
        emit_json(result)
        return
    where = result.output or "stdout"
    console.print(f"[green]ok[/] {result.rows} rows -> {where} with {result.artifact} "
                  f"in {result.seconds:.2f}s ({result.rows_per_second:,.0f} rows/s)")
