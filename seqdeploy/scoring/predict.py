"""``seqdeploy predict --input``: send each input to the scoring that reads it.

Image folders and text / categorical columns go to :mod:`seqdeploy.scoring.byo`; single CSV / JSONL / NPY
files written as CSV or JSONL to :mod:`seqdeploy.scoring.files` (runtime only); everything else (Parquet,
directories, globs, kept columns, skipped rows) to :mod:`seqdeploy.scoring.tables` (pyarrow).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqdeploy.errors import UsageError
from seqdeploy.runtime.predictor import DEFAULT_BATCH_SIZE, Predictor
from seqdeploy.scoring.files import BAD_ROW_MODES, PredictFileResult, predict_simple_file


def predict_file(
    predictor: "Predictor",
    input_path: str | os.PathLike,
    output: str | os.PathLike | Any | None = None,
    batch_size: int | None = None,
    progress: Any = None,
    *,
    keep: str | Sequence[str] | None = None,
    on_bad_row: str = "fail",
    overwrite: bool = False,
) -> PredictFileResult:
    """Score files in chunks and write the predictions; memory stays flat.

    ``input_path`` is a file (``.csv``, ``.jsonl``, ``.npy``, ``.parquet``), a
    directory of such files or a glob. ``output`` is a path (``.csv``,
    ``.jsonl``, ``.parquet`` or a directory of Parquet parts, written so that an
    interrupted run leaves nothing that looks complete) or a text stream (CSV).
    ``keep`` names input columns copied beside the predictions (``"all"`` for
    every column). ``on_bad_row="skip"`` sets rows that cannot be scored aside
    (file, row, reason) instead of stopping at the first. An existing output is
    refused unless ``overwrite``. ``progress(done, total)`` is called after each
    chunk (bytes for CSV/JSONL, rows otherwise; total may be None).

    >>> predict_file(Predictor.from_bundle("runs/x"), "data.csv", "preds.jsonl")  # doctest: +SKIP
    """
    if on_bad_row not in BAD_ROW_MODES:
        raise UsageError(f"on_bad_row = {on_bad_row!r} (expected one of {list(BAD_ROW_MODES)})")
    bs = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise UsageError(f"batch size {batch_size!r} (expected an integer >= 1)")
    from seqdeploy.scoring.byo import handles, predict_byo  # image folders, text and categorical columns

    if handles(predictor, input_path):
        return predict_byo(predictor, input_path, output, bs, progress, keep=keep, on_bad_row=on_bad_row,
                           overwrite=overwrite)
    src = Path(input_path)
    out_is_path = output is not None and isinstance(output, (str, os.PathLike))
    simple_in = src.is_file() and src.suffix.lower() in (".csv", ".npy", ".jsonl", ".ndjson")
    simple_out = output is None or (not out_is_path) or Path(output).suffix.lower() in (".csv", ".jsonl", ".ndjson")
    if simple_in and simple_out and not keep and on_bad_row == "fail":
        if out_is_path and not overwrite and Path(output).exists():  # type: ignore[arg-type]
            raise UsageError(f"output {output} already exists (expected a new path); choose another output path "
                             f"or allow overwriting it")
        return predict_simple_file(predictor, src, output, bs, progress)
    if src.is_file() and src.suffix.lower() == ".npy":
        raise UsageError(f"input {src} is a .npy array, scored with output {output} (expected .csv or .jsonl "
                         f"output, no kept columns, no skipping for arrays); for Parquet output or kept columns "
                         f"convert the array to a Parquet or CSV table first")
    try:
        from seqdeploy.scoring.tables import predict_tables
    except ModuleNotFoundError as exc:
        if exc.name != "pyarrow":
            raise
        raise UsageError("Parquet, directories, globs, kept columns and skipped rows need pyarrow, which is not "
                         "installed; install it with: pip install 'seqdeploy[distributed]'") from None

    return predict_tables(predictor, input_path, output, batch_size=bs, keep=keep, on_bad_row=on_bad_row,
                          overwrite=overwrite, progress=progress)
