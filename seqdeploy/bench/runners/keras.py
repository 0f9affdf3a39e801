"""Keras runners: ``keras:direct`` times ``np.asarray(model(x, training=False))``, ``keras:predict``
times ``model.predict``. The model is loaded once (timed) by a :class:`KerasSource`; verify uses the
same runner on a model it already holds."""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seqdeploy.bench.runners import BuildContext, Family, Reference, register
from seqdeploy.errors import BenchError

MODES = ("direct", "predict")


def quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")


def load_keras(path: str | os.PathLike) -> Any:
    """Load a Keras model through ``seqdeploy.export.convert.load_keras_model`` when it exists."""
    quiet_tf()
    try:
        export = importlib.import_module("seqdeploy.export.convert")
        loader = getattr(export, "load_keras_model", None)
    except ImportError:
        loader = None
    if loader is not None:
        return loader(path)
    import keras

    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        from seqdeploy.errors import ModelLoadError

        raise ModelLoadError(f"{path}: cannot load the Keras model ({type(exc).__name__}: {exc}); "
                             "expected a .keras file written by `seqdeploy train`") from exc


class KerasSource:
    """Loads the Keras model once (timed) for every runner that needs it; or holds a loaded ``model``."""

    def __init__(self, path: str | os.PathLike | None = None, model: Any = None):
        if path is None and model is None:
            raise BenchError("KerasSource received neither a path nor a model (expected one of them)")
        self.path = Path(path) if path is not None else None
        self._model: Any = model
        self.load_s: float | None = None if model is None else 0.0

    def model(self) -> Any:
        if self._model is None:
            quiet_tf()
            import keras  # noqa: F401  (import time is not model load time)

            t0 = time.perf_counter()
            self._model = load_keras(self.path)  # type: ignore[arg-type]
            self.load_s = time.perf_counter() - t0
        return self._model


class KerasRunner:
    """Keras: ``mode="direct"`` times ``np.asarray(model(x, training=False))``, ``"predict"`` times ``model.predict``.

    ``input_names`` orders the feeds of multi-input models; ``output_names`` names the outputs of
    ``infer_named`` (default ``output_0``, ``output_1``, ...).
    """

    family = "keras"
    precision = "fp32"

    def __init__(self, source: KerasSource | Any, mode: str = "direct", *, input_names: Sequence[str] | None = None,
                 output_names: Sequence[str] | None = None):
        if mode not in MODES:
            raise BenchError(f"Keras runner mode {mode!r} (expected 'direct' or 'predict')")
        self.source = source if isinstance(source, KerasSource) else KerasSource(model=source)
        self.mode = mode
        self.name = f"keras:{mode}"
        path = self.source.path
        self.artifact = str(path) if path is not None else None
        self.artifact_bytes = path.stat().st_size if path is not None and path.exists() else None
        self.deployed = False
        self.threads_apply = False
        self.notes: list[str] = ["TensorFlow's thread pools are fixed per process: the threads setting does not apply"]
        self.input_names = list(input_names) if input_names is not None else None
        self.output_names = list(output_names) if output_names is not None else None
        self._batch = 1

    def prepare(self, threads: int) -> None:
        self.source.model()

    def set_batch(self, batch: int) -> str | None:
        self._batch = batch
        return None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        model = self.source.model()
        x = keras_call_inputs(model, feeds, self.input_names)
        if self.mode == "predict":
            out = model.predict(x, batch_size=self._batch, verbose=0)
        else:
            out = model(x, training=False)
        if isinstance(out, (list, tuple, dict)):  # dict outputs: the keys' flattened order, as the ONNX outputs
            import keras

            return [np.asarray(o) for o in keras.tree.flatten(out)]
        return [np.asarray(out)]

    def infer_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``infer`` with the outputs keyed by ``output_names``."""
        outs = self.infer(feeds)
        names = self.output_names or [f"output_{i}" for i in range(len(outs))]
        return dict(zip(names, outs))

    def close(self) -> None:
        pass


def _available() -> str | None:
    return None if importlib.util.find_spec("keras") is not None else "keras is not installed (the toolchain extra)"


def build(ctx: BuildContext) -> list[Any]:
    src = KerasSource(ctx.target.keras_path)
    return [KerasRunner(src, "direct"), KerasRunner(src, "predict")]


register(Family(
    name="keras", label="Keras", build=build, available=_available, peer=True, needs_keras=True, order=20,
    references=(Reference("keras_direct", "vs Keras direct", "vs Keras", "keras", runner="keras:direct"),),
))

__all__ = ["KerasRunner", "KerasSource", "load_keras", "quiet_tf"]



def keras_call_inputs(model: Any, feeds: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> Any:
    """What ``model(...)`` takes for ``feeds`` keyed by input name: a dict for dict-input Functional models (a
    FeatureSpace), else one array or a list in ``names`` order (default: the feeds' order)."""
    try:
        struct = model.input
    except (AttributeError, ValueError):
        struct = None
    if isinstance(struct, dict):
        return {k: feeds[t.name] if getattr(t, "name", None) in feeds else feeds[k] for k, t in struct.items()}
    xs = [feeds[n] for n in names] if names is not None else list(feeds.values())
    return xs[0] if len(xs) == 1 else xs
