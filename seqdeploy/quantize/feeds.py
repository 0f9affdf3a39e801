"""Feeds: checking model-ready input arrays against the model, slicing, batching, calibration readers."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from seqdeploy.errors import QuantizeError


def n_rows(feeds: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0]) if feeds else 0


def slice_rows(feeds: Mapping[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}


def check_feeds(kind: str, feeds: Mapping[str, np.ndarray] | None, model_inputs: dict[str, int], fix: str) -> dict[str, np.ndarray]:
    if feeds is None or not len(feeds):
        raise QuantizeError(f"no {kind} data (received {feeds!r}); expected a dict {{input name: array}} for inputs {sorted(model_inputs)}; {fix}")
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    if set(feeds) != set(model_inputs):
        raise QuantizeError(f"{kind} inputs {sorted(feeds)} do not match the model inputs {sorted(model_inputs)}; key the arrays by the model's input names")
    rows = {k: (v.shape[0] if v.ndim else 0) for k, v in feeds.items()}
    if len(set(rows.values())) != 1 or min(rows.values()) == 0:
        raise QuantizeError(f"{kind} data has rows {rows} (expected the same non-zero number of rows for every input); {fix}")
    out = {}
    for k, v in feeds.items():
        want = model_inputs[k]
        if v.dtype != np_dtype(want):
            v = v.astype(np_dtype(want))
        if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
            raise QuantizeError(f"{kind} data for input {k!r} holds NaN or inf values (expected finite numbers); clean the data")
        out[k] = v
    return out


def np_dtype(onnx_elem_type: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(onnx_elem_type)


def run_batched(sess, feeds: Mapping[str, np.ndarray], batch: int = 256) -> np.ndarray:
    out_name = sess.get_outputs()[0].name
    n = n_rows(feeds)
    parts = [sess.run([out_name], slice_rows(feeds, slice(i, i + batch)))[0] for i in range(0, n, batch)]
    return np.concatenate(parts, axis=0)


class ArrayReader:
    """A CalibrationDataReader over in-memory arrays: ``get_next()`` returns a feed dict or None."""

    def __init__(self, feeds: Mapping[str, np.ndarray], batch_size: int):
        self._feeds = feeds
        self._batch = batch_size
        self.rewind()

    def rewind(self) -> None:
        n = n_rows(self._feeds)
        self._iter = iter([slice_rows(self._feeds, slice(i, i + self._batch)) for i in range(0, n, self._batch)])

    def get_next(self):
        return next(self._iter, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def calibration_reader(feeds: Mapping[str, np.ndarray], batch_size: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(ArrayReader, CalibrationDataReader):
        pass

    return Reader(feeds, batch_size)


def subset(feeds: Mapping[str, np.ndarray], k: int, seed: int) -> dict[str, np.ndarray]:
    n = n_rows(feeds)
    if n <= k:
        return dict(feeds)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    return slice_rows(feeds, idx)


def static_calibration(settings: Any, calibration: Mapping[str, np.ndarray], seed: int) -> dict[str, Any]:
    """``quantize_static``'s calibration arguments from a static recipe's settings (``calibration_method``,
    ``calibration_samples``, ``calibration_batch_size``, ``percentile``): the reader over a seeded row subset,
    the method, and the percentile option."""
    from onnxruntime.quantization import CalibrationMethod

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration_method]
    extra = {"CalibPercentile": float(settings.percentile)} if settings.calibration_method == "percentile" else None
    rows = subset(calibration, settings.calibration_samples, seed)
    return {"calibration_data_reader": calibration_reader(rows, settings.calibration_batch_size),
            "calibrate_method": method, "extra_options": extra}


def latency_feed(feeds: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    n = n_rows(feeds)
    idx = np.arange(batch_size) % n
    return slice_rows(feeds, idx)


__all__ = ["ArrayReader", "calibration_reader", "check_feeds", "latency_feed", "n_rows", "run_batched", "slice_rows", "subset"]
