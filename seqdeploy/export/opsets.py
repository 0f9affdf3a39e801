"""ONNX opsets of the export: the default, the supported range, the batch axis name, and the opset
domains that need an extra onnxruntime custom-op library.

Default opset: 17. tf2onnx 1.17 converts opsets up to 18
(``tf2onnx.constants.OPSET_TO_IR_VERSION``); onnxruntime 1.32 loads and runs
every opset in 13-18 (measured: a Bidirectional GRU + LayerNormalization + GELU
model gives the same outputs at each). 17 is the newest opset that older
deployed onnxruntime builds (>= 1.13) still load, without the opset-18
signature changes of ``Reduce*``/``Split`` that some quantization and
optimisation tools still trip over. Opset 13 is the floor: the graph pieces
built here use the opset-13 forms (``ReduceSum``/``Unsqueeze`` axes as inputs).

    >>> from seqdeploy.export.opsets import DEFAULT_OPSET, check_opset
    >>> check_opset(DEFAULT_OPSET)
"""

from __future__ import annotations

from typing import Any

from seqdeploy.errors import ExportError, OpsetError
from seqdeploy.runtime.extensions import LIBRARIES, STANDARD_DOMAINS, import_library

DEFAULT_OPSET = 17
MIN_OPSET = 13
MAX_OPSET = 18
BATCH = "batch"

#: opset domains onnxruntime runs only with a custom-op library: domain -> Python module providing it
EXTENSION_DOMAINS = {d: lib.module for d, lib in LIBRARIES.items()}


def check_opset(opset: Any) -> None:
    """Raise :class:`OpsetError` unless ``opset`` is an int in ``MIN_OPSET..MAX_OPSET``."""
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise OpsetError(
            f"opset {opset!r} is outside the supported range {MIN_OPSET}-{MAX_OPSET} "
            f"(tf2onnx 1.17 converts up to {MAX_OPSET}; the graph fixes need >= {MIN_OPSET}); "
            f"leave the opset unset for the default {DEFAULT_OPSET}"
        )


def extension_domains(model) -> tuple[str, ...]:
    """The opset domains of ``model`` (an ``onnx.ModelProto``) that need a custom-op library."""
    return tuple(sorted({o.domain for o in model.opset_import if o.domain in EXTENSION_DOMAINS}))


def custom_ops_libraries(model) -> list[str]:
    """Paths of the custom-op libraries an onnxruntime session needs to load ``model``
    (``SessionOptions.register_custom_ops_library``); empty for standard graphs."""
    paths = []  # import_library imports with RTLD_DEEPBIND (safe next to TensorFlow's RE2)
    for domain in extension_domains(model):
        module = EXTENSION_DOMAINS[domain]
        try:
            paths.append(import_library(module))
        except ImportError:
            raise ExportError(
                f"the graph uses opset domain {domain!r}, whose ops need the {module} package, which is not "
                f"installed; install it: pip install 'seqdeploy[strings]' (or pip install {module.replace('_', '-')})"
            ) from None
    return paths


__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET", "BATCH", "EXTENSION_DOMAINS", "STANDARD_DOMAINS",
           "check_opset", "extension_domains", "custom_ops_libraries"]
