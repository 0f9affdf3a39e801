"""OpenVINO runners: the bundle's float32 ONNX compiled for the CPU with the LATENCY performance hint and
the column's thread count, reshaped to a static batch (one compiled model per batch size, as a
latency-minded OpenVINO user deploys it)."""

from __future__ import annotations

import importlib.util
import time
from typing import Any, Mapping, Sequence

import numpy as np

from seqdeploy.bench.runners import BuildContext, Family, Reference, register
from seqdeploy.errors import BenchError


class OpenvinoRunner:
    """OpenVINO CPU plugin on an ONNX file: ``PERFORMANCE_HINT=LATENCY``, ``INFERENCE_NUM_THREADS=threads``,
    float32 inference precision, the input reshaped to the batch.

    >>> r = OpenvinoRunner("runs/x/model.onnx"); r.prepare(1); r.set_batch(1)   # doctest: +SKIP
    >>> r.infer({"features": x})                                                # doctest: +SKIP
    """

    family = "openvino"

    def __init__(self, path: Any, precision: str = "fp32", *, name: str | None = None):
        from pathlib import Path

        self.path = Path(path)
        self.precision = precision
        self.name = name or f"openvino:{precision}"
        self.artifact = str(self.path)
        self.artifact_bytes = self.path.stat().st_size if self.path.exists() else None
        self.deployed = False
        self.threads_apply = True
        self.notes: list[str] = []
        self.build_s: float | None = None
        self._core: Any = None
        self._model: Any = None
        self._threads = 1
        self._compiled: dict[int, Any] = {}
        self._req: Any = None
        self._in_names: list[str] = []
        self._in_dtypes: list[Any] = []
        self._n_out = 0

    def prepare(self, threads: int) -> None:
        import openvino as ov

        self.close()
        t0 = time.perf_counter()
        self._core = ov.Core()
        self._model = self._core.read_model(str(self.path))
        self.build_s = time.perf_counter() - t0
        self._threads = int(threads)
        self._in_names = [p.get_any_name() for p in self._model.inputs]
        self._in_dtypes = [p.get_element_type().to_dtype() for p in self._model.inputs]
        self._n_out = len(self._model.outputs)
        note = (f"OpenVINO {ov.get_version().split('-')[0]} CPU: LATENCY hint, {threads} inference thread(s), "
                "f32 inference precision, static shape per batch")
        if note not in self.notes:
            self.notes.append(note)

    def _compile(self, batch: int) -> Any:
        import openvino as ov

        model = self._model.clone()
        shapes = {}
        for p in model.inputs:
            ps = p.get_partial_shape()
            dims = [batch] + [d.get_length() if d.is_static else -1 for d in list(ps)[1:]]
            if any(d < 0 for d in dims):
                raise BenchError(f"{self.path.name}: input {p.get_any_name()!r} has a dynamic non-batch axis ({ps}); "
                                 "expected only the batch axis to be dynamic")
            shapes[p] = ov.PartialShape(dims)
        model.reshape(shapes)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self._threads,
                  "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}
        return self._core.compile_model(model, "CPU", config)

    def set_batch(self, batch: int) -> str | None:
        if batch not in self._compiled:
            self._compiled[batch] = self._compile(batch)
        self._req = self._compiled[batch].create_infer_request()
        return None

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        req = self._req
        if len(self._in_names) == 1 and len(feeds) == 1:
            xs = [next(iter(feeds.values()))]
        else:
            try:
                xs = [feeds[n] for n in self._in_names]
            except KeyError:
                raise BenchError(f"{self.path.name}: feeds {sorted(feeds)} do not name the inputs {self._in_names}") from None
        xs = [x if x.dtype == d else x.astype(d) for x, d in zip(xs, self._in_dtypes)]
        req.infer(xs, share_inputs=True)
        return [req.get_output_tensor(i).data.copy() for i in range(self._n_out)]

    def infer_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``infer`` with the outputs keyed by their graph names."""
        names = [p.get_any_name() for p in self._model.outputs]
        return dict(zip(names, self.infer(feeds)))

    def close(self) -> None:
        self._req = None
        self._compiled = {}
        self._model = None
        self._core = None


def _available() -> str | None:
    return None if importlib.util.find_spec("openvino") is not None else "openvino is not installed (the peers extra)"


def build(ctx: BuildContext) -> list[Any]:
    """One runner on the target's float32 ONNX artifact."""
    fp32 = [path for precision, path in ctx.target.artifacts if precision == "fp32"]
    if not fp32:
        ctx.warnings.append("openvino:fp32 unavailable: the target has no float32 ONNX artifact")
        return []
    return [OpenvinoRunner(fp32[0])]


register(Family(
    name="openvino", label="OpenVINO", build=build, available=_available, peer=True, order=40,
    references=(Reference("openvino_best", "vs OpenVINO best", "vs OpenVINO", "openvino"),),
))

__all__ = ["OpenvinoRunner"]
