"""The command line's shared parts (seqdeploy.app.cli): help text without type noise on flags."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from seqdeploy.app.cli import app

runner = CliRunner()
COMMANDS = ("train", "export", "verify", "quantize", "tune", "bench", "predict", "inspect", "pipeline", "doctor", "serve")


def _help(*args: str) -> str:
    res = runner.invoke(app, [*args, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.output


def test_top_level_help_names_both_model_kinds_and_has_no_type_noise():
    out = _help()
    assert "Keras models (Sequential and Functional)" in " ".join(out.split())
    assert not re.search(r"<(bool|path|int|float|str)>", out), out


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_no_angle_bracket_types(command):
    out = _help(command)
    assert not re.search(r"<(bool|path|int|float|str|list\[str\])>", out), out
    flag_rows = [ln for ln in out.splitlines() if re.search(r"│\s+--(json|help)\b", ln)]
    assert flag_rows and all("BOOL" not in ln for ln in flag_rows)  # flags carry no type at all
