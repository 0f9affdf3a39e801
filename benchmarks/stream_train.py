"""Streaming training vs the in-memory loader on a large Parquet directory: peak RSS and rows/s.

Generates ROWS x 24 float32 features in FILES Parquet files (numpy, seeded; binary target from a linear rule
plus noise, so accuracy means something), then trains one epoch of a small MLP in a fresh process per mode:

* ``stream``: ``seqdeploy.data.stream`` (what a directory gets);
* ``memory``: the in-memory loader forced on the same data (the path before streaming existed).

``--files 1`` writes one file and names it (not the directory) in the spec: the comparison that sets
``STREAM_MIN_BYTES``, the size from which a single file streams.

Each mode's peak RSS is the child's ``ru_maxrss``; rows/s = training rows / fit seconds (``train.json``).

    python benchmarks/stream_train.py --rows 6000000 --files 12 --modes stream
    python benchmarks/stream_train.py --rows 500000 --files 4 --modes stream,memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = 24

SPEC = """name = "stream_bench"
[data]
source = "parquet"
path = "{path}"
target = "y"
task = "binary"
[fit]
epochs = {epochs}
batch_size = {batch}
early_stopping_patience = 0
[compile]
optimizer = "adam"
loss = "binary_crossentropy"
metrics = ["accuracy"]
[[layers]]
type = "Dense"
units = 32
activation = "relu"
[[layers]]
type = "Dense"
units = 1
activation = "sigmoid"
"""

CHILD = """
import json, sys, time
from seqdeploy.data import stream
stream.wants_stream = lambda data: sys.argv[1] == "stream"  # force the mode (the rule is by size)
from seqdeploy.train.local import train
t = time.perf_counter()
r = train(sys.argv[2], out=sys.argv[3])
print(json.dumps({"wall": time.perf_counter() - t}))
"""


def generate(d: Path, rows: int, files: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if d.exists() and len(list(d.glob("*.parquet"))) == files:
        return
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=FEATURES)
    per = rows // files
    for i in range(files):
        x = (rng.normal(size=(per, FEATURES)) * 2 + 1).astype(np.float32)
        y = ((x - 1) @ w + rng.normal(size=per) * 2 > 0).astype(np.int8)
        pq.write_table(pa.table({**{f"f{j}": x[:, j] for j in range(FEATURES)}, "y": y}),
                       d / f"part-{i:03d}.parquet", row_group_size=262_144)


def run(mode: str, spec: Path, out: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(spec), str(out)], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        return {"mode": mode, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    info = json.loads((out / "train.json").read_text())
    n = info["data"]["n_train"]
    return {"mode": mode, "peak_rss_mb": round(peak_kb / 1024) if peak_kb > before else None, "wall_s": round(wall, 1),
            "fit_s": info["seconds"], "train_rows": n, "val_rows": info["data"]["n_val"],
            "test_rows": info["data"]["n_test"], "rows_per_s": round(n / info["seconds"]),
            "test_accuracy": round(info["test_metrics"]["accuracy"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6_000_000)
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--modes", default="stream")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="where the Parquet directory goes (default: a temp dir)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.gettempdir()) / f"stream_bench_{args.rows}_{args.files}"
    t = time.perf_counter()
    generate(root / "data", args.rows, args.files)
    size = sum(f.stat().st_size for f in (root / "data").glob("*.parquet"))
    print(f"data: {args.rows} rows x {FEATURES} float32 in {args.files} files, {size / 2**20:.0f} MB on disk "
          f"({time.perf_counter() - t:.0f}s)", flush=True)
    spec = root / "spec.toml"
    path = root / "data" / "part-000.parquet" if args.files == 1 else root / "data"
    spec.write_text(SPEC.format(path=path, epochs=args.epochs, batch=args.batch_size))
    # one mode per process: ru_maxrss of children is a running maximum, so each mode runs in its own process
    for mode in args.modes.split(","):
        if len(args.modes.split(",")) > 1:
            res = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--files", str(args.files),
                                  "--modes", mode, "--epochs", str(args.epochs), "--batch-size",
                                  str(args.batch_size)] + (["--dir", args.dir] if args.dir else []),
                                 capture_output=True, text=True)
            print(res.stdout.strip().splitlines()[-1], flush=True)
            continue
        print(json.dumps(run(mode, spec, root / f"run_{mode}")), flush=True)


if __name__ == "__main__":
    main()
