"""Every private part of onnxruntime that seqdeploy touches, with the reason and the public fallback.

Private attributes can change in any onnxruntime release, so each one is read here
and nowhere else, through a function that returns None (or the public equivalent)
when it is missing. Callers must work with the fallback; the private path is only
ever a speed-up or a convenience.

=====================================  ==============================================  ================================
private part                           why                                             public fallback
=====================================  ==============================================  ================================
``InferenceSession._sess``             the pybind session: its ``run`` /               ``InferenceSession.run`` /
(:func:`pybind_session`)               ``run_with_iobinding`` skip the Python          ``run_with_iobinding`` (slower:
                                       wrappers' per-call name checks and WebGPU       onnxruntime 1.32 raises and
                                       graph-capture check (~70 us per call)           catches an exception inside)
``IOBinding._iobinding``               the pybind binding that ``_sess``               ``InferenceSession.run_with_
(:func:`pybind_iobinding`)             ``.run_with_iobinding`` takes                   iobinding(binding)``
``InferenceSession._model_bytes`` /    the model a session was made from, for a        pass ``model_bytes=`` explicitly
``._model_path``                       second (C API) session with the same bytes      (``FastSession(session,
(:func:`session_model_bytes`)                                                          model_bytes=...)``)
``onnxruntime.capi.onnxruntime_        the exception classes onnxruntime raises for    ``RuntimeError`` (their common
pybind11_state`` (:func:`ort_          bad feeds and unloadable models                 base)
error_types`)
``onnxruntime/capi/libonnxruntime.*``  the stable C library the wheel ships beside      the Python API (the C API fast
(:func:`c_library_path`)               its Python module (a packaging detail)          path reports itself unavailable)
``onnxruntime.quantization.registry``  which op types each quantization mode           None: the recipe quantizes what
(:func:`ort_quantizable_ops`)          handles (to skip recipes with nothing to do)    onnxruntime chooses
``KerasTensor._keras_history``         the layer that made a Keras input tensor (its   the tensor's own ``name``
(:func:`keras_tensor_layer_name`)      ``keras.Input(name=...)``: the ONNX input name)
=====================================  ==============================================  ================================

Checked with onnxruntime 1.17-1.32 layouts; ``tests/test_fastpath.py`` runs every fallback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["pybind_session", "pybind_iobinding", "session_model_bytes", "ort_error_types", "c_library_path",
           "ort_quantizable_ops", "keras_tensor_layer_name"]


def ort_quantizable_ops(mode: str) -> frozenset[str] | None:
    """Op types onnxruntime's quantizer handles in ``mode`` ("static" QDQ or "dynamic"); None if unknown."""
    try:
        from onnxruntime.quantization import registry
    except ImportError:  # pragma: no cover - layout change
        return None
    table = getattr(registry, "QDQRegistry" if mode == "static" else "IntegerOpsRegistry", None)
    return frozenset(table) if table is not None else None


def keras_tensor_layer_name(tensor: Any) -> str | None:
    """The name of the layer that produced a Keras tensor (an ``Input``'s name), or None."""
    history = getattr(tensor, "_keras_history", None)
    return getattr(getattr(history, "operation", None), "name", None)


def pybind_session(session: Any) -> Any | None:
    """``session._sess`` when it has callable ``run`` and ``run_with_iobinding``, else None."""
    c = getattr(session, "_sess", None)
    if callable(getattr(c, "run", None)) and callable(getattr(c, "run_with_iobinding", None)):
        return c
    return None


def pybind_iobinding(binding: Any) -> Any | None:
    """``binding._iobinding`` (what the pybind ``run_with_iobinding`` takes), or None."""
    return getattr(binding, "_iobinding", None)


def session_model_bytes(session: Any) -> bytes | None:
    """The serialized model an ``InferenceSession`` was created from, or None if it cannot be known.

    From ``session._model_bytes`` (sessions made from bytes keep them), else the file at
    ``session._model_path`` read now (it may have changed since the session loaded it:
    callers that verified the bytes should pass them instead).
    """
    data = getattr(session, "_model_bytes", None)
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data):
        return bytes(data)
    path = getattr(session, "_model_path", None)
    if isinstance(path, str) and path:
        try:
            return Path(path).read_bytes()
        except OSError:
            return None
    return None


def ort_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes onnxruntime raises (``InvalidArgument``, ``Fail``, ...) plus ``RuntimeError``."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:  # pragma: no cover - layout change
        return (RuntimeError,)
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
             "NotImplemented", "ModelLoaded", "RuntimeException", "EPFail")
    return tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type)) + (RuntimeError,)


def c_library_names() -> tuple[str, ...]:
    """File name patterns of onnxruntime's C library on this platform."""
    if sys.platform == "win32":
        return ("onnxruntime.dll",)
    if sys.platform == "darwin":
        return ("libonnxruntime.*.dylib", "libonnxruntime.dylib")
    return ("libonnxruntime.so.*", "libonnxruntime.so")


def c_library_path() -> Path | None:
    """The C library in the installed onnxruntime wheel's ``capi`` folder, or None.

    Prefers the file named after the installed onnxruntime version.
    """
    try:
        import onnxruntime
    except ImportError:
        return None
    capi = Path(onnxruntime.__file__).resolve().parent / "capi"
    found = sorted(p for pattern in c_library_names() for p in capi.glob(pattern) if p.is_file())
    if not found:
        return None
    exact = [p for p in found if onnxruntime.__version__ in p.name]
    return (exact or found)[0]
