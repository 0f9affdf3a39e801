"""The ``seqdeploy`` console script: the CLI when its extra is installed, an install hint when it is not.

``pip install seqdeploy`` (the base install: numpy + onnxruntime, what an application
embedding a bundle needs) still creates the ``seqdeploy`` command; without the
``cli`` extra it says which extra to install and exits 2 instead of a traceback. The command's
stderr goes through :mod:`seqdeploy.app.stderr_filter`.
"""

from __future__ import annotations

import sys

_CLI_MODULES = ("typer", "rich", "click")


def main() -> None:
    from seqdeploy.app.stderr_filter import cli_environment, filter_stderr

    cli_environment()  # before anything imports TensorFlow
    with filter_stderr():  # first, while the process is small: TensorFlow's C++ start-up lines never reach the terminal
        try:
            from seqdeploy.app.cli import main as cli_main
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in _CLI_MODULES:
                raise
            sys.stderr.write(f"seqdeploy: the command line needs the 'cli' extra ({exc.name} is not installed); "
                             f"install it with: pip install 'seqdeploy[cli]' (predict, inspect, serve) or "
                             f"'seqdeploy[toolchain]' (train, export, verify, quantize, tune, bench)\n")
            raise SystemExit(2) from None
        cli_main()


if __name__ == "__main__":
    main()
