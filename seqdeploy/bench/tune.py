"""Settings chosen per model: time the deployed artifact under each candidate onnxruntime configuration
(threads, spinning, graph optimisation), per batch size, and record the fastest in the bundle.

:func:`tune_bundle` times, interleaved in one process (:func:`seqdeploy.bench.timing.run_interleaved`),
two call paths per candidate :class:`~seqdeploy.runtime.session.SessionSettings`:

* **deployed**: ``Predictor.from_bundle(..., settings=candidate).run`` on model-ready feeds: the
  per-call path applications get (the IOBinding fast path);
* **plain**: ``InferenceSession.run`` on a session with the same settings: the best plain
  onnxruntime configuration is the floor the deployed choice is held to.

Spinning intra-op threads are tried only when asked for (``spinning=True``): they keep a core busy
between calls in the host application, which the runtime's defaults promise not to do, so a bundle
records them only when its owner opted in. The choice per batch size starts from the defaults (1 thread, no spinning, graph ``all``) and takes a
costlier candidate (more threads, or spinning) only when it is at least :data:`COSTLIER_MARGIN` faster,
a same-cost one (another graph level) when at least :data:`SAME_COST_MARGIN` faster: a noise-level win
must not take a core from the host application. If the choice is still slower than the best plain
configuration, the fastest deployed configuration is taken instead, so no deployed configuration is
slower than the best plain one measured.

``tune.json`` records every measurement; :func:`seqdeploy.bundle.write.write_bundle_manifest` copies the
choice into ``manifest.runtime_settings`` while the artifact's sha256 matches, and ``Predictor`` uses
the batch-1 choice unless told otherwise.

    >>> r = tune_bundle("runs/breast_cancer_mlp")      # doctest: +SKIP
    >>> r.choices[0].settings.describe()               # doctest: +SKIP
    '1 thread, spinning off, graph all'
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from seqdeploy.errors import BundleError, UsageError
from seqdeploy.layout import MANIFEST_FILE, TUNE_FILE, TUNE_SCHEMA, TuneChoice
from seqdeploy.runtime.session import DEFAULT_GRAPH_LEVEL, GRAPH_LEVELS, ORT_TYPES, SessionSettings, make_session

#: a costlier candidate (more threads, spinning) must be at least this much faster (p50 ratio)
COSTLIER_MARGIN = 0.90
#: a candidate of the same cost (another graph level) must be at least this much faster
SAME_COST_MARGIN = 0.95
DEFAULT_LEVELS = ("all", "extended", "basic")


@dataclass(frozen=True)
class TunePoint:
    """One candidate at one batch size: p50 of the deployed and the plain call path (microseconds)."""

    batch: int
    settings: SessionSettings
    deployed_p50_us: float
    plain_p50_us: float
    calls: int


@dataclass(frozen=True)
class TuneResult:
    run_dir: str
    artifact: str
    artifact_sha256: str
    cpu: str
    onnxruntime: str
    seconds: float
    points: tuple[TunePoint, ...]
    choices: tuple[TuneChoice, ...]
    path: str | None = None


def candidates(threads: Sequence[int] = (1, 2), levels: Sequence[str] = DEFAULT_LEVELS,
               spinning: bool = False) -> tuple[SessionSettings, ...]:
    """Every configuration to try, cheapest first (spinning, when asked for, only with more than one thread).

    >>> [c.describe() for c in candidates((1, 2), ("all",), spinning=True)]
    ['1 thread, spinning off, graph all', '2 threads, spinning off, graph all', '2 threads, spinning on, graph all']
    """
    bad = [lv for lv in levels if lv not in GRAPH_LEVELS]
    if bad or not levels:
        raise UsageError(f"graph levels {list(levels)} (expected one or more of {', '.join(GRAPH_LEVELS)})")
    if not threads or any(not isinstance(t, int) or t < 1 for t in threads):
        raise UsageError(f"threads {list(threads)} (expected one or more integers >= 1)")
    out = []
    for t in sorted(set(threads)):
        for spin in ((False, True) if spinning and t > 1 else (False,)):
            for lv in levels:
                out.append(SessionSettings(threads=t, allow_spinning=spin, graph_optimization=lv))
    return tuple(sorted(dict.fromkeys(out), key=_preference))


def _preference(s: SessionSettings) -> tuple:
    # cheapest first; at equal cost the default level first, then the more optimised levels
    return (s.cost, s.graph_optimization != DEFAULT_GRAPH_LEVEL, -GRAPH_LEVELS.index(s.graph_optimization))


def choose(points: Sequence[TunePoint]) -> TuneChoice:
    """The settings for one batch size from its measurements (rules: see the module docstring)."""
    if not points:
        raise ValueError("no measurements to choose from")
    batch = points[0].batch
    by = {p.settings: p for p in points}
    order = sorted(by, key=_preference)
    default = by.get(SessionSettings()) or by[order[0]]
    choice = default
    for cand in order:
        p, cur = by[cand], choice
        margin = COSTLIER_MARGIN if cand.cost > cur.settings.cost else SAME_COST_MARGIN
        if p.deployed_p50_us < margin * cur.deployed_p50_us:
            choice = p
    plain_best = min(points, key=lambda p: p.plain_p50_us)
    if choice is default:
        reason = "the defaults: no other configuration was clearly faster"
    else:
        reason = f"{default.deployed_p50_us / choice.deployed_p50_us:.2f}x faster than the defaults"
    if choice.deployed_p50_us > plain_best.plain_p50_us:
        fastest = min(points, key=lambda p: p.deployed_p50_us)
        if fastest is not choice:
            reason = (f"the fastest deployed configuration: the margin rule's choice ({choice.settings.describe()}, "
                      f"{choice.deployed_p50_us:.1f} us) was slower than the best plain onnxruntime configuration")
            choice = fastest
    return TuneChoice(batch, choice.settings, choice.deployed_p50_us, default.deployed_p50_us,
                      plain_best.plain_p50_us, plain_best.settings, reason)


def _feeds(run_dir: Path, session: Any, batch: int) -> dict[str, np.ndarray]:
    """Model-ready feeds of ``batch`` rows: the run's test split for one input (as bench times), else random."""
    from seqdeploy.bench.discover import load_data, random_data, resolve_target
    specs = [(i.name, list(i.shape), ORT_TYPES.get(i.type, np.float32)) for i in session.get_inputs()]
    if len(specs) == 1:
        return load_data(resolve_target(run_dir), specs[0]).feeds(batch)
    return {name: random_data(name, shape, dtype, seed=k).feeds(batch)[name]
            for k, (name, shape, dtype) in enumerate(specs)}


def tune_bundle(run_dir: str | os.PathLike, *, batches: Sequence[int] = (1, 64), threads: Sequence[int] | None = None,
                levels: Sequence[str] = DEFAULT_LEVELS, spinning: bool = False, duration_s: float = 2.0,
                write: bool = True, progress: Callable[[str], None] | None = None) -> TuneResult:
    """Measure every candidate configuration on the bundle's deployed artifact; write ``tune.json`` and
    refresh the manifest (``write=True``). ``threads`` defaults to 1 and 2 (capped by the CPU count);
    ``spinning=True`` also tries spinning intra-op threads (see the module docstring); ``duration_s`` is the
    timing budget per batch size, split between the runners.
    """
    import onnxruntime as ort

    from seqdeploy.atomic import atomic_write_json, sha256_file, to_jsonable
    from seqdeploy.bench.timing import StopRule, run_interleaved, warm_up
    from seqdeploy.bundle.write import refresh_bundle_manifest
    from seqdeploy.cpu import cpu_model_name
    from seqdeploy.runtime.manifest import load_manifest
    from seqdeploy.runtime.predictor import Predictor

    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST_FILE).is_file():
        raise BundleError(f"{run_dir} has no manifest.json (expected a bundle: train and export it first)")
    manifest = load_manifest(run_dir)
    art = manifest.deployment
    if threads is None:
        threads = tuple(t for t in (1, 2) if t <= (os.cpu_count() or 1)) or (1,)
    cands = candidates(threads, levels, spinning)
    bad = [b for b in batches if not isinstance(b, int) or b < 1]
    if bad or not batches:
        raise UsageError(f"batch sizes {list(batches)} (expected one or more integers >= 1)")
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    path = run_dir / art.file
    from seqdeploy.runtime.extensions import libraries_for

    libraries = libraries_for(manifest.contrib_ops, str(run_dir)) if manifest.contrib_ops else []
    runners = []
    for s in cands:
        pred = Predictor.from_bundle(run_dir, artifact=art.file, settings=s, graph="model-ready")  # run()'s session
        runners.append((s, pred, make_session(path, settings=s, custom_ops_libraries=libraries)))
    points: list[TunePoint] = []
    for batch in sorted(set(batches)):
        say(f"tune: batch {batch}, {len(cands)} configurations")
        feeds = _feeds(run_dir, runners[0][2], batch)
        out_names = [o.name for o in runners[0][2].get_outputs()]
        calls = []
        for _, pred, sess in runners:
            calls.append(lambda pred=pred, f=feeds: pred.run(f))
            calls.append(lambda sess=sess, f=feeds, o=out_names: sess.run(o, f))
        for fn in calls:
            warm_up(fn, 0.05)
        samples = run_interleaved(calls, StopRule(duration_s=duration_s))
        for k, (s, _, _) in enumerate(runners):
            dep, plain = samples[2 * k], samples[2 * k + 1]
            points.append(TunePoint(batch, s, round(float(np.median(dep)) * 1e6, 3),
                                    round(float(np.median(plain)) * 1e6, 3), len(dep)))
    choices = tuple(choose([p for p in points if p.batch == b]) for b in sorted(set(batches)))
    result = TuneResult(str(run_dir), art.file, sha256_file(path), cpu_model_name(), ort.__version__,
                        round(time.perf_counter() - t_start, 2), tuple(points), choices)
    if write:
        record = {"schema_version": TUNE_SCHEMA, **to_jsonable(result)}
        record.pop("path", None)
        written = atomic_write_json(run_dir / TUNE_FILE, record)
        result = TuneResult(**{**result.__dict__, "path": str(written)})
        refresh_bundle_manifest(run_dir)
    return result


__all__ = ["COSTLIER_MARGIN", "DEFAULT_LEVELS", "SAME_COST_MARGIN", "TUNE_FILE", "TuneChoice", "TunePoint",
           "TuneResult", "candidates", "choose", "tune_bundle"]
