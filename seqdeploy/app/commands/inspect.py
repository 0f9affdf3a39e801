"""`seqdeploy inspect BUNDLE|MODEL.onnx`: what is inside a bundle or an ONNX file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from seqdeploy.app.cli import JSON_OPTION, app, console, emit_json, handle_errors


@app.command("inspect")
def inspect_command(
    path: Path = typer.Argument(..., help="A bundle directory (manifest.json checked) or a .onnx file."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show inputs, outputs, opset, op counts, size, metadata and the bundle's artifacts.

    Example: seqdeploy inspect runs/breast_cancer_mlp
    """
    from seqdeploy.bundle.write import inspect_path

    with handle_errors(as_json=as_json):
        result = inspect_path(path)
    if as_json:
        emit_json(result)
        return
    _render(result)


def _shape(shape: tuple) -> str:
    from rich.markup import escape

    return escape("[" + ", ".join("?" if d is None else str(d) for d in shape) + "]")


def _render(result) -> None:
    from rich.table import Table

    m = result.manifest
    if m is not None:
        console.print(f"[bold]{m.name}[/]  task={m.task}  schema_version={m.schema_version}  producer={m.producer}")
        if m.labels:
            console.print(f"labels: {', '.join(m.labels)}")
        if m.target_name:
            console.print(f"target: {m.target_name}")
        console.print(f"preprocessing: {m.preprocessing.kind}")
        console.print(f"needs onnxruntime >= {m.min_onnxruntime}"
                      + (f"; contrib ops: {', '.join(m.contrib_ops)}" if m.contrib_ops else ""))
        if m.custom_op_libraries:
            console.print(f"custom-op libraries: {', '.join(m.custom_op_libraries)} (registered automatically by "
                          f"the Python runtime, serve and the Ray engine)", soft_wrap=True)
        for b in m.bindings:
            console.print(f"runs on {b.binding}: " + ("[green]yes[/]" if b.runs else "[red]no[/]")
                          + (f" ({escape(b.note)})" if b.note else ""), soft_wrap=True)
        if m.verification is not None:
            v = m.verification
            console.print(f"verification: {'[green]passed[/]' if v.passed else '[red]FAILED[/]'}  "
                          f"max_abs_error={v.max_abs_error}  label_agreement={v.label_agreement}")
        t = Table(title="artifacts (sha256 checked)")
        for col in ("file", "graph", "precision", "size", "opset", "sha256", "deploy"):
            t.add_column(col, overflow="fold")
        for a in m.artifacts:
            deployed = "*" if a.file == m.deployment_artifact else ""
            t.add_row(a.file, "model-ready", a.precision, f"{a.size:,}", str(a.opset), a.sha256[:12], deployed)
            if a.portable is not None:
                t.add_row(a.portable.file, "portable", a.precision, f"{a.portable.size:,}", str(a.opset),
                          a.portable.sha256[:12], deployed)
        console.print(t)
        if m.runtime_settings is not None:
            rs = m.runtime_settings
            p50 = dict(rs.p50_us)
            console.print("settings chosen for the deployed artifact (measured fastest, p50): " + "; ".join(
                f"batch {b}: {rs.for_batch(b).describe()}" + (f" ({p50[b]:g} us)" if b in p50 else "")
                for b, _ in rs.threads) + f" (from {rs.source}); Predictor uses batch 1's", soft_wrap=True)
        if m.portable is not None:
            sig = lambda ts: ", ".join(f"{x.name} {x.dtype}{_shape(x.shape)}" for x in ts)  # noqa: E731
            console.print(f"deployment graph {m.portable.file}: raw inputs {sig(m.portable.inputs)} -> "
                          f"{sig(m.portable.outputs)}", soft_wrap=True)
    for info in result.models:
        console.print(f"\n[bold]{info.file}[/]  {info.size:,} bytes  ir={info.ir_version}  opset={info.opset}  "
                      f"params={info.n_parameters:,}  producer={info.producer or '-'}")
        io = Table(show_header=True)
        for col in ("", "name", "dtype", "shape"):
            io.add_column(col)
        for kind, items in (("input", info.inputs), ("output", info.outputs)):
            for ti in items:
                io.add_row(kind, ti.name, ti.dtype, _shape(ti.shape))
        console.print(io)
        console.print("ops: " + ", ".join(f"{k}x{v}" for k, v in info.op_counts.items()))
        if info.contrib_ops:
            console.print(f"contrib ops: {', '.join(info.contrib_ops)}")
        if info.metadata_props:
            def short(v: str) -> str:  # preprocessing records can be kilobytes: --json has them whole
                return v if len(v) <= 80 else f"{v[:60]}... ({len(v)} chars)"

            console.print("metadata: " + escape(", ".join(f"{k}={short(v)}" for k, v in info.metadata_props.items())))
