"""The one preprocessing definition: raw inputs -> model inputs, model outputs -> answers.

Every preprocessing *kind* (``standardize``, ``scale``, ``window``, ``tokenize``,
``none``, ``categorical``) is one frozen dataclass registered in :data:`KINDS`. Each kind has

* ``fit(...)`` (classmethod): the record, from training data only;
* ``to_record()`` / ``from_record(d)``: the JSON record in ``train.json`` and
  ``manifest.json`` (validated on the way in);
* ``coerce(raw)``: what a user hands in (lists of dicts, DataFrames, arrays,
  strings) -> the canonical raw array the portable ONNX graph takes, or an
  :class:`~seqdeploy.errors.InputValidationError` saying what was expected;
* ``apply(raw)``: the canonical raw array -> the model-ready array (numpy);
* ``postprocess(y)``: model output -> target units (window de-normalisation);
* ``to_onnx(g, ...)`` / ``postprocess_onnx(g, ...)``: the same computation as
  ONNX nodes, used by :mod:`seqdeploy.bundle.portable` to build the deployment graph.

Arithmetic is float32 throughout, in the order the ONNX nodes compute it, so
``apply`` and the ONNX graph agree bit for bit (held by property tests).

Task outputs (probabilities, class ids, labels, values) are defined once too:
:func:`task_outputs` (numpy) and :mod:`seqdeploy.bundle.portable` (ONNX).

This module imports numpy only; ONNX nodes are made through the builder that
:mod:`seqdeploy.bundle.portable` passes in.

    >>> k = from_record({"kind": "window", "window": 3, "mean": 1.0, "std": 2.0})
    >>> k.apply(np.array([[1.0, 3.0, 5.0]], np.float32))[0, :, 0].tolist()
    [0.0, 1.0, 2.0]
"""

from __future__ import annotations

from seqdeploy.preprocess.base import KINDS, Kind, from_record, register
from seqdeploy.preprocess.checks import (  # noqa: F401  (shared with the runtime)
    check_finite, check_nonempty, fmt_shape, numeric_array, shape_ok, short_list,
)
# registered in this order (the order error messages list them in)
from seqdeploy.preprocess.tabular import Standardize  # noqa: I001
from seqdeploy.preprocess.images import Scale
from seqdeploy.preprocess.series import Window
from seqdeploy.preprocess.text import OOV, OOV_ID, PAD, PAD_ID, TOKEN_PATTERN, Tokenize
from seqdeploy.preprocess.none import NoPreprocessing
from seqdeploy.preprocess.categorical import Categorical
from seqdeploy.preprocess.outputs import class_names, task_outputs

Preprocessing = Kind

__all__ = ["KINDS", "Kind", "Preprocessing", "from_record", "register", "Standardize", "Scale", "Window",
           "Tokenize", "NoPreprocessing", "Categorical", "task_outputs", "class_names", "PAD", "OOV", "PAD_ID", "OOV_ID",
           "TOKEN_PATTERN"]
