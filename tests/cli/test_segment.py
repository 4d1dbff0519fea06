"""``scclip segment`` end to end with the tiny random-weight model: exit codes, messages, stdin,
``--jsonl``, ``--shard``, and a run killed with SIGKILL then resumed."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scclip_cli.cli.app import main
from support.image_factory import save_blurred_noise

TINY = ["--model", "scclip-tiny", "--pretrained", "random:7", "--device", "cpu"]
FAST = ["--short-side", "64", "--crop", "64", "--stride", "32"]
"""Small windows keep the tiny model at a few milliseconds per image."""
CLASSES = "background\ncat, kitten\ndog\ngrass\n"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tiny model's operations are microseconds long: with several torch threads on a busy
    2-core machine, each one waits for a descheduled thread and a 1-second test takes a minute."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text(CLASSES, encoding="utf-8")
    return path


def write_photo(path: Path, height: int, width: int, seed: int) -> Path:
    return save_blurred_noise(path, width, height, seed, cells=(4, 4))


def make_photos(root: Path, count: int, size: tuple[int, int] = (48, 64)) -> list[Path]:
    return [
        write_photo(root / f"set{i % 2}" / f"p{i:02}.jpg", size[0] + i % 3, size[1], i)
        for i in range(count)
    ]


def segment_cli(*args: Any) -> int:
    return main(["segment", *(str(a) for a in args)])


def per_image_outputs(out: Path) -> dict[str, bytes]:
    """Masks and per-image JSON by relative path (the run-level files are left out)."""
    run_files = ("summary", "failures", "legend")
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not (p.parent == out and p.name.startswith(run_files))
    }


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def start_segment(imgs: Path, out: Path, *options: Any) -> subprocess.Popen[bytes]:
    """``python -m scclip_cli segment`` in a subprocess; returns once its second image is done."""
    cmd = [sys.executable, "-m", "scclip_cli", "segment", imgs, "--out", out, *options]
    # One torch thread: the subprocess then keeps its pace when the test machine is busy.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    deadline = time.monotonic() + 300  # only reached when something is badly wrong
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.rglob("p*.json"))) >= 2:
            break
        time.sleep(0.005)
    return proc


# --- errors before any work: exit 2, one line, no traceback -------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown-model", "model"),
        ("missing-vocab", "classes-missing.txt"),
        ("empty-vocab", "empty"),
        ("no-images", "no images"),
        ("missing-input", "not found"),
        ("collision", "would both write"),
        ("bad-shard", "shard"),
        ("bad-stride", "stride"),
    ],
)
def test_configuration_errors_exit_2_with_one_clear_line(
    case: str,
    message: str,
    tmp_path: Path,
    vocab: Path,
    capsys: pytest.CaptureFixture[str],
    offline_hub: Path,
) -> None:
    imgs = tmp_path / "imgs"
    make_photos(imgs, 2)
    args: list[Any] = [imgs, "--vocab", vocab, "--out", tmp_path / "out", *TINY, *FAST, "-q"]
    if case == "unknown-model":
        args[args.index("scclip-tiny")] = "no-such-model-xyz"
    elif case == "missing-vocab":
        args[args.index(vocab)] = tmp_path / "classes-missing.txt"
    elif case == "empty-vocab":
        empty = tmp_path / "empty.txt"
        empty.write_text("\n")
        args[args.index(vocab)] = empty
    elif case == "no-images":
        (tmp_path / "nothing").mkdir()
        args[0] = tmp_path / "nothing"
    elif case == "missing-input":
        args[0] = tmp_path / "typo"
    elif case == "collision":
        write_photo(imgs / "set0" / "p00.png", 8, 8, 0)
    elif case == "bad-shard":
        args += ["--shard", "0/2"]
    elif case == "bad-stride":
        args += ["--stride", "500"]

    assert segment_cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("scclip: error:")
    assert message in lines[0].lower()
    assert not (tmp_path / "out" / "summary.json").exists()


# --- a whole run through the CLI -----------------------------------------------------------------


def test_every_kind_of_image_in_nested_folders(
    tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scclip_cli.files.mask_io import read_label_png
    from scclip_cli.files.palette import voc_colormap
    from support.image_factory import make_image_zoo, png_declaring_size

    root = tmp_path / "zoo"
    zoo = make_image_zoo(root / "kinds")
    zoo.separate_formats(root)
    zoo.add("bomb_png", png_declaring_size(root / "deep" / "er" / "bomb.png", 40_000, 40_000), None)
    out = tmp_path / "out"

    assert segment_cli(root, "--vocab", vocab, "--out", out, *TINY, *FAST, "-q") == 1
    assert "Traceback" not in capsys.readouterr().err

    for name, (width, height) in zoo.sizes.items():
        stem = out / zoo[name].relative_to(root).with_suffix("")
        labels = read_label_png(stem.with_suffix(".png"))
        assert labels.shape == (height, width), name  # displayed orientation, original size
        assert labels.min() >= 0 and labels.max() < 4, name
        with Image.open(stem.with_suffix(".png")) as mask:
            assert mask.mode == "P"
            palette = np.asarray(mask.getpalette()[: 4 * 3]).reshape(4, 3)
            assert (palette == voc_colormap(4)).all()
        record = read_json(stem.with_suffix(".json"))
        assert (record["width"], record["height"]) == (width, height)
        assert sum(c["pixels"] for c in record["classes"]) == width * height, name
        counts = np.bincount(labels.ravel(), minlength=4)
        assert {c["index"]: c["pixels"] for c in record["classes"]} == {
            i: int(n) for i, n in enumerate(counts) if n
        }

    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["path"] for f in failures) == sorted(str(zoo[n]) for n in zoo.failing)
    assert "pixels" in next(f["reason"] for f in failures if f["path"].endswith("bomb.png"))
    summary = read_json(out / "summary.json")
    assert summary["counts"] == {
        "images": len(zoo),
        "done": len(zoo.sizes),
        "skipped": 0,
        "failed": len(zoo.failing),
    }
    assert sorted(f["path"] for f in summary["failed"]) == sorted(f["path"] for f in failures)
    area = sum(w * h for w, h in zoo.sizes.values())
    assert sum(c["pixels"] for c in summary["classes"]) == area
    assert read_json(out / "legend.json")[1]["name"] == "cat"
    assert (out / "legend.png").is_file()


def test_stdin_jsonl_and_exit_status(
    tmp_path: Path,
    vocab: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = make_photos(tmp_path / "imgs", 3)
    monkeypatch.chdir(tmp_path)
    listing = "".join(f"{p.relative_to(tmp_path)}\n" for p in photos)
    monkeypatch.setattr(sys, "stdin", io.StringIO(listing))
    assert segment_cli("-", "--vocab", vocab, "--out", "out", *TINY, *FAST, "--jsonl") == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["path"] for line in lines] == sorted(listing.split())
    for line in lines:
        assert {"path", "mask", "width", "height", "classes"} <= set(line)
        assert sum(c["pixels"] for c in line["classes"]) == line["width"] * line["height"]
        assert Path(line["mask"]).is_file()
    assert "segmented 3" in captured.err  # messages go to stderr, never into the JSON stream

    # one bad input: exit 1, and the summary says which
    bad = tmp_path / "imgs" / "set0" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    monkeypatch.setattr(sys, "stdin", io.StringIO(listing + f"{bad.relative_to(tmp_path)}\n"))
    assert segment_cli("-", "--vocab", vocab, "--out", "out", *TINY, *FAST, "-q") == 1
    summary = read_json(tmp_path / "out" / "summary.json")
    assert summary["counts"] == {"images": 4, "done": 0, "skipped": 3, "failed": 1}
    assert [f["path"] for f in summary["failed"]] == ["imgs/set0/broken.jpg"]
    assert summary["config"]["model"] == "scclip-tiny"
    assert summary["config"]["protocol"]["crop"] == 64
    assert summary["config"]["calibration"]["similarity_layer"] == 8


class _GonePipe(io.StringIO):
    """stdout piped into a reader that has gone away (``scclip segment --jsonl | head -0``): every
    write and flush fails; its file descriptor is ``fd``."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        return self.fd


def test_jsonl_reader_gone_the_run_finishes_and_stdout_is_silenced(
    tmp_path: Path, vocab: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_photos(tmp_path / "imgs", 1)
    listing = tmp_path / "stdout.txt"
    fd = os.open(listing, os.O_WRONLY | os.O_CREAT)
    try:
        monkeypatch.setattr(sys, "stdout", _GonePipe(fd))
        args = ["--vocab", vocab, "--out", tmp_path / "out", *TINY, *FAST, "-q", "--jsonl"]
        rc = segment_cli(tmp_path / "imgs", *args)
        monkeypatch.undo()
        assert rc == 0
        assert read_json(tmp_path / "out" / "summary.json")["counts"]["done"] == 1
        os.write(fd, b"written after the reader left\n")  # goes to /dev/null now
    finally:
        os.close(fd)
    assert listing.read_bytes() == b""


def test_shards_are_disjoint_and_cover_every_input(tmp_path: Path, vocab: Path) -> None:
    make_photos(tmp_path / "imgs", 5)
    outs = []
    for i in (1, 2):
        out = tmp_path / f"out{i}"
        assert (
            segment_cli(
                tmp_path / "imgs",
                "--vocab",
                vocab,
                "--out",
                out,
                *TINY,
                *FAST,
                "-q",
                "--shard",
                f"{i}/2",
            )
            == 0
        )
        outs.append({p for p in per_image_outputs(out) if p.endswith(".json")})
    assert not outs[0] & outs[1]
    assert outs[0] | outs[1] == {f"set{i % 2}/p{i:02}.json" for i in range(5)}


# --- killed and resumed --------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_outputs(tmp_path: Path, vocab: Path) -> None:
    imgs = tmp_path / "imgs"
    count = 16
    make_photos(imgs, count, size=(96, 128))
    common = ["--vocab", vocab, *TINY, "--short-side", "96", "--crop", "64", "--stride", "32"]
    # 4 crops per batch: batches straddle images (6 windows each), and the resumed run batches
    # them differently from the uninterrupted one; the outputs must not change.
    common += ["--batch-size", "4", "--overlay", "-q"]

    out = tmp_path / "out"
    proc = start_segment(imgs, out, *common)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()
    finished = len(list(out.rglob("p*.json")))
    assert 2 <= finished < count, "the run was not interrupted mid-way"
    assert read_json(out / "summary.json")["status"] == "running"  # says it did not finish

    assert segment_cli(imgs, "--out", out, *common) == 0
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []  # no temporaries left
    resumed = read_json(out / "summary.json")
    assert resumed["counts"]["skipped"] == finished
    assert resumed["counts"]["done"] == count - finished

    reference = tmp_path / "reference"
    assert segment_cli(imgs, "--out", reference, *common) == 0
    assert per_image_outputs(out).keys() == per_image_outputs(reference).keys()
    assert per_image_outputs(out) == per_image_outputs(reference)
    assert resumed["classes"] == read_json(reference / "summary.json")["classes"]

    assert segment_cli(imgs, "--out", out, *common) == 0  # nothing left to do
    again = read_json(out / "summary.json")
    assert again["counts"] == {"images": count, "done": 0, "skipped": count, "failed": 0}


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_records_the_interrupted_run(tmp_path: Path, vocab: Path) -> None:
    imgs = tmp_path / "imgs"
    count = 16
    make_photos(imgs, count, size=(96, 128))
    out = tmp_path / "out"
    proc = start_segment(
        imgs,
        out,
        "--vocab",
        vocab,
        *TINY,
        "--short-side",
        "96",
        "--crop",
        "64",
        "--stride",
        "32",
        "--batch-size",
        "4",
        "--overlay",
        "-q",
    )
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    err = stderr.decode()
    assert proc.returncode == 143, err  # 128 + SIGTERM, after the same shutdown as Ctrl-C
    assert "terminated" in err and "Traceback" not in err

    summary = read_json(out / "summary.json")
    assert summary["status"] == "interrupted"
    assert 2 <= summary["counts"]["done"] < count
    written = sorted(out.rglob("p*.json"))
    assert len(written) == summary["counts"]["done"]
    for record in written:  # every image marked complete is whole
        assert record.with_suffix(".png").is_file()
        assert record.with_name(record.stem + "_overlay.jpg").is_file()
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_stops_at_once_naming_the_first(
    tmp_path: Path, vocab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = tmp_path / "imgs"
    make_photos(imgs, 16, size=(96, 128))
    out = tmp_path / "out"
    common = ["--vocab", vocab, *TINY, "--short-side", "96", "--crop", "64", "--stride", "32"]
    first = start_segment(imgs, out, *common, "-q")
    try:
        assert first.poll() is None, "the first run ended too early"
        before = {p: p.stat().st_mtime_ns for p in out.rglob("p*.json")}
        assert segment_cli(imgs, "--out", out, *common, "-q") == 2
        err = capsys.readouterr().err
        assert f"process {first.pid}" in err and "another scclip run" in err
        # the second run wrote nothing: every image the first one finished is untouched
        assert all(p.stat().st_mtime_ns == t for p, t in before.items())
        # a shard of the same folder overlaps the unsharded run too
        assert segment_cli(imgs, "--out", out, *common, "-q", "--shard", "1/2") == 2
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    assert segment_cli(imgs, "--out", out, *common, "-q") == 0  # the lock went with the run
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []
