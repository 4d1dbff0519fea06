"""The application in-process: version, the console-script entry point, and how errors, Ctrl-C
and a stop signal end a command (one line on stderr and the documented exit status)."""

from __future__ import annotations

import os
import re
import signal
import sys
from importlib import metadata
from pathlib import Path

import click
import pytest
import typer

from scclip_cli.cli.app import main, package_version, report_error, run
from scclip_cli.errors import ImageReadError, Terminated, UsageError


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert package_version() == metadata.version("scclip-cli")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"scclip {metadata.version('scclip-cli')}\n"


def test_version_of_a_source_tree_never_installed_is_unknown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert package_version() == "unknown"
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "scclip unknown\n"


def test_the_console_script_exits_with_the_command_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["scclip", "--version"])
    with pytest.raises(SystemExit) as done:
        run()
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("scclip ")
    nowhere = str(tmp_path / "nowhere")
    monkeypatch.setattr(sys, "argv", ["scclip", "export", nowhere, "--to", "coco", "--out", "x"])
    with pytest.raises(SystemExit) as done:
        run()
    assert done.value.code == 2
    assert capsys.readouterr().err.startswith("scclip: error: ")


def test_each_kind_of_error_is_one_line_and_its_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert report_error(UsageError("--crop must be positive")) == 2
    assert capsys.readouterr().err == "scclip: error: --crop must be positive\n"
    assert report_error(ImageReadError("a.jpg: cannot read")) == 1
    assert capsys.readouterr().err == "scclip: error: a.jpg: cannot read\n"
    assert report_error(Terminated()) == 143
    assert capsys.readouterr().err == "scclip: terminated (SIGTERM)\n"
    assert report_error(KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == "scclip: interrupted\n"
    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as a user error
        report_error(ZeroDivisionError("bug"))


def interrupt_export(monkeypatch: pytest.MonkeyPatch, raised: BaseException | None) -> None:
    """``export_masks`` raises ``raised`` (``None``: a SIGTERM arrives while it runs)."""
    from scclip_cli.cli.signals import sigterm_as_interrupt
    from scclip_cli.runs import export

    def stopped(*args: object, **kwargs: object) -> None:
        if raised is not None:
            raise raised
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("the signal did not stop the command")

    monkeypatch.setattr(export, "export_masks", stopped)


EXPORT = ["export", "masks", "--to", "coco", "--out", "out.json"]


@pytest.mark.parametrize(
    ("raised", "status", "message"),
    [
        (KeyboardInterrupt(), 130, "scclip: interrupted\n"),
        (None, 143, "scclip: terminated (SIGTERM)\n"),
        (UsageError("bad"), 2, "scclip: error: bad\n"),
        (typer.Abort(), 130, "scclip: interrupted\n"),
        (click.exceptions.Abort(), 130, "scclip: interrupted\n"),
    ],
    ids=["ctrl-c", "stop-signal", "error", "abort", "click-abort"],
)
def test_a_command_stopped_exits_with_its_status_and_one_line(
    raised: BaseException | None,
    status: int,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    interrupt_export(monkeypatch, raised)
    assert main(EXPORT) == status
    assert capsys.readouterr().err.endswith(message)
    monkeypatch.undo()
    interrupt_export(monkeypatch, KeyboardInterrupt())
    assert main(EXPORT) == 130  # a later command of the same process is not taken for a stop
    assert capsys.readouterr().err.endswith("scclip: interrupted\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["export", "masks", "--to", "coco"], "Usage: scclip export [OPTIONS]"),
        (["export", "masks", "--to", "coco"], "Missing option '--out'"),
        (["report", "out", "--workers", "0"], "Invalid value for '--workers'"),
    ],
)
def test_a_usage_mistake_is_a_usage_message_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_help_lists_the_commands_in_their_order(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    names = re.findall(r"^\W*(segment|eval|vocab|export|report) {2,}\S", out, re.MULTILINE)
    assert names == ["segment", "eval", "vocab", "export", "report"], out
