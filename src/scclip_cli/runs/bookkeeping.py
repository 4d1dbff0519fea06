"""The bookkeeping of one ``scclip segment`` run, shared by the local pipeline and the Ray driver.

A run goes through three steps, whichever engine segments the images::

    plan = plan_run(inputs, out_dir, ...)        # arguments, inputs, collisions: before any model
    legend = read_legend_classes(plan.out)        # legend.json, read once per run
    run = SegmentRun.open(plan, class_names, legend, ...)  # output folder, what is already done
    run.start(config, load_seconds=...)            # summary.json says "running"; failures.jsonl
    with run.segmenting():                         # summary.json and failures.jsonl at the end,
        ...  # engine: run.image_done / run.image_failed     # also when interrupted or failing

Completion: an image is complete when all its files exist and its ``<stem>.json`` (written last)
is a valid :class:`~scclip_cli.files.image_record.ImageRecord`; complete images are skipped unless
``overwrite``. Run-level files are described in :mod:`scclip_cli.runs.summary`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from scclip_cli.errors import InputError, UsageError
from scclip_cli.files import mask_io
from scclip_cli.files.atomic import atomic_write_text
from scclip_cli.files.image_record import ImageRecord
from scclip_cli.runs.inputs import (
    Discovery,
    InputImage,
    Job,
    OutputPaths,
    Shard,
    check_collisions,
    discover_inputs,
    parse_shard,
)
from scclip_cli.runs.summary import (
    Failure,
    FailureLog,
    RunSummary,
    describe_error,
    dumps_line,
    package_versions,
    reserved_names,
    run_file_names,
)

# --- plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """What a run will segment and where, settled before any model is loaded."""

    inputs: tuple[str, ...]
    """The INPUT arguments as given (recorded in ``summary.json``)."""
    out: Path
    discovery: Discovery
    shard: Shard | None
    overlay: bool
    overwrite: bool
    preset: str | None
    save_confidence: bool = False
    """Also write ``<stem>_conf.png`` (part of an image's completeness)."""

    @property
    def reserved(self) -> tuple[str, ...]:
        """Run-level file names under ``out`` that no image output may take."""
        return reserved_names(self.shard.file_tag if self.shard is not None else None)

    @property
    def images(self) -> list[InputImage]:
        """This run's (this shard's) images, sorted."""
        images = self.discovery.images
        return self.shard.take(images) if self.shard is not None else images

    def run_config(self, description: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """``summary.json``'s configuration: the segmenter's own description (model, weights,
        vocabulary, method, protocol, calibration, batch size) plus the run options and
        ``extra`` (the Ray engine records itself there)."""
        config = dict(description)
        config["run"] = {
            "inputs": list(self.inputs),
            "out": str(self.out),
            "preset": self.preset,
            "overlay": self.overlay,
            "save_confidence": self.save_confidence,
            "overwrite": self.overwrite,
            "shard": self.shard.label if self.shard is not None else None,
            **extra,
        }
        return config


def plan_run(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    overlay: bool,
    overwrite: bool,
    shard: str | Shard | tuple[int, int] | None,
    preset: str | None,
    read_workers: int | None,
    stdin: TextIO | None,
    save_confidence: bool = False,
) -> RunPlan:
    """Check the run's arguments, find its images and check that no output overwrites another
    (or an input), so a typo costs no model load.

    Raises:
        UsageError, InputError: bad values, no inputs, collisions.
    """
    if read_workers is not None and read_workers < 1:
        raise UsageError(f"read_workers must be at least 1, got {read_workers}")
    shard_ = parse_shard(shard)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    discovery = discover_inputs(inputs, stdin=stdin, exclude=out)
    plan = RunPlan(
        inputs=tuple(os.fspath(i) for i in inputs),
        out=out,
        discovery=discovery,
        shard=shard_,
        overlay=overlay,
        overwrite=overwrite,
        preset=preset,
        save_confidence=save_confidence,
    )
    check_collisions(
        discovery.images,
        out,
        overlay=overlay,
        wide_labels=False,
        reserved=plan.reserved,
        confidence=save_confidence,
    )
    return plan


# --- the run ------------------------------------------------------------------------------------


class SegmentRun:
    """Counts, failures, messages and run files of one run; safe to call from several threads.

    Engines report each image through :meth:`image_done` and :meth:`image_failed`
    (:class:`~scclip_cli.runs.engine.ImageEvents`).
    """

    def __init__(
        self,
        plan: RunPlan,
        class_names: tuple[str, ...],
        jobs: list[Job],
        *,
        reporter: Reporter,
        jsonl_stream: TextIO | None,
    ) -> None:
        shard_tag = plan.shard.file_tag if plan.shard is not None else None
        summary_name, failures_name = run_file_names(shard_tag)
        self.plan = plan
        self.jobs = jobs
        self.reporter = reporter
        self.jsonl = JsonlSink(jsonl_stream)
        self.summary = RunSummary(
            out_dir=plan.out,
            class_names=class_names,
            versions=package_versions(),
            total=len(jobs),
            summary_path=plan.out / summary_name,
            failures_path=plan.out / failures_name,
        )
        self.todo = jobs if plan.overwrite else self._skip_complete(jobs)
        self.failure_log: FailureLog | None = None
        self.progress: Progress | None = None
        self.legend_image: LegendImage | None = None
        """``legend.png`` being written (by :meth:`open`); waited for when the run ends."""

    @classmethod
    def open(
        cls,
        plan: RunPlan,
        class_names: tuple[str, ...],
        legend: tuple[str, ...] | None,
        *,
        reporter: Reporter,
        jsonl_stream: TextIO | None = None,
    ) -> SegmentRun:
        """Prepare the output folder for ``class_names`` and find what is left to do.

        ``legend``: the classes of the folder's ``legend.json`` before this run
        (:func:`read_legend_classes`). Complete images are counted as skipped (and listed on
        ``jsonl_stream``) unless the plan overwrites.

        Raises:
            InputError: the folder cannot be written, or 16-bit masks would collide.
            UsageError: the folder holds results of another vocabulary (without ``overwrite``).
        """
        wide = len(class_names) > mask_io.MAX_PALETTE_CLASSES
        if wide:
            check_collisions(
                plan.discovery.images,
                plan.out,
                overlay=plan.overlay,
                wide_labels=True,
                reserved=plan.reserved,
                confidence=plan.save_confidence,
            )
        prepare_out_dir(plan.out, class_names, legend, overwrite=plan.overwrite)
        jobs = [Job(i, image, _outputs(plan, image, wide)) for i, image in enumerate(plan.images)]
        run = cls(plan, class_names, jobs, reporter=reporter, jsonl_stream=jsonl_stream)
        run.legend_image = LegendImage(plan.out, class_names)
        return run

    def start(
        self, config: dict[str, Any], *, load_seconds: float, show_progress: bool | None
    ) -> None:
        """Mark the run as running in ``summary.json``, open ``failures.jsonl``, record the folders
        that could not be listed, and say what is to be done.

        ``show_progress``: the progress bar; ``None`` shows it when stderr is a terminal and the
        run is not quiet.
        """
        summary, plan = self.summary, self.plan
        summary.config = config
        summary.load_seconds = load_seconds
        # Until this run ends, summary.json says it is running (a killed run leaves it so), and
        # the failures file lists this run's failures only.
        write_summary(summary, status="running")
        assert summary.failures_path is not None
        self.failure_log = FailureLog(summary.failures_path)
        # Folder listing problems belong to no shard; shard 1 (or the only run) reports them.
        if plan.shard is None or plan.shard.index == 1:
            for path, reason in plan.discovery.problems:
                self.image_failed(Failure(path, reason, "discover"))
        shard_text = f" (shard {plan.shard.label})" if plan.shard is not None else ""
        self.reporter.message(
            f"{len(self.jobs)} images{shard_text}: {summary.skipped} already complete, "
            f"{len(self.todo)} to segment"
        )
        if show_progress is None:
            show_progress = not self.reporter.quiet and stderr_is_terminal()
        self.progress = Progress(len(self.todo), show_progress) if self.todo else None

    # reports from the engines -----------------------------------------------------------------

    def image_done(self, job: Job, record: ImageRecord) -> None:
        """An image segmented and written by this run; ``record`` is its ``<stem>.json``."""
        self.summary.record_done(record.width, record.height, record.classes)
        self.jsonl.write(job.jsonl_line(record, "done"))
        if self.progress is not None:
            self.progress.advance()

    def image_failed(self, failure: Failure) -> None:
        """An input that could not be listed, read, segmented or written."""
        self.summary.record_failure(failure)
        if self.failure_log is not None:
            self.failure_log.append(failure)
        self.reporter.message(f"failed: {failure.path}: {failure.reason}")
        if self.progress is not None and failure.order >= 0:
            self.progress.advance()

    def waited(self, *, read: float = 0.0, write: float = 0.0) -> None:
        """Time the model waited for decoded images (``read``) or for the writer (``write``)."""
        self.summary.read_wait_seconds += read
        self.summary.write_wait_seconds += write

    # the end -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def segmenting(self) -> Iterator[None]:
        """Time the engine's work and write the final ``summary.json`` and ``failures.jsonl``.

        When the block raises, the run files record what was done (an interrupted run for
        Ctrl-C, an error otherwise) and the error goes on, never hidden by a failure to write them.
        """
        start = time.perf_counter()
        try:
            yield
        except BaseException as err:
            self.summary.interrupted = isinstance(err, KeyboardInterrupt)
            try:
                self._finish(time.perf_counter() - start, err)
            except Exception as write_err:
                err.add_note(f"(writing the run summary failed too: {write_err})")
            if self.summary.interrupted:
                self.reporter.message(
                    f"interrupted after segmenting {self.summary.done} images; run the same "
                    "command again to finish the rest"
                )
            raise
        self._finish(time.perf_counter() - start, None)
        summary = self.summary
        self.reporter.message(
            f"segmented {summary.done}, skipped {summary.skipped}, failed {summary.failed} "
            f"in {summary.segment_seconds:.1f} s ({summary.images_per_second:.2f} images/s); "
            f"summary: {summary.summary_path}"
            + (f"; failures: {summary.failures_path}" if summary.failed else "")
        )

    def _finish(self, seconds: float, error: BaseException | None) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.legend_image is not None:
            legend_error = self.legend_image.wait()
            if legend_error is not None:
                reason = legend_error.strerror or legend_error
                self.reporter.message(f"cannot write {self.legend_image.path}: {reason}")
        summary = self.summary
        summary.segment_seconds = seconds
        summary.finished_at = time.time()
        if self.failure_log is not None:
            self.failure_log.finalize(summary.sorted_failures())
        if error is None or isinstance(error, KeyboardInterrupt):
            write_summary(summary)
        else:
            write_summary(summary, status="error", error=describe_error(error))

    def _skip_complete(self, jobs: list[Job]) -> list[Job]:
        """Count the images a previous run completed and return the others, in order."""
        todo = []
        for job in jobs:
            record = job.outputs.complete_record()
            if record is None:
                todo.append(job)
                continue
            self.summary.record_skipped(record.width, record.height, record.classes)
            self.jsonl.write(job.jsonl_line(record, "skipped"))
        return todo


# --- output folder and completion ---------------------------------------------------------------


def prepare_out_dir(
    out: Path, class_names: tuple[str, ...], legend: tuple[str, ...] | None, *, overwrite: bool
) -> None:
    """Create ``out``, refuse to mix vocabularies in it, and write ``legend.json`` (``legend.png``
    is drawn beside the run: :class:`LegendImage`).

    A folder whose ``legend.json`` lists other classes holds masks whose indices mean something
    else; resuming into it would mix them, so that needs ``overwrite``.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder {out}: {err.strerror or err}") from None
    check_same_vocabulary(out, class_names, legend, overwrite=overwrite)
    try:
        mask_io.write_legend_json(out, list(class_names))
    except OSError as err:
        raise InputError(
            f"cannot write to the output folder {out}: {err.strerror or err}"
        ) from None


class LegendImage:
    """``legend.png`` drawn and written on a thread of its own, so a run does not wait for it
    (drawing and syncing it would otherwise delay the first image)."""

    def __init__(self, out: Path, class_names: tuple[str, ...]) -> None:
        self.path = out / "legend.png"
        self.error: OSError | None = None
        self._thread = threading.Thread(
            target=self._write, args=(out, class_names), name="scclip-legend"
        )
        self._thread.start()

    def _write(self, out: Path, class_names: tuple[str, ...]) -> None:
        try:
            mask_io.write_legend_png(out, list(class_names))
        except OSError as err:  # the run's results do not depend on it: reported at the end
            self.error = err

    def wait(self) -> OSError | None:
        """Wait until it is written; the error that stopped it, if any."""
        self._thread.join()
        return self.error


def read_legend_classes(out: Path) -> tuple[str, ...] | None:
    """The class names of ``out``'s existing ``legend.json`` (``None`` when absent or
    unreadable). Read once per run, before the run writes its own."""
    try:
        data = json.loads((out / "legend.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list):
        return None
    names = [entry.get("name") if isinstance(entry, dict) else entry for entry in data]
    strings = [n for n in names if isinstance(n, str)]
    return tuple(strings) if len(strings) == len(names) else None


def check_same_vocabulary(
    out: Path,
    class_names: tuple[str, ...],
    previous: tuple[str, ...] | None,
    *,
    overwrite: bool,
) -> None:
    """Refuse (:class:`UsageError`) a folder whose ``legend.json`` listed other classes
    (``previous``), unless overwriting."""
    if previous is not None and previous != class_names and not overwrite:
        raise UsageError(
            f"{out} holds results for another vocabulary ({len(previous)} classes in legend.json, "
            f"now {len(class_names)}); pass --overwrite to redo them or choose another --out folder"
        )


def nothing_to_segment(
    plan: RunPlan, class_names: tuple[str, ...], legend: tuple[str, ...] | None
) -> bool:
    """Whether a run of ``plan`` for ``class_names`` would only skip: not overwriting, the
    folder's ``legend.json`` (``legend``) names the same classes, and every image is complete.
    Such a run needs no model. Reads only; :meth:`SegmentRun.open` checks the folder as usual."""
    if plan.overwrite or legend != class_names:
        return False
    wide = len(class_names) > mask_io.MAX_PALETTE_CLASSES
    return all(_outputs(plan, image, wide).complete_record() is not None for image in plan.images)


def rerun_without_model(
    plan: RunPlan,
    class_names: tuple[str, ...],
    legend: tuple[str, ...] | None,
    *,
    model: str,
    pretrained: str,
    reporter: Reporter,
    jsonl_stream: TextIO | None = None,
    progress: bool | None = None,
) -> RunSummary | None:
    """Before any model loads: refuse a folder of another vocabulary, and when every image is
    already complete, finish the run (images counted as skipped, ``summary.json`` with
    ``"loaded": false``) with no model. Returns that run's summary, or None when a model is
    needed.

    Raises:
        UsageError: the folder holds results for other classes (without ``overwrite``).
    """
    check_same_vocabulary(plan.out, class_names, legend, overwrite=plan.overwrite)
    if not nothing_to_segment(plan, class_names, legend):
        return None
    run = SegmentRun.open(plan, class_names, legend, reporter=reporter, jsonl_stream=jsonl_stream)
    description = {
        "model": model,
        "pretrained": pretrained,
        "loaded": False,
        "num_classes": len(class_names),
        "class_names": list(class_names),
    }
    run.start(plan.run_config(description), load_seconds=0.0, show_progress=progress)
    with run.segmenting():
        reporter.message("every image is already complete: no model was loaded")
    return run.summary


def _outputs(plan: RunPlan, image: InputImage, wide: bool) -> OutputPaths:
    return image.outputs(
        plan.out, overlay=plan.overlay, wide_labels=wide, confidence=plan.save_confidence
    )


def write_summary(summary: RunSummary, **replace: Any) -> None:
    """Write ``summary.json`` atomically; ``replace`` overrides top-level keys."""
    assert summary.summary_path is not None
    data = {**summary.to_dict(), **replace}
    atomic_write_text(summary.summary_path, json.dumps(data, indent=2) + "\n")


# --- messages -----------------------------------------------------------------------------------


class Reporter:
    """Messages on stderr (none when quiet), printed so they do not break a progress bar."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.lock = threading.Lock()

    def message(self, text: str) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        with self.lock:
            tqdm.write(f"scclip: {text}", file=sys.stderr)


class JsonlSink:
    """One JSON line per finished image on a stream (``--jsonl``), flushed per line.

    When the reader of a pipe goes away (``| head``), the lines stop and the run goes on: the
    outputs on disk are the product.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self.lock:
            if self.stream is None:
                return
            try:
                self.stream.write(dumps_line(record) + "\n")
                self.stream.flush()
            except BrokenPipeError:
                self.stream = None


class Progress:
    """The progress bar (images per second, time left) on stderr, or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.lock = threading.Lock()
        self.bar = tqdm(
            total=total,
            unit="img",
            desc="segment",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not enabled,
            smoothing=0.1,
        )

    def advance(self) -> None:
        with self.lock:
            self.bar.update(1)

    def close(self) -> None:
        with self.lock:
            self.bar.close()


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
