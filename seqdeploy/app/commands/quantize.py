"""`seqdeploy quantize RUN_DIR`: try int8/fp16 recipes, keep the fastest one that stays accurate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from typer.core import TyperCommand

from seqdeploy.app.cli import JSON_OPTION, app, console, emit_json, handle_errors


def render_quantize(result) -> None:
    """Terminal table: one row per candidate, float32 first."""
    sizes = result.float32.latency_p50_ms
    batches = [int(b) for b in sizes] or []
    table = Table(title=f"quantize ({result.mode}, budget {result.max_metric_drop:g} {result.metric_name} drop)",
                  header_style="bold")
    for col, justify in (("candidate", "left"), ("size KiB", "right"), (result.metric_name, "right"), ("drop", "right")):
        table.add_column(col, justify=justify)
    for b in batches:
        table.add_column(f"b={b} ms", justify="right")
        table.add_column(f"b={b} speedup", justify="right")
    table.add_column("verdict", overflow="fold")
    f = result.float32
    table.add_row("float32", f"{f.size_bytes / 1024:.0f}", f"{f.metric:.4f}", "-",
                  *[x for b in batches for x in (f"{sizes[str(b)]:.3f}", "1.00x")], "reference")
    for c in result.candidates:
        name = c.recipe + (f" (retry, {len(c.settings.nodes_to_exclude)} nodes in fp32)" if c.attempt > 1 else "")
        by_b = {lat.batch_size: lat for lat in c.latency}
        cells = []
        for b in batches:
            lat = by_b.get(b)
            cells += [f"{lat.candidate_p50_ms:.3f}", f"{lat.speedup:.2f}x ±{lat.noise:.2f}"] if lat else ["-", "-"]
        reason = c.reason
        for word in ("chosen: ", "chosen ", "qualified: ", "qualified "):
            reason = reason[len(word):] if reason.startswith(word) else reason
        verdict = ("[bold green]chosen[/] " if c.chosen else "[green]qualified[/] " if c.qualified else "[red]rejected[/] ") + reason
        table.add_row(name, f"{c.size_bytes / 1024:.0f}" if c.size_bytes else "-",
                      f"{c.metric:.4f}" if c.metric is not None else "-",
                      f"{c.metric_drop:+.4f}" if c.metric_drop is not None else "-", *cells, verdict)
    console.print(table)
    for s in result.skipped:
        console.print(f"[dim]skipped {s.recipe}: {s.reason}[/]")
    for c in result.candidates:
        if c.worst_layers:
            worst = ", ".join(f"{d.node} ({d.op_type}, SQNR {d.sqnr_db:.1f} dB, -{d.sqnr_loss_db:.1f} dB)" for d in c.worst_layers)
            console.print(f"[yellow]{c.recipe}: noisiest layers[/] {worst}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    style = "bold green" if result.chosen else "bold yellow"
    console.print(f"[{style}]{result.summary}[/]")


def _update_manifest(run_dir: Path) -> str | None:
    """The note for a bundle's manifest (quantize_run refreshes it itself)."""
    from seqdeploy.layout import MANIFEST_FILE

    return f"updated {run_dir / MANIFEST_FILE}" if (run_dir / MANIFEST_FILE).is_file() else None


class QuantizeCommand(TyperCommand):
    """``seqdeploy quantize``: the recipe-dependent help texts come from the recipe registry, read only
    when the help is shown (the registry imports the quantizer)."""

    def format_help(self, ctx, formatter):
        from seqdeploy.quantize.recipes import recipes

        rs = list(recipes().values())
        texts = {
            "mode": f"auto (every recipe that fits the op mix) or one recipe's mode: {', '.join(r.mode for r in rs)}.",
            "calibration_samples": "Training rows used to calibrate ("
                                   + ", ".join(r.mode for r in rs if r.needs_calibration) + ").",
        }
        for param in self.params:
            param.help = texts.get(param.name, param.help)
        return super().format_help(ctx, formatter)


@app.command(cls=QuantizeCommand)
def quantize(
    run_dir: Path = typer.Argument(..., help="Run directory holding model.onnx (from `seqdeploy export`)."),
    mode: str = typer.Option("auto", "--mode", help="auto (every recipe that fits the op mix) or one recipe's mode."),
    max_metric_drop: float = typer.Option(0.01, "--max-metric-drop", help="Accuracy drop in absolute points (0.01 = 1 point), or relative MAE increase for regression."),
    calibration_samples: int = typer.Option(256, "--calibration-samples", help="Training rows used to calibrate the recipes that need calibration."),
    calibration_method: str = typer.Option("minmax", "--calibration-method", help="minmax | entropy | percentile."),
    per_channel: Optional[bool] = typer.Option(None, "--per-channel/--no-per-channel", help="Per-channel weight scales (default: each recipe's own; see QuantizeSettings).", show_default=False),
    reduce_range: Optional[bool] = typer.Option(None, "--reduce-range/--no-reduce-range", help="7-bit weights (default: on for x86 CPUs without VNNI, where 8-bit int8 kernels saturate).", show_default=False),
    as_json: bool = JSON_OPTION,
) -> None:
    """Quantize a run's model.onnx; keep model.<recipe>.onnx only if it is faster and accurate enough.

    Exit code 0 also when nothing qualifies (float32 stays the deployment artifact);
    1 when an explicit --mode's candidate fails the gate; 2 on bad input.
    """
    from seqdeploy.errors import CheckFailed
    from seqdeploy.layout import MODEL_ONNX
    from seqdeploy.quantize import QuantizeSettings, quantize_run

    with handle_errors(as_json=as_json, on_check_failed=render_quantize):
        settings = QuantizeSettings(mode=mode, max_metric_drop=max_metric_drop, calibration_samples=calibration_samples,
                                    calibration_method=calibration_method, per_channel=per_channel,
                                    reduce_range=reduce_range)
        if as_json:
            result = quantize_run(run_dir, settings)
        else:
            with console.status(f"quantizing {run_dir / MODEL_ONNX} ({mode}): building and timing candidates"):
                result = quantize_run(run_dir, settings)
        note = _update_manifest(run_dir)
        if mode != "auto" and result.chosen is None:
            raise CheckFailed(f"the {mode} candidate did not qualify: "
                              + "; ".join([c.reason for c in result.candidates] + [s.reason for s in result.skipped])
                              + " (float32 model.onnx stays the deployment artifact)",
                              result=result.to_json() if as_json else result)
        if as_json:
            emit_json(result.to_json())
            return
        render_quantize(result)
        if note:
            console.print(f"[dim]{note}[/]")
