"""Check the installed toolchain and the CPU against what seqdeploy was tested with.

Reads installed versions from package metadata (nothing heavy is imported) and
the CPU flags that decide int8 speed from ``/proc/cpuinfo``.

    >>> report = run_doctor()  # doctest: +SKIP
    >>> report.ok  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import platform
from importlib import metadata

from seqdeploy.cpu import cpu_flags
from seqdeploy.runtime.fastpath import fastpath_status
from seqdeploy.runtime.manifest import version_tuple

# package -> (distribution names to try, minimum supported, version tested with, advice when off)
TESTED = {
    "tensorflow": (("tensorflow-cpu", "tensorflow"), "2.16", "2.21.0",
                   "install the toolchain extra: pip install 'seqdeploy[toolchain]' (tensorflow-cpu on Linux x86_64)"),
    "keras": (("keras",), "3.0", "3.15.1", "seqdeploy needs Keras 3: pip install 'keras>=3'"),
    "tf2onnx": (("tf2onnx",), "1.17", "1.17.0", "pip install 'tf2onnx>=1.17'"),
    "onnx": (("onnx",), "1.16", "1.23.2", "pip install 'onnx>=1.16'"),
    "onnxruntime": (("onnxruntime",), "1.17", "1.32.0", "pip install 'onnxruntime>=1.17'"),
    "protobuf": (("protobuf",), "3.20", "6.33.6", "a protobuf that TensorFlow, onnx, kserve and tritonclient all accept "
                                               "(>= 6.33.5, < 7): pip install 'protobuf>=6.33.5,<7'"),
    "numpy": (("numpy",), "1.26", "2.4.6", "pip install 'numpy>=1.26'"),
    "ml_dtypes": (("ml-dtypes", "ml_dtypes"), "0.3", "0.5.4", "pip install -U ml-dtypes (TensorFlow and onnx share it)"),
}
RUNTIME_ONLY = {"onnxruntime", "numpy"}


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    found: str | None
    expected: str
    status: str  # "ok" | "warn" | "fail"
    advice: str = ""


@dataclasses.dataclass(frozen=True)
class DoctorReport:
    ok: bool
    checks: tuple[Check, ...]
    cpu_flags: dict[str, bool]
    machine: str
    python: str


def _installed(dists: tuple[str, ...]) -> str | None:
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def run_doctor(cpuinfo: str | None = None) -> DoctorReport:
    """Check versions and CPU features; each check says what to change when it is off."""
    checks = []
    for name, (dists, minimum, tested, advice) in TESTED.items():
        found = _installed(dists)
        if found is None:
            status = "warn" if name not in RUNTIME_ONLY else "fail"
            checks.append(Check(name, None, f">= {minimum} (tested {tested})", status,
                                f"not installed: {advice}" + (" (needed for the toolchain only)" if status == "warn" else "")))
            continue
        fv = version_tuple(found)
        if fv < version_tuple(minimum):
            checks.append(Check(name, found, f">= {minimum} (tested {tested})", "fail", f"too old: {advice}"))
        elif fv[:2] != version_tuple(tested)[:2]:
            newer = fv[:2] > version_tuple(tested)[:2]
            checks.append(Check(name, found, f">= {minimum} (tested {tested})", "warn",
                                ("newer than tested: if export or verify misbehaves, try " if newer else
                                 "older than tested: consider upgrading to ") + f"{name}=={tested}"))
        else:
            checks.append(Check(name, found, f">= {minimum} (tested {tested})", "ok"))
    keras_v = _installed(("keras",))
    if keras_v and version_tuple(keras_v)[0] < 3:
        checks.append(Check("keras 3", keras_v, "3.x", "fail", "tf-keras/Keras 2 is not supported: pip install 'keras>=3'"))
    flags = cpu_flags(cpuinfo)
    if flags:
        vnni = flags.get("avx512_vnni") or flags.get("avx_vnni")
        if flags.get("amx_int8"):
            checks.append(Check("cpu int8", "AMX", "VNNI or AMX", "ok", "AMX: int8 matrix units present"))
        elif vnni:
            checks.append(Check("cpu int8", "VNNI", "VNNI or AMX", "ok"))
        elif flags.get("avx2"):
            checks.append(Check("cpu int8", "AVX2 without VNNI", "VNNI or AMX", "warn",
                                "int8 runs without VNNI dot-product instructions: expect smaller quantization "
                                "gains; `seqdeploy quantize` measures and keeps float32 when int8 is not faster"))
        else:
            checks.append(Check("cpu int8", "no AVX2", "AVX2 at least", "warn",
                                "old CPU: onnxruntime falls back to slow kernels; prefer float32"))
    checks.append(Check("fast path", *fastpath_status()))  # FastSession's path; C API availability
    ok = not any(c.status == "fail" for c in checks)
    return DoctorReport(ok=ok, checks=tuple(checks), cpu_flags=flags, machine=platform.machine(),
                        python=platform.python_version())
