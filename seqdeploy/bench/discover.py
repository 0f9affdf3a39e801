"""What to benchmark: the model-ready artifacts of a bundle (read from its manifest), or one MODEL.onnx,
and the inputs to time them on.

A run directory's artifacts, their precisions and the deployed one come from the manifest
(:func:`seqdeploy.bundle.write.refresh_bundle_manifest` keeps it in step with quantize's choice);
bench never parses quantize.json itself. A directory that is not a bundle (no train.json, no
manifest.json) is read from quantize's record (:func:`seqdeploy.layout.read_quantize_record`: the kept
candidates and the choice) and the artifact naming rule of :mod:`seqdeploy.precision`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from seqdeploy.errors import BenchError, InputFileNotFound
from seqdeploy.layout import MANIFEST_FILE, MODEL_KERAS, read_quantize_record
from seqdeploy.precision import FLOAT32, is_portable_file, precision_of, precision_of_file


@dataclass(frozen=True)
class Target:
    kind: str  # "run_dir" | "onnx"
    root: Path
    artifacts: tuple[tuple[str, Path], ...]  # (precision label, path), fp32 first
    deployed: Path | None
    keras_path: Path | None
    notes: tuple[str, ...] = ()


def _keras(root: Path) -> Path | None:
    p = root / MODEL_KERAS
    return p if p.exists() else None


def _manifest(root: Path) -> tuple[Any, str | None]:
    """The bundle's manifest, refreshed when the directory is a bundle under construction; (None, why) otherwise."""
    from seqdeploy.bundle.write import refresh_bundle_manifest
    from seqdeploy.runtime.manifest import load_manifest

    try:
        m = refresh_bundle_manifest(root)  # None unless train.json and model.onnx are there
        if m is None and (root / MANIFEST_FILE).is_file():
            m = load_manifest(root)
        return m, None
    except Exception as exc:  # a bundle that does not build or load: benchmark its files by name, and say so
        return None, f"manifest unavailable ({type(exc).__name__}: {str(exc)[:200]}); artifacts found by file name"


def resolve_target(target: str | os.PathLike) -> Target:
    """The model-ready ONNX artifacts of a run directory (from its manifest), the deployed one and model.keras;
    or a single MODEL.onnx.

    >>> resolve_target("runs/breast_cancer_mlp").artifacts   # doctest: +SKIP
    (('fp32', PosixPath('runs/breast_cancer_mlp/model.onnx')), ('int8-static', ...))
    """
    p = Path(target)
    if not p.exists():
        raise InputFileNotFound(f"{p}: no such file or directory (expected a run directory or a MODEL.onnx file); "
                                "check the path, or run `seqdeploy export` first")
    if p.is_file():
        if p.suffix.lower() != ".onnx":
            raise BenchError(f"{p}: not an .onnx file (expected a run directory or a MODEL.onnx file)")
        return Target("onnx", p.parent, ((precision_of_file(p).label, p),), p, _keras(p.parent))
    manifest, why = _manifest(p)
    arts: dict[Path, str] = {}
    deployed: Path | None = None
    if manifest is not None:
        for a in manifest.artifacts:
            arts[(p / a.file).resolve()] = a.recipe or precision_of(a.precision).label
        deployed = (p / manifest.deployment_artifact).resolve()
    else:  # not a bundle: quantize's own record names the kept candidates and the choice, file names the rest
        record = read_quantize_record(p)
        if record is not None:
            for rel, recipe in record.kept:
                arts.setdefault((p / rel).resolve(), recipe or precision_of_file(rel).label)
            deployed = (p / record.chosen).resolve() if record.chosen else None
        for f in sorted(p.glob("model*.onnx")):
            if not is_portable_file(f):
                arts.setdefault(f.resolve(), precision_of_file(f).label)
    if not arts:
        raise BenchError(f"{p}: no model.onnx or model.*.onnx (expected a run directory after export); "
                         f"run `seqdeploy export {p}` first")
    fp32 = (p / FLOAT32.artifact).resolve()
    if deployed is None:
        deployed = fp32 if fp32 in arts else next(iter(arts))
    ordered = sorted(arts.items(), key=lambda kv: (kv[0] != fp32, kv[1]))
    return Target("run_dir", p, tuple((lab, path) for path, lab in ordered), deployed, _keras(p),
                  (why,) if why else ())


@dataclass(frozen=True)
class BenchData:
    """Model-ready inputs: ``test`` rows to time on, ``train`` rows to calibrate TFLite int8."""

    source: str  # "run_splits" | "random"
    input_name: str
    test: np.ndarray
    train: np.ndarray
    note: str | None = None

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        x = self.test
        if len(x) < batch:
            x = np.concatenate([x] * (batch // len(x) + 1))
        return {self.input_name: np.ascontiguousarray(x[:batch])}


def random_data(name: str, shape: Sequence[Any], dtype: Any, n: int = 256, seed: int = 0) -> BenchData:
    """Random model inputs for an ONNX input signature (symbolic non-batch dims become 1).

    >>> random_data("x", ["batch", 10], np.float32).test.shape
    (256, 10)
    """
    rng = np.random.default_rng(seed)
    tail = [d if isinstance(d, int) and d > 0 else 1 for d in list(shape)[1:]]
    note = "random inputs shaped from the ONNX signature"
    if any(not (isinstance(d, int) and d > 0) for d in list(shape)[1:]):
        note += f" (symbolic dims in {list(shape)} set to 1)"
    if np.dtype(dtype).kind in "OUS":  # a string input (a model with its own TextVectorization / StringLookup)
        words = np.asarray(["the", "a", "good", "bad", "film", "red", "blue", "unseen", "Word", "!"], dtype=object)
        lengths = rng.integers(0, 12, size=(n, *tail))
        arr = np.empty((n, *tail), dtype=object)
        arr.flat[:] = [" ".join(rng.choice(words, size=k)) for k in lengths.flat]
    elif np.issubdtype(np.dtype(dtype), np.integer):
        arr = rng.integers(0, 2, size=(n, *tail)).astype(dtype)
    elif np.dtype(dtype) == np.bool_:
        arr = rng.integers(0, 2, size=(n, *tail)).astype(bool)
    else:
        arr = rng.standard_normal((n, *tail)).astype(dtype)
    return BenchData("random", name, arr, arr, note)


def load_data(target: Target, onnx_input: tuple[str, list[Any], Any], seed: int = 0) -> BenchData:
    """Run-dir splits through ``seqdeploy.data.load_run_splits`` when available, else random inputs."""
    name, shape, dtype = onnx_input
    if target.kind == "run_dir":
        try:
            data_mod = importlib.import_module("seqdeploy.data")
            loader = getattr(data_mod, "load_run_splits")
        except (ImportError, AttributeError):
            loader = None
        if loader is not None:
            try:
                s = loader(target.root)
                return BenchData("run_splits", name, np.asarray(s.x_test), np.asarray(s.x_train))
            except Exception as exc:  # keep benchmarking on random inputs, but say so
                d = random_data(name, shape, dtype, seed=seed)
                return dataclasses.replace(d, note=f"{d.note}; load_run_splits failed: {type(exc).__name__}: {exc}")
    return random_data(name, shape, dtype, seed=seed)


__all__ = ["BenchData", "Target", "load_data", "random_data", "resolve_target"]
