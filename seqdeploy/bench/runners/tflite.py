"""LiteRT runners (XNNPACK, ``num_threads``) on models converted from the run's Keras model: fp32,
int8 with dynamic-range weights, and full-integer int8 calibrated on representative rows.

The one LiteRT path is what users run: ``tf.lite.TFLiteConverter.from_keras_model`` on the loaded
model and ``ai_edge_litert.interpreter.Interpreter`` (``tf.lite.Interpreter`` only when LiteRT is
not installed), the input resized to the batch. A frozen concrete function with a fixed batch of 1
is the fallback for models ``from_keras_model`` rejects (some LSTM/GRU graphs); float32 with Select TF ops
(Flex kernels) is the last resort for ops LiteRT has no builtin for (a ``TextVectorization``'s string ops): the
converter accepts it and an interpreter without the Flex delegate then refuses it, which the benchmark reports.

The converter runs in a child process (``python -m seqdeploy.bench.runners.tflite --tflite-child``):
int8 calibration of LSTM/GRU can segfault, and a crash must cost one attempt, not the benchmark.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seqdeploy.bench.runners import BuildContext, Family, Reference, register
from seqdeploy.bench.runners.keras import load_keras, quiet_tf
from seqdeploy.errors import BenchError


@dataclass(frozen=True)
class TfliteModel:
    """A converted LiteRT (TFLite) flatbuffer and how it was made."""

    content: bytes
    precision: str
    fixed_batch: int | None
    convert_s: float
    notes: tuple[str, ...] = ()


#: precision -> attempts (signature, kernels): "keras" = from_keras_model (dynamic batch), "batch1" = a frozen
#: concrete function with a fixed batch of 1; kernels None = float, "dynamic" = dynamic-range int8 weights,
#: "int8-only" = full-integer kernels, "mixed" = int8 with float fallback kernels, "select" = float with Select TF
#: ops (Flex kernels; the last resort: a model with ops LiteRT has no builtin for, e.g. TextVectorization's strings)
_TFLITE_ATTEMPTS = {
    "fp32": (("keras", None), ("batch1", None), ("keras", "select")),
    "int8-dynamic": (("keras", "dynamic"), ("batch1", "dynamic")),
    "int8": (("keras", "int8-only"), ("keras", "mixed"), ("batch1", "int8-only"), ("batch1", "mixed")),
}
PRECISIONS = tuple(_TFLITE_ATTEMPTS)


def _converter(model: Any, batch: str) -> Any:
    import tensorflow as tf

    if batch == "keras":
        return tf.lite.TFLiteConverter.from_keras_model(model)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    inp = model.inputs[0]
    dtype = tf.as_dtype(getattr(inp, "dtype", "float32") or "float32")
    sig = [tf.TensorSpec((1,) + tuple(inp.shape[1:]), dtype, name="x")]
    fn = tf.function(lambda t: model(t, training=False), input_signature=sig)
    # freeze: with live variables the converter emits READ_VARIABLE ops that calibration cannot run
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen])


def _convert_attempt(model: Any, precision: str, batch: str, kernels: str | None, representative: np.ndarray | None) -> bytes:
    import tensorflow as tf

    conv = _converter(model, batch)
    if kernels == "select":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        return conv.convert()
    if kernels is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if kernels in ("int8-only", "mixed"):
        assert representative is not None
        dtype = tf.as_dtype(getattr(model.inputs[0], "dtype", "float32") or "float32")
        rows = np.asarray(representative)[:200].astype(dtype.as_numpy_dtype)

        def rep() -> Any:
            for r in rows:
                yield [r[None, ...]]

        conv.representative_dataset = rep
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if kernels == "mixed":
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
    return conv.convert()


def _tflite_child(spec_path: str) -> int:
    """Child-process entry: convert in isolation (int8 calibration of LSTM/GRU can segfault)."""
    quiet_tf()
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    rep = np.load(spec["rep"]) if spec.get("rep") else None
    for path in spec.get("preload", []):  # modules that register the model's custom layers
        import runpy

        runpy.run_path(path)
    model = load_keras(spec["keras"])
    skip = set(spec.get("skip", []))
    for precision in spec["precisions"]:
        errors: list[str] = list(spec.get("errors", {}).get(precision, []))
        for batch, kernels in _TFLITE_ATTEMPTS[precision]:
            aid = f"{precision}/{batch}/{kernels or 'float'}"
            if aid in skip:
                continue
            (out / "attempt.txt").write_text(aid)
            t0 = time.perf_counter()
            try:
                content = _convert_attempt(model, precision, batch, kernels, rep)
            except Exception as exc:  # converter errors come in many types; keep the first line
                msg = str(exc).strip().splitlines()
                msg = [ln for ln in msg if "error" in ln.lower()] or msg or [type(exc).__name__]
                errors.append(f"{aid}: {re.sub(r'^.*?error: ', '', msg[0].strip())[:300]}")
                continue
            notes = ["TFLiteConverter.from_keras_model" if batch == "keras" else "frozen concrete function"]
            if batch == "batch1":
                notes.append("fixed batch-1 signature: from_keras_model failed for this model")
            if kernels == "dynamic":
                notes.append("dynamic-range int8 weights (Optimize.DEFAULT), float activations")
            elif kernels == "mixed":
                notes.append("int8 with float fallback kernels (integer-only conversion failed)")
            elif kernels == "select":
                notes.append("Select TF ops (Flex kernels): the interpreter needs the Flex delegate to run them")
            elif kernels == "int8-only":
                notes.append("full-integer int8 kernels, float32 input/output")
            if errors:
                notes.append("earlier attempts failed: " + " | ".join(errors))
            (out / f"{precision}.tflite").write_bytes(content)
            meta = {"fixed_batch": 1 if batch == "batch1" else None, "convert_s": time.perf_counter() - t0, "notes": notes}
            (out / f"{precision}.json").write_text(json.dumps(meta))
            break
        else:
            (out / f"{precision}.failed.json").write_text(json.dumps(errors))
    (out / "attempt.txt").unlink(missing_ok=True)
    return 0


_CHILD = "import sys; from seqdeploy.bench.runners.tflite import _main; raise SystemExit(_main(sys.argv[1:]))"


def convert_tflite(keras_path: str | os.PathLike, precisions: Sequence[str] = ("fp32", "int8-dynamic", "int8"),
                   representative: np.ndarray | None = None, *, max_crashes: int = 4,
                   timeout_s: float = 600.0, preload: Sequence[str | os.PathLike] = ()
                   ) -> tuple[dict[str, TfliteModel], dict[str, str]]:
    """Convert a saved Keras model to TFLite in a child process; return (models, errors) by precision.

    Tries ``from_keras_model`` (dynamic batch axis) first, then a frozen fixed batch-1 signature;
    ``int8-dynamic`` quantizes the weights only (``Optimize.DEFAULT``); ``int8`` (calibrated on
    ``representative`` rows) tries integer-only kernels first, then int8 with float fallback. The child isolates the
    converter's segfaults (int8 calibration of recurrent layers): an attempt that crashes
    is skipped and the child restarted. ``preload`` names Python files the child runs before loading
    the model (those that register its custom layers with ``keras.saving.register_keras_serializable``).

    >>> models, errors = convert_tflite("runs/x/model.keras", ("fp32", "int8"), x_train[:200])  # doctest: +SKIP
    """
    import subprocess
    import tempfile

    for p in precisions:
        if p not in _TFLITE_ATTEMPTS:
            raise BenchError(f"LiteRT precision {p!r} (expected one of {', '.join(_TFLITE_ATTEMPTS)})")
    if "int8" in precisions and representative is None:
        raise BenchError("int8 TFLite conversion needs representative rows (received none); pass representative=x_train[:200]")
    models: dict[str, TfliteModel] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="seqdeploy-tflite-") as tmp:
        d = Path(tmp)
        rep_path = None
        if representative is not None:
            rep_path = d / "rep.npy"
            np.save(rep_path, np.asarray(representative)[:200])
        skip: list[str] = []
        crash_errors: dict[str, list[str]] = {}
        todo = list(precisions)
        for _ in range(max_crashes + 1):
            spec = {"keras": str(Path(keras_path).resolve()), "out": str(d), "precisions": todo,
                    "rep": str(rep_path) if rep_path else None, "skip": skip, "errors": crash_errors,
                    "preload": [str(Path(f).resolve()) for f in preload]}
            (d / "spec.json").write_text(json.dumps(spec))
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
            try:
                proc = subprocess.run([sys.executable, "-c", _CHILD, "--tflite-child", str(d / "spec.json")],
                                      capture_output=True, text=True, timeout=timeout_s, env=env)
                rc, tail = proc.returncode, (proc.stderr or "").strip().splitlines()[-1:] or [""]
            except subprocess.TimeoutExpired:
                rc, tail = -9, [f"timed out after {timeout_s:.0f} s"]
            todo = [p for p in todo if not (d / f"{p}.json").exists() and not (d / f"{p}.failed.json").exists()]
            if rc == 0 or not todo:
                break
            attempt = (d / "attempt.txt").read_text() if (d / "attempt.txt").exists() else None
            if attempt is None:  # crashed before any attempt (import or load): nothing to skip
                for p in todo:
                    errors[p] = f"the converter process failed (exit {rc}): {tail[0][:300]}"
                todo = []
                break
            how = f"crashed (signal {-rc})" if rc < 0 else f"failed (exit {rc}): {tail[0][:200]}"
            crash_errors.setdefault(attempt.split("/")[0], []).append(f"{attempt}: converter {how}")
            skip.append(attempt)
            (d / "attempt.txt").unlink()
        for p in precisions:
            if (d / f"{p}.json").exists():
                meta = json.loads((d / f"{p}.json").read_text())
                models[p] = TfliteModel((d / f"{p}.tflite").read_bytes(), p, meta["fixed_batch"], meta["convert_s"],
                                        tuple(meta["notes"]))
            elif p not in errors:
                errs = json.loads((d / f"{p}.failed.json").read_text()) if (d / f"{p}.failed.json").exists() else crash_errors.get(p, [])
                errors[p] = "TFLite conversion failed: " + (" | ".join(errs) or "no attempt succeeded")
    return models, errors


def _tflite_interpreter(content: bytes, threads: int) -> Any:
    quiet_tf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the LiteRT interpreter users run; tf.lite.Interpreter (deprecated) only without it
            from ai_edge_litert.interpreter import Interpreter  # type: ignore
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        return Interpreter(model_content=content, num_threads=int(threads))


def interpreter_kind() -> str:
    """Which interpreter the runners use: ``"ai_edge_litert"`` or ``"tf.lite"``."""
    return "ai_edge_litert" if importlib.util.find_spec("ai_edge_litert") is not None else "tf.lite"


class TfliteRunner:
    """LiteRT (XNNPACK, ``num_threads``) on a model converted from the same Keras model."""

    family = "tflite"

    def __init__(self, model: TfliteModel, build_s: float | None = None):
        self.model = model
        self.precision = model.precision
        self.name = f"tflite:{model.precision}"
        self.artifact = None
        self.artifact_bytes = len(model.content)
        self.deployed = False
        self.threads_apply = True
        self.notes = [f"{interpreter_kind()} Interpreter, input resized to the batch", *model.notes]
        self.build_s = build_s if build_s is not None else model.convert_s
        self._it: Any = None
        self._in_idx = 0
        self._out_idx: list[int] = []
        self._in_dtype: Any = np.float32
        self._threads = 1

    def prepare(self, threads: int) -> None:
        self._threads = threads
        self._it = _tflite_interpreter(self.model.content, threads)
        self._it.allocate_tensors()
        d = self._it.get_input_details()[0]
        self._in_idx = d["index"]
        self._in_dtype = d["dtype"]
        self._out_idx = [o["index"] for o in self._it.get_output_details()]

    def set_batch(self, batch: int) -> str | None:
        if self.model.fixed_batch is not None:
            return None if batch == self.model.fixed_batch else f"converted with a fixed batch of {self.model.fixed_batch} (see notes)"
        d = self._it.get_input_details()[0]
        shape = list(d["shape"])
        shape[0] = batch
        self._it.resize_tensor_input(self._in_idx, shape, strict=True)
        self._it.allocate_tensors()
        return None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        x = next(iter(feeds.values()))
        if x.dtype != self._in_dtype:
            x = x.astype(self._in_dtype)
        it = self._it
        it.set_tensor(self._in_idx, x)
        it.invoke()
        return [it.get_tensor(i) for i in self._out_idx]

    def infer_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``infer`` with the outputs keyed by the interpreter's output names."""
        names = [o["name"] for o in self._it.get_output_details()]
        return dict(zip(names, self.infer(feeds)))

    def close(self) -> None:
        self._it = None


def _available() -> str | None:
    if importlib.util.find_spec("tensorflow") is None and importlib.util.find_spec("ai_edge_litert") is None:
        return "neither tensorflow nor ai-edge-litert is installed (the toolchain extra)"
    return None


def build(ctx: BuildContext) -> list[Any]:
    """Convert the Keras model (fp32, dynamic-range int8, and full-integer int8 calibrated on training rows
    when there are any) and time each."""
    ctx.progress("converting the Keras model to LiteRT (fp32, int8-dynamic, int8) in a child process")
    data = ctx.data
    rep = data.train if data is not None else None
    if data is not None and data.source == "random":
        ctx.warnings.append("TFLite int8 calibrated on random inputs (no run splits available)")
    t0 = time.perf_counter()
    models, errors = convert_tflite(ctx.target.keras_path, PRECISIONS if rep is not None else ("fp32", "int8-dynamic"), rep)
    build_s = time.perf_counter() - t0
    runners: list[Any] = []
    for prec in PRECISIONS:
        if prec in models:
            runners.append(TfliteRunner(models[prec], build_s=build_s))
        elif prec in errors:
            ctx.warnings.append(f"tflite:{prec} unavailable: {errors[prec]}")
    return runners


register(Family(
    name="tflite", label="LiteRT", build=build, available=_available, peer=True, needs_keras=True, order=30,
    references=(Reference("tflite_best", "vs TFLite best", "vs TFLite", "tflite"),),
))


def _main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "--tflite-child":
        return _tflite_child(argv[1])
    sys.stderr.write("usage: --tflite-child SPEC.json (internal, started by convert_tflite); use `seqdeploy bench`\n")
    return 2


__all__ = ["PRECISIONS", "TfliteModel", "TfliteRunner", "convert_tflite", "interpreter_kind"]

if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
