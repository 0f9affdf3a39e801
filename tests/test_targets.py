"""The output-target registry (seqdeploy.targets): a new target module is a new `seqdeploy export` option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from typer.testing import CliRunner

import seqdeploy.targets as targets
from seqdeploy.app.commands.export import with_target_options, export


@dataclass(frozen=True)
class Copied:
    bundle: str
    destination: str


def test_a_registered_target_gets_an_export_option_and_its_own_output(monkeypatch, tmp_path):
    targets.available_targets()  # the built-in targets first, then a registry this test may change
    monkeypatch.setattr(targets._REGISTRY, "entries", dict(targets._REGISTRY.entries))
    calls = []

    @targets.register("plain-dir", "a directory with the bundle's files", option_help="Copy the bundle into DIR.",
                      describe=lambda r: [f"copied {r.bundle} -> {r.destination}"])
    def write_plain(bundle, destination):  # what the new module holds
        calls.append((Path(bundle), Path(destination)))
        return Copied(str(bundle), str(destination))

    assert list(targets.available_targets()) == ["plain-dir", "triton"]
    app = typer.Typer()
    app.command("export")(with_target_options(export))
    app.command("other")(lambda: None)  # two commands: `export` stays a subcommand
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")  # a bundle: the targets are written without exporting first
    runner = CliRunner()
    help_text = " ".join(runner.invoke(app, ["export", "--help"], terminal_width=200).output.split())
    assert "--plain-dir" in help_text and "Copy the bundle into DIR." in help_text and "--triton" in help_text
    res = runner.invoke(app, ["export", str(bundle), "--plain-dir", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert calls == [(bundle, tmp_path / "out")]
    assert f"copied {bundle} -> {tmp_path / 'out'}" in " ".join(res.output.split())
    res = runner.invoke(app, ["export", str(bundle), "--plain-dir", str(tmp_path / "o2"), "--json"])
    assert res.exit_code == 0 and '"destination"' in res.stdout and len(calls) == 2


def test_unknown_target_is_a_usage_error():
    import pytest

    from seqdeploy.errors import UsageError

    with pytest.raises(UsageError, match="unknown output target 'nope'.*triton"):
        targets.get_target("nope")
