"""The README's own commands, run as written and in order: segment → eval → export.

Only the model is swapped for the tiny seeded one (``TINY_MODEL`` is appended to the commands that
load a model), and the ground truth that ``eval`` needs is generated. The commands are one list
here so they can later be read from README.md itself.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main

ROOT = Path(__file__).resolve().parents[1]

README_COMMANDS = [
    "scclip segment sample_images/ --vocab vocab/everyday.txt --out masks/ --overlay "
    "--save-confidence",
    "scclip eval --pred masks/ --gt labels/ --vocab vocab/everyday.txt --json eval.json",
    "scclip export masks/ --to coco --out masks.coco.json --images sample_images/",
    "scclip export masks/ --to labelstudio --out tasks.json --images sample_images/ "
    "--order confidence",
    "scclip export masks/ --to cvat --out masks.cvat.zip",
    "scclip export masks/ --to yolo --out yolo/ --images sample_images/ --min-area 64",
]
TINY_MODEL = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
LOADS_A_MODEL = ("segment",)


def argv_of(command: str) -> list[str]:
    program, *args = shlex.split(command)
    assert program == "scclip"
    return args + (TINY_MODEL if args[0] in LOADS_A_MODEL else [])


def write_ground_truth(images: Path, labels: Path) -> None:
    """A label PNG per sample image, its size, class 1 in the middle, class 0 around."""
    labels.mkdir()
    for path in sorted(images.glob("*.jpg")):
        width, height = Image.open(path).size
        gt = np.zeros((height, width), dtype=np.uint8)
        gt[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
        Image.fromarray(gt, mode="L").save(labels / f"{path.stem}.png")


@pytest.mark.slow
def test_readme_commands_chain(tmp_path, monkeypatch, capsys):
    (tmp_path / "sample_images").symlink_to(ROOT / "sample_images")
    (tmp_path / "vocab").symlink_to(ROOT / "vocab")
    write_ground_truth(ROOT / "sample_images", tmp_path / "labels")
    monkeypatch.chdir(tmp_path)
    for command in README_COMMANDS:
        rc = main(argv_of(command))
        _, err = capsys.readouterr()
        assert rc == 0, f"{command}\n{err}"
        assert "Traceback" not in err
    stems = sorted(p.stem for p in (ROOT / "sample_images").glob("*.jpg"))
    assert sorted(p.stem for p in Path("masks").glob("*_conf.png")) == [f"{s}_conf" for s in stems]
    report = json.loads(Path("eval.json").read_text())
    assert report["num_images"] == len(stems)
    coco = json.loads(Path("masks.coco.json").read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == [f"{s}.jpg" for s in stems]
    assert Path("tasks.config.xml").is_file() and Path("masks.cvat.zip").is_file()
    assert sorted(p.stem for p in Path("yolo/labels").glob("*.txt")) == stems
