"""Keep TensorFlow's C++ start-up lines off the terminal, and everything else on it.

TensorFlow and TFLite write a few notices from C++ straight to file descriptor 2, some before
``TF_CPP_MIN_LOG_LEVEL`` is read (absl's "All log messages before absl::InitializeLog() ..." line, the
oneDNN notice, TFLite's "Created TensorFlow Lite XNNPACK delegate" line). Python cannot catch them,
so the command line routes fd 2 through a pipe read by a small filter process that drops exactly
those lines (:data:`NOISE`) and forwards every other byte to the real stderr. A separate process
(forked: no interpreter start-up), not a thread: when the command dies abruptly (a C++ ``abort()``,
a segfault, ``os._exit``), the filter still drains what was written before, until every writer has
gone, so a fatal message is never lost; it ignores Ctrl-C, which is for the command. Python's own ``sys.stderr`` (rich's tables and progress bars, tracebacks, warnings)
goes straight to the terminal, so it keeps its colours and live display.

Only the CLI installs it (:func:`filter_stderr` in :func:`seqdeploy.app.console.main`); the library
never touches the process's file descriptors.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from typing import Callable, Iterator

#: the start-up lines dropped, as one regular expression over a whole line (bytes)
NOISE = re.compile(
    rb"^(?:WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\..*"
    rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized .*"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)\r?\n?$"
)

def drop_noise(text: bytes) -> bytes:
    """``text`` without the :data:`NOISE` lines (what the filter process forwards).

    >>> drop_noise(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\nerror: real\\n")
    b'error: real\\n'
    """
    return b"".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


def pump(read_fd: int, write_fd: int) -> None:
    """Copy ``read_fd`` to ``write_fd`` line by line until end of file, dropping the :data:`NOISE` lines
    (a last line without a newline is forwarded at end of file)."""
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except InterruptedError:  # pragma: no cover - retried by Python itself since 3.5
            continue
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not NOISE.match(line + b"\n"))
        if out:
            _write_all(write_fd, out)
    if pending and not NOISE.match(pending):
        _write_all(write_fd, pending)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:  # the terminal went away: nothing left to show it on
            return


# Where fork is missing (Windows), the filter is a fresh interpreter: stdin is the pipe, stdout the terminal.
_SPAWNED_FILTER = "import os, sys\nfrom seqdeploy.app.stderr_filter import pump\npump(0, 1)\n"


def _start_filter(original: int) -> tuple[int, Callable[[], None]]:
    """Start the filter process reading a new pipe and writing ``original``; (the pipe's write end, wait)."""
    if hasattr(os, "fork"):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the filter: a copy of this still small process (called before the CLI imports anything heavy)
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command: keep draining its output
                os.close(write_fd)
                pump(read_fd, original)
            finally:
                os._exit(0)
        os.close(read_fd)

        def wait() -> None:
            deadline = time.monotonic() + 2.0  # a child that inherited fd 2 and outlives the command keeps it alive
            while time.monotonic() < deadline:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
                time.sleep(0.005)

        return write_fd, wait
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-S", "-c", _SPAWNED_FILTER], stdin=subprocess.PIPE, stdout=original,
                            stderr=subprocess.DEVNULL, env=env)
    write_fd = os.dup(proc.stdin.fileno())
    proc.stdin.close()

    def wait_spawned() -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)

    return write_fd, wait_spawned


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
        write_fd, wait = _start_filter(original)
    except OSError:
        os.close(original)
        yield
        return
    old_stderr = sys.stderr
    encoding = getattr(old_stderr, "encoding", None) or "utf-8"
    direct = io.TextIOWrapper(io.FileIO(os.dup(original), "w"), encoding=encoding, errors="backslashreplace",
                              line_buffering=True, write_through=True)
    os.dup2(write_fd, 2)
    os.close(write_fd)  # fd 2 (and children that inherit it) now hold the pipe's only write ends
    sys.stderr = direct
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            direct.flush()
        os.dup2(original, 2)  # closes this process's last write end of the pipe: the filter sees EOF
        os.close(original)
        sys.stderr = old_stderr
        wait()
        with contextlib.suppress(Exception):
            direct.close()


def cli_environment() -> None:
    """TensorFlow's logging for the command line, before TensorFlow is imported (never in the library):
    C++ INFO and WARNING lines off, ERROR and FATAL kept (level 2; 3 would hide real errors too).
    ``TF_ENABLE_ONEDNN_OPTS`` is left alone: turning oneDNN off would change Keras's numbers and speed
    (bench times Keras); its notice is dropped by the filter instead."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


__all__ = ["NOISE", "cli_environment", "drop_noise", "filter_stderr", "pump"]
