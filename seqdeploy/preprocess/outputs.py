"""Task outputs defined once in numpy (the portable graph's ONNX twin is in :mod:`seqdeploy.bundle.portable`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqdeploy.preprocess.base import Kind

def task_outputs(y: np.ndarray, task: str, labels: Sequence[str] | None, pre: Kind) -> dict[str, np.ndarray]:
    """The portable graph's outputs computed in numpy from the model's first output ``y``.

    Classifiers: ``probabilities`` float32 (n, C) (binary sigmoid: ``[1 - p, p]``),
    ``class_id`` int64 (n,) (binary: ``p >= 0.5``; multiclass: first argmax) and
    ``label`` (n,) strings (``labels[class_id]``, or the id as text without names).
    Regression: ``prediction`` float32 in target units, (n,) for one output unit.
    """
    y = np.asarray(y)
    n = y.shape[0]
    y = y.reshape(n, -1)
    if task == "regression":
        v = pre.postprocess(y.astype(np.float32, copy=False)).astype(np.float32, copy=False)
        return {"prediction": v[:, 0] if v.shape[1] == 1 else v}
    y = y.astype(np.float32, copy=False)
    if y.shape[1] == 1:  # one sigmoid unit = probability of class 1
        p = y[:, 0]
        probs = np.stack([np.float32(1.0) - p, p], axis=1)
        ids = (p >= np.float32(0.5)).astype(np.int64)
    else:
        probs = y
        ids = np.argmax(y, axis=1).astype(np.int64)
    names = np.asarray(class_names(labels, probs.shape[1]), dtype=object)
    return {"probabilities": probs, "class_id": ids, "label": names[ids]}


def class_names(labels: Sequence[str] | None, n_classes: int) -> list[str]:
    """Class names by id: the spec's labels, or the ids as text."""
    if labels is not None and len(labels) == n_classes:
        return [str(v) for v in labels]
    return [str(i) for i in range(n_classes)]
