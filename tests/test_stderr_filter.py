"""The command line keeps TensorFlow's C++ start-up lines off stderr and forwards everything else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOISE_LINES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796400952.120597   21150 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders. "
    b"To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
]
NOISE_MARKS = ("absl::InitializeLog", "oneDNN custom operations", "XNNPACK delegate")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_drop_noise_keeps_every_other_line():
    from seqdeploy.app.stderr_filter import drop_noise

    real = [b"E0000 00:00:1.2   7 kernel.cc:1] something failed\n", b"INFO: Created something else.\n", b"tail"]
    text = b"".join([NOISE_LINES[0], real[0], NOISE_LINES[1], real[1], NOISE_LINES[2], real[2]])
    assert drop_noise(text) == b"".join(real)


def test_fd2_writes_are_filtered_and_survive_an_abort(tmp_path):
    """C-level writes to fd 2: noise dropped, the rest forwarded, even when the process aborts right after."""
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from seqdeploy.app.stderr_filter import filter_stderr
        with filter_stderr():
            print("python-level line", file=sys.stderr)
            for line in {NOISE_LINES!r}:
                os.write(2, line)
            os.write(2, b"F0000 check failed: a real fatal error\\n")
            os.abort()
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, env=_env(), timeout=60)
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "python-level line" in err and "F0000 check failed: a real fatal error" in err
    assert not any(mark in err for mark in NOISE_MARKS), err


def test_cli_verify_prints_no_tensorflow_startup_lines(trained_mlp_run, tmp_path):
    """`seqdeploy verify` in a real process: none of TensorFlow's start-up lines, and real errors still show."""
    from seqdeploy.export.convert import export_onnx

    run = tmp_path / "run"
    shutil.copytree(trained_mlp_run, run)
    export_onnx(run)
    cli = [sys.executable, "-m", "seqdeploy"]
    ok = subprocess.run(cli + ["verify", str(run), "--samples", "20"], capture_output=True, env=_env(), timeout=300)
    err = ok.stderr.decode()
    assert ok.returncode == 0, err
    assert "PASS" in err
    assert not any(mark in err for mark in NOISE_MARKS), err
    assert (run / "manifest.json").is_file() and "verification" in (run / "manifest.json").read_text()
    bad = subprocess.run(cli + ["verify", str(run), "--onnx", str(tmp_path / "missing.onnx")], capture_output=True,
                         env=_env(), timeout=300)
    assert bad.returncode == 2 and "missing.onnx does not exist" in bad.stderr.decode()
