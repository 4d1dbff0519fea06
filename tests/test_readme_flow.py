"""The README's own commands, run as written and in order: segment → eval → report → export.

They are read from README.md: the ``bash`` block that follows the marker comment naming this file
in the quick start. Only the model is swapped for the tiny seeded one (``TINY_MODEL`` is appended
to the commands that load a model), and the ground truth that ``eval`` needs is generated.
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
MARKER = "<!-- The commands of this block are run, in order, by tests/test_readme_flow.py. -->"


def readme_commands() -> list[str]:
    """The ``scclip`` lines of the first ``bash`` block after :data:`MARKER` in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert MARKER in text, "README.md lost the marker of its tested commands"
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("scclip ")]


README_COMMANDS = readme_commands()
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
    assert Path("masks/report.html").is_file()


def test_the_readme_chain_covers_every_step() -> None:
    """The tested block goes through each command a user chains."""
    steps = [shlex.split(c)[1] for c in README_COMMANDS]
    assert steps[:3] == ["segment", "eval", "report"] and "export" in steps


def quick_start_commands() -> list[str]:
    """Every ``scclip`` command of the quick start's code blocks (continuation lines joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in section.split("```bash\n")[1:]:
        joined = block.split("```", 1)[0].replace("\\\n", " ")
        commands += [" ".join(line.split()) for line in joined.splitlines()]
    return [c for c in commands if c.startswith("scclip ")]


@pytest.mark.slow
def test_the_quick_start_runs_as_written_with_random_weights(tmp_path, monkeypatch, capsys):
    """The quick start's network-free command runs as printed (the others need real weights and
    are run above with the tiny model)."""
    offline = [c for c in quick_start_commands() if "--pretrained random" in c]
    assert len(offline) == 1
    (tmp_path / "sample_images").symlink_to(ROOT / "sample_images")
    (tmp_path / "vocab").symlink_to(ROOT / "vocab")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(offline[0])[1:]) == 0, capsys.readouterr().err
    stems = sorted(p.stem for p in (ROOT / "sample_images").glob("*.jpg"))
    assert sorted(p.stem for p in Path("masks").glob("*.png")) == sorted([*stems, "legend"])
    assert all(c in quick_start_commands() for c in README_COMMANDS)
