"""``scclip report`` and ``scclip segment --report`` through the CLI: exit codes and messages."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from scclip_cli.cli.app import main
from support.fake_run import write_fake_run

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
FAST = ["--short-side", "64", "--crop", "64", "--stride", "32"]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_report_writes_the_page_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_fake_run(tmp_path, 3)
    assert main(["report", str(run.out)]) == 0
    err = capsys.readouterr().err
    assert f"wrote {run.out / 'report.html'} (3 images; thumbnails: 3 drawn, 0 reused)" in err
    assert main(["report", str(run.out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("case", ["missing-folder", "empty-folder", "missing-eval"])
def test_bad_input_exits_2_with_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", str(tmp_path / "nowhere")]
    if case == "empty-folder":
        (tmp_path / "empty").mkdir()
        args = ["report", str(tmp_path / "empty")]
    elif case == "missing-eval":
        run = write_fake_run(tmp_path, 1)
        args = ["report", str(run.out), "--eval", str(tmp_path / "eval.json")]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scclip: error:"), lines


def test_report_does_not_import_torch(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path, 2)
    code = (
        "import sys\n"
        "from scclip_cli.cli.app import main\n"
        f"assert main(['report', {str(run.out)!r}, '-q']) == 0\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_segment_report_writes_the_page_at_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (40 + i, 30), (40 * i, 90, 200)).save(images / f"p{i}.jpg")
    (images / "broken.jpg").write_bytes(b"not a picture")
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background\ncat\ndog\n", encoding="utf-8")
    out = tmp_path / "out"
    args = [str(images), "--vocab", str(vocab), "--out", str(out), *TINY, *FAST, "--report"]
    assert main(["segment", *args]) == 1  # one input failed: the page is written all the same
    assert f"wrote {out / 'report.html'} (2 images" in capsys.readouterr().err
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "broken.jpg" in page  # the failure is on the page
    assert sorted(p.name for p in (out / "report_files" / "overlays").iterdir()) == [
        "p0.jpg",
        "p1.jpg",
    ]
    (out / "report.html").unlink()
    assert main(["segment", *args, "--quiet"]) == 1  # a rerun (retrying broken.jpg) too
    assert capsys.readouterr().err == ""
    assert (out / "report.html").is_file()


def test_shards_sharing_a_folder_make_one_page(tmp_path: Path) -> None:
    import json
    import re

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (36, 30 + i), (70 * i, 100, 30)).save(images / f"p{i}.jpg")
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background\ncat\ndog\n", encoding="utf-8")
    out = tmp_path / "out"
    args = [str(images), "--vocab", str(vocab), "--out", str(out), "-q", *TINY, *FAST]
    for shard in ("1/2", "2/2"):
        assert main(["segment", *args, "--shard", shard]) == 0
    assert main(["report", str(out), "-q"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.DOTALL)[1])
    assert [im["key"] for im in data["images"]] == ["p0", "p1", "p2"]
    assert [run["file"] for run in data["runs"]] == [
        "summary.shard-1-of-2.json",
        "summary.shard-2-of-2.json",
    ]
    assert [run["counts"]["done"] for run in data["runs"]] == [2, 1]
    assert ["run.shard", ["1/2", "2/2"]] in data["config"]["differs"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _ClosedTerminal(io.StringIO):
    """A stream whose ``isatty`` fails as a closed file's does (text still collected)."""

    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


class _NoIsatty:
    """A stream with ``write`` and ``flush`` only."""

    def __init__(self) -> None:
        self.text = io.StringIO()

    def write(self, text: str) -> int:
        return self.text.write(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return self.text.getvalue()


@pytest.mark.parametrize(
    ("stream", "quiet", "bar"),
    [
        (_Terminal, False, True),
        (_Terminal, True, False),
        (io.StringIO, False, False),
        (io.StringIO, True, False),
        (_ClosedTerminal, False, False),
        (_NoIsatty, False, False),
    ],
    ids=["terminal", "terminal-quiet", "pipe", "pipe-quiet", "isatty-fails", "no-isatty"],
)
def test_progress_bar_only_on_a_terminal_and_never_with_quiet(
    stream: type, quiet: bool, bar: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = write_fake_run(tmp_path, 3)
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["report", str(run.out), *(["--quiet"] if quiet else [])]) == 0
    monkeypatch.undo()
    text = err.getvalue()
    line = f"scclip: wrote {run.out / 'report.html'} (3 images; thumbnails: 3 drawn, 0 reused)\n"
    if quiet:
        assert text == ""
    elif bar:
        assert "thumbnails: 100%" in text and text.endswith(line), text
    else:
        assert text == line


def test_one_thumbnail_thread_draws_one_thumbnail_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--workers 1`` on a machine where the default would be 8 threads: never two thumbnails
    drawn at once (the first draw waits a moment for a second one to start)."""
    import threading

    from scclip_cli.runs import report

    run = write_fake_run(tmp_path, 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    draw = report.write_overlay_thumbnail
    lock, second_started = threading.Lock(), threading.Event()
    active, peak, calls = [0], [0], [0]

    def spy(*args: object, **kwargs: object) -> object:
        with lock:
            active[0] += 1
            calls[0] += 1
            peak[0] = max(peak[0], active[0])
            first = calls[0] == 1
            if active[0] > 1:
                second_started.set()
        if first:
            second_started.wait(timeout=1.5)
        try:
            return draw(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(report, "write_overlay_thumbnail", spy)
    assert main(["report", str(run.out), "--workers", "1", "-q"]) == 0
    assert peak[0] == 1
    assert len(list((run.out / "report_files").rglob("*.jpg"))) == 3
