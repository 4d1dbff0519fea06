"""What ``scclip segment`` must never write over: the run's legend, and a stale completion
marker left beside outputs that could not be rewritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scclip_cli.cli.app import main
from support.image_factory import save_blurred_noise

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
FAST = ["--short-side", "32", "--crop", "32", "--stride", "16", "-q"]


def write_photo(path: Path, seed: int) -> None:
    save_blurred_noise(path, 40, 30, seed)


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("background\ncat\ndog\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("stem", ["legend", "summary"])
def test_an_input_named_like_a_run_file_is_refused_before_the_model_loads(
    tmp_path: Path, vocab: Path, stem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``legend.jpg`` would write its mask over the run's ``legend.png`` (``summary.jpg`` its
    statistics over ``summary.json``): the run stops with exit status 2, naming the file."""
    write_photo(tmp_path / "images" / f"{stem}.jpg", 1)
    write_photo(tmp_path / "images" / "other.jpg", 2)
    out = tmp_path / "out"
    rc = main(["segment", str(tmp_path / "images"), "-v", str(vocab), "-o", str(out), *TINY, *FAST])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{stem}." in err
    assert not out.exists() or not any(out.iterdir())


def test_a_redone_image_whose_mask_cannot_be_written_loses_its_old_marker(
    tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON marks an image complete. When an image is redone (``--overwrite``) and its new
    mask cannot be written, the old JSON must go: left in place, it would vouch for outputs that
    are no longer the run's, and the next run would skip the image."""
    write_photo(tmp_path / "images" / "a.jpg", 1)
    write_photo(tmp_path / "images" / "b.jpg", 2)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "images"), "-v", str(vocab), "-o", str(out), *TINY, *FAST]
    assert main(args) == 0
    assert (out / "a.json").is_file()
    (out / "a.png").unlink()
    (out / "a.png").mkdir()  # the mask cannot be written there now
    (out / "a.png" / "keep").write_text("x")
    assert main([*args, "--overwrite"]) == 1
    capsys.readouterr()
    assert not (out / "a.json").exists()
    assert (out / "b.json").is_file()
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(Path(f["path"]).name, f["stage"]) for f in failures] == [("a.jpg", "write")]
