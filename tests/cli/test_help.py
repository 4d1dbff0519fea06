"""The CLI's entry points stay light: --help must not import torch."""

import subprocess
import sys


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from scclip_cli.cli.app import main\n"
        "rc = main(['--help'])\n"
        "assert rc == 0, rc\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for command in ("segment", "eval", "vocab", "export"):
        assert command in out.stdout


def test_subcommand_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from scclip_cli.cli.app import main\n"
        "for cmd in ('segment', 'eval', 'vocab', 'export'):\n"
        "    assert main([cmd, '--help']) == 0\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
