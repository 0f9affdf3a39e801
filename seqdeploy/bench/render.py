"""bench.md, bench.png and the side-by-side table rows (terminal, markdown, reports)."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Sequence

from seqdeploy.atomic import atomic_write_json, atomic_write_text
from seqdeploy.layout import BENCH_FILE, BENCH_MD, BENCH_PNG
from seqdeploy.bench.runners import references
from seqdeploy.bench.schema import BenchResult


def fmt_us(us: float | None) -> str:
    """Human time from microseconds.

    >>> fmt_us(8.123), fmt_us(1430.0), fmt_us(2.5e6)
    ('8.12 us', '1.43 ms', '2.50 s')
    """
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.3g} us" if us < 100 else f"{us:.0f} us"
    if us < 1e6:
        return f"{us / 1e3:.3g} ms" if us < 1e5 else f"{us / 1e3:.0f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_ratio(x: float | None) -> str:
    """Speedup as text.

    >>> fmt_ratio(25.3), fmt_ratio(0.5), fmt_ratio(None)
    ('25.3x', '0.50x', '-')
    """
    if x is None:
        return "-"
    if x < 0.1:
        return f"{x:.2g}x"
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x" if x < 1000 else f"{x:.0f}x"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return "-"


#: the speedup columns, one per reference the runner families declare: (key, title, short title)
REFERENCE_COLUMNS = tuple((ref.key, ref.title, ref.short) for _, ref in references())
TABLE_COLUMNS = ("runner", "batch", "threads", "p50", "p90", "p99", "p99.9", "mean ± std", "samples/s",
                 *(title for _, title, _ in REFERENCE_COLUMNS), "create", "first call", "size", "max abs diff", "n")
TERMINAL_COLUMNS = ("runner", "batch", "threads", "p50", "p99", "samples/s",
                    *(title for _, title, _ in REFERENCE_COLUMNS), "first call", "max abs diff")


def table_rows(result: BenchResult, columns: Sequence[str] = TABLE_COLUMNS) -> list[list[str]]:
    """Rows (strings) of the side-by-side table (``columns`` from TABLE_COLUMNS) for terminal, markdown, reports."""
    idx = [TABLE_COLUMNS.index(c) for c in columns]
    return [[row[i] for i in idx] if len(row) == len(TABLE_COLUMNS) else row[:3] + [row[3]] + [""] * (len(idx) - 4)
            for row in _all_rows(result)]


def _all_rows(result: BenchResult) -> list[list[str]]:
    info = {r.name: r for r in result.runners}
    rows = []
    order = {r.name: i for i, r in enumerate(result.runners)}
    for m in sorted(result.results, key=lambda m: (m.threads, m.batch, order.get(m.runner, 99))):
        ri = info.get(m.runner)
        name = m.runner + (" *" if ri and ri.deployed else "")
        if m.status != "ok" or m.latency is None:
            rows.append([name, str(m.batch), str(m.threads), f"{m.status}: {m.reason}"] + [""] * (len(TABLE_COLUMNS) - 4))
            continue
        L = m.latency
        rows.append([
            name, str(m.batch), str(m.threads) if (ri is None or ri.threads_apply) else "n/a",
            fmt_us(L.p50_us), fmt_us(L.p90_us), fmt_us(L.p99_us), fmt_us(L.p999_us),
            f"{fmt_us(L.mean_us)} ± {fmt_us(L.std_us)}", f"{m.throughput_sps:,.0f}",
            *(fmt_ratio(m.speedup.get(key)) for key, _, _ in REFERENCE_COLUMNS),
            fmt_us(m.creation_s * 1e6 if m.creation_s is not None else None),
            fmt_us(m.first_inference_s * 1e6 if m.first_inference_s is not None else None),
            fmt_bytes(ri.artifact_bytes if ri else None),
            "-" if m.max_abs_diff is None else f"{m.max_abs_diff:.1e}", str(L.n),
        ])
    return rows


def render_markdown(result: BenchResult) -> str:
    """bench.md: settings, the side-by-side table, notes and warnings.

    >>> md = render_markdown(res); md.startswith("# Benchmark")   # doctest: +SKIP
    """
    cpu = result.machine.get("cpu", {})
    flags = ", ".join(k for k, v in (cpu.get("flags") or {}).items() if v) or "none"
    v = result.machine.get("versions", {})
    rule = result.settings.get("rule", {})
    budget = f"{rule.get('count')} calls per runner" if rule.get("count") else f"{rule.get('duration_s')} s per (batch, threads), split between runners"
    lines = [
        f"# Benchmark: `{result.target}`",
        "",
        f"- created {result.created}, wall {result.wall_s:.1f} s, schema {result.schema_version}",
        f"- machine: {cpu.get('model')} ({cpu.get('logical_cores')} logical cores; flags: {flags})",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- data: {result.data.get('source')} `{result.data.get('input_name')}` {result.data.get('input_shape')} {result.data.get('dtype')}",
        f"- timing: {budget}; interleaved slices of {rule.get('slice_s')} s; warm-up {rule.get('warmup_s')} s; "
        "timed call = feeds in, numpy outputs out",
        "- speedup columns: reference p50 / runner p50 (> 1 = faster than the reference); `*` = deployed artifact",
        f"- peak RSS (whole process): {result.peak_rss_mb:.0f} MB" if result.peak_rss_mb else "- peak RSS: unknown",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(TABLE_COLUMNS))) + "|",
    ]
    for row in table_rows(result):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    notes = [(r.name, n) for r in result.runners for n in r.notes]
    if notes or result.warnings:
        lines += ["", "## Notes", ""]
        lines += [f"- `{name}`: {n}" for name, n in notes]
        lines += [f"- {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def render_png(result: BenchResult, path: str | os.PathLike) -> Path:
    """bench.png: latency distribution per runner (smallest batch) and throughput vs batch size."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = [m for m in result.results if m.status == "ok" and m.latency is not None]
    threads = sorted({m.threads for m in result.results}) or [1]
    th0 = threads[0]
    b0 = min((m.batch for m in ok), default=1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.5 * max(4, len(result.runners)) + 2.5))
    stats = []
    for r in result.runners:
        m = next((m for m in ok if m.runner == r.name and m.batch == b0 and m.threads == th0), None)
        if m is None:
            continue
        q = m.latency.quantiles_us  # type: ignore[union-attr]
        stats.append({"label": r.name + (" *" if r.deployed else ""), "med": q[50], "q1": q[25], "q3": q[75],
                      "whislo": q[1], "whishi": q[99], "fliers": [m.latency.p999_us, m.latency.max_us],  # type: ignore[union-attr]
                      "mean": m.latency.mean_us})  # type: ignore[union-attr]
    if stats:
        ax1.bxp(stats, vert=False, showmeans=True, showfliers=True)
        ax1.set_xscale("log")
    ax1.set_xlabel("latency per call (us, log): box p25-p75, whiskers p1-p99, dots p99.9/max")
    ax1.set_title(f"latency distribution, batch {b0}, threads {th0}")
    ax1.grid(True, axis="x", which="both", alpha=0.3)
    for r in result.runners:
        for th in threads:
            pts = sorted((m.batch, m.throughput_sps) for m in ok if m.runner == r.name and m.threads == th)
            if pts:
                ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                         linestyle="-" if th == th0 else "--", label=f"{r.name} t{th}")
    ax2.set_xscale("log", base=2)
    batches = sorted({m.batch for m in ok})
    if batches:  # label the measured batch sizes, not powers of two
        from matplotlib.ticker import FixedLocator, NullLocator

        ax2.xaxis.set_major_locator(FixedLocator(batches))
        ax2.xaxis.set_minor_locator(NullLocator())
        ax2.set_xticklabels([str(b) for b in batches])
    ax2.set_yscale("log")
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("throughput (samples/s, p50-based)")
    ax2.set_title("throughput vs batch size")
    ax2.grid(True, which="both", alpha=0.3)
    if ok:
        ax2.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from seqdeploy.atomic import atomic_write_bytes

    return atomic_write_bytes(path, buf.getvalue())


def write_outputs(result: BenchResult, out_dir: str | os.PathLike, *, png: bool = True) -> BenchResult:
    """Write bench.json, bench.md and bench.png atomically into ``out_dir``; return the result with ``files``.

    >>> res = write_outputs(run_bench("runs/x"), "runs/x")   # doctest: +SKIP
    """
    out = Path(out_dir)
    files = {"json": str(out / BENCH_FILE), "md": str(out / BENCH_MD)}
    if png:
        files["png"] = str(out / BENCH_PNG)
    result = dataclasses.replace(result, files=files)
    atomic_write_text(files["md"], render_markdown(result))
    if png:
        render_png(result, files["png"])
    atomic_write_json(files["json"], result.to_json())
    return result


__all__ = ["REFERENCE_COLUMNS", "TABLE_COLUMNS", "TERMINAL_COLUMNS", "fmt_bytes", "fmt_ratio", "fmt_us", "render_markdown",
           "render_png", "table_rows", "write_outputs"]
