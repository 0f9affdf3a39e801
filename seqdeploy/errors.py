"""The one exception tree of seqdeploy.

Every error a user can cause is a :class:`SeqdeployError`; the CLI maps it to a
one-line message and an exit code (2 for bad input, 1 for a failed check).
Each class also subclasses the builtin it most resembles, so library callers
can catch ``ValueError`` / ``FileNotFoundError`` as they would anyway.

Messages say what was received, what was expected and how to fix it::

    raise SpecError("models/x.toml: [fit] epochs = -1 (expected an integer >= 1); "
                    "set epochs to a positive number")
"""

from __future__ import annotations


class SeqdeployError(Exception):
    """Base of every error seqdeploy raises on purpose."""

    exit_code = 2


class UsageError(SeqdeployError, ValueError):
    """Command-line arguments that do not fit together."""


class SpecError(SeqdeployError, ValueError):
    """A spec file that is missing, malformed or inconsistent."""


class DataError(SeqdeployError, ValueError):
    """A data source that is missing, empty, malformed or non-finite."""


class BadDataFile(DataError):
    """One file of a (multi-file) training table that cannot be used: unreadable, a column missing, a value
    that is not what the column holds. ``file`` names it, ``row`` the row within it (None: the whole file)."""

    def __init__(self, message: str, file: str, row: int | None = None):
        super().__init__(message)
        self.file, self.row = file, row


class InputFileNotFound(SeqdeployError, FileNotFoundError):
    """A path given by the user does not exist."""


class ModelLoadError(SeqdeployError, ValueError):
    """A file that is not a loadable (or safely loadable) model."""


class TrainError(SeqdeployError, RuntimeError):
    """Training could not run with the given spec and data."""


class ExportError(SeqdeployError, RuntimeError):
    """Keras -> ONNX conversion failed."""


class UnsupportedLayerError(ExportError):
    """A layer or op that the export cannot express in ONNX."""


class OpsetError(ExportError, ValueError):
    """An opset outside the supported range, or too low for a needed op."""


class VerifyInputError(SeqdeployError, ValueError):
    """Verify cannot run: mismatched models, missing data, bad inputs."""


class QuantizeError(SeqdeployError, ValueError):
    """Quantization cannot run on this model or with these settings."""


class BenchError(SeqdeployError, ValueError):
    """The benchmark cannot run with the given settings."""


class BundleError(SeqdeployError, ValueError):
    """A bundle or manifest that is missing, invalid or of an unknown version."""


class IntegrityError(BundleError):
    """A bundle file whose sha256 does not match its manifest."""


class InputValidationError(SeqdeployError, ValueError):
    """Inputs given to the runtime that do not match the model's signature."""


class RequestTooLarge(InputValidationError):
    """A served request over the server's size limits (HTTP 413)."""


class OrtCapiError(SeqdeployError, RuntimeError):
    """onnxruntime's C library is missing, too old, or returned an error status (``seqdeploy.runtime.ort_capi``)."""


class CheckFailed(SeqdeployError, AssertionError):
    """A check ran and failed (verify parity, quantize gate): exit code 1.

    ``result`` holds the full result object so the caller can still render it.
    """

    exit_code = 1

    def __init__(self, message: str, result: object | None = None):
        super().__init__(message)
        self.result = result


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-blank line of an exception's message (its type name if empty), cut at ``limit``."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if limit is None else text[:limit]
