"""Batch scoring of files with a bundle (what ``seqdeploy predict --input`` calls).

* :mod:`seqdeploy.scoring.files` — one CSV / JSONL / NPY file streamed line by
  line into CSV or JSONL; needs only the runtime (numpy + onnxruntime).
* :mod:`seqdeploy.scoring.tables` — Parquet, CSV and JSONL files, directories and
  globs as Arrow record batches; Parquet, CSV or JSONL out, with kept
  (pass-through) columns and skipped bad rows. Needs pyarrow
  (``pip install 'seqdeploy[distributed]'``).
* :mod:`seqdeploy.scoring.ray` — the same scoring on a Ray cluster.

Kept apart from :mod:`seqdeploy.runtime.predictor` so that the embeddable runtime carries
only what an application needs.

    >>> from seqdeploy.scoring import predict_file
    >>> predict_file(Predictor.from_bundle("runs/x"), "rows/", "preds.parquet", keep="all")  # doctest: +SKIP
"""

from seqdeploy.scoring.files import (
    BAD_ROW_MODES,
    PredictFileResult,
    class_names,
    labels_from_proba,
    predict_chunk,
)
from seqdeploy.scoring.predict import predict_file

__all__ = ["BAD_ROW_MODES", "PredictFileResult", "class_names", "labels_from_proba", "predict_chunk", "predict_file"]
