"""`seqdeploy verify`: numerical parity of the ONNX artifact against Keras."""

from __future__ import annotations

import contextlib

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from seqdeploy.app.cli import CUSTOM_OBJECTS_OPTION, JSON_OPTION, app, console, emit_json, handle_errors
from seqdeploy.errors import UsageError


def render_verify(result) -> None:
    table = Table(title=f"verify {result.onnx_path.name} ({result.artifact_precision}) vs Keras",
                  header_style="bold")
    for col in ("output", "ok", "max abs", "atol", "rtol", "p99 abs", "min atol", "over", "labels"):
        table.add_column(col, justify="left" if col in ("output", "ok") else "right", no_wrap=True)
    for r in result.outputs:
        mark = "[green]✓[/]" if r.passed else "[red]x[/]"
        agree = "-" if r.label_agreement is None else f"{r.label_agreement:.1%}"
        table.add_row(r.name, mark, f"{r.max_abs_error:.2g}", f"{r.atol:g}", f"{r.rtol:g}", f"{r.p99_abs_error:.2g}",
                      f"{r.min_passing_atol:.2g}", f"{r.elements_over_tolerance}/{r.elements}", agree)
    console.print(table)
    feeds = ", ".join(sorted({f.kind.split('[')[0] for f in result.feeds}))
    console.print(f"feeds: {feeds}; batch sizes {list(result.batch_sizes)}; {result.samples} real samples; "
                  f"{result.seconds:.1f}s")
    for f in result.failures:
        console.print(f"  [red]-[x][/] {f}", soft_wrap=True)
    for w in result.warnings:
        console.print(f"  [yellow]warning:[/] {w}", soft_wrap=True)
    pc = getattr(result, "portable", None)
    if pc is not None:
        what = (f"labels {pc.label_agreement:.1%}, " if pc.label_agreement is not None else "") + \
            f"max abs error {pc.max_abs_error:.2g} (tolerance {pc.tolerance:.2g})"
        tok = (f"; tokenizer ids exact on {pc.tokenizer_strings - pc.tokenizer_mismatches}/{pc.tokenizer_strings} "
               f"strings" if pc.tokenizer_strings else "")
        mark = "[green]ok[/]" if pc.passed else "[red]FAIL[/]"
        console.print(f"deployment graph (raw rows -> answers, {pc.rows} test rows): {mark} {what}{tok}", soft_wrap=True)
    if result.passed:
        console.print("[green]PASS[/]: ONNX matches Keras")
    if result.report_path:
        console.print(f"report: {result.report_path}" + (f"  golden: {result.golden_path}" if result.golden_path else ""))


@app.command()
def verify(
    run_dir: Optional[Path] = typer.Argument(None, help="Run directory from `seqdeploy train` + `export` (or a "
                                                          "MODEL.keras / X.onnx, the other given as an option)."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="ONNX file to check (default RUN_DIR/model.onnx)."),
    keras: Optional[Path] = typer.Option(None, "--keras", help="Keras model (outside a run directory)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Model-ready inputs .npy/.npz/.csv (outside a run directory; "
                                                         ".npz keyed by input name for several inputs). Without it, "
                                                         "numeric inputs are generated."),
    atol: List[str] = typer.Option([], "--atol", help="Absolute tolerance, or OUTPUT=value per output (repeatable)."),
    rtol: List[str] = typer.Option([], "--rtol", help="Relative tolerance, or OUTPUT=value per output (repeatable)."),
    samples: int = typer.Option(200, "--samples", help="Real samples to compare."),
    unsafe: bool = typer.Option(False, "--unsafe", help="Allow Keras files with Lambda/custom layers (runs their code)."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --keras/--onnx: where verify.json and the golden "
                                                           "files go (default the ONNX file's directory; a bundle "
                                                           "directory is refreshed so it still loads)."),
    custom_objects: List[str] = CUSTOM_OBJECTS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Check the ONNX artifact computes what the Keras model computes (exit 1 when it does not)."""
    from seqdeploy.bundle.write import refresh_bundle_manifest
    from seqdeploy.errors import CheckFailed
    from seqdeploy.verify.parity import Tolerance, load_inputs_file, parse_tolerances, verify_models, verify_run

    with handle_errors(as_json=as_json, on_check_failed=render_verify), contextlib.ExitStack() as scope:
        a_def, a_per = parse_tolerances(atol, "atol")
        r_def, r_per = parse_tolerances(rtol, "rtol")
        per = None
        if a_per or r_per:
            from seqdeploy.verify.parity import FLOAT32_TOL

            per = {n: Tolerance(a_per.get(n, a_def if a_def is not None else FLOAT32_TOL[0]),
                                r_per.get(n, r_def if r_def is not None else FLOAT32_TOL[1]))
                   for n in set(a_per) | set(r_per)}
        from seqdeploy.export.custom_objects import custom_objects_scope

        scope.enter_context(custom_objects_scope(custom_objects))  # the Keras loads below find them
        if run_dir is not None and keras is None and run_dir.suffix.lower() in (".keras", ".h5", ".hdf5"):
            keras, run_dir = run_dir, None  # `verify MODEL.keras --onnx X.onnx` reads like `export MODEL.keras`
        if run_dir is not None and onnx is None and run_dir.suffix.lower() == ".onnx":
            onnx, run_dir = run_dir, None  # `verify X.onnx --keras MODEL.keras`: the file is the ONNX to check
        if run_dir is not None:
            if keras is not None or data is not None:
                raise UsageError("give either RUN_DIR or --keras/--onnx/--data, not both")
            result = verify_run(run_dir, onnx_path=onnx, atol=a_def, rtol=r_def, per_output=per,
                                samples=samples, unsafe=unsafe)
            refresh_bundle_manifest(run_dir)  # a bundle carries its verification and golden files
        else:
            if keras is None or onnx is None:
                raise UsageError("verify needs RUN_DIR, or --keras MODEL.keras --onnx MODEL.onnx [--data FILE]")
            inputs = load_inputs_file(data) if data is not None else None
            out_dir = out if out is not None else onnx.parent
            # beside the ONNX file: X.onnx -> X.verify.json (model.onnx in a bundle: verify.json)
            prefix = "" if out is not None or onnx.name == "model.onnx" else f"{onnx.stem}."
            if out is not None:
                if out.exists() and not out.is_dir():
                    raise UsageError(f"--out {out} is a file; expected a directory for verify.json and the golden files")
            try:
                result = verify_models(keras, onnx, real_inputs=inputs, atol=a_def, rtol=r_def, per_output=per,
                                       samples=samples, unsafe=unsafe, out_dir=out_dir, make_out_dir=True,
                                       file_prefix=prefix)
            except CheckFailed:
                refresh_bundle_manifest(out_dir)  # the report was written: a bundle must still list every file
                raise
            refresh_bundle_manifest(out_dir)  # a report written into a bundle must leave it loadable
        if as_json:
            emit_json(result)
        else:
            render_verify(result)

