"""Reading ``quantize.json`` back: which candidate files were kept and which one was chosen.

The reader lives with the run directory's layout (:func:`seqdeploy.layout.read_quantize_record`), so the
bundle, bench and the pipeline read the record without importing the quantizer; these are its names
on the quantize side.

    >>> read_record("runs/digits_mlp").chosen     # doctest: +SKIP
    'model.int8-static.onnx'
"""

from __future__ import annotations

from seqdeploy.layout import QUANTIZE_FILE as RECORD_NAME
from seqdeploy.layout import QuantizeRecord
from seqdeploy.layout import read_quantize_record as read_record

__all__ = ["QuantizeRecord", "RECORD_NAME", "read_record"]
