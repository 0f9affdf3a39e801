"""`seqdeploy doctor`: installed versions and CPU features vs what seqdeploy was tested with."""

from __future__ import annotations

import typer
from rich.table import Table

from seqdeploy.app.cli import JSON_OPTION, app, console, emit_json, handle_errors


@app.command()
def doctor(as_json: bool = JSON_OPTION) -> None:
    """Check TensorFlow/Keras/tf2onnx/onnx/onnxruntime/protobuf/numpy versions and int8 CPU features."""
    from seqdeploy.app.doctor import run_doctor

    with handle_errors(as_json=as_json):
        report = run_doctor()
        if as_json:
            emit_json(report)
        else:
            table = Table(title=f"seqdeploy doctor (Python {report.python}, {report.machine})", header_style="bold")
            for col in ("check", "found", "expected", "status", "what to do"):
                table.add_column(col)
            colour = {"ok": "green", "warn": "yellow", "fail": "red"}
            for c in report.checks:
                table.add_row(c.name, c.found or "-", c.expected, f"[{colour[c.status]}]{c.status}[/]", c.advice)
            console.print(table)
            flags = ", ".join(k for k, v in report.cpu_flags.items() if v) or "none detected"
            console.print(f"CPU flags: {flags}")
        if not report.ok:
            raise typer.Exit(1)
