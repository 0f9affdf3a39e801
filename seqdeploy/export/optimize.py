"""Graph cleanup after export: exact rewrites that leave onnxruntime less to do per call.

Each pass (in :mod:`seqdeploy.export.rewrites`) is a function of the ``ModelProto`` (changed in place)
returning how many rewrites it made;
:data:`PASSES` lists them in order. :func:`optimize_graph` (an entry of
``seqdeploy.export.fixes.GRAPH_FIXES``) runs them and keeps the result only when it answers like the
exported graph on probe inputs (max |diff| <= ``EXACT_RTOL`` x output scale): a pass that would change
an answer, or fails, leaves the graph as it was. The cleaned graph is then timed against the exported one
at batch 1 (interleaved, as the runtime loads them) and dropped if it is more than ``SLOWER_MARGIN``
slower; the report (``export.json`` ``graph_cleanup``) carries both times.

* :func:`fold_static_shapes` -- tf2onnx rebuilds static shapes at run time (``Shape -> Gather -> Concat
  -> Reshape``) wherever Keras used ``tf.shape``. When only the batch axis is dynamic, every such value
  is found by running the graph at two batch sizes: values that do not change become constants, and a
  Reshape target that changes in exactly one position becomes a constant with ``-1`` there.
* :func:`native_conv1d` -- Keras Conv1D arrives as ``Unsqueeze -> Conv(1 x k) -> Squeeze``; a 1-D Conv
  on the 3-D tensor is the same arithmetic without the copies, and lets onnxruntime fuse what follows.
* :func:`fold_conv_affine` -- a per-output-channel ``Add``/``Mul`` after a Conv (bias, BatchNorm in
  inference form) folded into the Conv's weights and bias.
* :func:`drop_tensordot_reshapes` -- TF's Dense on a 3-D tensor flattens to 2-D around its MatMul; the
  MatMul broadcasts over the leading axes without the two Reshapes.
* :func:`collapse_transposes` -- tf2onnx lowers Keras MultiHeadAttention's einsums to ``Transpose ->
  Reshape -> Transpose`` chains; where one Transpose + Reshape does the same and keeps rows contiguous
  (the attention's value path), the chain becomes that.
* :func:`hoist_scalar_mul` -- the attention scale (a scalar Mul behind Reshape/Squeeze) moved next to its
  MatMul, where onnxruntime folds it into the MatMul.
* :func:`fuse_layer_norm` -- TF's LayerNormalization (mean, squared difference, variance, rsqrt, scale,
  shift: 12 nodes) as one ``LayerNormalization`` (opset >= 17).
* :func:`fuse_attention`, :func:`native_gather_index`, :func:`residual_sum` (in
  :mod:`seqdeploy.export.rewrites_fuse`) -- unmasked self-attention as ``com.microsoft.Attention``, Embedding's
  negative-id wrap dropped (Gather wraps itself), and ``Add -> LayerNormalization`` kept out of onnxruntime's
  slower ``SkipLayerNormalization``.
* :func:`rows_as_2d`, :func:`residual_into_gemm`, :func:`mean_as_matmul`, :func:`attention_per_sample` (in
  :mod:`seqdeploy.export.rewrites_block`) -- a Transformer block's row-wise ops on ``[batch * seq, C]`` so each
  Dense is a ``Gemm`` with bias/ReLU, the residual Adds read by those Gemms (bias moved into the residual's
  source), GlobalAveragePooling1D as a MatMul, and, above batch 1, a large Attention run one sample at a time in a
  ``Scan`` so its scores stay in cache.
* :func:`fold_input_scale`, :func:`drop_repeated_relu`, :func:`single_channel_transpose` (in
  :mod:`seqdeploy.export.rewrites_conv`) -- Keras Rescaling folded into the first Conv's weights,
  ``Relu(Relu(x))`` as one Relu, a one-channel input's Reshape chain to its Conv as one Transpose.

Measured on benchmarks/real_zoo.py's models (see benchmarks/REAL_ZOO.md). Tried and not kept:
onnxruntime's transformer optimizer (``onnxruntime.transformers.optimizer``, model types ``bert`` and
``bert_tf``) fused nothing in tf2onnx's Keras MultiHeadAttention/LayerNormalization graphs; onnxslim
and onnxscript's optimizer removed nothing more once these passes had run (onnxslim alone folded part
of the Transformer's shape arithmetic, 127 -> 105 nodes; onnxscript 0), and onnxruntime itself already
folds a BatchNorm that directly follows a 2-D Conv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

EXACT_RTOL = 1e-5  # an optimized graph must answer within this fraction of the output scale
#: the batch-1 timing of exported vs cleaned graph (both sides together, interleaved), seconds; the environment
#: variable SEQDEPLOY_CLEANUP_CHECK_S overrides it (0: keep every exact cleanup untimed, as the test suite does)
SPEED_CHECK_S = float(os.environ.get("SEQDEPLOY_CLEANUP_CHECK_S", "0.15"))
SLOWER_MARGIN = 0.10  # the cleaned graph is dropped when its batch-1 p50 is more than this fraction slower


@dataclass(frozen=True)
class OptimizeReport:
    """What :func:`optimize_model` did: rewrites per pass, nodes before/after, the check, or why it kept the input."""

    applied: dict[str, int]
    nodes_before: int
    nodes_after: int
    max_abs_diff: float | None
    kept_original: str | None = None
    us_before: float | None = None  # batch-1 p50 of the exported graph (onnxruntime defaults, 1 thread)
    us_after: float | None = None  # batch-1 p50 of the cleaned graph, timed interleaved with it

    def summary(self) -> dict:
        """As ``export.json`` records it (``graph_cleanup``): nodes before/after, the rewrites each pass made, the
        largest answer difference, both batch-1 times and why the exported graph was kept (None: it was not)."""
        return {
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "rewrites": {name: n for name, n in self.applied.items() if n},
            "max_abs_diff": self.max_abs_diff,
            "batch1_us_exported": None if self.us_before is None else round(self.us_before, 2),
            "batch1_us_cleaned": None if self.us_after is None else round(self.us_after, 2),
            "kept_exported_graph": self.kept_original,
        }


from seqdeploy.export.rewrites import PROBE_BATCHES, fold_conv_affine, fold_static_shapes, native_conv1d, probe_feeds, probe_session
from seqdeploy.export.rewrites_attention import collapse_transposes, drop_tensordot_reshapes, fuse_layer_norm, hoist_scalar_mul
from seqdeploy.export.rewrites_block import attention_per_sample, mean_as_matmul, residual_into_gemm, rows_as_2d
from seqdeploy.export.rewrites_conv import drop_repeated_relu, fold_input_scale, single_channel_transpose
from seqdeploy.export.rewrites_fuse import fuse_attention, native_gather_index, residual_sum


#: the passes :func:`optimize_graph` runs, in this order (name, function of the ModelProto -> rewrites made)
PASSES: tuple[tuple[str, Callable[[Any], int]], ...] = (
    ("fold_static_shapes", fold_static_shapes),
    ("native_conv1d", native_conv1d),
    ("fold_conv_affine", fold_conv_affine),
    ("fuse_layer_norm", fuse_layer_norm),
    ("drop_tensordot_reshapes", drop_tensordot_reshapes),
    ("collapse_transposes", collapse_transposes),
    ("hoist_scalar_mul", hoist_scalar_mul),
    ("fuse_attention", fuse_attention),
    ("native_gather_index", native_gather_index),
    ("residual_sum", residual_sum),
    ("rows_as_2d", rows_as_2d),
    ("residual_into_gemm", residual_into_gemm),
    ("mean_as_matmul", mean_as_matmul),
    ("attention_per_sample", attention_per_sample),
    ("fold_input_scale", fold_input_scale),
    ("drop_repeated_relu", drop_repeated_relu),
    ("single_channel_transpose", single_channel_transpose),
)


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    diff, scale = 0.0, 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            return float("inf"), 0.0
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":  # strings (an inverted lookup): equal or not
            if not np.array_equal(x, y):
                return float("inf"), 0.0
            continue
        x, y = x.astype(np.float64), y.astype(np.float64)
        if x.size:
            diff = max(diff, float(np.nanmax(np.abs(x - y))) if np.isfinite(y).all() == np.isfinite(x).all() else float("inf"))
            scale = max(scale, float(np.nanmax(np.abs(x))))
    return diff, scale


def optimize_model(model, passes: tuple[tuple[str, Callable[[Any], int]], ...] = PASSES, *,
                   speed_check_s: float | None = None) -> tuple[Any, OptimizeReport]:
    """Run ``passes`` on a copy of ``model``; return (the optimized copy, or ``model`` itself when the result
    does not answer like it or measures more than ``SLOWER_MARGIN`` slower at batch 1, and the report).
    ``speed_check_s`` is the timing budget of that comparison (default :data:`SPEED_CHECK_S`; 0: no timing).

    >>> opt, report = optimize_model(proto)   # doctest: +SKIP
    >>> report.applied                        # doctest: +SKIP
    {'fold_static_shapes': 0, 'native_conv1d': 3, 'fold_conv_affine': 9, 'fuse_layer_norm': 0}
    """
    import onnx

    before = len(model.graph.node)
    feeds = probe_feeds(model, PROBE_BATCHES[-1], seed=1)
    if feeds is None:
        return model, OptimizeReport({}, before, before, None, "an input has a dynamic axis besides the batch")
    try:
        ref = probe_session(model).run(None, feeds)
    except Exception as exc:  # nothing to compare against: leave the graph alone
        return model, OptimizeReport({}, before, before, None, f"onnxruntime cannot run the graph ({type(exc).__name__})")
    opt = onnx.ModelProto()
    opt.CopyFrom(model)
    applied: dict[str, int] = {}
    for name, fn in passes:
        trial = onnx.ModelProto()
        trial.CopyFrom(opt)
        try:
            n = fn(trial)
            if n:
                got = probe_session(trial).run(None, feeds)
                diff, scale = _max_diff(ref, got)
                if not diff <= EXACT_RTOL * max(scale, 1e-6):
                    applied[name] = 0
                    continue
                opt = trial
        except Exception:  # a pass that cannot handle this graph: skip it, keep the rest
            applied[name] = 0
            continue
        applied[name] = n
    got = probe_session(opt).run(None, feeds)
    diff, scale = _max_diff(ref, got)
    if not diff <= EXACT_RTOL * max(scale, 1e-6):
        return model, OptimizeReport(applied, before, before, diff, "the optimized graph answered differently")
    speed_check_s = SPEED_CHECK_S if speed_check_s is None else speed_check_s
    if not any(applied.values()) or speed_check_s <= 0:
        return opt, OptimizeReport(applied, before, len(opt.graph.node), diff)
    try:
        us_before, us_after = time_batch1(model, opt, probe_feeds(model, 1, seed=2), speed_check_s)
    except Exception:  # the timing itself failed (e.g. a session option): the exact graph is kept, untimed
        return opt, OptimizeReport(applied, before, len(opt.graph.node), diff)
    if us_after > us_before * (1.0 + SLOWER_MARGIN):
        return model, OptimizeReport(applied, before, before, diff,
                                     f"the cleaned graph measured slower at batch 1 ({us_after:.1f} us vs {us_before:.1f} us)",
                                     us_before, us_after)
    return opt, OptimizeReport(applied, before, len(opt.graph.node), diff, None, us_before, us_after)


def time_batch1(original, optimized, feeds: dict[str, np.ndarray], budget_s: float) -> tuple[float, float]:
    """Batch-1 p50 (microseconds) of ``original`` and ``optimized`` as the runtime loads them (onnxruntime's
    default graph optimizations, 1 thread), timed in interleaved slices (A B, B A, ...) for ``budget_s``."""
    import statistics

    from seqdeploy.bench.timing import StopRule, run_interleaved
    from seqdeploy.runtime.session import SessionSettings, make_session

    calls = []
    for m in (original, optimized):
        sess = make_session(m.SerializeToString(), SessionSettings(threads=1), wrap_errors=False)
        sess.run(None, feeds)
        calls.append(lambda s=sess: s.run(None, feeds))
    rule = StopRule(duration_s=budget_s, warmup_s=0.0, slice_s=min(0.005, budget_s / 20), min_samples=5,
                    alternate=True)
    a, b = run_interleaved(calls, rule)
    return statistics.median(a) * 1e6, statistics.median(b) * 1e6


def optimize_graph(model) -> OptimizeReport:
    """``GRAPH_FIXES`` entry: replace ``model``'s graph by :func:`optimize_model`'s result (in place); return the report."""
    opt, report = optimize_model(model)
    if opt is not model and report.kept_original is None:
        model.CopyFrom(opt)
    return report


__all__ = ["EXACT_RTOL", "OptimizeReport", "PASSES", "SLOWER_MARGIN", "SPEED_CHECK_S", "optimize_graph", "optimize_model",
           "time_batch1"]
