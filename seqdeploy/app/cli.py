"""The seqdeploy command line: parse, call one library function, render, map errors.

Each command lives in ``seqdeploy/commands/<name>.py`` (one per stage, so the
commands stay small and can be read beside the library module they call) and
registers itself on :data:`app`. This module holds what they share: the app,
the consoles, ``--json`` output and the one table that maps library
exceptions to exit codes.

Importing this module must never import TensorFlow: ``seqdeploy --help`` and
``seqdeploy predict`` stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Callable, Iterator

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from seqdeploy import __version__
from seqdeploy.atomic import to_jsonable
from seqdeploy.app.stderr_filter import cli_environment
from seqdeploy.errors import CheckFailed, SeqdeployError

cli_environment()  # TensorFlow's log level for the command line (also when the app is run in-process)


def _help_type(param: Any, ctx: Any, typer_label: Callable[[Any, Any], str | None]) -> str | None:
    """The type column of ``--help``: nothing for flags (``--json``, ``--unsafe``: no ``<bool>``), the
    parameter's own metavar when it has one (``DIR``), else typer's label without the angle brackets (``PATH``, ``INT``)."""
    if getattr(param, "is_flag", False):
        return None
    if getattr(param, "metavar", None):
        return str(param.metavar)
    label = typer_label(param, ctx)
    if not label:
        return label
    label = label.strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1] + "..."  # repeatable
    return label.upper()


def _quiet_help_types() -> None:
    for cls in (typer.core.TyperOption, typer.core.TyperArgument):
        typer_label = getattr(cls, "display_type_rich", None)
        if typer_label is not None and not getattr(typer_label, "_seqdeploy", False):
            def display_type_rich(self: Any, ctx: Any, _label: Callable[[Any, Any], str | None] = typer_label) -> str | None:
                return _help_type(self, ctx, _label)

            display_type_rich._seqdeploy = True  # type: ignore[attr-defined]
            cls.display_type_rich = display_type_rich  # type: ignore[method-assign]


_quiet_help_types()

app = typer.Typer(
    name="seqdeploy",
    help="Compile Keras models (Sequential and Functional) into verified, benchmarked, quantized ONNX bundles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Human output goes to stderr so that `--json` leaves stdout to the result object alone.
# Piped or captured output gets 120 columns rather than rich's 80, so tables stay readable in logs.
_WIDTH = None if sys.stderr.isatty() else 120
console = Console(stderr=True, highlight=False, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, width=_WIDTH)

# Modules only the toolchain extra installs: missing ones are an install problem, not a bug.
_TOOLCHAIN_MODULES = {"tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common", "sklearn", "matplotlib",
                      "sympy", "psutil"}

JSON_OPTION = typer.Option(False, "--json", help="Print the result object as JSON on stdout (and nothing else there).")
CUSTOM_OBJECTS_OPTION = typer.Option(
    [], "--custom-objects", help="A .py file or module defining the model's custom layers/functions (repeatable); "
                                 "it is imported (its code runs).")


def emit_json(result: Any) -> None:
    """Print ``result`` (a dataclass or plain data) as JSON on stdout."""
    sys.stdout.write(json.dumps(to_jsonable(result), indent=2) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def handle_errors(*, as_json: bool = False, on_check_failed: Callable[[Any], None] | None = None) -> Iterator[None]:
    """Map seqdeploy errors to a one-line message and exit code; let bugs keep their traceback.

    Only :class:`SeqdeployError` is caught: ``typer.Exit`` and genuine bugs pass through.
    A :class:`CheckFailed` still renders its result (``on_check_failed``) before exiting 1.
    """
    try:
        yield
    except CheckFailed as exc:
        if exc.result is not None:
            if as_json:
                emit_json(exc.result)
            elif on_check_failed is not None:
                on_check_failed(exc.result)
        err_console.print(f"[bold red]FAILED:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    except SeqdeployError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _TOOLCHAIN_MODULES:
            raise  # not an install problem: a bug, keep the traceback
        err_console.print("[bold red]error:[/] " + escape(
            f"this command needs {exc.name!r}, which is part of the toolchain extra and is not installed; "
            "install it with: pip install 'seqdeploy[toolchain]'"), soft_wrap=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished stages and files are intact; rerun to continue")
        raise typer.Exit(130)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"seqdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
) -> None:
    """Keras -> ONNX compile-and-deploy toolchain."""


def _register_commands() -> None:
    # Imported for their side effect of registering on `app`; each keeps heavy imports lazy.
    import importlib
    import importlib.util

    for name in ("train", "export", "verify", "quantize", "tune", "bench", "predict", "inspect", "pipeline", "doctor", "serve"):
        if importlib.util.find_spec(f"seqdeploy.app.commands.{name}") is not None:
            importlib.import_module(f"seqdeploy.app.commands.{name}")


_register_commands()


def main() -> None:
    app()
