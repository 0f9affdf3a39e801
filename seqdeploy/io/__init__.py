"""Reading tables: one home for the CSV, JSONL and Parquet readers that training (:mod:`seqdeploy.data`) and
batch scoring (:mod:`seqdeploy.scoring`) share.

* :mod:`seqdeploy.io.text` — CSV and JSONL read line by line with the standard library (no pyarrow), with the
  line number and byte count of every row; a bad byte, a malformed line or a line that is not a JSON object is
  a :class:`~seqdeploy.io.text.BadInput` naming the file and line (callers word it for their context).
* :mod:`seqdeploy.io.inputs` — which files an input names (a file, a directory, a glob).
* :mod:`seqdeploy.io.arrow` — Arrow record batches from Parquet / CSV / JSONL (needs pyarrow, the
  ``distributed`` extra); only imported by the code paths that need it.

Importing this package imports neither pyarrow nor TensorFlow.
"""

from seqdeploy.io.inputs import INPUT_FORMATS, InputFile, resolve_inputs
from seqdeploy.io.text import BadInput, CsvRows, JsonlRows, Lines

__all__ = ["INPUT_FORMATS", "BadInput", "CsvRows", "InputFile", "JsonlRows", "Lines", "resolve_inputs"]
