"""A ctypes binding of onnxruntime's stable C API: sessions and ``Run`` without the Python layer.

The onnxruntime wheel ships the C library beside its Python module
(``onnxruntime/capi/libonnxruntime.so.<version>`` on Linux; the pybind module carries
its own statically linked copy and does not load it). ``OrtGetApiBase()->GetApi(v)``
returns the ``OrtApi`` function table: a C struct of function pointers that only ever
grows at its end, so the entries used here keep their positions in every version.
:data:`API_ORDER` lists the table's first entries in header order
(``onnxruntime_c_api.h``, ``struct OrtApi``, read from the API 30 header); seqdeploy
asks for a table of version >= :data:`MIN_API_VERSION` (onnxruntime 1.17, its minimum).
On load, a status round trip through entries 0, 1, 2 and 93 checks the layout; a
session's input/output names and element types are then compared with the Python
session's, and every bound run's first result with ``session.run``'s.

What it gives :class:`seqdeploy.runtime.fastpath.FastSession`: a :class:`CapiSession` created
from model bytes with explicit session options, and :meth:`CapiSession.bind`, which
wraps pre-allocated numpy input/output buffers in ``OrtValue`` once so that a call is
one foreign call to ``RunWithBinding`` (or ``Run``; ctypes releases the GIL during it)::

    >>> lib = load_library()                                        # doctest: +SKIP
    >>> cs = CapiSession(model_bytes, lib=lib)                      # doctest: +SKIP
    >>> cs.run([np.zeros((1, 30), np.float32)])                     # doctest: +SKIP
    [array([[0.41]], dtype=float32)]

Every failure raises :class:`seqdeploy.errors.OrtCapiError` with the reason; the
library, once loaded, stays loaded (and its ``OrtEnv`` alive) for the process.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqdeploy.compat import c_library_names, c_library_path
from seqdeploy.errors import OrtCapiError

__all__ = ["API_ORDER", "MIN_API_VERSION", "KNOWN_API_VERSION", "OrtLibrary", "CapiSession", "BoundRun",
           "load_library", "find_library"]

#: lowest OrtApi version asked for (onnxruntime 1.17, seqdeploy's minimum onnxruntime)
MIN_API_VERSION = 17
#: the newest API version this binding was tested with (onnxruntime 1.32)
KNOWN_API_VERSION = 32

# struct OrtApi, in header order, up to the last entry used here (BindOutput).
API_ORDER: tuple[str, ...] = (
    "CreateStatus", "GetErrorCode", "GetErrorMessage", "CreateEnv", "CreateEnvWithCustomLogger",
    "EnableTelemetryEvents", "DisableTelemetryEvents", "CreateSession", "CreateSessionFromArray", "Run",
    "CreateSessionOptions", "SetOptimizedModelFilePath", "CloneSessionOptions", "SetSessionExecutionMode",
    "EnableProfiling", "DisableProfiling", "EnableMemPattern", "DisableMemPattern", "EnableCpuMemArena",
    "DisableCpuMemArena", "SetSessionLogId", "SetSessionLogVerbosityLevel", "SetSessionLogSeverityLevel",
    "SetSessionGraphOptimizationLevel", "SetIntraOpNumThreads", "SetInterOpNumThreads", "CreateCustomOpDomain",
    "CustomOpDomain_Add", "AddCustomOpDomain", "RegisterCustomOpsLibrary", "SessionGetInputCount",
    "SessionGetOutputCount", "SessionGetOverridableInitializerCount", "SessionGetInputTypeInfo",
    "SessionGetOutputTypeInfo", "SessionGetOverridableInitializerTypeInfo", "SessionGetInputName",
    "SessionGetOutputName", "SessionGetOverridableInitializerName", "CreateRunOptions",
    "RunOptionsSetRunLogVerbosityLevel", "RunOptionsSetRunLogSeverityLevel", "RunOptionsSetRunTag",
    "RunOptionsGetRunLogVerbosityLevel", "RunOptionsGetRunLogSeverityLevel", "RunOptionsGetRunTag",
    "RunOptionsSetTerminate", "RunOptionsUnsetTerminate", "CreateTensorAsOrtValue",
    "CreateTensorWithDataAsOrtValue", "IsTensor", "GetTensorMutableData", "FillStringTensor",
    "GetStringTensorDataLength", "GetStringTensorContent", "CastTypeInfoToTensorInfo", "GetOnnxTypeFromTypeInfo",
    "CreateTensorTypeAndShapeInfo", "SetTensorElementType", "SetDimensions", "GetTensorElementType",
    "GetDimensionsCount", "GetDimensions", "GetSymbolicDimensions", "GetTensorShapeElementCount",
    "GetTensorTypeAndShape", "GetTypeInfo", "GetValueType", "CreateMemoryInfo", "CreateCpuMemoryInfo",
    "CompareMemoryInfo", "MemoryInfoGetName", "MemoryInfoGetId", "MemoryInfoGetMemType", "MemoryInfoGetType",
    "AllocatorAlloc", "AllocatorFree", "AllocatorGetInfo", "GetAllocatorWithDefaultOptions",
    "AddFreeDimensionOverride", "GetValue", "GetValueCount", "CreateValue", "CreateOpaqueValue", "GetOpaqueValue",
    "KernelInfoGetAttribute_float", "KernelInfoGetAttribute_int64", "KernelInfoGetAttribute_string",
    "KernelContext_GetInputCount", "KernelContext_GetOutputCount", "KernelContext_GetInput",
    "KernelContext_GetOutput", "ReleaseEnv", "ReleaseStatus", "ReleaseMemoryInfo", "ReleaseSession",
    "ReleaseValue", "ReleaseRunOptions", "ReleaseTypeInfo", "ReleaseTensorTypeAndShapeInfo",
    "ReleaseSessionOptions", "ReleaseCustomOpDomain", "GetDenotationFromTypeInfo", "CastTypeInfoToMapTypeInfo",
    "CastTypeInfoToSequenceTypeInfo", "GetMapKeyType", "GetMapValueType", "GetSequenceElementType",
    "ReleaseMapTypeInfo", "ReleaseSequenceTypeInfo", "SessionEndProfiling", "SessionGetModelMetadata",
    "ModelMetadataGetProducerName", "ModelMetadataGetGraphName", "ModelMetadataGetDomain",
    "ModelMetadataGetDescription", "ModelMetadataLookupCustomMetadataMap", "ModelMetadataGetVersion",
    "ReleaseModelMetadata", "CreateEnvWithGlobalThreadPools", "DisablePerSessionThreads", "CreateThreadingOptions",
    "ReleaseThreadingOptions", "ModelMetadataGetCustomMetadataMapKeys", "AddFreeDimensionOverrideByName",
    "GetAvailableProviders", "ReleaseAvailableProviders", "GetStringTensorElementLength", "GetStringTensorElement",
    "FillStringTensorElement", "AddSessionConfigEntry", "CreateAllocator", "ReleaseAllocator", "RunWithBinding",
    "CreateIoBinding", "ReleaseIoBinding", "BindInput", "BindOutput",
)

_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)
_S = ctypes.c_size_t
_I = ctypes.c_int
_STR = ctypes.c_char_p
_F = ctypes.CFUNCTYPE  # ORT_API_CALL is the platform C convention (x86-64, arm64)

# the entries used, with their C signatures (restype first; OrtStatus* is a void pointer, NULL = ok)
_SIGNATURES: dict[str, tuple[Any, ...]] = {
    "CreateStatus": (_P, _I, _STR),
    "GetErrorCode": (_I, _P),
    "GetErrorMessage": (_STR, _P),
    "CreateEnv": (_P, _I, _STR, _PP),
    "CreateSessionFromArray": (_P, _P, _P, _S, _P, _PP),
    "Run": (_P, _P, _P, _P, _P, _S, _P, _S, _P),
    "CreateSessionOptions": (_P, _PP),
    "SetSessionExecutionMode": (_P, _P, _I),
    "SetSessionLogSeverityLevel": (_P, _P, _I),
    "SetSessionGraphOptimizationLevel": (_P, _P, _I),
    "SetIntraOpNumThreads": (_P, _P, _I),
    "SetInterOpNumThreads": (_P, _P, _I),
    "SessionGetInputCount": (_P, _P, ctypes.POINTER(_S)),
    "SessionGetOutputCount": (_P, _P, ctypes.POINTER(_S)),
    "SessionGetInputTypeInfo": (_P, _P, _S, _PP),
    "SessionGetOutputTypeInfo": (_P, _P, _S, _PP),
    "SessionGetInputName": (_P, _P, _S, _P, _PP),
    "SessionGetOutputName": (_P, _P, _S, _P, _PP),
    "CreateRunOptions": (_P, _PP),
    "RunOptionsSetRunLogSeverityLevel": (_P, _P, _I),
    "CreateTensorWithDataAsOrtValue": (_P, _P, _P, _S, ctypes.POINTER(ctypes.c_int64), _S, _I, _PP),
    "GetTensorMutableData": (_P, _P, _PP),
    "CastTypeInfoToTensorInfo": (_P, _P, _PP),
    "GetOnnxTypeFromTypeInfo": (_P, _P, ctypes.POINTER(_I)),
    "GetTensorElementType": (_P, _P, ctypes.POINTER(_I)),
    "GetDimensionsCount": (_P, _P, ctypes.POINTER(_S)),
    "GetDimensions": (_P, _P, ctypes.POINTER(ctypes.c_int64), _S),
    "GetTensorTypeAndShape": (_P, _P, _PP),
    "GetValueType": (_P, _P, ctypes.POINTER(_I)),
    "CreateCpuMemoryInfo": (_P, _I, _I, _PP),
    "AllocatorFree": (_P, _P, _P),
    "GetAllocatorWithDefaultOptions": (_P, _PP),
    "ReleaseEnv": (None, _P),
    "ReleaseStatus": (None, _P),
    "ReleaseMemoryInfo": (None, _P),
    "ReleaseSession": (None, _P),
    "ReleaseValue": (None, _P),
    "ReleaseRunOptions": (None, _P),
    "ReleaseTypeInfo": (None, _P),
    "ReleaseTensorTypeAndShapeInfo": (None, _P),
    "ReleaseSessionOptions": (None, _P),
    "AddSessionConfigEntry": (_P, _P, _STR, _STR),
    "RunWithBinding": (_P, _P, _P, _P),
    "CreateIoBinding": (_P, _P, _PP),
    "ReleaseIoBinding": (None, _P),
    "BindInput": (_P, _P, _STR, _P),
    "BindOutput": (_P, _P, _STR, _P),
}

# ONNXTensorElementDataType <-> numpy (strings, bfloat16, float8 and 4-bit types are not handled here)
ELEMENT_TYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16),
    5: np.dtype(np.int16), 6: np.dtype(np.int32), 7: np.dtype(np.int64), 9: np.dtype(np.bool_),
    10: np.dtype(np.float16), 11: np.dtype(np.float64), 12: np.dtype(np.uint32), 13: np.dtype(np.uint64),
}
_NUMPY_TO_ELEMENT = {dt: code for code, dt in ELEMENT_TYPES.items()}
_ONNX_TYPE_TENSOR = 1
_ORT_ARENA_ALLOCATOR, _ORT_MEM_TYPE_DEFAULT = 1, 0
_ORT_LOGGING_LEVEL_ERROR = 3


class _OrtApiBase(ctypes.Structure):
    _fields_ = [("GetApi", _F(_P, ctypes.c_uint32)), ("GetVersionString", _F(_STR))]


def find_library() -> Path | None:
    """The C library the installed onnxruntime wheel ships (:func:`seqdeploy.compat.c_library_path`), or None."""
    return c_library_path()


class OrtLibrary:
    """The loaded C library: its ``OrtApi`` table (the entries in ``_SIGNATURES``) and one ``OrtEnv``.

    ``api_version`` is the table version obtained: the library's own (``1.<v>.x`` -> ``v``)
    when it offers it, else the highest it offers down to ``min_api_version``.
    """

    def __init__(self, path: str | os.PathLike, *, min_api_version: int = MIN_API_VERSION,
                 max_api_version: int | None = None):
        self.path = str(path)
        if not Path(self.path).is_file():
            raise OrtCapiError(f"onnxruntime C library {self.path}: no such file (expected the library the "
                               f"onnxruntime wheel ships in onnxruntime/capi); reinstall onnxruntime")
        try:
            self._dll = ctypes.CDLL(self.path, mode=getattr(os, "RTLD_LOCAL", 0))
            get_base = self._dll.OrtGetApiBase
        except (OSError, AttributeError) as exc:
            raise OrtCapiError(f"onnxruntime C library {self.path} does not load ({exc}); "
                               f"expected a library exporting OrtGetApiBase: reinstall onnxruntime") from None
        get_base.restype = ctypes.POINTER(_OrtApiBase)
        get_base.argtypes = []
        base = get_base()
        if not base:
            raise OrtCapiError(f"OrtGetApiBase() returned NULL in {self.path}; reinstall onnxruntime")
        self._base = base.contents
        self.version: str = (self._base.GetVersionString() or b"").decode(errors="replace")
        m = re.match(r"(\d+)\.(\d+)", self.version)
        own = int(m.group(2)) if m and m.group(1) == "1" else KNOWN_API_VERSION
        if max_api_version is not None:
            own = min(own, max_api_version)
        if own < min_api_version:
            raise OrtCapiError(f"onnxruntime C library {self.version} offers OrtApi version {own} "
                               f"(expected >= {min_api_version}); upgrade onnxruntime")
        api = None
        for v in range(own, min_api_version - 1, -1):  # the library's own version first, then older tables
            api = self._base.GetApi(v)
            if api:
                self.api_version = v
                break
        if not api:
            raise OrtCapiError(f"onnxruntime C library {self.version} offers no OrtApi version in "
                               f"[{min_api_version}, {own}]; upgrade onnxruntime")
        table = ctypes.cast(api, ctypes.POINTER(ctypes.c_void_p * len(API_ORDER))).contents
        self.fn: dict[str, Any] = {}
        for name, sig in _SIGNATURES.items():
            addr = table[API_ORDER.index(name)]
            if not addr:
                raise OrtCapiError(f"OrtApi entry {name} is NULL in onnxruntime {self.version}; upgrade onnxruntime")
            self.fn[name] = _F(*sig)(addr)
        self._self_check()
        env = ctypes.c_void_p()
        self.check(self.fn["CreateEnv"](_ORT_LOGGING_LEVEL_ERROR, b"seqdeploy", ctypes.byref(env)), "CreateEnv")
        self.env = env  # process lifetime: sessions refer to it
        mem = ctypes.c_void_p()
        self.check(self.fn["CreateCpuMemoryInfo"](_ORT_ARENA_ALLOCATOR, _ORT_MEM_TYPE_DEFAULT, ctypes.byref(mem)),
                   "CreateCpuMemoryInfo")
        self.cpu_memory = mem
        alloc = ctypes.c_void_p()
        self.check(self.fn["GetAllocatorWithDefaultOptions"](ctypes.byref(alloc)), "GetAllocatorWithDefaultOptions")
        self.allocator = alloc

    def _self_check(self) -> None:
        """The table has the layout assumed: a status made by entry 0 reads back through entries 1, 2 and 93."""
        st = self.fn["CreateStatus"](2, b"seqdeploy table check")
        try:
            code, msg = self.fn["GetErrorCode"](st), self.fn["GetErrorMessage"](st)
        finally:
            self.fn["ReleaseStatus"](st)
        if code != 2 or msg != b"seqdeploy table check":
            raise OrtCapiError(f"onnxruntime {self.version}: the OrtApi table does not have the expected layout "
                               f"(status round trip gave {code}, {msg!r}); upgrade seqdeploy or onnxruntime")

    def status_error(self, status: int, what: str) -> OrtCapiError:
        """The :class:`OrtCapiError` for a non-NULL ``OrtStatus*`` (released here)."""
        try:
            code = self.fn["GetErrorCode"](status)
            msg = (self.fn["GetErrorMessage"](status) or b"").decode(errors="replace")
        finally:
            self.fn["ReleaseStatus"](status)
        err = OrtCapiError(f"onnxruntime C API {what} failed (code {code}): {msg.strip()[:500]}")
        err.ort_code = code
        return err

    def check(self, status: int | None, what: str) -> None:
        if status:
            raise self.status_error(status, what)


_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int, int | None], OrtLibrary] = {}


def load_library(path: str | os.PathLike | None = None, *, min_api_version: int = MIN_API_VERSION,
                 max_api_version: int | None = None) -> OrtLibrary:
    """The C library (default: :func:`find_library`), loaded once per process and arguments.

    Raises :class:`OrtCapiError` saying why when it is missing, does not load, or has
    no usable API version.
    """
    if path is None:
        path = find_library()
        if path is None:
            import onnxruntime

            raise OrtCapiError(f"onnxruntime {onnxruntime.__version__} ships no C library in its capi folder "
                               f"(expected {' or '.join(c_library_names())}); reinstall onnxruntime from a wheel")
    key = (str(Path(path).resolve()), min_api_version, max_api_version)
    with _LOCK:
        lib = _LOADED.get(key)
        if lib is None:
            lib = _LOADED[key] = OrtLibrary(key[0], min_api_version=min_api_version, max_api_version=max_api_version)
        return lib


class _Values:
    """OrtValues over numpy buffers (the buffers stay referenced here), released together."""

    def __init__(self, lib: OrtLibrary, arrays: Sequence[np.ndarray]):
        self._lib = lib
        self.arrays = list(arrays)
        self.handles = (ctypes.c_void_p * max(1, len(arrays)))()
        self._shapes = []
        try:
            for i, a in enumerate(self.arrays):
                code = _NUMPY_TO_ELEMENT.get(a.dtype)
                if code is None or not a.flags.c_contiguous:
                    raise OrtCapiError(f"array {i}: dtype {a.dtype}, contiguous={a.flags.c_contiguous} (expected a "
                                       f"C-contiguous numeric array of {sorted(str(d) for d in _NUMPY_TO_ELEMENT)})")
                shape = (ctypes.c_int64 * max(1, a.ndim))(*a.shape)
                self._shapes.append(shape)
                ov = ctypes.c_void_p()
                lib.check(lib.fn["CreateTensorWithDataAsOrtValue"](
                    lib.cpu_memory, a.ctypes.data, a.nbytes, shape, a.ndim, code, ctypes.byref(ov)),
                    "CreateTensorWithDataAsOrtValue")
                self.handles[i] = ov.value
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        handles, self.handles = self.handles, None
        if handles is not None:
            rel = self._lib.fn["ReleaseValue"]
            for h in handles:
                if h:
                    rel(h)

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class BoundRun:
    """One run over fixed input and output buffers: ``bound()`` fills ``outputs`` from ``inputs``.

    ``mode="binding"`` (default) binds the ``OrtValue`` s once to an ``OrtIoBinding`` and
    calls ``RunWithBinding`` (onnxruntime checks names, types and shapes at bind time);
    ``mode="run"`` calls ``Run`` with the same values (checked on every call).
    Not thread-safe by itself (the buffers are shared); :class:`FastSession` keeps one per thread.
    """

    __slots__ = ("inputs", "outputs", "mode", "_ins", "_outs", "_out_names", "_call", "_lib", "_session",
                 "_binding")

    def __init__(self, session: "CapiSession", inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                 mode: str = "binding", output_names: Sequence[str] | None = None):
        if mode not in ("binding", "run"):
            raise OrtCapiError(f"BoundRun mode {mode!r} (expected 'binding' or 'run')")
        lib = session.lib
        self._lib, self._session, self.mode = lib, session, mode  # keeps the session alive while bound
        self._binding = ctypes.c_void_p()
        self._ins = _Values(lib, inputs)
        self._outs = _Values(lib, outputs)
        self.inputs, self.outputs = self._ins.arrays, self._outs.arrays
        fn = lib.fn
        out_names = [n.encode() for n in (output_names or session.output_names)]
        self._out_names = (ctypes.c_char_p * max(1, len(out_names)))(*out_names)
        if mode == "binding":
            lib.check(fn["CreateIoBinding"](session.handle, ctypes.byref(self._binding)), "CreateIoBinding")
            for name, h in zip(session._in_name_bytes, self._ins.handles):
                lib.check(fn["BindInput"](self._binding, name, h), f"BindInput({name.decode()})")
            for name, h in zip(out_names, self._outs.handles):
                lib.check(fn["BindOutput"](self._binding, name, h), f"BindOutput({name.decode()})")
            self._call = functools.partial(fn["RunWithBinding"], session.handle, session.run_options, self._binding)
        else:
            self._call = functools.partial(
                fn["Run"], session.handle, session.run_options, session._in_names, self._ins.handles,
                ctypes.c_size_t(len(self.inputs)), self._out_names, ctypes.c_size_t(len(self.outputs)),
                self._outs.handles)

    def __call__(self) -> None:
        st = self._call()
        if st:
            raise self._lib.status_error(st, "RunWithBinding" if self.mode == "binding" else "Run")

    def __del__(self) -> None:
        try:
            b, self._binding = self._binding, None
            if b:
                self._lib.fn["ReleaseIoBinding"](b)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class CapiSession:
    """A CPU ``OrtSession`` made through the C API from model bytes.

    ``options`` records what was set (same meaning and defaults as
    ``seqdeploy.runtime.predictor.session_options``): ``intra_op_num_threads``,
    ``inter_op_num_threads``, ``execution_mode`` (0 sequential), ``graph_optimization_level``
    (99 = ORT_ENABLE_ALL), ``log_severity_level`` and ``config`` (session config entries).
    """

    def __init__(self, model_bytes: bytes, *, lib: OrtLibrary | None = None, intra_op_num_threads: int = 1,
                 inter_op_num_threads: int = 1, execution_mode: int = 0, graph_optimization_level: int = 99,
                 log_severity_level: int = 3, config: Mapping[str, str] | None = None):
        self.lib = lib = lib if lib is not None else load_library()
        if config is None:
            config = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
        self.options = {"intra_op_num_threads": int(intra_op_num_threads),
                        "inter_op_num_threads": int(inter_op_num_threads), "execution_mode": int(execution_mode),
                        "graph_optimization_level": int(graph_optimization_level),
                        "log_severity_level": int(log_severity_level), "config": dict(config)}
        self.handle = ctypes.c_void_p()
        self.run_options = ctypes.c_void_p()
        so = ctypes.c_void_p()
        fn = lib.fn
        lib.check(fn["CreateSessionOptions"](ctypes.byref(so)), "CreateSessionOptions")
        try:
            lib.check(fn["SetIntraOpNumThreads"](so, self.options["intra_op_num_threads"]), "SetIntraOpNumThreads")
            lib.check(fn["SetInterOpNumThreads"](so, self.options["inter_op_num_threads"]), "SetInterOpNumThreads")
            lib.check(fn["SetSessionExecutionMode"](so, self.options["execution_mode"]), "SetSessionExecutionMode")
            lib.check(fn["SetSessionGraphOptimizationLevel"](so, self.options["graph_optimization_level"]),
                      "SetSessionGraphOptimizationLevel")
            if self.options["log_severity_level"] >= 0:
                lib.check(fn["SetSessionLogSeverityLevel"](so, self.options["log_severity_level"]),
                          "SetSessionLogSeverityLevel")
            for k, v in self.options["config"].items():
                lib.check(fn["AddSessionConfigEntry"](so, k.encode(), str(v).encode()), f"AddSessionConfigEntry({k})")
            self._model = bytes(model_bytes)
            lib.check(fn["CreateSessionFromArray"](lib.env, self._model, len(self._model), so,
                                                   ctypes.byref(self.handle)), "CreateSessionFromArray")
        finally:
            fn["ReleaseSessionOptions"](so)
        self._model = b""  # onnxruntime copied what it needs
        lib.check(fn["CreateRunOptions"](ctypes.byref(self.run_options)), "CreateRunOptions")
        # a failing bound run is handled by the caller (fallback): no onnxruntime error log on stderr for it
        lib.check(fn["RunOptionsSetRunLogSeverityLevel"](self.run_options, 4), "RunOptionsSetRunLogSeverityLevel")
        self.input_names = self._names("Input")
        self.output_names = self._names("Output")
        self.input_types = tuple(self._element_type("Input", i) for i in range(len(self.input_names)))
        self.output_types = tuple(self._element_type("Output", i) for i in range(len(self.output_names)))
        self._in_name_bytes = [n.encode() for n in self.input_names]
        self._out_name_bytes = [n.encode() for n in self.output_names]
        self._in_names = (ctypes.c_char_p * max(1, len(self.input_names)))(*self._in_name_bytes)
        self._out_names = (ctypes.c_char_p * max(1, len(self.output_names)))(*self._out_name_bytes)

    def _names(self, kind: str) -> tuple[str, ...]:
        lib, n = self.lib, ctypes.c_size_t()
        lib.check(lib.fn[f"SessionGet{kind}Count"](self.handle, ctypes.byref(n)), f"SessionGet{kind}Count")
        names = []
        for i in range(n.value):
            p = ctypes.c_void_p()
            lib.check(lib.fn[f"SessionGet{kind}Name"](self.handle, i, lib.allocator, ctypes.byref(p)),
                      f"SessionGet{kind}Name")
            names.append(ctypes.string_at(p.value).decode())
            lib.check(lib.fn["AllocatorFree"](lib.allocator, p), "AllocatorFree")
        return tuple(names)

    def _element_type(self, kind: str, i: int) -> np.dtype | None:
        """numpy dtype of input/output ``i``; None for non-tensors and types without a numpy twin."""
        lib, fn = self.lib, self.lib.fn
        ti = ctypes.c_void_p()
        lib.check(fn[f"SessionGet{kind}TypeInfo"](self.handle, i, ctypes.byref(ti)), f"SessionGet{kind}TypeInfo")
        try:
            onnx_type = ctypes.c_int()
            lib.check(fn["GetOnnxTypeFromTypeInfo"](ti, ctypes.byref(onnx_type)), "GetOnnxTypeFromTypeInfo")
            if onnx_type.value != _ONNX_TYPE_TENSOR:
                return None
            tinfo = ctypes.c_void_p()  # owned by ti
            lib.check(fn["CastTypeInfoToTensorInfo"](ti, ctypes.byref(tinfo)), "CastTypeInfoToTensorInfo")
            et = ctypes.c_int()
            lib.check(fn["GetTensorElementType"](tinfo, ctypes.byref(et)), "GetTensorElementType")
            return ELEMENT_TYPES.get(et.value)
        finally:
            fn["ReleaseTypeInfo"](ti)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs (fresh numpy arrays, allocated by onnxruntime and copied) for ``inputs`` in input order."""
        lib, fn = self.lib, self.lib.fn
        ins = _Values(lib, [np.ascontiguousarray(a) for a in inputs])
        n_out = len(self.output_names)
        outs = (ctypes.c_void_p * max(1, n_out))()
        try:
            lib.check(fn["Run"](self.handle, self.run_options, self._in_names, ins.handles, len(inputs),
                                self._out_names, n_out, outs), "Run")
            return [self._to_numpy(outs[i], self.output_names[i]) for i in range(n_out)]
        finally:
            for h in outs:
                if h:
                    fn["ReleaseValue"](h)
            ins.release()

    def _to_numpy(self, value: int, name: str) -> np.ndarray:
        lib, fn = self.lib, self.lib.fn
        vt = ctypes.c_int()
        lib.check(fn["GetValueType"](value, ctypes.byref(vt)), "GetValueType")
        if vt.value != _ONNX_TYPE_TENSOR:
            raise OrtCapiError(f"output {name!r} is ONNX type {vt.value}, not a tensor (expected tensor outputs)")
        info = ctypes.c_void_p()
        lib.check(fn["GetTensorTypeAndShape"](value, ctypes.byref(info)), "GetTensorTypeAndShape")
        try:
            et, nd = ctypes.c_int(), ctypes.c_size_t()
            lib.check(fn["GetTensorElementType"](info, ctypes.byref(et)), "GetTensorElementType")
            lib.check(fn["GetDimensionsCount"](info, ctypes.byref(nd)), "GetDimensionsCount")
            dims = (ctypes.c_int64 * max(1, nd.value))()
            lib.check(fn["GetDimensions"](info, dims, nd.value), "GetDimensions")
        finally:
            fn["ReleaseTensorTypeAndShapeInfo"](info)
        dtype = ELEMENT_TYPES.get(et.value)
        if dtype is None:
            raise OrtCapiError(f"output {name!r} has element type {et.value} (expected one of {sorted(ELEMENT_TYPES)})")
        shape = tuple(dims[i] for i in range(nd.value))
        out = np.empty(shape, dtype)
        if out.nbytes:
            data = ctypes.c_void_p()
            lib.check(fn["GetTensorMutableData"](value, ctypes.byref(data)), "GetTensorMutableData")
            ctypes.memmove(out.ctypes.data, data.value, out.nbytes)
        return out

    def bind(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], mode: str = "binding",
             output_names: Sequence[str] | None = None) -> BoundRun:
        """A :class:`BoundRun` over these buffers (C-contiguous, in input order and in ``output_names``
        order, default all outputs; the buffers stay referenced by it)."""
        names = tuple(output_names) if output_names else self.output_names
        unknown = [n for n in names if n not in self.output_names]
        if len(inputs) != len(self.input_names) or len(outputs) != len(names) or unknown:
            raise OrtCapiError(f"bind: {len(inputs)} inputs / {len(outputs)} outputs {list(names)} (expected "
                               f"{len(self.input_names)} inputs and outputs among {list(self.output_names)})")
        return BoundRun(self, inputs, outputs, mode, names)

    def close(self) -> None:
        fn = self.lib.fn
        h, ro = self.handle, self.run_options
        self.handle, self.run_options = ctypes.c_void_p(), ctypes.c_void_p()
        if ro:
            fn["ReleaseRunOptions"](ro)
        if h:
            fn["ReleaseSession"](h)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
