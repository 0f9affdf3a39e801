"""Keep TensorFlow's C++ start-up lines off the terminal, and everything else on it.

TensorFlow and TFLite write a few notices from C++ straight to file descriptor 2, some before
``TF_CPP_MIN_LOG_LEVEL`` is read (absl's "All log messages before absl::InitializeLog() ..." line, the
oneDNN notice, TFLite's "Created TensorFlow Lite XNNPACK delegate" line). Python cannot catch them,
so the command line routes fd 2 through a pipe read by a small filter process that drops exactly
those lines (:data:`NOISE`) and forwards every other byte to the real stderr. A separate process,
not a thread: when the command dies abruptly (a C++ ``abort()``, a segfault, ``os._exit``), the
filter still drains what was written before, until every writer has gone, so a fatal message is
never lost. Python's own ``sys.stderr`` (rich's tables and progress bars, tracebacks, warnings)
goes straight to the terminal, so it keeps its colours and live display.

Only the CLI installs it (:func:`filter_stderr` in :func:`seqdeploy.app.console.main`); the library
never touches the process's file descriptors.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from typing import Iterator

#: the start-up lines dropped, as one regular expression over a whole line (bytes)
NOISE = re.compile(
    rb"^(?:WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\..*"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized .*"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)\r?\n?$"
)

# The filter process: stdin is the pipe (the command's fd 2), stdout the terminal's stderr.
_FILTER = r"""
import os, re, sys
noise = re.compile({pattern!r})
out = sys.stdout.fileno()
for line in sys.stdin.buffer:
    if not noise.match(line):
        os.write(out, line)
"""


def drop_noise(text: bytes) -> bytes:
    """``text`` without the :data:`NOISE` lines (what the filter process forwards).

    >>> drop_noise(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\nerror: real\\n")
    b'error: real\\n'
    """
    return b"".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


@contextlib.contextmanager
def filter_stderr() -> Iterator[None]:
    """Route file descriptor 2 through the noise filter for the duration of the block.

    ``sys.stderr`` is rebound to a duplicate of the original stderr, so Python output bypasses
    the filter; on exit fd 2 is restored and the filter drains what is left. A no-op where fd 2
    cannot be redirected (no fd 2, or the filter process cannot start).
    """
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER.format(pattern=NOISE.pattern)],
                                stdin=subprocess.PIPE, stdout=original, stderr=original, close_fds=True)
    except OSError:
        os.close(original)
        yield
        return
    old_stderr = sys.stderr
    encoding = getattr(old_stderr, "encoding", None) or "utf-8"
    direct = io.TextIOWrapper(io.FileIO(os.dup(original), "w"), encoding=encoding, errors="backslashreplace",
                              line_buffering=True, write_through=True)
    os.dup2(proc.stdin.fileno(), 2)
    proc.stdin.close()  # fd 2 (and children that inherit it) now hold the pipe's only write ends
    sys.stderr = direct
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            direct.flush()
        os.dup2(original, 2)  # closes this process's last write end of the pipe: the filter sees EOF
        os.close(original)
        sys.stderr = old_stderr
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)  # a child that inherited fd 2 and outlives the command keeps the filter alive
        with contextlib.suppress(Exception):
            direct.close()


def cli_environment() -> None:
    """TensorFlow's logging for the command line, before TensorFlow is imported (never in the library):
    C++ INFO and WARNING lines off, ERROR and FATAL kept (level 2; 3 would hide real errors too).
    ``TF_ENABLE_ONEDNN_OPTS`` is left alone: turning oneDNN off would change Keras's numbers and speed
    (bench times Keras); its notice is dropped by the filter instead."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


__all__ = ["NOISE", "cli_environment", "drop_noise", "filter_stderr"]
