"""Numerical parity of an ONNX artifact against the live Keras model.

Two runners share one interface, ``infer(feeds) -> {output name: array}``:
Keras (direct call, ``training=False``) and onnxruntime. They are fed real
test samples (preprocessed exactly as in training), random inputs in the
data's range and edge cases (zeros, the training min/max, vocabulary bounds),
at several batch sizes (1, a small odd size, and an odd size larger than the
training batch, which proves the dynamic batch axis).

Checks run in order and every failure is collected before deciding: output
count and names, shapes, dtypes, non-finite values, then values. Per output:
max / mean / p99 absolute and relative error, the smallest atol that would have
passed at the given rtol, and the number of elements over tolerance; for
classifiers the label agreement rate on the real samples (must be 100% for a
float32 artifact).

Default tolerances (``|onnx - keras| <= atol + rtol * |keras|``):

=============================  ========  ========  ===========================
artifact                       atol      rtol      label agreement required
=============================  ========  ========  ===========================
float32                        1e-4      1e-3      100% on real samples
float16 / int8 (quantized)     5e-2      5e-2      reported only (the quantize
                                                   gate judges task metrics)
=============================  ========  ========  ===========================

    >>> result = verify_run("runs/breast_cancer_mlp")  # doctest: +SKIP
    >>> result.passed, result.max_abs_error  # doctest: +SKIP
    (True, 2.9e-07)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seqdeploy.atomic import atomic_path, atomic_write_json, sha256_file
from seqdeploy.layout import GOLDEN_JSON, GOLDEN_NPZ, MODEL_KERAS, MODEL_ONNX, VERIFY_FILE
from seqdeploy.bench.runners.keras import KerasRunner
from seqdeploy.bench.runners.onnxruntime import OrtRunner
from seqdeploy.errors import CheckFailed, InputFileNotFound, VerifyInputError, first_line

FLOAT32_TOL = (1e-4, 1e-3)
QUANTIZED_TOL = (5e-2, 5e-2)
GOLDEN_SAMPLES = 5


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


@dataclasses.dataclass(frozen=True)
class OutputReport:
    """Parity of one output over every feed that ran."""

    name: str
    keras_shape: tuple | None
    onnx_shape: tuple | None
    keras_dtype: str | None
    onnx_dtype: str | None
    atol: float
    rtol: float
    max_abs_error: float
    mean_abs_error: float
    p99_abs_error: float
    max_rel_error: float
    mean_rel_error: float
    min_passing_atol: float
    elements_over_tolerance: int
    elements: int
    nonfinite_keras: int
    nonfinite_onnx: int
    label_agreement: float | None
    worst_feed: str | None
    passed: bool
    problems: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FeedRun:
    kind: str
    batch_size: int
    ok: bool
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    passed: bool
    keras_path: Path
    onnx_path: Path
    artifact_precision: str
    outputs: tuple[OutputReport, ...]
    feeds: tuple[FeedRun, ...]
    batch_sizes: tuple[int, ...]
    failures: tuple[str, ...]
    max_abs_error: float
    label_agreement: float | None
    samples: int
    seconds: float
    report_path: Path | None = None
    golden_path: Path | None = None
    portable: Any = None  # seqdeploy.verify.portable.PortableCheck of the deployment graph (run directories)
    warnings: tuple[str, ...] = ()


# --- runners: the benchmark's runner families (seqdeploy.bench.runners), outputs keyed by name -----------

def keras_runner(model, input_names: Sequence[str], output_names: Sequence[str]) -> KerasRunner:
    """The Keras model's direct call (``training=False``); ``infer_named`` keys the outputs by ``output_names``."""
    return KerasRunner(model, "direct", input_names=input_names, output_names=output_names)


def onnx_runner(path: Path) -> OrtRunner:
    """onnxruntime on the CPU with the runtime's session settings (one intra-op thread)."""
    from seqdeploy.export.convert import load_checked_onnx

    from seqdeploy.export.opsets import custom_ops_libraries
    from seqdeploy.runtime.session import make_session

    model = load_checked_onnx(path)  # untrusted file: onnx.checker before any session
    libraries = custom_ops_libraries(model)  # e.g. onnxruntime-extensions for exact string preprocessing
    runner = OrtRunner(path, session_factory=(lambda p, threads: make_session(p, threads=threads,
                                                                              custom_ops_libraries=libraries))
                       if libraries else None)
    try:
        runner.prepare(None)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise VerifyInputError(f"{path}: onnxruntime cannot load this model: {first_line(exc, limit=300)}; "
                               "re-export it with `seqdeploy export`") from None
    return runner


# --- public API ----------------------------------------------------------------------------

def verify_run(run_dir: str | Path, *, onnx_path: str | Path | None = None, atol: float | None = None,
               rtol: float | None = None, per_output: Mapping[str, Tolerance] | None = None,
               samples: int = 200, unsafe: bool = False, write: bool = True) -> VerifyResult:
    """Verify a run directory's ONNX artifact against its Keras model on the run's data.

    Writes ``verify.json`` and ``golden.npz`` / ``golden.json`` into the run
    directory. Raises :class:`CheckFailed` (exit 1) when parity fails. A check only: the bundle's
    manifest is the caller's to refresh (:func:`seqdeploy.bundle.write.refresh_bundle_manifest`).
    """
    from seqdeploy.data import load_run_splits

    run_dir = Path(run_dir)
    keras_path = run_dir / MODEL_KERAS
    onnx_file = Path(onnx_path) if onnx_path is not None else run_dir / MODEL_ONNX
    for p, hint in ((keras_path, "run `seqdeploy train` first"), (onnx_file, "run `seqdeploy export` first")):
        if not p.exists():
            raise InputFileNotFound(f"{p} does not exist; {hint}")
    splits = load_run_splits(run_dir)
    golden_raw = splits.raw_test[:GOLDEN_SAMPLES]
    result = verify_models(keras_path, onnx_file, real_inputs=splits.x_test, train_inputs=splits.x_train,
                           task=splits.task, atol=atol, rtol=rtol, per_output=per_output, samples=samples,
                           unsafe=unsafe, out_dir=run_dir if write else None, golden_raw=golden_raw,
                           vocabulary_size=len(splits.preprocessing.get("vocabulary", [])) or None)
    return _verify_portable(run_dir, onnx_file, splits, result, unsafe=unsafe, write=write)


def _verify_portable(run_dir: Path, onnx_file: Path, splits: Any, result: VerifyResult, *, unsafe: bool,
                     write: bool) -> VerifyResult:
    """The deployment graph too: raw test rows through the portable graph vs Keras (seqdeploy.verify.portable)."""
    from seqdeploy.export.convert import load_keras_model
    from seqdeploy.verify.portable import check_portable
    from seqdeploy.preprocess import from_record

    check = check_portable(run_dir, onnx_file, load_keras_model(run_dir / MODEL_KERAS, unsafe=unsafe),
                           splits.raw_test, from_record(splits.preprocessing, "train.json preprocessing"),
                           splits.task, splits.labels, quantized=result.artifact_precision != "float32",
                           write_golden=write, rows=max(result.samples, 1),
                           atol=result.outputs[0].atol if result.outputs else None,  # the first output's
                           rtol=result.outputs[0].rtol if result.outputs else 0.0)
    failures = tuple(f"deployment graph: {f}" for f in check.failures)
    result = dataclasses.replace(result, portable=check, passed=not failures,
                                 failures=result.failures + failures)
    if write and result.report_path is not None:
        atomic_write_json(result.report_path, verify_summary(result) | {"details": result})
    if failures:
        raise CheckFailed(f"the deployment graph differs from Keras on raw inputs ({failures[0]})", result)
    return result


def verify_models(keras_path: str | Path, onnx_path: str | Path, *, real_inputs: np.ndarray | None,
                  train_inputs: np.ndarray | None = None, task: str | None = None, atol: float | None = None,
                  rtol: float | None = None, per_output: Mapping[str, Tolerance] | None = None,
                  samples: int = 200, unsafe: bool = False, out_dir: str | Path | None = None,
                  golden_raw: np.ndarray | None = None, vocabulary_size: int | None = None,
                  training_batch: int = 32) -> VerifyResult:
    """Compare a Keras model file with an ONNX file on real, random and edge-case feeds.

    ``real_inputs`` are model-ready samples (already preprocessed). When
    ``out_dir`` is given, ``verify.json`` and the golden files are written there.
    """
    from seqdeploy.export.convert import load_keras_model

    start = time.perf_counter()
    keras_path, onnx_path = Path(keras_path), Path(onnx_path)
    for p in (keras_path, onnx_path):
        if not p.exists():
            raise InputFileNotFound(f"{p} does not exist; expected a Keras model and an ONNX file to compare")
    if samples < 1:
        raise VerifyInputError(f"samples = {samples}: expected at least 1 real sample to compare")
    onnx_rt = onnx_runner(onnx_path)
    model = load_keras_model(keras_path, unsafe=unsafe)
    if len(model.inputs) != 1:
        raise VerifyInputError(f"{keras_path}: verify supports single-input models; this one has "
                               f"{len(model.inputs)} inputs")
    if len(onnx_rt.input_names) != 1:
        raise VerifyInputError(f"{onnx_path}: has {len(onnx_rt.input_names)} inputs, the Keras model has 1; "
                               "the files do not belong together")
    keras_shape = tuple(model.inputs[0].shape[1:])
    keras_dtype = str(np.dtype(model.inputs[0].dtype))
    onnx_in = onnx_rt.inputs[0]
    onnx_shape = tuple(onnx_in.shape[1:])
    if len(onnx_shape) != len(keras_shape) or any(
            isinstance(o, int) and k is not None and o != k for o, k in zip(onnx_shape, keras_shape)):
        raise VerifyInputError(f"mismatched pair: {keras_path.name} takes inputs of shape {list(keras_shape)} but "
                               f"{onnx_path.name} takes {list(onnx_shape)}; export the ONNX file from this "
                               "Keras model (`seqdeploy export`)")
    feed_name = onnx_rt.input_names[0]
    precision = artifact_precision(onnx_path)
    default = FLOAT32_TOL if precision == "float32" else QUANTIZED_TOL
    tol_default = Tolerance(atol if atol is not None else default[0], rtol if rtol is not None else default[1])
    per_output = dict(per_output or {})
    unknown = set(per_output) - set(onnx_rt.output_names)
    if unknown:
        raise VerifyInputError(f"tolerance given for unknown outputs {sorted(unknown)}; the outputs are "
                               f"{onnx_rt.output_names}")

    if real_inputs is not None:
        real_inputs = np.asarray(real_inputs)
        if real_inputs.ndim == len(keras_shape):  # a single sample without batch axis
            real_inputs = real_inputs[None]
        if tuple(real_inputs.shape[1:]) != tuple(d for d in keras_shape):
            raise VerifyInputError(f"data samples have shape {list(real_inputs.shape[1:])}; the model expects "
                                   f"{list(keras_shape)}; pass model-ready inputs")
        if real_inputs.dtype.kind == "f" and not np.isfinite(real_inputs).all():
            raise VerifyInputError("the data contains NaN or inf values; verify needs finite inputs "
                                   "(clean the data or drop those rows)")
        if len(real_inputs) == 0:
            raise VerifyInputError("the data has no samples; expected at least one")
        real_inputs = real_inputs[:samples].astype(keras_dtype)

    from seqdeploy.export.convert import keras_output_names

    # The names export gives the ONNX outputs; a mismatch means the files do not belong together.
    keras_names = keras_output_names(model)
    keras_rt = keras_runner(model, [feed_name], keras_names)

    failures: list[str] = []
    if len(keras_names) != len(onnx_rt.output_names):
        failures.append(f"output count: Keras has {len(keras_names)}, ONNX has {len(onnx_rt.output_names)}")
    elif keras_names != onnx_rt.output_names:
        failures.append(f"output names: Keras {keras_names} vs ONNX {onnx_rt.output_names}")

    feeds = _make_feeds(real_inputs, train_inputs, keras_shape, keras_dtype, samples, training_batch,
                        vocabulary_size)
    acc = {name: _Accumulator(name, per_output.get(name, tol_default)) for name in onnx_rt.output_names}
    feed_runs: list[FeedRun] = []
    for kind, x in feeds:
        feed = {feed_name: x}
        try:
            got = onnx_rt.infer_named(feed)
        except Exception as exc:  # onnxruntime's InvalidArgument & co: a failure of the artifact
            msg = f"onnxruntime rejected the {kind} feed at batch {len(x)}: {first_line(exc, limit=300)}"
            if "dimension" in str(exc).lower() or "shape" in str(exc).lower():
                msg += " (is the batch axis dynamic? re-export with `seqdeploy export`)"
            failures.append(msg)
            feed_runs.append(FeedRun(kind, len(x), False, first_line(exc, limit=300)))
            continue
        want = keras_rt.infer_named(feed)
        feed_runs.append(FeedRun(kind, len(x), True))
        for (k_name, k_val), o_name in zip(want.items(), onnx_rt.output_names):
            acc[o_name].add(kind, k_val, got[o_name], is_real=kind.startswith("real"), task=task)

    warnings: tuple[str, ...] = ()
    reports = tuple(a.report() for a in acc.values())
    for r in reports:
        failures.extend(f"{r.name}: {p}" for p in r.problems)
    if precision == "float32" and task in ("binary", "multiclass"):
        for r in reports:
            if r.label_agreement is not None and r.label_agreement < 1.0:
                failures.append(f"{r.name}: label agreement on real samples {r.label_agreement:.2%} < 100%")
    passed = not failures
    if not passed and precision == "float32":  # say which layer goes wrong first
        from seqdeploy.verify.locate import locate_for_verify

        warnings += locate_for_verify(model, onnx_path, feed_name, feeds, reports)
    max_err = max((r.max_abs_error for r in reports), default=float("nan"))
    agreements = [r.label_agreement for r in reports if r.label_agreement is not None]
    result = VerifyResult(
        passed=passed, keras_path=keras_path, onnx_path=onnx_path, artifact_precision=precision,
        outputs=reports, feeds=tuple(feed_runs), batch_sizes=tuple(sorted({f.batch_size for f in feed_runs})),
        failures=tuple(dict.fromkeys(failures)), warnings=warnings, max_abs_error=float(max_err),
        label_agreement=min(agreements) if agreements else None,
        samples=int(len(real_inputs)) if real_inputs is not None else 0,
        seconds=time.perf_counter() - start)

    if out_dir is not None:
        out_dir = Path(out_dir)
        report_path = out_dir / VERIFY_FILE
        golden_path = None
        if passed and real_inputs is not None:
            golden_path = write_golden(out_dir, feed_name, real_inputs[:GOLDEN_SAMPLES], keras_rt,
                                       golden_raw if golden_raw is not None else real_inputs[:GOLDEN_SAMPLES])
        result = dataclasses.replace(result, report_path=report_path, golden_path=golden_path)
        atomic_write_json(report_path, verify_summary(result) | {"details": result})
    if not passed:
        worst = max(reports, key=lambda r: r.max_abs_error, default=None)
        head = (f"{worst.name}: max abs error {worst.max_abs_error:.3g} > atol {worst.atol:g}"
                if worst is not None and worst.elements_over_tolerance else result.failures[0])
        raise CheckFailed(f"ONNX output differs from Keras ({len(result.failures)} problem(s); {head})", result)
    return result


def verify_summary(result: VerifyResult) -> dict[str, Any]:
    """The flat summary the manifest and the pipeline read from ``verify.json``."""
    return {"passed": result.passed, "max_abs_error": result.max_abs_error,
            "label_agreement": result.label_agreement, "artifact": result.onnx_path.name,
            "onnx_sha256": sha256_file(result.onnx_path),
            "artifact_precision": result.artifact_precision, "batch_sizes": list(result.batch_sizes),
            "samples": result.samples, "failures": list(result.failures), "warnings": list(result.warnings),
            "portable": result.portable}


def write_golden(out_dir: Path, feed_name: str, inputs: np.ndarray, runner: KerasRunner, raw: np.ndarray) -> Path:
    """Write golden.npz and golden.json: raw samples, model feeds and Keras's outputs."""
    outputs = runner.infer_named({feed_name: inputs})
    arrays = {"raw": np.asarray(raw), f"input__{feed_name}": inputs}
    arrays.update({f"output__{k}": np.asarray(v) for k, v in outputs.items()})
    path = out_dir / GOLDEN_NPZ
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    as_json = {k: {"dtype": str(v.dtype) if v.dtype.kind != "U" else "string", "shape": list(v.shape),
                   "data": v.tolist()} for k, v in arrays.items()}
    atomic_write_json(out_dir / GOLDEN_JSON, as_json)
    return path


def artifact_precision(onnx_path: Path) -> str:
    """float32, float16 or int8 (the numeric type of :mod:`seqdeploy.precision`), read from the graph."""
    from seqdeploy.precision import precision_of_onnx

    return precision_of_onnx(onnx_path).numeric


def parse_tolerances(values: Sequence[str], what: str) -> tuple[float | None, dict[str, float]]:
    """Parse ``--atol 1e-4`` and ``--atol out_name=1e-3`` forms into (default, per output)."""
    default, per = None, {}
    for v in values:
        name, _, num = v.rpartition("=")
        try:
            f = float(num)
        except ValueError:
            raise VerifyInputError(f"--{what} {v!r}: expected a number or NAME=number, e.g. 1e-4") from None
        if not np.isfinite(f) or f < 0:
            raise VerifyInputError(f"--{what} {v!r}: expected a finite number >= 0")
        if name:
            per[name] = f
        else:
            default = f
    return default, per


def load_inputs_file(path: str | Path) -> np.ndarray:
    """Model-ready inputs for verify outside a run directory: .npy, .npz (array 'x') or numeric .csv."""
    path = Path(path)
    if not path.exists():
        raise InputFileNotFound(f"data file {str(path)!r} does not exist; expected .npy, .npz or .csv model inputs")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                key = "x" if "x" in npz else next(iter(npz.keys()))
                return npz[key]
        if path.suffix == ".csv":
            return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise VerifyInputError(f"data file {path}: unreadable ({first_line(exc, limit=300)}); expected numeric model inputs") from None
    raise VerifyInputError(f"data file {path}: unsupported type {path.suffix!r}; expected .npy, .npz or .csv")


# --- internals ----------------------------------------------------------------------------

def _make_feeds(real, train, shape, dtype, samples, training_batch, vocab) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    odd_large = training_batch * 2 + 1
    feeds: list[tuple[str, np.ndarray]] = []
    ref = train if train is not None else real
    if real is not None:
        feeds.append(("real", real))
        feeds.append(("real[b=1]", real[:1]))
        feeds.append(("real[b=7]", np.resize(real, (7, *real.shape[1:]))))
        feeds.append((f"real[b={odd_large}]", np.resize(real, (odd_large, *real.shape[1:]))))
    n = min(samples, 64)
    concrete = tuple(int(d) for d in shape)
    if np.dtype(dtype).kind in "iu":
        hi = vocab or (int(ref.max()) + 1 if ref is not None else 10)
        lengths = rng.integers(1, concrete[-1] + 1, size=n)
        ids = rng.integers(1, hi, size=(n, *concrete)).astype(dtype)
        ids[np.arange(concrete[-1])[None, :] >= lengths[:, None]] = 0  # right-padded, like real text
        feeds.append(("random", ids))
        feeds.extend(_padding_probes(ids, rng))
        feeds.append(("edge:vocab-max", np.full((3, *concrete), hi - 1, dtype)))
        feeds.append(("edge:vocab-min", np.full((3, *concrete), 1, dtype)))
    else:
        lo = ref.min(axis=0) if ref is not None else -np.ones(concrete)
        hi = ref.max(axis=0) if ref is not None else np.ones(concrete)
        feeds.append(("random", rng.uniform(lo, hi, size=(n, *concrete)).astype(dtype)))
        if len(concrete) == 2:  # [time, features]: zero steps are what Masking(mask_value=0) masks
            feeds.extend(_padding_probes(feeds[-1][1], rng))
        feeds.append(("edge:zeros", np.zeros((3, *concrete), dtype)))
        feeds.append(("edge:train-min", np.broadcast_to(lo, (3, *concrete)).astype(dtype)))
        feeds.append(("edge:train-max", np.broadcast_to(hi, (3, *concrete)).astype(dtype)))
    return feeds


def _padding_probes(x: np.ndarray, rng) -> list[tuple[str, np.ndarray]]:
    """Sequences padded on the LEFT (``pad_sequences`` default) and with holes (padding inside a
    sequence, one all-padding row): masks of every pattern must match Keras, not only right padding."""
    steps = x.shape[1]
    pad = np.zeros_like(x[0, 0])
    lengths = rng.integers(1, steps + 1, size=len(x))
    left = np.empty_like(x)
    for i, n in enumerate(lengths):
        left[i, : steps - n] = pad
        left[i, steps - n:] = x[i, :n]
    holes = x.copy()
    holes[rng.random(x.shape[:2]) < 0.3] = pad
    holes[0] = pad
    return [("edge:left-padded", left), ("edge:holes", holes)]


class _Accumulator:
    def __init__(self, name: str, tol: Tolerance):
        self.name, self.tol = name, tol
        self.abs: list[np.ndarray] = []
        self.rel: list[np.ndarray] = []
        self.need: list[np.ndarray] = []
        self.problems: list[str] = []
        self.k_shape = self.o_shape = self.k_dtype = self.o_dtype = None
        self.nonfinite_k = self.nonfinite_o = 0
        self.agree = self.total_real = 0
        self.worst: tuple[float, str] = (-1.0, "")

    def add(self, kind: str, k: np.ndarray, o: np.ndarray, *, is_real: bool, task: str | None) -> None:
        self.k_shape, self.o_shape = tuple(k.shape[1:]), tuple(o.shape[1:])
        self.k_dtype, self.o_dtype = str(k.dtype), str(o.dtype)
        if k.shape != o.shape:
            self.problems.append(f"shape differs on {kind}: Keras {list(k.shape)} vs ONNX {list(o.shape)}")
            return
        if k.dtype != o.dtype:
            self.problems.append(f"dtype differs: Keras {k.dtype} vs ONNX {o.dtype}")
        bad_k, bad_o = int((~np.isfinite(k)).sum()), int((~np.isfinite(o)).sum())
        self.nonfinite_k += bad_k
        self.nonfinite_o += bad_o
        if bad_k or bad_o:
            self.problems.append(f"non-finite values on {kind}: {bad_k} in Keras, {bad_o} in ONNX output")
        k64, o64 = k.astype(np.float64), o.astype(np.float64)
        finite = np.isfinite(k64) & np.isfinite(o64)
        diff = np.abs(k64[finite] - o64[finite])
        mag = np.abs(k64)[finite]
        self.abs.append(diff)
        self.rel.append(diff / np.maximum(mag, 1e-12))
        self.need.append(np.maximum(diff - self.tol.rtol * mag, 0.0))
        worst = float(diff.max()) if diff.size else 0.0
        if worst > self.worst[0]:
            self.worst = (worst, f"{kind} (batch {len(k)})")
        if is_real and task in ("binary", "multiclass"):
            lk, lo = _labels(k64, task), _labels(o64, task)
            self.agree += int((lk == lo).sum())
            self.total_real += len(lk)

    def report(self) -> OutputReport:
        a = np.concatenate(self.abs) if self.abs else np.zeros(0)
        r = np.concatenate(self.rel) if self.rel else np.zeros(0)
        need = np.concatenate(self.need) if self.need else np.zeros(0)
        over = int((need > self.tol.atol).sum())
        problems = list(dict.fromkeys(self.problems))
        if over:
            problems.append(f"values not close enough: max abs error {a.max():.3g} > atol {self.tol.atol:g} "
                            f"(rtol {self.tol.rtol:g}) on {over}/{a.size} elements, worst on {self.worst[1]}")
        if not self.abs and not problems:
            problems.append("no feed ran")
        return OutputReport(
            name=self.name, keras_shape=self.k_shape, onnx_shape=self.o_shape, keras_dtype=self.k_dtype,
            onnx_dtype=self.o_dtype, atol=self.tol.atol, rtol=self.tol.rtol,
            max_abs_error=float(a.max()) if a.size else float("nan"),
            mean_abs_error=float(a.mean()) if a.size else float("nan"),
            p99_abs_error=float(np.quantile(a, 0.99)) if a.size else float("nan"),
            max_rel_error=float(r.max()) if r.size else float("nan"),
            mean_rel_error=float(r.mean()) if r.size else float("nan"),
            min_passing_atol=float(need.max()) if need.size else float("nan"),
            elements_over_tolerance=over, elements=int(a.size), nonfinite_keras=self.nonfinite_k,
            nonfinite_onnx=self.nonfinite_o,
            label_agreement=(self.agree / self.total_real) if self.total_real else None,
            worst_feed=self.worst[1] or None, passed=not problems, problems=tuple(problems))


def _labels(y: np.ndarray, task: str) -> np.ndarray:
    """Class ids as the deployment graph computes them (``seqdeploy.preprocess.task_outputs``)."""
    from seqdeploy.preprocess import NoPreprocessing, task_outputs

    return task_outputs(y, task, None, NoPreprocessing())["class_id"]
