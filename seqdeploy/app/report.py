"""A person's view of a run directory: ``report.md`` plus the training-curve plot.

Everything here is rendered from the run directory's JSON files, so the report
can be regenerated at any time and never disagrees with them.

    >>> write_report("runs/breast_cancer_mlp")  # doctest: +SKIP
    PosixPath('runs/breast_cancer_mlp/report.md')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from seqdeploy.atomic import atomic_path, atomic_write_text, read_json_or_empty
from seqdeploy.layout import (
    BENCH_MD, BENCH_PNG, EXPORT_FILE, MANIFEST_FILE, QUANTIZE_FILE, REPORT_FILE, TRAIN_FILE, TUNE_FILE, VERIFY_FILE,
)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` in cells is escaped."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            v = f"{v:.4g}"
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_training(history: dict[str, list[float]], path: Path) -> Path | None:
    """Loss and metric curves (train and validation) as a PNG, via matplotlib's Agg backend."""
    if not history.get("loss"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in history if not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.2), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` (and ``training.png``) for a run directory and return its path."""
    run_dir = Path(run_dir)
    train = read_json_or_empty(run_dir / TRAIN_FILE)
    user_model = train.get("source") == "keras-model"  # a model trained elsewhere (built in a temporary directory)
    parts = [f"# seqdeploy report: {train.get('spec_name') if user_model else run_dir.name}", ""]
    spec_file = run_dir / (train.get("spec_file", "spec.toml") if train else "spec.toml")
    if spec_file.exists():
        lang = "toml" if spec_file.suffix == ".toml" else "python"
        parts += ["## Spec", "", f"```{lang}", spec_file.read_text().strip(), "```", ""]
    if user_model:  # no training record
        parts += ["## Model", "", f"`{train.get('model_file')}` trained elsewhere; task {train.get('task')}; inputs "
                  + ", ".join(f"`{i.get('name')}` {i.get('dtype')} {i.get('shape')}" for i in train.get("inputs", []))
                  + ".", ""]
    elif train:
        parts += _train_section(train, run_dir)
    exp = read_json_or_empty(run_dir / EXPORT_FILE)
    if exp:
        parts += _export_section(exp)
    ver = read_json_or_empty(run_dir / VERIFY_FILE)
    if ver:
        parts += _verify_section(ver)
    quant = read_json_or_empty(run_dir / QUANTIZE_FILE)
    if quant:
        parts += _quantize_section(quant)
    if (run_dir / BENCH_MD).exists():
        body = (run_dir / BENCH_MD).read_text().strip().splitlines()
        body = [("##" + ln if ln.startswith("#") else ln) for ln in body]  # nest its headings under ours
        parts += ["## Benchmark", ""] + body + [""]
        if (run_dir / BENCH_PNG).exists():
            parts += ["![latency and throughput](bench.png)", ""]
    tune = read_json_or_empty(run_dir / TUNE_FILE)
    if tune.get("choices"):
        parts += _tune_section(tune)
    man = read_json_or_empty(run_dir / MANIFEST_FILE)
    if man:
        parts += _manifest_section(man, run_dir)
    path = run_dir / REPORT_FILE
    atomic_write_text(path, "\n".join(parts).rstrip() + "\n")
    return path


def _tune_section(t: dict) -> list[str]:
    """The session settings ``seqdeploy tune`` chose per batch size for the deployed artifact."""
    def desc(x: dict) -> str:
        return (f"{x.get('threads')} thread(s), spinning {'on' if x.get('allow_spinning') else 'off'}, "
                f"graph {x.get('graph_optimization')}")

    rows = [[str(c["batch"]), desc(c["settings"]), f"{c['p50_us']:.1f} us", f"{c['default_p50_us'] / c['p50_us']:.2f}x",
             f"{desc(c['plain_best_settings'])}: {c['plain_best_p50_us']:.1f} us", c.get("reason", "")]
            for c in t["choices"]]
    return ["## Session settings chosen", "",
            f"`{t.get('artifact')}` on {t.get('cpu')}, onnxruntime {t.get('onnxruntime')}: every candidate timed "
            f"through Predictor.run and plain session.run ({len(t.get('points', []))} measurements, "
            f"{t.get('seconds')} s). `Predictor` uses the batch-1 choice.", "",
            markdown_table(["batch", "chosen", "p50", "vs defaults", "best plain session.run", "why"], rows), ""]


def _train_section(t: dict, run_dir: Path) -> list[str]:
    data = t.get("data", {})
    synthetic = " (**synthetic** data)" if data.get("synthetic") else ""
    out = ["## Training", "",
           f"Data `{data.get('source')}`{synthetic}: {data.get('n_train')} train / {data.get('n_val')} validation / "
           f"{data.get('n_test')} test rows, fingerprint `{str(data.get('fingerprint'))[:16]}`. "
           f"{t.get('epochs_run')}/{t.get('epochs_requested')} epochs in {t.get('seconds')} s, "
           f"{t.get('parameters')} parameters, seed {t.get('seed')}.", ""]
    out += [markdown_table(["test metric", "value"], sorted(t.get("test_metrics", {}).items())), ""]
    if plot_training(t.get("history", {}), run_dir / "training.png"):
        out += ["![training curves](training.png)", ""]
    return out


def _export_section(e: dict) -> list[str]:
    ops = e.get("op_counts", {})
    out = ["## Export", "", f"opset {e.get('opset')}, IR {e.get('ir_version')}, "
           f"{e.get('size_bytes', 0) / 1024:.1f} KiB, converted in {e.get('seconds', 0):.2f} s.", ""]
    out += [markdown_table(["op", "count"], sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))), ""]
    for w in e.get("warnings", []) or []:
        out.append(f"- warning: {w}")
    return out + [""]


def _verify_section(v: dict) -> list[str]:
    status = "PASS" if v.get("passed") else "FAIL"
    out = ["## Verification (ONNX vs Keras)", "",
           f"**{status}** on {v.get('samples')} real samples plus random and edge-case inputs, batch sizes "
           f"{v.get('batch_sizes')}.", ""]
    rows = []
    for o in (v.get("details") or {}).get("outputs", []):
        agree = o.get("label_agreement")
        rows.append([o["name"], "ok" if o["passed"] else "FAIL", o["max_abs_error"], o["atol"], o["rtol"],
                     o["p99_abs_error"], o["min_passing_atol"], f"{o['elements_over_tolerance']}/{o['elements']}",
                     "-" if agree is None else f"{agree:.2%}"])
    out += [markdown_table(["output", "result", "max abs err", "atol", "rtol", "p99 abs err", "min passing atol",
                            "over tol", "label agreement"], rows), ""]
    out += [f"- {f}" for f in v.get("failures", [])]
    out += [f"- warning: {w}" for w in v.get("warnings", [])]
    return out + [""]


def _quantize_section(q: dict) -> list[str]:
    chosen = q.get("chosen")
    out = ["## Quantization", "",
           f"Deployment artifact: **{chosen or 'model.onnx (float32 kept)'}**. Metric: {q.get('metric_name', '')}.", ""]
    rows = []
    for c in q.get("candidates", []):
        lat = {}
        for m in c.get("latency", []) or []:
            lat[m.get("batch_size")] = m.get("speedup")
        rows.append([c.get("recipe"), c.get("attempt", ""), _fmt(c.get("metric")), _fmt(c.get("metric_drop")),
                     *(_fmt(lat.get(b)) for b in sorted(lat)[:2]),
                     "chosen" if c.get("chosen") else (c.get("why_not") or c.get("reason") or "")])
    if rows:
        out += [markdown_table(["recipe", "attempt", "metric", "drop", "speedup b=1", "speedup large", "decision"],
                               rows), ""]
    for s in q.get("skipped", []) or []:
        out.append(f"- skipped {s.get('recipe')}: {s.get('reason')}")
    return out + [""]


def _manifest_section(m: dict, run_dir: Path) -> list[str]:
    out = ["## Bundle", "", f"`manifest.json` schema {m.get('schema_version')}, deployment artifact "
           f"**{m.get('deployment_artifact') or m.get('deployment')}**.", ""]
    rows = [[a.get("file") or a.get("path"), a.get("precision"), a.get("size"), str(a.get("sha256", ""))[:16]]
            for a in m.get("artifacts", [])]
    if rows:
        out += [markdown_table(["artifact", "precision", "bytes", "sha256"], rows), ""]
    out += ["Embed it (onnxruntime + numpy only):", "", "```python", "from seqdeploy.runtime import Predictor",
            f"predictor = Predictor.from_bundle({str(run_dir)!r})", "predictor.predict(raw_rows)", "```", ""]
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
