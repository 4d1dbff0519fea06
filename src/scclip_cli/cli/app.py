"""The Typer application and the single mapping from exceptions to messages and exit codes.

Importing this module must stay cheap: command modules import torch and friends inside their
functions, so ``scclip --help`` answers instantly.
"""

from __future__ import annotations

import sys

import typer

from scclip_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, ScclipError

app = typer.Typer(
    name="scclip",
    help="Training-free open-vocabulary segmentation of image folders with Self-Calibrated CLIP.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _register_commands() -> None:
    # The command modules only define functions; registering them here keeps the order of the help
    # fixed and the modules free of any import of this one.
    if app.registered_commands:
        return
    from scclip_cli.cli import eval_cmd, export_cmd, segment_cmd, vocab_cmd

    app.command("segment")(segment_cmd.segment_command)
    app.command("eval")(eval_cmd.eval_command)
    app.command("vocab")(vocab_cmd.vocab_command)
    app.command("export")(export_cmd.export_command)


def report_error(err: BaseException) -> int:
    """Print one clear line for a user-caused error and return its exit code."""
    if isinstance(err, ScclipError):
        print(f"scclip: error: {err}", file=sys.stderr)
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        print("scclip: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    raise err


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; :class:`ScclipError` becomes one message, no traceback.

    Commands return their exit code (``segment`` returns 1 when some inputs failed).
    """
    import click

    _register_commands()
    try:
        result = app(args=argv, prog_name="scclip", standalone_mode=False)
    except (ScclipError, KeyboardInterrupt, click.exceptions.Abort) as err:
        return report_error(KeyboardInterrupt() if isinstance(err, click.exceptions.Abort) else err)
    except click.exceptions.ClickException as err:
        err.show()
        return err.exit_code if err.exit_code else EXIT_USAGE
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
