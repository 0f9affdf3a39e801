"""Batch scoring throughput: the local engine vs Ray (1 and 2 actors), Parquet vs CSV input.

Scores ``--rows`` raw rows (default 1M) of the seed MLP (breast cancer, 30 features;
trained for a few epochs and exported here unless ``--bundle`` names a bundle)
with the id column kept, from 4 Parquet files and from the same rows as 4 CSV
files, into Parquet. Each configuration runs once (the machine is shared), in an
interleaved order; a small run of ``--probe-rows`` per Ray configuration gives its
fixed cost (actor start, bundle load), so the table also shows the steady-state
rate ``(rows - probe) / (t_rows - t_probe)`` that a longer job or a larger cluster
would see.

    .venv/bin/python benchmarks/ray_scoring.py [--rows 1000000] [--bundle runs/breast_cancer_mlp]

Writes ``benchmarks/work/ray_scoring.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "ray_scoring"


def seed_bundle(work: Path) -> Path:
    from seqdeploy.export.convert import export_onnx
    from seqdeploy.bundle.write import write_bundle_manifest
    from seqdeploy.train.local import train

    run = work / "breast_cancer_mlp"
    if not (run / "manifest.json").exists():
        train(ROOT / "models" / "breast_cancer_mlp.toml", out=run, epochs=5)
        export_onnx(run)
        write_bundle_manifest(run)
    return run


def make_inputs(bundle: Path, work: Path, rows: int, files: int = 4) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from seqdeploy.data import load_run_splits
    from seqdeploy.runtime.manifest import load_manifest

    names = list(load_manifest(bundle).preprocessing.feature_names)
    base = np.asarray(load_run_splits(bundle).raw_test, dtype=np.float64)
    rng = np.random.default_rng(0)
    out = {"parquet": work / f"parquet-{rows}", "csv": work / f"csv-{rows}"}
    if out["parquet"].exists() and out["csv"].exists():
        return out
    for p in out.values():
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True)
    per = rows // files
    for k in range(files):
        n = per if k < files - 1 else rows - per * (files - 1)
        raw = base[rng.integers(0, len(base), n)] * rng.normal(1.0, 0.05, size=(n, len(names)))
        cols = {"id": np.arange(k * per, k * per + n)}
        cols.update({f: raw[:, j] for j, f in enumerate(names)})
        t = pa.table(cols)
        pq.write_table(t, out["parquet"] / f"rows-{k}.parquet", row_group_size=100_000)
        pcsv.write_csv(t, out["csv"] / f"rows-{k}.csv")
    return out


def probe_inputs(full: dict[str, Path], work: Path, probe_rows: int) -> dict[str, Path]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out = {}
    for fmt, src in full.items():
        dest = work / f"probe-{fmt}-{probe_rows}"
        if not dest.exists():
            dest.mkdir(parents=True)
            first = sorted(src.iterdir())[0]
            table = pq.read_table(first) if fmt == "parquet" else pcsv.read_csv(first)
            table = table.slice(0, probe_rows)
            if fmt == "parquet":
                pq.write_table(table, dest / "rows-0.parquet")
            else:
                pcsv.write_csv(table, dest / "rows-0.csv")
        out[fmt] = dest
    return out


def run_local(bundle: Path, src: Path, out: Path) -> dict:
    from seqdeploy.runtime.predictor import Predictor
    from seqdeploy.scoring import predict_file

    t0 = time.perf_counter()
    r = predict_file(Predictor.from_bundle(bundle), src, out, 4096, keep="id", overwrite=True)
    return {"rows": r.rows, "seconds": time.perf_counter() - t0}


def run_ray(bundle: Path, src: Path, out: Path, actors: int) -> dict:
    from seqdeploy.scoring.ray import predict_files_ray

    t0 = time.perf_counter()
    r = predict_files_ray(bundle, src, out, keep="id", actors=actors, batch_size=8192, overwrite=True)
    return {"rows": r.rows, "seconds": time.perf_counter() - t0, "output_files": r.output_files}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--probe-rows", type=int, default=20_000)
    ap.add_argument("--bundle", type=Path, default=None)
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or seed_bundle(WORK)
    inputs = make_inputs(bundle, WORK, args.rows)
    probes = probe_inputs(inputs, WORK, args.probe_rows)

    import ray

    from seqdeploy.scoring.ray import ray_started_here

    t0 = time.perf_counter()
    ray_started_here()
    ray_start = time.perf_counter() - t0
    configs = [("local", 0), ("ray", 1), ("ray", 2)]
    results = []
    try:
        for fmt in ("parquet", "csv"):  # interleaved: engines alternate within each format
            for engine, actors in configs:
                name = "local" if engine == "local" else f"ray x{actors}"
                row = {"engine": name, "input": fmt}
                for label, src in (("probe", probes[fmt]), ("full", inputs[fmt])):
                    out = WORK / f"out-{engine}-{actors}-{fmt}-{label}"
                    if engine == "local":
                        out = out.with_suffix(".parquet")
                        row[label] = run_local(bundle, src, out)
                    else:
                        row[label] = run_ray(bundle, src, out, actors)
                full, probe = row["full"], row["probe"]
                row["rows_per_s"] = full["rows"] / full["seconds"]
                dt = full["seconds"] - probe["seconds"]
                row["steady_rows_per_s"] = (full["rows"] - probe["rows"]) / dt if dt > 0 else None
                row["fixed_s"] = max(0.0, probe["seconds"] - probe["rows"] / row["steady_rows_per_s"]) \
                    if row["steady_rows_per_s"] else None
                results.append(row)
                print(f"{name:8s} {fmt:8s} {full['rows']:>9,d} rows {full['seconds']:7.2f} s "
                      f"{row['rows_per_s']:>10,.0f} rows/s (steady {row['steady_rows_per_s'] or 0:,.0f})",
                      file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    from seqdeploy.cpu import cpu_model_name

    info = {"cpu": cpu_model_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "ray": ray.__version__, "ray_start_s": round(ray_start, 2), "rows": args.rows,
            "probe_rows": args.probe_rows, "results": results}
    (WORK.parent / "ray_scoring.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"\n{args.rows:,} rows, seed MLP, keep id, Parquet out; {info['cpu']}, {info['cores']} cores; "
          f"Ray {ray.__version__} local start {ray_start:.1f} s\n")
    print("| engine | input | seconds | rows/s | steady rows/s | fixed cost s |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        steady = f"{r['steady_rows_per_s']:,.0f}" if r["steady_rows_per_s"] else "-"
        fixed = f"{r['fixed_s']:.1f}" if r["fixed_s"] is not None else "-"
        print(f"| {r['engine']} | {r['input']} | {r['full']['seconds']:.2f} | {r['rows_per_s']:,.0f} | {steady} "
              f"| {fixed} |")


if __name__ == "__main__":
    main()
