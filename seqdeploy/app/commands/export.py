"""`seqdeploy export`: Keras model (run directory, .keras or .h5) -> model.onnx + export.json."""

from __future__ import annotations

import contextlib
import functools
import inspect
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from seqdeploy.app.cli import CUSTOM_OBJECTS_OPTION, JSON_OPTION, app, console, emit_json, handle_errors
from seqdeploy.layout import MANIFEST_FILE


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
    gc = result.graph_cleanup
    if gc.get("rewrites"):
        kept = gc.get("kept_exported_graph")
        timing = ""
        if gc.get("batch1_us_exported") is not None:
            timing = f"; batch 1: {gc['batch1_us_exported']:.1f} -> {gc['batch1_us_cleaned']:.1f} us"
        what = ", ".join(f"{k} {v}" for k, v in gc["rewrites"].items())
        if kept:
            console.print(f"graph cleanup not kept: {escape(kept)} (rewrites tried: {what})", soft_wrap=True)
        else:
            console.print(f"graph cleanup: {gc['nodes_before']} -> {gc['nodes_after']} nodes ({what}){timing}",
                          soft_wrap=True)
    if result.native_recurrent:
        console.print("native recurrent ops: " + ", ".join(result.native_recurrent), soft_wrap=True)
    for note in result.notes:
        console.print(f"  [cyan]note:[/] {escape(note)}", soft_wrap=True)
    for w in result.warnings:
        console.print(f"  [yellow]warning:[/] {escape(w)}", soft_wrap=True)
    console.print(f"report: {result.report_path}")


def export(
    source: Optional[Path] = typer.Argument(None, help="Run directory (model.keras + train.json), or a .keras / .h5 model file."),
    onnx: bool = typer.Option(True, "--onnx", help="Export to ONNX (the only model format today, and the default)."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default 17; supported 13-18)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output .onnx path (default RUN_DIR/model.onnx or MODEL.onnx)."),
    unsafe: bool = typer.Option(False, "--unsafe", help="Allow Lambda/custom layers (Keras safe_mode=False: runs their code)."),
    custom_objects: List[str] = CUSTOM_OBJECTS_OPTION,
    keras: Optional[Path] = typer.Option(None, "--keras", help="The Keras model (same as the SOURCE argument)."),
    as_json: bool = JSON_OPTION,
    **destinations: Optional[Path],  # one `--<target> DIR` per output target (seqdeploy.targets), added below
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
        wanted = {name: d for name, d in destinations.items() if d is not None}
        if wanted and (source / MANIFEST_FILE).is_file():
            return _write_targets(source, wanted, as_json)
        from seqdeploy.export.convert import export_onnx

        result = export_onnx(source, out=out, opset=opset, unsafe=unsafe)  # refreshes a run directory's manifest
        if wanted:
            return _write_targets(source, wanted, as_json)
        if as_json:
            emit_json(result)
        else:
            render_export(result)


def _write_targets(bundle: Path, destinations: dict[str, Path], as_json: bool) -> None:
    """Write the bundle to every requested output target; print each result (one JSON object for one target)."""
    from seqdeploy.targets import get_target

    results = {}
    for name, destination in destinations.items():
        target = get_target(name)
        results[name] = result = target.write(bundle, destination)
        if not as_json:
            for line in target.describe_result(result):
                console.print(escape(line), soft_wrap=True)
    if as_json:
        emit_json(next(iter(results.values())) if len(results) == 1 else results)


def with_target_options(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn`` with one ``--<name> DIR`` option per registered output target before ``--json`` (typer reads the
    signature), so adding a target module adds its option."""
    from seqdeploy.targets import available_targets

    sig = inspect.signature(fn, eval_str=True)
    fixed = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = [inspect.Parameter(name.replace("-", "_"), inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               default=typer.Option(None, f"--{name}", metavar="DIR", help=t.option_help),
                               annotation=Optional[Path])
             for name, t in available_targets().items()]
    params = fixed[:-1] + extra + fixed[-1:]  # --json stays last

    @functools.wraps(fn)
    def command(**kwargs: Any) -> None:
        names = {name.replace("-", "_"): name for name in available_targets()}
        fn(**{k: v for k, v in kwargs.items() if k not in names}, **{names[k]: v for k, v in kwargs.items() if k in names})

    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    del command.__wrapped__  # typer must read the signature above, not fn's
    return command


app.command("export")(with_target_options(export))
