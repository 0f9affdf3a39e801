"""Per-call cost of FastSession's C API path vs its IOBinding path (and session.run, TFLite) on a tiny MLP.

Decides whether the onnxruntime C API path (``seqdeploy.runtime.ort_capi``) becomes FastSession's
default: it must be >= 1.3x the IOBinding path's speed at batch 1 on the 30-16-8-1 MLP.
Every runner sees the same feed and is timed in interleaved rounds (A B C ..., A B C ...)
so drift on a shared machine hits them alike; the tables show medians over rounds of
per-call microseconds. Also: an Identity graph through both paths (the floor: no
compute, only the call), the C API's ``Run`` mode against its ``RunWithBinding`` mode,
the bare bound calls without the numpy copies, and a leak check (RSS before/after N
calls of each fast path).

    .venv/bin/python benchmarks/capi_fastpath.py [--rounds 15] [--calls 2000] [--batches 1,64]
                     [--tflite] [--leak-calls 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor_overhead import mlp_model, tflite_runner  # noqa: E402

from seqdeploy.cpu import cpu_model_name  # noqa: E402

SHIP_RATIO = 1.3


def mlp_bytes() -> bytes:
    """The 30-16-8-1 MLP of benchmarks/predictor_overhead.py as ONNX bytes."""
    return mlp_model().SerializeToString()


def identity_bytes() -> bytes:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["features"], ["y"])], "identity",
                          [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 30])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 30])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: peak RSS instead
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_interleaved(runners: dict[str, Callable[[], Any]], rounds: int, calls: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for fn in runners.values():  # warm up
        for _ in range(300):
            fn()
    for _ in range(rounds):
        for name, fn in runners.items():
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter_ns() - t0) / calls / 1000)
    return samples


def runners_for(batch: int, model: bytes, tflite: bool) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    from seqdeploy.runtime.fastpath import FastSession
    from seqdeploy.runtime.predictor import make_session

    sess = make_session(model)
    out = [o.name for o in sess.get_outputs()]
    x = np.random.default_rng(batch).standard_normal((batch, 30)).astype(np.float32)
    feeds = {"features": x}
    iob = FastSession(make_session(model), model_bytes=model, fastpath="iobinding")
    capi = FastSession(make_session(model), model_bytes=model, fastpath="capi")
    assert capi.path == "capi", capi.fallback_reason
    want = sess.run(out, feeds)
    for _ in range(3):  # the paths must agree (bit for bit) before their speed means anything
        for fs in (iob, capi):
            got = fs.run(feeds)
            assert all(np.array_equal(g, w) for g, w in zip(got, want)), fs.path
    assert iob.path == "iobinding" and capi.path == "capi" and iob.fast_enabled and capi.fast_enabled
    slot_iob = next(iter(iob._tls.slots.values()))
    slot_capi = next(iter(capi._tls.slots.values()))
    # the C API's Run (names and shapes checked per call) over the same kind of buffers
    ins, outs = [x.copy()], [np.empty_like(w) for w in want]
    run_mode = capi.capi.bind(ins, outs, mode="run")

    def capi_run_mode():
        np.copyto(ins[0], x)
        run_mode()
        return [o.copy() for o in outs]

    runners: dict[str, Callable[[], Any]] = {
        "session.run (seqdeploy options)": lambda: sess.run(out, feeds),
        "FastSession iobinding (today's default)": lambda: iob.run(feeds),
        "FastSession capi (RunWithBinding)": lambda: capi.run(feeds),
        "capi Run mode (copy + Run + copy)": capi_run_mode,
        "bare pybind run_with_iobinding (bound)": slot_iob.run,
        "bare C RunWithBinding call (bound)": slot_capi.run,
    }
    info: dict[str, Any] = {}
    if tflite:
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its saved-artifact summary
            tfl = tflite_runner(batch)
        info["tflite_max_abs_diff"] = float(np.max(np.abs(tfl.infer(feeds)[0] - want[0])))
        runners["TFLite fp32 set_tensor/invoke/get_tensor"] = lambda: tfl.infer(feeds)
    return runners, info


def identity_runners(batch: int) -> dict[str, Callable[[], Any]]:
    from seqdeploy.runtime.fastpath import FastSession
    from seqdeploy.runtime.predictor import make_session

    model = identity_bytes()
    feeds = {"features": np.random.default_rng(0).standard_normal((batch, 30)).astype(np.float32)}
    iob = FastSession(make_session(model), model_bytes=model, fastpath="iobinding")
    capi = FastSession(make_session(model), model_bytes=model, fastpath="capi")
    for _ in range(3):
        assert np.array_equal(iob.run(feeds)[0], feeds["features"]) and np.array_equal(capi.run(feeds)[0],
                                                                                          feeds["features"])
    assert capi.path == "capi" and iob.path == "iobinding"
    return {"Identity: FastSession iobinding": lambda: iob.run(feeds),
            "Identity: FastSession capi": lambda: capi.run(feeds),
            "Identity: bare C RunWithBinding call": next(iter(capi._tls.slots.values())).run}


def leak_check(calls: int) -> dict[str, Any]:
    """RSS before/after ``calls`` calls of each fast path, and of the unbound C API ``CapiSession.run``."""
    from seqdeploy.runtime.fastpath import FastSession
    from seqdeploy.runtime.predictor import make_session

    model = mlp_bytes()
    feeds = {"features": np.random.default_rng(3).standard_normal((1, 30)).astype(np.float32)}
    result = {}
    for path in ("capi", "iobinding"):
        fs = FastSession(make_session(model), model_bytes=model, fastpath=path)
        for _ in range(20_000):  # warm up: arenas, caches, the bound slot
            fs.run(feeds)
        before = rss_mb()
        t0 = time.perf_counter()
        for _ in range(calls):
            fs.run(feeds)
        result[f"FastSession {path}"] = {"calls": calls, "rss_before_mb": round(before, 1),
                                         "rss_after_mb": round(rss_mb(), 1),
                                         "seconds": round(time.perf_counter() - t0, 1)}
        assert fs.path == path
    fs = FastSession(make_session(model), model_bytes=model, fastpath="capi")
    n = max(1, calls // 10)  # creates and releases OrtValues on every call
    for _ in range(5_000):
        fs.capi.run([feeds["features"]])
    before = rss_mb()
    for _ in range(n):
        fs.capi.run([feeds["features"]])
    result["CapiSession.run (unbound)"] = {"calls": n, "rss_before_mb": round(before, 1),
                                           "rss_after_mb": round(rss_mb(), 1)}
    return result


def table(samples: dict[str, list[float]], base: str) -> list[dict[str, Any]]:
    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for name, vals in samples.items():
        vals = sorted(vals)
        rows.append({"runner": name, "median_us": round(med[name], 3), "p10_us": round(vals[len(vals) // 10], 3),
                     "p90_us": round(vals[(len(vals) * 9) // 10], 3),
                     "speedup_vs_iobinding": round(med[base] / med[name], 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from seqdeploy.runtime import fastpath, ort_capi

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--tflite", action="store_true", help="also time TFLite fp32 on the same MLP (imports TensorFlow)")
    ap.add_argument("--leak-calls", type=int, default=1_000_000, help="0 skips the leak check")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    rss0 = rss_mb()
    lib = ort_capi.load_library()  # the second onnxruntime copy in the process (the pybind module has its own)
    rss1 = rss_mb()
    report: dict[str, Any] = {
        "rss_mb_loading_c_library": round(rss1 - rss0, 1),
        "cpu": cpu_model_name(), "onnxruntime": ort.__version__, "c_library": Path(lib.path).name,
        "ort_api_version": lib.api_version, "numpy": np.__version__, "python": sys.version.split()[0],
        "rounds": args.rounds, "calls": args.calls, "results": {}}
    base = "FastSession iobinding (today's default)"
    print(f"{report['cpu']}; onnxruntime {ort.__version__} (C library {report['c_library']}, OrtApi "
          f"{lib.api_version}, loading it added {rss1 - rss0:.1f} MB RSS); 30-16-8-1 MLP; {args.rounds} "
          f"interleaved rounds x {args.calls} calls; medians")
    for batch in (int(b) for b in args.batches.split(",")):
        runners, info = runners_for(batch, mlp_bytes(), args.tflite)
        runners.update(identity_runners(batch))
        rows = table(time_interleaved(runners, args.rounds, args.calls), base)
        report["results"][f"batch_{batch}"] = {"rows": rows, **info}
        print(f"\nbatch {batch}" + (f" (TFLite max |diff| vs ORT {info['tflite_max_abs_diff']:.1e})"
                                   if "tflite_max_abs_diff" in info else ""))
        print(f"{'runner':<44} {'median us':>10} {'p10':>8} {'p90':>8} {'iobinding/this':>15}")
        for r in rows:
            print(f"{r['runner']:<44} {r['median_us']:>10.2f} {r['p10_us']:>8.2f} {r['p90_us']:>8.2f} "
                  f"{r['speedup_vs_iobinding']:>15.2f}")
    b1 = {r["runner"]: r for r in report["results"].get("batch_1", {}).get("rows", [])}
    if b1:
        ratio = b1["FastSession capi (RunWithBinding)"]["speedup_vs_iobinding"]
        ship = ratio >= SHIP_RATIO
        report["decision"] = {"capi_vs_iobinding_batch1": ratio, "ship_bar": SHIP_RATIO, "ship_as_default": ship,
                              "current_default": fastpath.DEFAULT_FASTPATH}
        print(f"\nC API path at batch 1: {ratio:.2f}x the IOBinding path's speed (bar {SHIP_RATIO}x) -> "
              f"{'ship as default' if ship else 'keep behind SEQDEPLOY_FASTPATH=capi'}; "
              f"current default: {fastpath.DEFAULT_FASTPATH}")
    if args.leak_calls:
        report["leak_check"] = leak_check(args.leak_calls)
        print("\nleak check (RSS, MB):")
        for name, r in report["leak_check"].items():
            print(f"  {name:<28} {r['calls']:>9} calls: {r['rss_before_mb']:.1f} -> {r['rss_after_mb']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
