"""`seqdeploy export`: Keras model (run directory, .keras or .h5) -> model.onnx + export.json."""

from __future__ import annotations

import contextlib

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from seqdeploy.app.cli import CUSTOM_OBJECTS_OPTION, JSON_OPTION, app, console, emit_json, handle_errors


def render_export(result) -> None:
    """Short human summary: inputs, outputs, op counts, warnings."""
    table = Table(title=f"export {result.source.name} -> {result.onnx_path}", header_style="bold")
    table.add_column("tensor")
    table.add_column("name")
    table.add_column("shape")
    table.add_column("dtype")
    for kind, items in (("input", result.inputs), ("output", result.outputs)):
        for t in items:
            shape = "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"
            table.add_row(kind, escape(t.name), escape(shape), t.dtype)
    console.print(table)
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(result.op_counts.items(), key=lambda kv: (-kv[1], kv[0])))
    console.print(f"opset {result.opset} (IR {result.ir_version}), {result.size_bytes / 1024:.1f} KiB, "
                  f"{result.seconds:.1f}s; ops: {ops}", soft_wrap=True)
    if result.native_recurrent:
        console.print("native recurrent ops: " + ", ".join(result.native_recurrent), soft_wrap=True)
    for note in result.notes:
        console.print(f"  [cyan]note:[/] {escape(note)}", soft_wrap=True)
    for w in result.warnings:
        console.print(f"  [yellow]warning:[/] {escape(w)}", soft_wrap=True)
    console.print(f"report: {result.report_path}")


@app.command("export")
def export(
    source: Optional[Path] = typer.Argument(None, help="Run directory (model.keras + train.json), or a .keras / .h5 model file."),
    onnx: bool = typer.Option(True, "--onnx", help="Export to ONNX (the only target today, and the default)."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default 17; supported 13-18)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output .onnx path (default RUN_DIR/model.onnx or MODEL.onnx)."),
    unsafe: bool = typer.Option(False, "--unsafe", help="Allow Lambda/custom layers (Keras safe_mode=False: runs their code)."),
    custom_objects: List[str] = CUSTOM_OBJECTS_OPTION,
    keras: Optional[Path] = typer.Option(None, "--keras", help="The Keras model (same as the SOURCE argument)."),
    triton: Optional[Path] = typer.Option(None, "--triton", help="Write the bundle as a Triton model repository into this directory (exports ONNX first only if the run has no manifest yet)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Convert a Keras model to ONNX (dynamic batch axis `batch`, native recurrent ops)."""
    with handle_errors(as_json=as_json), contextlib.ExitStack() as scope:
        from seqdeploy.errors import UsageError

        if keras is not None and source is not None and keras != source:
            raise UsageError(f"received both SOURCE {source} and --keras {keras}; give the model once: "
                             f"`seqdeploy export {keras} --out MODEL.onnx`")
        source = source if source is not None else keras
        if source is None:
            raise UsageError("export needs a model: `seqdeploy export MODEL.keras --out MODEL.onnx` "
                             "(or a run directory)")
        from seqdeploy.export.custom_objects import custom_objects_scope

        scope.enter_context(custom_objects_scope(custom_objects))  # the Keras loads below find them
        if triton is not None and (source / "manifest.json").is_file():
            from seqdeploy.app.commands._triton import write_and_render

            return write_and_render(source, triton, as_json)
        from seqdeploy.export.convert import export_onnx

        result = export_onnx(source, out=out, opset=opset, unsafe=unsafe)  # refreshes a run directory's manifest
        if triton is not None:
            from seqdeploy.app.commands._triton import write_and_render

            return write_and_render(source, triton, as_json)
        if as_json:
            emit_json(result)
        else:
            render_export(result)
