"""``scclip export`` through the CLI: no model (no torch), one clear line and exit 2 on bad
input, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from scclip_cli.cli.app import main
from support.segment_output import make_segment_output


def run(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def small_output(tmp_path: Path) -> Path:
    labels = np.zeros((6, 8), dtype=np.int64)
    labels[2:5, 3:7] = 1
    return make_segment_output(tmp_path / "masks", ["background", "chat été"], {"a": labels})


def test_export_loads_no_model(tmp_path):
    masks = small_output(tmp_path)
    code = (
        "import sys\n"
        "from scclip_cli.cli.app import main\n"
        f"assert main(['export', {str(masks)!r}, '--to', 'yolo', '--out', "
        f"{str(tmp_path / 'y')!r}, '-q']) == 0\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "y/labels/a.txt").read_text().startswith("0 ")


def test_cli_reports_what_it_wrote(tmp_path, capsys):
    masks = small_output(tmp_path)
    rc, _, err = run(["export", masks, "--to", "coco", "--out", tmp_path / "c.json"], capsys)
    assert rc == 0
    assert err == f"scclip: exported 1 images (2 annotations) as coco to {tmp_path / 'c.json'}\n"
    assert [c["name"] for c in json.loads((tmp_path / "c.json").read_text())["categories"]] == [
        "background",
        "chat été",
    ]
    tasks = tmp_path / "ls.json"
    rc, _, err = run(["export", masks, "--to", "labelstudio", "--out", tasks], capsys)
    assert rc == 0
    config = tmp_path / "ls.config.xml"
    assert err.endswith(f"as labelstudio to {tasks}, {config}\n"), err
    assert config.is_file()


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    masks = small_output(tmp_path)
    (tmp_path / "plain").mkdir()
    cases = [
        (["export", tmp_path / "plain", "--to", "coco", "--out", tmp_path / "o.json"], "no legend"),
        (["export", tmp_path / "nowhere", "--to", "coco", "--out", tmp_path / "o.json"], "no such"),
        (["export", masks, "--to", "voc", "--out", tmp_path / "o.json"], "unknown export format"),
        (["export", masks, "--to", "coco", "--out", masks / "legend.json"], "already exists"),
    ]
    before = sorted(tmp_path.rglob("*"))
    for args, message in cases:
        rc, _, err = run(args, capsys)
        assert rc == 2, args
        assert err.startswith("scclip: error:") and message in err, err
    assert sorted(tmp_path.rglob("*")) == before
