"""The Typer application and the single mapping from exceptions to messages and exit codes.

Importing this module must stay cheap: command modules import torch and friends inside their
functions, so ``scclip --help`` answers instantly.
"""

from __future__ import annotations

import sys

import typer

from scclip_cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    ScclipError,
    Terminated,
)

DISTRIBUTION = "scclip-cli"
"""The name scclip is installed under (``pip show scclip-cli``)."""

app = typer.Typer(
    name="scclip",
    help="Training-free open-vocabulary segmentation of image folders with Self-Calibrated CLIP.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def package_version() -> str:
    """The installed version of scclip (from the package metadata), or ``unknown``."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        print(f"scclip {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print scclip's version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Options that come before the command (``scclip --version``)."""


def _register_commands() -> None:
    # The command modules only define functions; registering them here keeps the order of the help
    # fixed and the modules free of any import of this one.
    if app.registered_commands:
        return
    from scclip_cli.cli import eval_cmd, export_cmd, report_cmd, segment_cmd, vocab_cmd

    app.command("segment")(segment_cmd.segment_command)
    app.command("eval")(eval_cmd.eval_command)
    app.command("vocab")(vocab_cmd.vocab_command)
    app.command("export")(export_cmd.export_command)
    app.command("report")(report_cmd.report_command)


def report_error(err: BaseException) -> int:
    """Print one clear line for a user-caused error and return its exit code."""
    if isinstance(err, ScclipError):
        print(f"scclip: error: {err}", file=sys.stderr)
        return err.exit_code
    if isinstance(err, Terminated):
        print("scclip: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    if isinstance(err, KeyboardInterrupt):
        print("scclip: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    raise err


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; :class:`ScclipError` becomes one message, no traceback.

    Commands return their exit code (``segment`` returns 1 when some inputs failed).
    """
    from scclip_cli.cli.signals import forget_sigterm, sigterm_received

    _register_commands()
    forget_sigterm()
    aborts, usage_errors = _click_exception_types()
    try:
        result = app(args=argv, prog_name="scclip", standalone_mode=False)
    except (ScclipError, KeyboardInterrupt, *aborts) as err:  # type: ignore[misc]
        return report_error(KeyboardInterrupt() if isinstance(err, aborts) else err)
    except usage_errors as err:
        err.show()  # type: ignore[attr-defined]
        return err.exit_code if err.exit_code else EXIT_USAGE  # type: ignore[attr-defined]
    if result == EXIT_INTERRUPTED:  # Typer ends a KeyboardInterrupt with this exit code
        return report_error(Terminated() if sigterm_received() else KeyboardInterrupt())
    return result if isinstance(result, int) else 0


def _click_exception_types() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """``(Abort classes, ClickException classes)``: click's, and those of the copy of click that
    newer typer releases carry (``typer.Abort``; typer's ``BadParameter`` derives from its own
    ``ClickException``, which is not click's)."""
    import click

    vendored = [c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"]
    aborts = (click.exceptions.Abort, typer.Abort)
    return aborts, (click.exceptions.ClickException, *vendored)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
