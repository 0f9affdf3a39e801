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
from seqdeploy.verify.feeds import check_data, input_specs, load_data_file, make_feeds

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
    from seqdeploy.bundle.user_model import load_user_run
    from seqdeploy.data import load_run_splits

    run_dir = Path(run_dir)
    keras_path = run_dir / MODEL_KERAS
    onnx_file = Path(onnx_path) if onnx_path is not None else run_dir / MODEL_ONNX
    for p, hint in ((keras_path, "run `seqdeploy train` first"), (onnx_file, "run `seqdeploy export` first")):
        if not p.exists():
            raise InputFileNotFound(f"{p} does not exist; {hint}")
    record = load_user_run(run_dir)
    if record is not None:  # a bundle made from a model trained elsewhere: its golden rows are the real samples
        return _verify_user_bundle(run_dir, keras_path, onnx_file, record, atol=atol, rtol=rtol,
                                   per_output=per_output, samples=samples, unsafe=unsafe, write=write)
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


def _verify_user_bundle(run_dir: Path, keras_path: Path, onnx_file: Path, record: Mapping[str, Any], *,
                        write: bool, **kw: Any) -> VerifyResult:
    """verify RUN_DIR on a bundle from ``pipeline MODEL.keras``: golden rows + generated feeds, then the
    portable graph on the golden rows (:func:`seqdeploy.bundle.user_model.check_portable_parity`)."""
    from seqdeploy.bundle.user_model import check_portable_parity
    from seqdeploy.export.convert import load_keras_model

    inputs = None
    if (run_dir / "golden.npz").is_file():
        with np.load(run_dir / "golden.npz", allow_pickle=False) as g:
            inputs = {k[len("input__"):]: g[k] for k in g.files if k.startswith("input__")} or None
    task = str(record.get("task"))
    labels = record.get("labels")
    result = verify_models(keras_path, onnx_file, real_inputs=inputs, task=task,
                           out_dir=run_dir if write else None, **kw)
    if inputs is None:
        return result
    check = check_portable_parity(run_dir, load_keras_model(keras_path, unsafe=kw.get("unsafe", False)), inputs,
                                  task, labels if isinstance(labels, list) else None)
    failures = () if check.passed else (f"deployment graph: max abs error {check.max_abs_error:.3g} > "
                                        f"{check.tolerance:g} on the golden rows",)
    result = dataclasses.replace(result, portable=check, passed=check.passed, failures=result.failures + failures)
    if write:
        atomic_write_json(result.report_path, verify_summary(result) | {"details": result})
        from seqdeploy.bundle.write import refresh_bundle_manifest

        refresh_bundle_manifest(run_dir)
    if failures:
        raise CheckFailed(f"the deployment graph differs from Keras on raw inputs ({failures[0]})", result)
    return result


def verify_models(keras_path: str | Path, onnx_path: str | Path, *, real_inputs: Any,
                  train_inputs: Any = None, task: str | None = None, atol: float | None = None,
                  rtol: float | None = None, per_output: Mapping[str, Tolerance] | None = None,
                  samples: int = 200, unsafe: bool = False, out_dir: str | Path | None = None,
                  golden_raw: np.ndarray | None = None, vocabulary_size: int | None = None,
                  training_batch: int = 32, custom_objects: Any = None, make_out_dir: bool = False,
                  file_prefix: str = "") -> VerifyResult:
    """Compare a Keras model file with an ONNX file on real, random and edge-case feeds.

    ``real_inputs`` are model-ready samples (already preprocessed): one array, or a mapping keyed by input
    name for several inputs; None generates every feed (numeric inputs only). When ``out_dir`` is given,
    ``verify.json`` and the golden files are written there (names prefixed with ``file_prefix``).
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
    model = load_keras_model(keras_path, unsafe=unsafe, custom_objects=custom_objects)
    specs = input_specs(model)
    names = [sp.name for sp in specs]
    if sorted(onnx_rt.input_names) != sorted(names):
        raise VerifyInputError(f"mismatched pair: {keras_path.name} has inputs {names} but {onnx_path.name} has "
                               f"{onnx_rt.input_names}; export the ONNX file from this Keras model (`seqdeploy export`)")
    for sp, onnx_in in ((sp, next(i for i in onnx_rt.inputs if i.name == sp.name)) for sp in specs):
        onnx_shape = tuple(onnx_in.shape[1:])
        if len(onnx_shape) != len(sp.shape) or any(
                isinstance(o, int) and k is not None and o != k for o, k in zip(onnx_shape, sp.shape)):
            raise VerifyInputError(f"mismatched pair: {keras_path.name} takes {sp.name!r} of shape {list(sp.shape)} "
                                   f"but {onnx_path.name} takes {list(onnx_shape)}; export the ONNX file from this "
                                   "Keras model (`seqdeploy export`)")
    precision = artifact_precision(onnx_path)
    default = FLOAT32_TOL if precision == "float32" else QUANTIZED_TOL
    tol_default = Tolerance(atol if atol is not None else default[0], rtol if rtol is not None else default[1])
    per_output = dict(per_output or {})
    unknown = set(per_output) - set(onnx_rt.output_names)
    if unknown:
        raise VerifyInputError(f"tolerance given for unknown outputs {sorted(unknown)}; the outputs are "
                               f"{onnx_rt.output_names}")

    real = check_data(real_inputs, specs) if real_inputs is not None else None
    if real is not None:
        real = {k: v[:samples] for k, v in real.items()}
    train = None
    if train_inputs is not None:
        try:
            train = check_data(train_inputs, specs, "the training data")
        except VerifyInputError:
            train = None  # statistics only: fall back to the real samples'

    from seqdeploy.export.convert import keras_output_names

    # The names export gives the ONNX outputs; a mismatch means the files do not belong together.
    keras_names = keras_output_names(model)
    keras_rt = keras_runner(model, names, keras_names)

    failures: list[str] = []
    if len(keras_names) != len(onnx_rt.output_names):
        failures.append(f"output count: Keras has {len(keras_names)}, ONNX has {len(onnx_rt.output_names)}")
    elif keras_names != onnx_rt.output_names:
        failures.append(f"output names: Keras {keras_names} vs ONNX {onnx_rt.output_names}")

    feeds = make_feeds(real, train, specs, samples, training_batch, vocabulary_size)
    acc = {name: _Accumulator(name, per_output.get(name, tol_default)) for name in onnx_rt.output_names}
    feed_runs: list[FeedRun] = []
    for kind, feed in feeds:
        x = next(iter(feed.values()))
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

        if len(names) == 1:
            warnings += locate_for_verify(model, onnx_path, names[0], [(k, f[names[0]]) for k, f in feeds], reports)
    max_err = max((r.max_abs_error for r in reports), default=float("nan"))
    agreements = [r.label_agreement for r in reports if r.label_agreement is not None]
    result = VerifyResult(
        passed=passed, keras_path=keras_path, onnx_path=onnx_path, artifact_precision=precision,
        outputs=reports, feeds=tuple(feed_runs), batch_sizes=tuple(sorted({f.batch_size for f in feed_runs})),
        failures=tuple(dict.fromkeys(failures)), warnings=warnings, max_abs_error=float(max_err),
        label_agreement=min(agreements) if agreements else None,
        samples=int(len(next(iter(real.values())))) if real is not None else 0,
        seconds=time.perf_counter() - start)

    if out_dir is not None:
        out_dir = Path(out_dir)
        if make_out_dir:
            out_dir.mkdir(parents=True, exist_ok=True)  # only once the comparison ran: nothing half-made before
        report_path = out_dir / f"{file_prefix}{VERIFY_FILE}"
        golden_path = None
        golden_in = real if real is not None else (feeds[0][1] if feeds else None)
        if passed and golden_in is not None:
            golden_in = {k: v[:GOLDEN_SAMPLES] for k, v in golden_in.items()}
            golden_path = write_golden(out_dir, golden_in, keras_rt,
                                       golden_raw if golden_raw is not None else
                                       (next(iter(golden_in.values())) if len(golden_in) == 1 else None),
                                       file_prefix)
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


def write_golden(out_dir: Path, inputs: Mapping[str, np.ndarray], runner: KerasRunner,
                 raw: np.ndarray | None, file_prefix: str = "") -> Path:
    """Write golden.npz and golden.json: raw samples (single-input models), model feeds and Keras's outputs."""
    outputs = runner.infer_named(dict(inputs))
    arrays = {"raw": np.asarray(raw)} if raw is not None else {}
    arrays.update({f"input__{k}": np.asarray(v) for k, v in inputs.items()})
    arrays.update({f"output__{k}": np.asarray(v) for k, v in outputs.items()})
    path = out_dir / f"{file_prefix}{GOLDEN_NPZ}"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    as_json = {k: {"dtype": str(v.dtype) if v.dtype.kind not in "UO" else "string", "shape": list(v.shape),
                   "data": v.tolist()} for k, v in arrays.items()}
    atomic_write_json(out_dir / f"{file_prefix}{GOLDEN_JSON}", as_json)
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


def load_inputs_file(path: str | Path) -> np.ndarray | dict[str, np.ndarray]:
    """Model-ready inputs for verify outside a run directory (:func:`seqdeploy.verify.feeds.load_data_file`)."""
    return load_data_file(path)


# --- internals ----------------------------------------------------------------------------

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
