"""This machine's CPU: model name and the feature flags that decide int8 and kernel speed.

Read from ``/proc/cpuinfo`` (Linux; empty elsewhere). ``doctor``, quantization recipes, bench and tune use it.
"""

from __future__ import annotations

import platform
from pathlib import Path


def read_cpuinfo() -> str | None:
    """``/proc/cpuinfo`` as text, or None where there is none (non-Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None


def cpu_model_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (what benchmark reports print), else the platform's word."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    for line in (text or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flag_set(cpuinfo: str) -> frozenset[str]:
    """The CPU's feature flags: the first ``flags`` (x86) or ``Features`` (ARM) line of cpuinfo text.

        >>> sorted(cpu_flag_set("processor : 0\nflags : fpu avx2"))
        ['avx2', 'fpu']
    """
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")) and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_flags(cpuinfo: str | None = None) -> dict[str, bool]:
    """AVX2 / AVX-512 / VNNI / AMX flags of this CPU (Linux; empty elsewhere)."""
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
        if cpuinfo is None:
            return {}
    flags = cpu_flag_set(cpuinfo)
    return {k: k in flags for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}
