"""Where the per-call time of tiny models goes (issue 18 part 4): seqdeploy's Python, onnxruntime's framework, kernels.

Models: the seed MLP (models/breast_cancer_mlp.toml, 30-16-8-1, sigmoid) and the digits
CNN (models/digits_cnn.toml), trained and exported by seqdeploy (``--prepare`` builds
the run directories and the TFLite conversions; no timing, no lock needed). Timed, 1
thread, batch 1 and 64, all runners of one (model, batch) interleaved in one process
(rounds of A B C ..., each runner a ~``--slice-ms`` slice), medians over rounds:

* TFLite fp32 / int8 (XNNPACK, converted from the same Keras model by the bench's
  converter): ``set_tensor``/``invoke``/``get_tensor`` (the bench's runner) and ``invoke`` alone;
* onnxruntime ``session.run`` (seqdeploy's session options);
* the bound run alone (FastSession's pre-bound IOBinding call: no copies, no Python checks);
* ``FastSession.run`` and ``Predictor.run`` (what a user pays);
* the floor at the same input size: an Identity graph's bound run, and a chain of as many
  Relu nodes as the model has (per-node framework cost = slope);
* graph variants (bound runs): optimization levels, MatMul+Add as Gemm, no sigmoid/softmax
  tail, the first layer alone, session memory options; with max |diff| vs the exported graph;
* onnxruntime's profiler (``enable_profiling``): per-node kernel times summed vs ``model_run``.

    .venv/bin/python benchmarks/tiny_batch64.py --prepare            # build runs + TFLite (no timing)
    flock /tmp/seqdeploy-timing.lock .venv/bin/python benchmarks/tiny_batch64.py [--models mlp,cnn]
        [--batches 1,64] [--rounds 15] [--slice-ms 6] [--out FILE.md] [--baseline-rev REV]

``--baseline-rev REV`` also times ``seqdeploy/fastpath.py`` as of git revision REV
(``FastSession.run`` of the old module on the same session options), so a change to the
fast path is measured before/after in the same interleaved run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor_overhead import ROOT, load_module_at  # noqa: E402

from seqdeploy.cpu import cpu_model_name  # noqa: E402

MODELS = {"mlp": ("breast_cancer_mlp", "models/breast_cancer_mlp.toml"), "cnn": ("digits_cnn", "models/digits_cnn.toml")}


# ----------------------------------------------------------------------------- preparation (no timing)

def prepare(runs: Path, key: str) -> Path:
    """The run directory of ``key`` (train, export, verify when missing) and its TFLite fp32/int8 files."""
    from seqdeploy.app.pipeline import run_pipeline

    name, spec = MODELS[key]
    run = runs / name
    if not (run / "manifest.json").exists():
        run_pipeline(ROOT / spec, out=run, stages="train,export,verify")
    cache = runs / "_tflite"
    if not all((cache / f"{name}.{p}.tflite").exists() for p in ("fp32", "int8")):
        from seqdeploy.bench.runners.tflite import convert_tflite
        from seqdeploy.data import load_run_splits

        cache.mkdir(parents=True, exist_ok=True)
        models, errors = convert_tflite(run / "model.keras", ("fp32", "int8"), load_run_splits(run).x_train)
        for p, m in models.items():
            (cache / f"{name}.{p}.tflite").write_bytes(m.content)
            (cache / f"{name}.{p}.json").write_text(json.dumps({"fixed_batch": m.fixed_batch, "notes": m.notes}))
        if errors:
            (cache / f"{name}.errors.json").write_text(json.dumps(errors))
    return run


def tflite_runners(runs: Path, name: str, batch: int) -> dict[str, Any]:
    from seqdeploy.bench.runners.tflite import TfliteModel, TfliteRunner

    out = {}
    for p in ("fp32", "int8"):
        f = runs / "_tflite" / f"{name}.{p}.tflite"
        if not f.exists():
            continue
        meta = json.loads(f.with_suffix(".json").read_text())
        r = TfliteRunner(TfliteModel(f.read_bytes(), p, meta["fixed_batch"], 0.0))
        with contextlib.redirect_stderr(io.StringIO()):
            r.prepare(1)
        if r.set_batch(batch) is None:
            out[p] = r
    return out


# ----------------------------------------------------------------------------- graphs

def floor_graph(name: str, shape: list, n_relu: int = 0) -> bytes:
    """Identity (``n_relu`` = 0) or a chain of ``n_relu`` Relu nodes on an input like the model's."""
    from onnx import TensorProto, helper

    if n_relu:
        nodes = [helper.make_node("Relu", [name if i == 0 else f"r{i - 1}"], [f"r{i}"]) for i in range(n_relu)]
        out = f"r{n_relu - 1}"
    else:
        nodes, out = [helper.make_node("Identity", [name], ["y"])], "y"
    g = helper.make_graph(nodes, "floor", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _retarget(model: Any, nodes: list, out_name: str, out_dims: list) -> Any:
    from onnx import TensorProto, helper

    used = {i for n in nodes for i in n.input}
    g = helper.make_graph(nodes, model.graph.name, list(model.graph.input),
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_dims)],
                          [t for t in model.graph.initializer if t.name in used])
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m


def graph_variants(model_bytes: bytes) -> dict[str, tuple[bytes, dict]]:
    """name -> (model bytes, session option overrides). The exported graph first."""
    import onnx
    from onnx import helper

    base = onnx.load_from_string(model_bytes)
    nodes = list(base.graph.node)
    out = {"exported graph, level all (seqdeploy default)": (model_bytes, {}),
           "level extended (no NCHWc layout)": (model_bytes, {"level": "extended"}),
           "level basic": (model_bytes, {"level": "basic"}),
           "level disable (nodes as exported)": (model_bytes, {"level": "disable"}),
           "cpu memory arena off": (model_bytes, {"arena": False}),
           "memory pattern off": (model_bytes, {"mem_pattern": False})}
    # MatMul + Add(bias) -> Gemm, everything else as exported, optimizer off: what the fusion alone buys
    inits = {t.name for t in base.graph.initializer}
    fused, skip = [], set()
    for i, n in enumerate(nodes):
        if i in skip:
            continue
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        if (n.op_type == "MatMul" and nxt is not None and nxt.op_type == "Add" and nxt.input[0] == n.output[0]
                and n.input[1] in inits and nxt.input[1] in inits):
            fused.append(helper.make_node("Gemm", [n.input[0], n.input[1], nxt.input[1]], list(nxt.output)))
            skip.add(i + 1)
        else:
            fused.append(n)
    if len(fused) < len(nodes):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        del m.graph.node[:]
        m.graph.node.extend(fused)
        out["MatMul+Add as Gemm, level disable"] = (m.SerializeToString(), {"level": "disable"})
    out.update(batchnorm_variants(base))
    last = nodes[-1]
    if last.op_type in ("Sigmoid", "Softmax"):
        dims = [d.dim_param or d.dim_value for d in base.graph.output[0].type.tensor_type.shape.dim]
        m = _retarget(base, nodes[:-1], last.input[0], dims)
        out[f"without the {last.op_type.lower()} tail"] = (m.SerializeToString(), {})
    first = next(i for i, n in enumerate(nodes) if n.op_type in ("MatMul", "Conv"))
    end = first + 1
    while end < len(nodes) and nodes[end].op_type in ("Add", "Relu"):
        end += 1
    m = _retarget(base, nodes[:end], nodes[end - 1].output[0], [])
    del m.graph.output[0].type.tensor_type.shape.dim[:]
    out[f"first layer only ({'+'.join(n.op_type for n in nodes[first:end])})"] = (m.SerializeToString(), {})
    return out


def batchnorm_variants(base: Any) -> dict[str, tuple[bytes, dict]]:
    """Rewrites of an inference BatchNormalization exported as ``Mul(x, scale) -> Add(shift)`` on NCHW
    (per-channel ``[1, C, 1, 1]`` constants), when it exists: onnxruntime's NCHWc layout turns the Mul
    into a depthwise conv but leaves the Add in NCHW (ReorderOutput + Add + ReorderInput per call).

    * the pair as one depthwise 1x1 ``Conv`` with bias (``group = C``);
    * a following ``MaxPool`` moved in front of the pair: exact when every scale is > 0 (rounding is
      monotonic, so the max commutes with ``x * a + b``), and the pair then sees 1/4 of the elements;
    * both.
    """
    import onnx
    from onnx import helper, numpy_helper

    nodes = list(base.graph.node)
    inits = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    for i in range(len(nodes) - 1):
        mul, add = nodes[i], nodes[i + 1]
        if not (mul.op_type == "Mul" and add.op_type == "Add" and add.input[0] == mul.output[0]):
            continue
        a, b = inits.get(mul.input[1]), inits.get(add.input[1])
        if a is None or b is None or a.ndim != 4 or a.shape[0] != 1 or a.shape[2:] != (1, 1) or b.shape != a.shape:
            continue
        c = a.shape[1]
        pool = nodes[i + 2] if i + 2 < len(nodes) and nodes[i + 2].op_type == "MaxPool" else None
        w = numpy_helper.from_array(a.reshape(c, 1, 1, 1).astype(np.float32), "bn_dw_w")
        bias = numpy_helper.from_array(b.reshape(c).astype(np.float32), "bn_dw_b")

        def build(as_conv: bool, pool_first: bool) -> bytes:
            src = mul.input[0]
            pre, post = [], []
            if pool_first:
                pre = [helper.make_node("MaxPool", [src], ["bn_pooled"], **{x.name: helper.get_attribute_value(x)
                                                                           for x in pool.attribute})]
                src = "bn_pooled"
            end = pool.output[0] if pool_first else add.output[0]
            if as_conv:
                post = [helper.make_node("Conv", [src, "bn_dw_w", "bn_dw_b"], [end], group=c, kernel_shape=[1, 1])]
            else:
                post = [helper.make_node("Mul", [src, mul.input[1]], ["bn_mul"]),
                        helper.make_node("Add", ["bn_mul", add.input[1]], [end])]
            rest = nodes[i + 3:] if pool_first else nodes[i + 2:]
            m = onnx.ModelProto()
            m.CopyFrom(base)
            del m.graph.node[:]
            m.graph.node.extend(nodes[:i] + pre + post + rest)
            if as_conv:
                m.graph.initializer.extend([w, bias])
            return m.SerializeToString()

        out = {"BatchNorm Mul+Add as depthwise 1x1 Conv": (build(True, False), {})}
        if pool is not None and bool(np.all(a > 0)):
            out["MaxPool before BatchNorm (scales > 0)"] = (build(False, True), {})
            out["MaxPool before BatchNorm as depthwise Conv"] = (build(True, True), {})
        return out
    return {}


def session(model: bytes, level: str = "all", arena: bool = True, mem_pattern: bool = True,
            profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    from seqdeploy.runtime.session import SessionSettings, build_session_options

    so = build_session_options(SessionSettings(graph_optimization=level))
    so.enable_cpu_mem_arena = arena
    so.enable_mem_pattern = mem_pattern
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


_KEEP: list[Any] = []  # FastSessions whose bound calls are timed: their slots own the bound buffers


def bound(fs: Any, feeds: dict) -> Callable[[], Any]:
    """The bound run of a FastSession's slot for ``feeds`` (no copies, no Python checks)."""
    _KEEP.append(fs)
    for _ in range(2):
        fs.run(feeds)
    assert fs.fast_enabled and fs.path == "iobinding", (fs.path, fs.fast_error)
    return next(iter(fs._tls.slots.values())).run


def optimized_nodes(model: bytes, **kw: Any) -> int:
    """How many nodes onnxruntime runs after its graph optimizations."""
    with tempfile.TemporaryDirectory() as tmp:
        s = session(model, profile_prefix=str(Path(tmp) / "p"), **kw)
        s.run(None, {i.name: np.zeros([1 if not isinstance(d, int) else d for d in i.shape], np.float32)
                     for i in s.get_inputs()})
        ev = json.loads(Path(s.end_profiling()).read_text())
    return sum(1 for e in ev if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))


def profile(model: bytes, feeds: dict, calls: int) -> dict[str, float]:
    """onnxruntime's profiler over ``calls`` bound runs: mean model_run, mean summed kernel time, nodes."""
    from seqdeploy.runtime.fastpath import FastSession

    with tempfile.TemporaryDirectory() as tmp:
        s = session(model, profile_prefix=str(Path(tmp) / "p"))
        run = bound(FastSession(s, fastpath="iobinding"), feeds)
        for _ in range(calls):
            run()
        ev = json.loads(Path(s.end_profiling()).read_text())
    runs, kern, nodes = [], [], []
    acc, n = 0, 0
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            acc, n = acc + e["dur"], n + 1
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            runs.append(e["dur"])
            kern.append(acc)
            nodes.append(n)
            acc, n = 0, 0
    skip = len(runs) // 10  # warm-up and the slot's first runs
    return {"model_run_us": statistics.fmean(runs[skip:]), "kernels_us": statistics.fmean(kern[skip:]),
            "nodes": statistics.median(nodes[skip:]), "runs": len(runs) - skip}


# ----------------------------------------------------------------------------- timing

def time_sliced(runners: dict[str, Callable[[], Any]], rounds: int, slice_ms: float) -> dict[str, list[float]]:
    """Interleaved rounds like ``capi_fastpath.time_interleaved``, but each runner gets its own call count
    (a ~``slice_ms`` slice): the runners here span 1 us to 0.5 ms per call."""
    calls = {}
    for name, fn in runners.items():  # warm up, and size each runner's slice
        t0 = time.perf_counter_ns()
        n = 0
        while n < 20 or time.perf_counter_ns() - t0 < 30e6:
            fn()
            n += 1
        calls[name] = max(5, int(slice_ms * 1e6 / ((time.perf_counter_ns() - t0) / n)))
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            k = calls[name]
            t0 = time.perf_counter_ns()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter_ns() - t0) / k / 1000)
    return samples


def measure(runs: Path, key: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    from seqdeploy.runtime.fastpath import FastSession
    from seqdeploy.runtime.predictor import Predictor, make_session

    name, _ = MODELS[key]
    run = runs / name
    model = (run / "model.onnx").read_bytes()
    sess = make_session(model)
    inp = sess.get_inputs()[0]
    outs = [o.name for o in sess.get_outputs()]
    from seqdeploy.data import load_run_splits

    xt = load_run_splits(run).x_test.astype(np.float32)
    x = np.ascontiguousarray(np.resize(xt, (batch,) + xt.shape[1:]))
    feeds = {inp.name: x}
    want = sess.run(outs, feeds)[0]
    pred = Predictor.from_bundle(run)
    fast = FastSession(make_session(model), fastpath="iobinding")
    for _ in range(3):  # the paths must agree bit for bit before their speed means anything
        assert np.array_equal(pred.run(feeds)[outs[0]], want) and np.array_equal(fast.run(feeds)[0], want)
    assert pred._fast.fast_enabled and pred._fast.path == "iobinding", pred._fast.fallback_reason
    r: dict[str, Callable[[], Any]] = {}
    tfl = tflite_runners(runs, name, batch)
    diffs = {}
    for p, t in tfl.items():
        diffs[f"tflite {p}"] = float(np.max(np.abs(t.infer(feeds)[0] - want)))
        r[f"TFLite {p} set_tensor/invoke/get_tensor"] = (lambda t=t: t.infer(feeds))
        r[f"TFLite {p} invoke alone"] = t._it.invoke
    r["ORT session.run"] = lambda: sess.run(outs, feeds)
    r["ORT bound run (IOBinding, no copies)"] = bound(fast, feeds)
    r["FastSession.run"] = lambda: fast.run(feeds)
    r["Predictor.run"] = lambda: pred.run(feeds)
    if args.baseline_rev:
        old = load_module_at(args.baseline_rev, "fastpath").FastSession(make_session(model), fastpath="iobinding")
        for _ in range(3):
            assert np.array_equal(old.run(feeds)[0], want)
        r[f"[{args.baseline_rev}] FastSession.run"] = lambda: old.run(feeds)
    shape = ["batch"] + list(inp.shape[1:])
    n_nodes = optimized_nodes(model)
    r["floor: Identity bound run"] = bound(FastSession(session(floor_graph(inp.name, shape)), fastpath="iobinding"),
                                           feeds)
    r[f"floor: {n_nodes} x Relu bound run"] = bound(
        FastSession(session(floor_graph(inp.name, shape, n_nodes)), fastpath="iobinding"), feeds)
    variants = {}
    for vname, (vbytes, opts) in graph_variants(model).items():
        vs = session(vbytes, **opts)
        got = vs.run(None, feeds)[0]
        variants[vname] = {"nodes": optimized_nodes(vbytes, **opts),
                           "max_abs_diff": float(np.max(np.abs(got - want))) if got.shape == want.shape else None}
        r[f"variant: {vname}"] = bound(FastSession(vs, fastpath="iobinding"), feeds)
    samples = time_sliced(r, args.rounds, args.slice_ms)
    med = {k: statistics.median(v) for k, v in samples.items()}
    spread = {k: (sorted(v)[len(v) // 10], sorted(v)[(len(v) * 9) // 10]) for k, v in samples.items()}
    prof = profile(model, feeds, args.profile_calls)
    return {"model": name, "batch": batch, "median": med, "spread": spread, "variants": variants,
            "profile": prof, "nodes": n_nodes, "tflite_diff": diffs}


# ----------------------------------------------------------------------------- report

def decomposition(t: dict[str, float], n: int) -> list[tuple[str, float | None]]:
    """Where one ``Predictor.run`` goes, from per-runner times ``t`` (medians or p10) of one (model, batch)."""
    tfl = [v for k, v in t.items() if k.startswith("TFLite") and "set_tensor" in k]
    inv = [v for k, v in t.items() if k.startswith("TFLite") and "invoke alone" in k]
    floor = t["floor: Identity bound run"]
    per_node = (t[f"floor: {n} x Relu bound run"] - floor) / max(1, n - 1)
    bound_run = t["ORT bound run (IOBinding, no copies)"]
    return [
        ("TFLite best full path (set_tensor/invoke/get_tensor)", min(tfl) if tfl else None),
        ("TFLite best invoke alone (kernels + its dispatch)", min(inv) if inv else None),
        ("Predictor.run", t["Predictor.run"]),
        ("  Predictor wrapper (Predictor.run - FastSession.run)", t["Predictor.run"] - t["FastSession.run"]),
        ("  FastSession copies + checks (FastSession.run - bound run)", t["FastSession.run"] - bound_run),
        ("  bound run (pybind + onnxruntime Run)", bound_run),
        ("    floor: Identity graph bound run", floor),
        (f"    per-node framework cost (Relu chain slope) x {n - 1} more nodes", per_node * (n - 1)),
        ("    rest = kernels beyond a trivial node (bound - floor - nodes)", bound_run - floor - per_node * (n - 1)),
    ]


def render(res: dict[str, Any]) -> str:
    med, sp = res["median"], res["spread"]
    tfl = [v for k, v in med.items() if k.startswith("TFLite") and "set_tensor" in k]
    best = min(tfl) if tfl else None
    lines = [f"### {res['model']}, batch {res['batch']}", "",
             "| runner | median us | p10 | p90 | TFLite best / this |", "|---|---:|---:|---:|---:|"]
    for k, v in med.items():
        if k.startswith("variant:"):
            continue
        lines.append(f"| {k} | {v:.2f} | {sp[k][0]:.2f} | {sp[k][1]:.2f} | "
                     + (f"{best / v:.2f} |" if best else "- |"))
    base = med["variant: exported graph, level all (seqdeploy default)"]
    base10 = sp["variant: exported graph, level all (seqdeploy default)"][0]
    lines += ["", "| graph variant (bound run) | nodes run | median us | vs exported | p10 us | vs exported (p10) "
              "| max abs diff |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k, info in res["variants"].items():
        v, v10 = med[f"variant: {k}"], sp[f"variant: {k}"][0]
        d = info["max_abs_diff"]
        lines.append(f"| {k} | {info['nodes']} | {v:.2f} | {v / base:.2f} | {v10:.2f} | {v10 / base10:.2f} | "
                     + ("- (other output)" if d is None else f"{d:.1e}") + " |")
    n, pr = res["nodes"], res["profile"]
    p10 = {k: lo for k, (lo, _) in sp.items()}
    cols = [decomposition(med, n), decomposition(p10, n)]
    lines += ["", "| decomposition (from the medians; p10 for a busy machine) | median us | p10 us |",
              "|---|---:|---:|"]
    for (label, v), (_, v10) in zip(*cols):
        lines.append(f"| {label} | {'-' if v is None else f'{v:.2f}'} | {'-' if v10 is None else f'{v10:.2f}'} |")
    lines += ["", f"onnxruntime profiler (enable_profiling; bound runs; {pr['runs']} runs; events in whole us, and "
              f"profiling itself inflates every node): model_run {pr['model_run_us']:.1f} us, {pr['nodes']:.0f} "
              f"kernel times summed {pr['kernels_us']:.1f} us = {pr['kernels_us'] / pr['model_run_us']:.0%} of "
              f"it; the rest per node {(pr['model_run_us'] - pr['kernels_us']) / max(1, pr['nodes']):.2f} us."]
    if res["tflite_diff"]:
        lines += ["", "TFLite max |diff| vs ORT: " + ", ".join(f"{k} {v:.1e}" for k, v in res["tflite_diff"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "work" / "tiny")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--slice-ms", type=float, default=6.0)
    ap.add_argument("--profile-calls", type=int, default=3000)
    ap.add_argument("--baseline-rev", default=None, help="also time seqdeploy/fastpath.py at this git revision")
    ap.add_argument("--prepare", action="store_true", help="only build the runs and TFLite files (no timing)")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = ap.parse_args(argv)
    keys = args.models.split(",")
    with contextlib.redirect_stdout(io.StringIO()):  # the converter and trainer print
        for k in keys:
            prepare(args.runs, k)
    if args.prepare:
        return 0
    t0 = time.perf_counter()
    parts = []
    for k in keys:
        for b in (int(b) for b in args.batches.split(",")):
            parts.append(render(measure(args.runs, k, b, args)))
    head = (f"{cpu_model_name()}; onnxruntime {ort.__version__}, numpy {np.__version__}, python "
            f"{sys.version.split()[0]}; 1 thread; {args.rounds} interleaved rounds of ~{args.slice_ms:g} ms per "
            f"runner; medians of per-call us; took {time.perf_counter() - t0:.0f} s\n")
    text = head + "\n" + "\n".join(parts)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
