"""``scclip --version`` prints the installed version without importing torch; a mistyped option is
one usage message (exit 2), not a traceback."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata


def test_version_prints_the_installed_version_without_importing_torch():
    code = (
        "import sys\n"
        "from scclip_cli.cli.app import main\n"
        "rc = main(['--version'])\n"
        "assert rc == 0, rc\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"scclip {metadata.version('scclip-cli')}\n"


def test_the_package_reports_the_same_version():
    import scclip_cli

    assert scclip_cli.__version__ == metadata.version("scclip-cli")


def test_an_unknown_option_is_a_usage_message_not_a_traceback(capsys):
    from scclip_cli.cli.app import main

    assert main(["segment", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --no-such-option" in err
    assert "Traceback" not in err
