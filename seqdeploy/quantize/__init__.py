"""Quantize a float32 ONNX model, measure every candidate, keep one only if it wins.

Whether int8 or float16 helps depends on the model (Conv nets gain from static
QDQ and lose with dynamic ConvInteger; wide MatMuls gain from both; LSTMs gain
from dynamic; tiny models lose with every recipe), so seqdeploy *measures*
instead of guessing. Each candidate is built with ``onnxruntime.quantization``
and judged against the float32 model on:

* the task metric on the test split -- the **metric drop** is
  ``accuracy_float32 - accuracy_candidate`` in absolute fractions (0.01 = one
  point) for ``binary``/``multiclass``, and the *relative MAE increase*
  ``(mae_candidate - mae_float32) / mae_float32`` for ``regression`` (0.01 = the
  MAE grew by 1 %; RMSE is reported too). A negative drop is an improvement.
* latency at batch 1 and at a larger batch (default 64), measured in the same
  process with float32 and candidate interleaved round by round; the per-round
  speedups give a median speedup and a noise estimate (their robust spread).

A candidate qualifies only if ``metric_drop <= max_metric_drop`` and at every
latency batch size ``speedup >= 1 + max(min_speedup, noise_multiplier * noise)``.
The fastest qualifying candidate (geometric mean of its speedups) is written as
``model.<recipe>.onnx``; if none qualifies float32 stays the deployment
artifact, which is a normal outcome, not an error.

When a candidate loses too much accuracy, the activations of the float32 and
quantized models are compared tensor by tensor (SQNR, via
``onnxruntime.quantization.qdq_loss_debug``), the layers that add the most noise
are listed, and the recipe is retried once with those nodes left in float32.

    >>> from seqdeploy.quantize import QuantizeSettings, quantize_model
    >>> result = quantize_model("model.onnx", out_dir="runs/x",          # doctest: +SKIP
    ...     calibration_inputs={"x": x_train}, test_inputs={"x": x_test},
    ...     test_targets=y_test, task="multiclass", settings=QuantizeSettings())
    >>> result.chosen                                                    # doctest: +SKIP
    'model.int8-static.onnx'

| module | what |
|---|---|
| ``recipes/`` | one module per recipe (``int8_static``, ``int8_dynamic``, ``int8_qgemm``, ``fp16``) and their registry |
| ``settings`` | ``QuantizeSettings`` and the checks recipe settings share |
| ``gating`` | the task metric and its drop, the interleaved latency comparison, the gate, the choice |
| ``diagnose`` | per-layer quantization noise (SQNR) for the retry |
| ``graph``, ``feeds`` | the float32 model (load, op counts, already-quantized check, pre-processing); input arrays |
| ``core`` | ``quantize_model`` / ``quantize_run``: the whole flow |
| ``results``, ``record`` | the result dataclasses (``quantize.json``) and reading the file back |
"""

from __future__ import annotations

from seqdeploy.quantize.core import build_candidate, plan_recipes, quantize_model, quantize_run
from seqdeploy.quantize.diagnose import diagnose_layers
from seqdeploy.quantize.gating import (
    choose_candidate, compute_metric, gate, measure_latency, metric_drop, metric_drop_definition, metric_name_for,
)
from seqdeploy.quantize.graph import QUANTIZED_OP_TYPES, check_not_quantized, is_quantized_op, op_counts, preprocess
from seqdeploy.layout import QuantizeRecord
from seqdeploy.layout import read_quantize_record as read_record  # the quantize-side name of the record reader
from seqdeploy.quantize.recipes import Recipe, RecipeDoesNotFit, get_recipe, recipe_files  # seqdeploy.quantize.recipes: the registry
from seqdeploy.quantize.recipes.fp16 import Float16Settings
from seqdeploy.quantize.recipes.int8_dynamic import DynamicInt8Settings
from seqdeploy.quantize.recipes.int8_qgemm import QGemmInt8Settings
from seqdeploy.quantize.recipes.int8_static import StaticInt8Settings
from seqdeploy.quantize.results import (
    Candidate, Float32Report, LatencyComparison, LayerDiagnosis, MetricReport, QuantizeResult, RecipeSettings,
    SkippedRecipe,
)
from seqdeploy.quantize.settings import (
    CALIBRATION_METHODS, QUANT_TYPES, TASKS, QuantizeSettings, default_activation_type, default_pad_input_channels, default_reduce_range, modes,
)

#: recipe name -> artifact file name (the naming rule of seqdeploy.precision)
RECIPE_FILES: dict[str, str] = recipe_files()
MODES: tuple[str, ...] = modes()

__all__ = [
    "CALIBRATION_METHODS", "Candidate", "DynamicInt8Settings", "Float16Settings", "Float32Report", "LatencyComparison",
    "LayerDiagnosis", "MODES", "MetricReport", "QUANTIZED_OP_TYPES", "QUANT_TYPES", "QuantizeRecord", "QuantizeResult",
    "QGemmInt8Settings", "QuantizeSettings", "RECIPE_FILES", "Recipe", "RecipeDoesNotFit", "RecipeSettings", "SkippedRecipe", "StaticInt8Settings", "TASKS",
    "build_candidate", "check_not_quantized", "choose_candidate", "compute_metric", "default_activation_type", "default_pad_input_channels", "default_reduce_range",
    "diagnose_layers", "gate", "get_recipe", "is_quantized_op", "measure_latency", "metric_drop",
    "metric_drop_definition", "metric_name_for", "modes", "op_counts", "plan_recipes", "preprocess",
    "quantize_model", "quantize_run", "read_record", "recipe_files",
]
