"""The benchmark: build every family's runners for a target, create them (timed), run each once
(first-inference time), warm up, then time them interleaved (:mod:`seqdeploy.bench.timing`) per
(batch, threads)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import os
import platform
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from seqdeploy.atomic import to_jsonable
from seqdeploy.bench.discover import BenchData, Target, load_data, resolve_target
from seqdeploy.bench.runners import BuildContext, disagreement, families, peers
from seqdeploy.bench.runners.keras import KerasRunner
from seqdeploy.bench.runners.onnxruntime import OrtRunner, OrtSettings
from seqdeploy.bench.schema import SCHEMA_VERSION, BenchResult, Measurement, RunnerInfo, compute_speedups
from seqdeploy.bench.timing import StopRule, latency_stats, run_interleaved, warm_up
from seqdeploy.errors import BenchError, UsageError

DEFAULT_BATCHES: tuple[int, ...] = (1, 8, 64)
DEFAULT_THREADS: tuple[int, ...] = (1,)
MAX_BATCH = 65536
MAX_THREADS = 256


def parse_int_list(text: str | Sequence[int], option: str, *, lo: int = 1, hi: int = MAX_BATCH) -> tuple[int, ...]:
    """Parse ``"1,8,64"`` into ``(1, 8, 64)``; reject zero, negatives and non-integers.

    >>> parse_int_list("1, 8,64", "--batch")
    (1, 8, 64)
    """
    items = [str(t).strip() for t in (text.split(",") if isinstance(text, str) else text)]
    out: list[int] = []
    for t in items:
        try:
            v = int(t)
        except ValueError:
            raise UsageError(f"{option} received {t!r} in {text!r} (expected comma-separated integers "
                             f"from {lo} to {hi}); e.g. {option} 1,8,64") from None
        if not lo <= v <= hi:
            raise UsageError(f"{option} received {v} (expected integers from {lo} to {hi}); e.g. {option} 1,8,64")
        if v not in out:
            out.append(v)
    if not out:
        raise UsageError(f"{option} received an empty list (expected e.g. {option} 1,8,64)")
    return tuple(out)


def parse_vs(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Parse ``--vs``: ``"keras,tflite"``, ``"none"``, or None/"auto" (= every peer available).

    >>> parse_vs("tflite, keras")
    ('keras', 'tflite')
    """
    if text is None:
        return None
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items in (["auto"], []):
        return None
    if items == ["none"]:
        return ()
    known = peers()
    bad = [t for t in items if t not in known]
    if bad:
        raise UsageError(f"received unknown comparison runner(s) {', '.join(map(repr, bad))} "
                         f"(expected a comma-separated subset of {', '.join(known)}, or none, or auto); "
                         f"e.g. {','.join(known)}")
    return tuple(p for p in known if p in items)


def cpu_info() -> dict[str, Any]:
    """CPU model, core count and the SIMD flags that matter for int8 (from /proc/cpuinfo)."""
    from seqdeploy.cpu import cpu_flag_set, cpu_model_name, read_cpuinfo

    text = read_cpuinfo() or ""
    flags = cpu_flag_set(text)
    model = cpu_model_name(text)
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    return {"model": model, "logical_cores": os.cpu_count(), "flags": {f: f in flags for f in wanted}}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("seqdeploy", "onnxruntime", "numpy", "onnx", "tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "ai-edge-litert", "openvino"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def output_diff(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float | None:
    """Max |ref - got| over outputs (same sizes; shapes may differ by squeezed axes), None if incomparable.

    >>> output_diff([np.zeros((2, 1))], [np.full((2,), 0.5)])
    0.5
    """
    if len(ref) != len(got):
        return None
    worst = 0.0
    for a, b in zip(ref, got):
        a, b = np.asarray(a), np.asarray(b)
        if a.size != b.size or a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
            return None
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.reshape(-1).astype(np.float64) - b.reshape(-1).astype(np.float64)))))
    return worst


def _rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return None


def _peak_rss_mb() -> float | None:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024 if sys.platform != "darwin" else kb / 2**20
    except Exception:
        return None


def keras_reference(runners: Sequence[Any], created: dict[str, Any], batch: int,
                    feeds: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """Keras's answers on ``feeds`` (the first ``keras:direct`` runner that was created), or None without one:
    every runner is checked against them before it is timed."""
    for r in runners:
        if isinstance(r, KerasRunner) and r.mode == "direct" and created.get(r.name, (None, "absent"))[1] is None:
            try:
                r.set_batch(batch)
                return [np.array(o, copy=True) for o in r.infer(feeds)]
            except Exception:  # the Keras runner's own error is reported in its row
                return None
    return None


def build_runners(target: Target, vs: tuple[str, ...] | None, data: BenchData | None, settings: OrtSettings,
                  progress: Callable[[str], None], warns: list[str]) -> list[Any]:
    """The runners of every registered family: the ONNX artifacts, then the peers ``vs`` asks for
    (None = every peer available on this install when the target has a Keras model)."""
    fams = families()
    if vs is None:
        wanted = [n for n, f in fams.items() if f.peer and target.keras_path is not None]
        for n in list(wanted):
            why = fams[n].available()
            if why is not None:
                wanted.remove(n)
                warns.append(f"{fams[n].label} not benchmarked: {why}")
    else:
        wanted = list(vs)
        missing = [n for n in wanted if fams[n].needs_keras] if target.keras_path is None else []
        if missing:
            raise BenchError(f"comparison runners {','.join(vs)} need the Keras model, but there is no model.keras in {target.root} "
                             "(received a bare ONNX file or an untrained run dir); compare with no Keras runner or pass a run directory")
        for n in wanted:
            why = fams[n].available()
            if why is not None:
                raise BenchError(f"{fams[n].label} was asked for ({n!r}) but cannot run here: {why}; "
                                 "install it or leave it out of the comparison runners")
    ctx = BuildContext(target, data, settings, progress, warns)
    runners: list[Any] = []
    for name, fam in fams.items():
        if not fam.peer or name in wanted:
            runners += fam.build(ctx)
    return runners


def run_bench(
    target: str | os.PathLike,
    *,
    batches: Sequence[int] = DEFAULT_BATCHES,
    threads: Sequence[int] = DEFAULT_THREADS,
    vs: Sequence[str] | str | None = None,
    rule: StopRule = StopRule(),
    settings: OrtSettings = OrtSettings(),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    runners: Sequence[Any] | None = None,
    data: BenchData | None = None,
) -> BenchResult:
    """Benchmark a run directory (every ONNX artifact + Keras + TFLite) or a bare MODEL.onnx.

    ``vs=None`` benchmarks every peer available (Keras/TFLite when model.keras exists);
    ``vs=()`` only the ONNX artifacts. ``runners``/``data`` override discovery (tests, zoo).

    >>> res = run_bench("runs/breast_cancer_mlp", batches=(1, 64), rule=StopRule(duration_s=1))  # doctest: +SKIP
    >>> res.get("ort:fp32", 1, 1).latency.p50_us                                               # doctest: +SKIP
    """
    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    batches = parse_int_list(batches if isinstance(batches, str) else list(batches), "batch sizes")
    threads = parse_int_list(threads if isinstance(threads, str) else list(threads), "threads", hi=MAX_THREADS)
    vs_t = parse_vs(vs) if (vs is None or isinstance(vs, str)) else parse_vs(list(vs))
    tgt = resolve_target(target)
    warns: list[str] = list(tgt.notes)
    if data is None:
        probe = OrtRunner(tgt.artifacts[0][1], settings=OrtSettings(graph_optimization="basic"))
        try:
            probe.prepare(1)
        except Exception as exc:
            from seqdeploy.errors import ModelLoadError

            raise ModelLoadError(f"{tgt.artifacts[0][1]}: onnxruntime cannot load it ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); expected a valid ONNX model") from exc
        data = load_data(tgt, probe.input_specs()[0], seed=seed)
        probe.close()
    if data.note:
        warns.append(data.note)
    if runners is None:
        runners = build_runners(tgt, vs_t, data, settings, say, warns)
    infos_build: dict[str, float | None] = {}
    results: list[Measurement] = []
    for th in threads:
        # create every runner for this thread count (timed), then every batch size
        # created[name] = (creation seconds, error, RSS growth in MB not yet charged to a measurement)
        created: dict[str, tuple[float | None, str | None, float | None]] = {}
        for r in runners:
            rss0 = _rss_mb()
            t0 = time.perf_counter()
            try:
                r.prepare(th)
                cs: float | None = time.perf_counter() - t0
                err = None
            except Exception as exc:
                cs, err = None, f"{type(exc).__name__}: {exc}"[:500]
            rss1 = _rss_mb()
            if isinstance(r, KerasRunner):  # the model loads once, shared by every Keras runner
                cs = r.source.load_s
                infos_build[r.name] = r.source.load_s
            created[r.name] = (cs, err, (rss1 - rss0) if (rss0 is not None and rss1 is not None) else None)
        for b in batches:
            say(f"threads={th} batch={b}: {len(runners)} runners")
            feeds = data.feeds(b)
            live: list[tuple[Any, Callable[[], Any]]] = []
            pre: dict[str, dict[str, Any]] = {}
            ref_out: list[np.ndarray] | None = None
            keras_out = keras_reference(runners, created, b, feeds)
            for r in runners:
                cs, err, rss_pending = created[r.name]
                if err is not None:
                    results.append(Measurement(r.name, b, th, "error", reason=err))
                    continue
                rss_a = _rss_mb()
                try:
                    why = r.set_batch(b)
                    if why is not None:
                        results.append(Measurement(r.name, b, th, "skipped", reason=why, creation_s=cs))
                        continue
                    t0 = time.perf_counter()
                    outs = r.infer(feeds)
                    first = time.perf_counter() - t0
                    if ref_out is None:
                        ref_out = [np.array(o, copy=True) for o in outs]
                    diff = output_diff(ref_out, outs)
                    wrong = disagreement(keras_out, outs, r.precision) if keras_out is not None else None
                    if wrong is not None:  # a wrong answer is never a win: listed with why, not timed
                        results.append(Measurement(r.name, b, th, "error", reason=f"answers disagree with Keras: {wrong}",
                                                   creation_s=cs, first_inference_s=first, max_abs_diff=diff))
                        continue
                    fn = (lambda r=r: r.infer(feeds))
                    nwarm = warm_up(fn, rule.warmup_s)
                except Exception as exc:
                    results.append(Measurement(r.name, b, th, "error", reason=f"{type(exc).__name__}: {exc}"[:500], creation_s=cs))
                    continue
                rss_b = _rss_mb()
                delta = (rss_b - rss_a + (rss_pending or 0.0)) if (rss_a is not None and rss_b is not None) else None
                created[r.name] = (cs, None, 0.0)
                pre[r.name] = {"creation_s": cs, "first_inference_s": first, "warmup_calls": nwarm, "rss_delta_mb": delta,
                               "max_abs_diff": diff}
                live.append((r, fn))
            samples = run_interleaved([fn for _, fn in live], rule)
            for (r, _), s in zip(live, samples):
                st = latency_stats(s)
                results.append(Measurement(r.name, b, th, "ok", latency=st,
                                           throughput_sps=b / (st.p50_us * 1e-6), **pre[r.name]))
                if len(s) < rule.min_samples:
                    warns.append(f"{r.name} batch={b} threads={th}: only {len(s)} timed calls (slow runner capped)")
    for r in runners:
        with contextlib.suppress(Exception):
            r.close()
    infos = tuple(
        RunnerInfo(r.name, r.family, r.precision, r.artifact, r.artifact_bytes, r.deployed, r.threads_apply,
                   infos_build.get(r.name, getattr(r, "build_s", None)), tuple(dict.fromkeys(r.notes)))
        for r in runners
    )
    results = compute_speedups(results, infos)
    return BenchResult(
        schema_version=SCHEMA_VERSION,
        target=str(target),
        target_kind=tgt.kind,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        data={"source": data.source, "input_name": data.input_name, "input_shape": [None, *data.test.shape[1:]],
              "dtype": str(data.test.dtype)},
        settings={"batches": list(batches), "threads": list(threads), "vs": list(vs_t) if vs_t is not None else "auto",
                  "rule": to_jsonable(rule), "ort": to_jsonable(settings),
                  "timed_call": "full per-call path: feeds in, numpy outputs out"},
        machine={"cpu": cpu_info(), "platform": platform.platform(), "versions": versions()},
        runners=infos,
        results=tuple(results),
        peak_rss_mb=_peak_rss_mb(),
        wall_s=time.perf_counter() - t_start,
        warnings=tuple(dict.fromkeys(warns)),
    )


__all__ = ["DEFAULT_BATCHES", "DEFAULT_THREADS", "MAX_BATCH", "MAX_THREADS", "build_runners", "cpu_info", "keras_reference",
           "output_diff", "parse_int_list", "parse_vs", "run_bench", "versions"]
