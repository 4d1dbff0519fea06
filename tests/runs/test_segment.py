"""The batch pipeline of ``scclip segment`` as a plain function, driven by :class:`FakeSegmenter`
(``Segmenter``'s interface, instant). ``test_cli_segment.py`` runs the real tiny model end to end."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scclip_cli.errors import UsageError, VocabularyError
from scclip_cli.predict.model_options import ModelOptions
from scclip_cli.predict.segmenter import Segmentation
from scclip_cli.runs.segment import segment

MAGENTA = (255, 0, 255)
"""Top-left pixel colour that makes :class:`FakeSegmenter` raise inside ``segment_many``."""


class FakeSegmenter:
    """``Segmenter``'s batch interface: vertical stripes of classes, images taken ``batch`` at a
    time (so an error inside a batch leaves other images taken and unanswered)."""

    def __init__(
        self,
        class_names: tuple[str, ...] = ("background", "cat", "dog"),
        batch: int = 3,
        interrupt_after: int | None = None,
    ) -> None:
        self._class_names = class_names
        self.batch = batch
        self.interrupt_after = interrupt_after
        self.segmented = 0
        self.lock = threading.Lock()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    def describe(self) -> dict[str, Any]:
        return {"model": "fake", "protocol": {"crop": 224}, "class_names": list(self.class_names)}

    def segment_many(
        self, images: Iterable[np.ndarray], *, confidence: bool = True, statistics: bool = False
    ) -> Iterator[Segmentation]:
        buffer: list[np.ndarray] = []
        for image in images:
            if tuple(image[0, 0]) == MAGENTA:
                raise ValueError("this image breaks the model")
            buffer.append(image)
            if len(buffer) == self.batch:
                yield from (self._one(rgb) for rgb in buffer)
                buffer = []
        yield from (self._one(rgb) for rgb in buffer)

    def _one(self, rgb: np.ndarray) -> Segmentation:
        if self.interrupt_after is not None and self.segmented >= self.interrupt_after:
            raise KeyboardInterrupt
        self.segmented += 1
        height, width = rgb.shape[:2]
        k = len(self.class_names)
        stripes = (np.arange(width) * k // max(width, 1)).astype(np.int32)  # [W]
        labels = np.broadcast_to(stripes, (height, width)).copy()  # [H, W] int32
        confidence = np.full((height, width), 0.75, dtype=np.float32)
        return Segmentation(labels, confidence, self.class_names)


def write_png(
    path: Path, height: int, width: int, color: tuple[int, int, int] = (10, 200, 30)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[...] = (np.arange(width)[None, :, None] * 7 + np.array(color)) % 256
    rgb[0, 0] = color
    Image.fromarray(rgb).save(path)
    return path


def make_folder(root: Path, count: int = 7) -> list[Path]:
    return [
        write_png(root / f"d{i % 3}" / f"img{i:02}.png", 5 + i, 9 + 2 * i) for i in range(count)
    ]


def run(inputs: list[Any], out: Path, seg: Any = None, **options: Any) -> Any:
    options.setdefault("quiet", True)
    if "batch_size" in options:  # a model option (checked even when a segmenter is given)
        options["model"] = ModelOptions(batch_size=options.pop("batch_size"))
    return segment(inputs, None, out, segmenter=seg or FakeSegmenter(), **options)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def temp_leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def output_bytes(out: Path) -> dict[str, bytes]:
    """Every per-image output (masks, JSON, overlays) by relative path."""
    run_files = ("summary.", "failures.", "legend.")
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not (p.parent == out and p.name.startswith(run_files))
    }


# --- a plain run ---------------------------------------------------------------------------------


def test_run_writes_masks_statistics_and_run_files(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", 7)
    out = tmp_path / "out"
    summary = run([tmp_path / "imgs"], out, batch_size=2, overlay=True)

    assert (summary.total, summary.done, summary.skipped, summary.failed) == (7, 7, 0, 0)
    assert summary.exit_code == 0
    for i in range(7):
        stem = out / f"d{i % 3}" / f"img{i:02}"
        record = read_json(stem.with_suffix(".json"))
        assert record["path"] == str(tmp_path / "imgs" / f"d{i % 3}" / f"img{i:02}.png")
        assert (record["width"], record["height"]) == (9 + 2 * i, 5 + i)
        assert sum(c["pixels"] for c in record["classes"]) == record["width"] * record["height"]
        assert {"index", "name", "pixels", "fraction", "mean_confidence"} <= set(
            record["classes"][0]
        )
        with Image.open(stem.with_suffix(".png")) as mask:
            assert mask.size == (9 + 2 * i, 5 + i)
            assert mask.mode == "P"
            assert np.asarray(mask).max() < 3
        assert stem.with_name(stem.name + "_overlay.jpg").is_file()

    data = read_json(out / "summary.json")
    assert data["status"] == "finished"
    assert data["counts"] == {"images": 7, "done": 7, "skipped": 0, "failed": 0}
    assert data["config"]["model"] == "fake"
    assert data["config"]["run"]["overlay"] is True
    assert data["versions"]["numpy"] == np.__version__
    assert {"load_seconds", "segment_seconds", "images_per_second"} <= set(data["timing"])
    area = sum((5 + i) * (9 + 2 * i) for i in range(7))
    assert sum(c["pixels"] for c in data["classes"]) == area
    assert [c["name"] for c in data["classes"]] == ["background", "cat", "dog"]
    assert (out / "legend.json").is_file() and (out / "legend.png").is_file()
    assert (out / "failures.jsonl").read_text() == ""
    assert temp_leftovers(out) == []


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    make_folder(root, 6)
    (root / "d0" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "d1" / "text.jpg").write_text("just some text\n")
    (root / "empty.png").write_bytes(b"")
    # breaks the model while two good images of its batch are taken and not yet answered
    write_png(root / "d1" / "img01b.png", 6, 6, color=MAGENTA)
    out = tmp_path / "out"
    summary = run([root], out)

    failed = {f.path: f.stage for f in summary.failures}
    assert failed == {
        str(root / "d0" / "corrupt.jpg"): "read",
        str(root / "d1" / "text.jpg"): "read",
        str(root / "empty.png"): "read",
        str(root / "d1" / "img01b.png"): "segment",
    }
    assert (summary.done, summary.failed, summary.exit_code) == (6, 4, 1)
    assert len(list(out.rglob("img*.json"))) == 6
    lines = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [line["path"] for line in lines] == [f.path for f in summary.sorted_failures()]
    assert all(line["reason"] for line in lines)
    assert read_json(out / "summary.json")["counts"]["failed"] == 4
    assert {f["path"] for f in read_json(out / "summary.json")["failed"]} == set(failed)


# --- resume --------------------------------------------------------------------------------------


def test_rerun_skips_complete_images_and_redoes_the_rest(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", 7)
    out = tmp_path / "out"
    first = run([tmp_path / "imgs"], out)
    before = output_bytes(out)

    (out / "d0" / "img03.json").unlink()  # killed after the mask: redone
    (out / "d1" / "img04.png").unlink()  # mask lost: not complete either
    fake = FakeSegmenter()
    again = run([tmp_path / "imgs"], out, fake)
    assert (again.done, again.skipped, fake.segmented) == (2, 5, 2)
    assert output_bytes(out) == before
    assert again.class_totals() == first.class_totals()  # totals cover skipped images too

    fake = FakeSegmenter()
    assert run([tmp_path / "imgs"], out, fake).done == 0
    assert fake.segmented == 0
    assert run([tmp_path / "imgs"], out, overwrite=True).done == 7
    assert run([tmp_path / "imgs"], out, overlay=True).done == 7  # overlays were missing


def test_interrupted_run_leaves_whole_images_and_resumes_to_the_same_outputs(
    tmp_path: Path,
) -> None:
    make_folder(tmp_path / "imgs", 9)
    reference = tmp_path / "reference"
    run([tmp_path / "imgs"], reference, overlay=True)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run([tmp_path / "imgs"], out, FakeSegmenter(interrupt_after=4), overlay=True)
    data = read_json(out / "summary.json")
    assert data["status"] == "interrupted"
    assert 0 < data["counts"]["done"] < 9
    assert temp_leftovers(out) == []
    for record in out.rglob("img*.json"):  # every marked image is whole
        assert record.with_suffix(".png").is_file()
        assert record.with_name(record.stem + "_overlay.jpg").is_file()

    resumed = run([tmp_path / "imgs"], out, overlay=True)
    assert resumed.skipped == data["counts"]["done"]
    assert resumed.done == 9 - resumed.skipped
    assert output_bytes(out) == output_bytes(reference)


def test_temporaries_left_by_a_killed_run_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from scclip_cli.files.atomic import temporary_path_for

    make_folder(tmp_path / "imgs", 3)
    out = tmp_path / "out"
    run([tmp_path / "imgs"], out)
    (out / "d0" / "img00.json").unlink()  # to redo
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)

    def left_by(pid: int, target: Path) -> Path:
        name = temporary_path_for(target).name.replace(f"-{os.getpid()}-", f"-{pid}-")
        path = target.with_name(name)
        path.write_bytes(b"half a PNG")
        return path

    stale = left_by(dead_pid, out / "d0" / "img00.png")
    running = left_by(os.getpid(), out / "d0" / "img00.json")  # a live writer: kept
    done_image = left_by(dead_pid, out / "d1" / "img01.png")  # not redone: not ours to touch
    run([tmp_path / "imgs"], out)
    assert not stale.exists()
    assert running.exists() and done_image.exists()


def test_failures_of_an_earlier_run_do_not_linger(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", 3)
    bad = tmp_path / "imgs" / "late.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    assert run([tmp_path / "imgs"], out).exit_code == 1
    assert "late.png" in (out / "failures.jsonl").read_text()

    write_png(bad, 4, 4)  # fixed
    again = run([tmp_path / "imgs"], out)
    assert (again.exit_code, again.done, again.skipped) == (0, 1, 3)
    assert (out / "failures.jsonl").read_text() == ""


def test_another_vocabulary_in_the_same_folder_needs_overwrite(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    run([tmp_path / "imgs"], out)
    other = FakeSegmenter(class_names=("sky", "sea"))
    with pytest.raises(UsageError, match="another vocabulary"):
        run([tmp_path / "imgs"], out, other)
    assert run([tmp_path / "imgs"], out, other, overwrite=True).done == 2


@pytest.fixture
def counted_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """``Segmenter.load`` replaced by one that returns a :class:`FakeSegmenter` for the
    vocabulary's classes and records each call (the vocabulary argument)."""
    from scclip_cli.model.text_embeddings import vocabulary_class_names
    from scclip_cli.predict.segmenter import Segmenter

    calls: list[tuple[Any, ...]] = []

    def load(vocab: Any, **options: Any) -> FakeSegmenter:
        calls.append((vocab,))
        return FakeSegmenter(class_names=vocabulary_class_names(vocab))

    monkeypatch.setattr(Segmenter, "load", staticmethod(load))
    return calls


def test_a_rerun_with_every_image_complete_loads_no_model(
    tmp_path: Path, counted_loads: list[tuple[Any, ...]]
) -> None:
    make_folder(tmp_path / "imgs", 4)
    out = tmp_path / "out"
    vocab = tmp_path / "classes.txt"
    vocab.write_text("background\ncat, kitten\ndog\n", encoding="utf-8")
    first = segment([tmp_path / "imgs"], vocab, out, quiet=True)
    assert (first.done, len(counted_loads)) == (4, 1)
    before = output_bytes(out)

    lines = io.StringIO()
    again = segment([tmp_path / "imgs"], vocab, out, quiet=True, jsonl_stream=lines)
    assert len(counted_loads) == 1  # not loaded again
    assert (again.done, again.skipped, again.failed, again.exit_code) == (0, 4, 0, 0)
    assert again.class_totals() == first.class_totals()
    assert [json.loads(line)["status"] for line in lines.getvalue().splitlines()] == ["skipped"] * 4
    summary = read_json(out / "summary.json")
    assert summary["status"] == "finished"
    assert summary["config"]["loaded"] is False
    assert summary["config"]["class_names"] == ["background", "cat", "dog"]
    assert output_bytes(out) == before

    (out / "d2" / "img02.json").unlink()  # one image to redo: the model is needed
    assert segment([tmp_path / "imgs"], vocab, out, quiet=True).done == 1
    assert len(counted_loads) == 2
    assert segment([tmp_path / "imgs"], vocab, out, quiet=True, overwrite=True).done == 4
    assert len(counted_loads) == 3


def test_a_folder_of_another_vocabulary_is_refused_before_the_model_loads(
    tmp_path: Path, counted_loads: list[tuple[Any, ...]]
) -> None:
    make_folder(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    run([tmp_path / "imgs"], out)  # background, cat, dog
    with pytest.raises(UsageError, match="another vocabulary"):
        segment([tmp_path / "imgs"], ["sky", "sea"], out, quiet=True)
    assert counted_loads == []
    with pytest.raises(VocabularyError, match="not found"):
        segment([tmp_path / "imgs"], tmp_path / "missing.txt", out, quiet=True)
    assert counted_loads == []


# --- threads -------------------------------------------------------------------------------------


def test_writer_thread_errors_reach_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scclip_cli.files.mask_io as mask_io

    make_folder(tmp_path / "imgs", 30)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(mask_io, "write_label_png", broken)
    with pytest.raises(RuntimeError, match="encoder bug"):
        run([tmp_path / "imgs"], tmp_path / "out")
    assert read_json(tmp_path / "out" / "summary.json")["status"] == "error"


def test_os_errors_while_writing_fail_that_image_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scclip_cli.files.mask_io as mask_io

    make_folder(tmp_path / "imgs", 4)
    real: Callable[..., Any] = mask_io.write_label_png

    def flaky(path: Path, *args: Any, **kwargs: Any) -> Any:
        if Path(path).name == "img02.png":
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(mask_io, "write_label_png", flaky)
    summary = run([tmp_path / "imgs"], tmp_path / "out")
    assert (summary.done, summary.failed) == (3, 1)
    assert summary.failures[0].stage == "write"
    assert "No space left" in summary.failures[0].reason


def test_a_legend_image_that_cannot_be_written_is_reported_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import scclip_cli.files.mask_io as mask_io

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    make_folder(tmp_path / "imgs", 2)
    monkeypatch.setattr(mask_io, "write_legend_png", full)
    summary = run([tmp_path / "imgs"], tmp_path / "out", quiet=False)
    assert (summary.done, summary.failed, summary.exit_code) == (2, 0, 0)
    assert (tmp_path / "out" / "legend.json").is_file()
    assert not (tmp_path / "out" / "legend.png").exists()
    legend_png = tmp_path / "out" / "legend.png"
    assert (
        f"scclip: cannot write {legend_png}: No space left on device\n" in capsys.readouterr().err
    )


# --- shards, stdin, jsonl, options ---------------------------------------------------------------


def test_shards_share_a_folder_and_together_do_everything_once(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", 8)
    whole = tmp_path / "whole"
    run([tmp_path / "imgs"], whole)
    out = tmp_path / "out"
    parts = [run([tmp_path / "imgs"], out, shard=f"{i}/3") for i in (1, 2, 3)]
    assert [p.done for p in parts] == [3, 3, 2]
    assert output_bytes(out) == output_bytes(whole)
    for i in (1, 2, 3):
        counts = read_json(out / f"summary.shard-{i}-of-3.json")["counts"]
        assert counts["done"] == parts[i - 1].done
        assert (out / f"failures.shard-{i}-of-3.jsonl").is_file()
    assert not (out / "summary.json").exists()


def test_stdin_inputs_and_jsonl_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = make_folder(tmp_path / "imgs", 4)
    monkeypatch.chdir(tmp_path)
    listing = "".join(f"{p.relative_to(tmp_path)}\n" for p in reversed(paths)) + "imgs/gone.png\n"
    stream = io.StringIO()
    summary = run(["-"], tmp_path / "out", stdin=io.StringIO(listing), jsonl_stream=stream)
    assert (summary.done, summary.failed) == (4, 1)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["path"] for line in lines] == sorted(str(p.relative_to(tmp_path)) for p in paths)
    for line in lines:
        assert line["status"] == "done"
        assert Path(line["mask"]).is_file()
        assert sum(c["pixels"] for c in line["classes"]) == line["width"] * line["height"]
    assert (tmp_path / "out" / "imgs" / "d0" / "img00.png").is_file()  # relative to the cwd

    stream = io.StringIO()
    run(["-"], tmp_path / "out", stdin=io.StringIO(listing), jsonl_stream=stream)
    assert {json.loads(line)["status"] for line in stream.getvalue().splitlines()} == {"skipped"}


def test_progress_bar_and_messages_go_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_folder(tmp_path / "imgs", 3)
    run([tmp_path / "imgs"], tmp_path / "out", quiet=False, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "3/3" in captured.err and "img/s" in captured.err
    assert "segmented 3, skipped 0, failed 0" in captured.err

    run([tmp_path / "imgs"], tmp_path / "out", quiet=True, progress=None)
    assert capsys.readouterr().err == ""


def test_usage_errors_come_before_any_work(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="shard"):
        run([tmp_path / "imgs"], out, shard="3/2")
    with pytest.raises(UsageError, match="already loaded"):
        run([tmp_path / "imgs"], out, crop=64)
    with pytest.raises(UsageError, match="batch-size"):
        run([tmp_path / "imgs"], out, batch_size=0)
    assert not out.exists()
