"""The local engine: the reader / model / writer pipeline and the engine's session, driven by a
fake segmenter (``Segmenter``'s batch interface, instant) and a recorder of the events."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from PIL import Image

from scclip_cli.files.image_record import ImageRecord
from scclip_cli.files.mask_io import read_label_png
from scclip_cli.maps.metrics import ConfusionMatrix
from scclip_cli.predict.model_options import ModelOptions
from scclip_cli.predict.segmenter import Segmentation
from scclip_cli.runs.engine import ModelSpec, ScoreTask, SegmentTask
from scclip_cli.runs.inputs import InputImage, Job
from scclip_cli.runs.local_engine import LocalEngine, remove_stale_temporaries, segment_jobs
from scclip_cli.runs.scoring import EvalSample
from scclip_cli.runs.summary import Failure

CLASSES = ("background", "cat", "dog")
BROKEN = (255, 0, 255)
"""Top-left colour that makes the fake segmenter raise inside ``segment_many``."""


class FakeSegmenter:
    """Vertical stripes of the classes; images taken three at a time, so a model error leaves
    others of its batch taken and unanswered."""

    class_names = CLASSES

    def __init__(self) -> None:
        self.calls: list[int] = []

    def describe(self) -> dict[str, Any]:
        return {"model": "fake", "class_names": list(CLASSES)}

    def segment_many(
        self, images: Iterable[np.ndarray], *, confidence: bool = True, statistics: bool = False
    ) -> Iterator[Segmentation]:
        buffer: list[np.ndarray] = []
        for image in images:
            if tuple(image[0, 0]) == BROKEN:
                raise ValueError("this image breaks the model")
            buffer.append(image)
            if len(buffer) == 3:
                self.calls.append(len(buffer))
                yield from (self._one(rgb) for rgb in buffer)
                buffer = []
        if buffer:
            self.calls.append(len(buffer))
        yield from (self._one(rgb) for rgb in buffer)

    def _one(self, rgb: np.ndarray) -> Segmentation:
        height, width = rgb.shape[:2]
        stripes = (np.arange(width) * len(CLASSES) // width).astype(np.int32)
        labels = np.broadcast_to(stripes, (height, width)).copy()
        return Segmentation(labels, np.full((height, width), 0.5, np.float32), CLASSES)


class Recorder:
    """:class:`~scclip_cli.runs.engine.ImageEvents` that keeps what it is told."""

    def __init__(self) -> None:
        self.done: list[tuple[Job, ImageRecord]] = []
        self.failed: list[Failure] = []
        self.lock = threading.Lock()

    def image_done(self, job: Job, record: ImageRecord) -> None:
        with self.lock:
            self.done.append((job, record))

    def image_failed(self, failure: Failure) -> None:
        with self.lock:
            self.failed.append(failure)

    def waited(self, *, read: float = 0.0, write: float = 0.0) -> None:
        pass


def make_jobs(root: Path, colours: list[tuple[int, int, int] | None]) -> list[Job]:
    """One job per colour (``None``: a file that is not an image)."""
    jobs = []
    for i, colour in enumerate(colours):
        path = root / "imgs" / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if colour is None:
            path.write_bytes(b"not a png")
        else:
            Image.new("RGB", (6 + i, 4), colour).save(path)
        image = InputImage(path, PurePosixPath(f"im{i}.png"))
        outputs = image.outputs(root / "out", overlay=False, wide_labels=False)
        jobs.append(Job(i, image, outputs))
    return jobs


def run_jobs(jobs: list[Job], segmenter: Any = None) -> Recorder:
    events = Recorder()
    segment_jobs(
        segmenter or FakeSegmenter(),
        jobs,
        events,
        class_names=CLASSES,
        overlay=False,
        read_workers=2,
    )
    return events


def test_every_image_is_written_json_last_and_reported(tmp_path: Path) -> None:
    jobs = make_jobs(tmp_path, [(10, 20, 30)] * 5)
    events = run_jobs(jobs)
    assert events.failed == []
    assert sorted(job.order for job, _ in events.done) == [0, 1, 2, 3, 4]
    for job, record in events.done:
        assert ImageRecord.read(job.outputs.json) == record  # what was reported is on disk
        assert (record.width, record.height) == (6 + job.order, 4)
        assert sum(c["pixels"] for c in record.classes) == record.width * record.height
        labels = read_label_png(job.outputs.mask)
        assert labels.shape == (4, 6 + job.order) and set(np.unique(labels)) == {0, 1, 2}


def test_a_bad_image_fails_alone(tmp_path: Path) -> None:
    jobs = make_jobs(tmp_path, [(1, 2, 3), None, (4, 5, 6), BROKEN, (7, 8, 9)])
    segmenter = FakeSegmenter()
    events = run_jobs(jobs, segmenter)
    assert sorted(job.order for job, _ in events.done) == [0, 2, 4]
    stages = {Path(f.path).name: (f.stage, f.order) for f in events.failed}
    assert stages == {"im1.png": ("read", 1), "im3.png": ("segment", 3)}
    assert "breaks the model" in next(f.reason for f in events.failed if f.stage == "segment")
    assert not jobs[1].outputs.json.exists() and not jobs[3].outputs.json.exists()
    assert 1 in segmenter.calls  # the batch of the broken image was retried one by one


def test_a_wrong_mask_from_the_model_is_a_bug_not_a_failure(tmp_path: Path) -> None:
    class Wrong(FakeSegmenter):
        def _one(self, rgb: np.ndarray) -> Segmentation:
            return Segmentation(np.zeros((1, 1), np.int32), np.zeros((1, 1), np.float32), CLASSES)

    with pytest.raises(RuntimeError, match="mask for a"):
        run_jobs(make_jobs(tmp_path, [(1, 2, 3)]), Wrong())


def test_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    jobs = make_jobs(tmp_path, [(1, 2, 3)])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = jobs[0].outputs.json.parent
    folder.mkdir(parents=True)
    stale = folder / f".im0.json.tmp-{dead.pid}-abcd1234"
    running = folder / f".im0.json.tmp-{os.getpid()}-abcd1234"
    other = folder / f".else.json.tmp-{dead.pid}-abcd1234"
    for path in (stale, running, other):
        path.write_text("{")
    remove_stale_temporaries(jobs)
    assert not stale.exists()
    assert running.exists() and other.exists()  # a live writer's, another image's


def test_the_session_uses_a_given_segmenter_or_loads_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = make_jobs(tmp_path, [(1, 2, 3)] * 2)
    given = FakeSegmenter()
    messages: list[str] = []
    with LocalEngine(segmenter=given).session(None, messages.append) as session:
        started = session.start_segmenting(jobs, SegmentTask(overlay=False, overwrite=False))
        assert (started.class_names, started.load_seconds) == (CLASSES, 0.0)
        assert started.description == given.describe() and started.engine_record is None
        events = Recorder()
        session.segment(jobs, events)
    assert len(events.done) == 2 and messages == []

    loads: list[tuple[Any, ...]] = []

    def load(
        options: ModelOptions, vocab: Any, protocol: Any = None, **resolve: Any
    ) -> FakeSegmenter:
        loads.append((options.model, vocab))
        return FakeSegmenter()

    monkeypatch.setattr(ModelOptions, "load", load)
    spec = ModelSpec(ModelOptions("tiny", pretrained="w"), ["a", "b"], protocol=None)  # type: ignore[arg-type]
    with LocalEngine().session(spec, messages.append):
        pass
    assert loads == [("tiny", ["a", "b"])]
    assert messages and messages[0].startswith("loaded tiny (w) in ")


def test_the_session_scores_saved_masks_and_reports_problems(tmp_path: Path) -> None:
    samples = []
    for i, pred_value in enumerate([1, 1, 9]):  # the third prediction is out of range
        gt, pred = tmp_path / f"gt{i}.png", tmp_path / f"pred{i}.png"
        Image.fromarray(np.full((2, 3), 1, np.uint8)).save(gt)
        Image.fromarray(np.full((2, 3), pred_value, np.uint8)).save(pred)
        samples.append(EvalSample(f"k{i}", gt=gt, pred=pred))
    confusion = ConfusionMatrix(3, CLASSES)
    scored: list[int] = []
    with LocalEngine().session(None, print) as session:
        started = session.start_scoring(samples[:2], ScoreTask(False, 255, None))
        assert started.description is None and started.class_names is None
        assert session.score(samples[:2], confusion, scored.append) == []
    assert int(confusion.matrix[1, 1]) == 12 and sum(scored) == 2

    with LocalEngine().session(None, print) as session:
        session.start_scoring(samples, ScoreTask(False, 255, None))
        problems = session.score(samples, ConfusionMatrix(3, CLASSES), scored.append)
    assert [index for index, _ in problems] == [2]
