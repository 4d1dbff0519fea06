"""Batch segmentation of image files: ``scclip segment`` as a plain function, and its pipeline.

    >>> from scclip_cli.segment_job import segment
    >>> summary = segment(["photos/"], "vocab/voc21.txt", "masks/", model="ViT-B-16-quickgelu")
    >>> summary.done, summary.failed, summary.exit_code

Pipeline (one model, loaded once; three kinds of threads)::

    reader pool ──(image | failure) in sorted order──▶ model thread ──(result)──▶ writer thread
    (decode, EXIF,  bounded prefetch                   Segmenter.segment_many     mask, overlay,
     size guard,                                       (crops batched across      then JSON last
     resize, normalise)                                 images)

- Reading: a small thread pool decodes ahead of the model (PIL releases the GIL) and, through
  ``Segmenter.prepare``, resizes and normalises too; at most ``prefetch`` images ahead, handed over
  in sorted order. An image that cannot be read goes straight to the failures; it never reaches
  the model.
- Model: the calling thread runs ``segment_many`` over the decoded arrays. When it raises, the
  images it had taken but not answered are retried one at a time, so one image that breaks the
  model fails alone and the rest of its batch is kept.
- Writing: a writer thread (bounded queue) encodes the PNG/JPEG/JSON files, so the model never waits
  on compression. Every file is written to a temporary name and renamed.

Completion: an image is complete when all its files exist; its ``<stem>.json`` is written last and
is deleted before anything of an image is (re)written, so a run killed at any moment leaves either
a complete image or one without JSON, which the next run redoes. Complete images are skipped unless
``overwrite``.

Errors in the pipeline threads propagate to the caller (no silent hang); Ctrl-C stops reading and
segmenting, lets the writer finish the images already segmented, records the run as interrupted in
``summary.json``, and re-raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Full, Queue
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from scclip_cli import image_io, mask_io
from scclip_cli.atomic import atomic_write_text
from scclip_cli.config import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    MethodConfig,
    ProtocolConfig,
    resolve_protocol,
)
from scclip_cli.errors import (
    ImageReadError,
    InputError,
    ScclipError,
    UsageError,
    VocabularyError,
)
from scclip_cli.inputs import (
    InputImage,
    OutputPaths,
    Shard,
    check_collisions,
    discover_inputs,
    parse_shard,
)
from scclip_cli.run_summary import (
    Failure,
    FailureLog,
    RunSummary,
    dumps_line,
    package_versions,
    reserved_names,
    run_file_names,
)

if TYPE_CHECKING:
    from scclip_cli.segmenter import Segmentation, Segmenter
    from scclip_cli.text_embeddings import QueryEmbeddings

DEFAULT_READ_WORKERS = 8
"""Decoding threads (capped by the CPU count). Enough to feed a GPU with large JPEGs (~0.1 s each to
decode and resize); on a CPU-only run the model is the bottleneck and idle readers cost nothing,
since at most ``2 × workers + 2`` images are read ahead."""
WRITE_QUEUE_SIZE = 8
"""Segmented images waiting for the writer; bounds memory when encoding is slower than the model."""
_MAX_TEMP_NAME = 200
"""Temporary names keep at most this many characters of the file name (scclip_cli.atomic)."""
POLL_SECONDS = 0.1
"""How often blocked queue operations look for a failed or finished peer thread."""


@dataclass(frozen=True)
class _Job:
    """One image of the run."""

    order: int
    """Position in this run's sorted inputs."""
    image: InputImage
    outputs: OutputPaths


@dataclass(frozen=True)
class _Decoded:
    """One image read (and, when the segmenter can, prepared) on a reader thread."""

    job: _Job
    model_input: Any
    """What ``segment_many`` gets: the segmenter's ``PreparedImage`` (resized, normalised) or the
    ``[H, W, 3] uint8`` RGB array."""
    height: int
    width: int
    rgb: np.ndarray | None
    """``[H, W, 3] uint8`` RGB, kept only when an overlay is drawn."""


def segment(
    inputs: Sequence[str | os.PathLike[str]],
    vocab: str | Path | list[str] | QueryEmbeddings | None,
    out_dir: str | os.PathLike[str],
    *,
    segmenter: Segmenter | None = None,
    model: str = DEFAULT_MODEL,
    pretrained: str = DEFAULT_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
    method: str | MethodConfig = "sc-clip",
    preset: str | None = None,
    protocol: ProtocolConfig | None = None,
    short_side: int | None = None,
    crop: int | None = None,
    stride: int | None = None,
    logit_scale: float | None = None,
    prob_threshold: float | None = None,
    area_threshold: float | None = None,
    batch_size: int = 16,
    overlay: bool = False,
    overwrite: bool = False,
    shard: str | Shard | tuple[int, int] | None = None,
    quiet: bool = False,
    jsonl_stream: TextIO | None = None,
    stdin: TextIO | None = None,
    read_workers: int | None = None,
    progress: bool | None = None,
) -> RunSummary:
    """Segment image files and folders into label PNGs and per-image JSON under ``out_dir``.

    Args:
        inputs: image files, folders (searched recursively) and ``"-"`` (paths on ``stdin``); see
            :mod:`scclip_cli.inputs` for the order and the output mapping.
        vocab: class list (.txt / .npz path, or a list of class lines); ignored when ``segmenter``
            is given.
        out_dir: output folder (created).
        segmenter: an already loaded :class:`~scclip_cli.segmenter.Segmenter` to reuse; the model,
            vocabulary and protocol arguments must then be left at their defaults.
        model, pretrained, device, precision, method, batch_size: passed to
            :meth:`Segmenter.load`.
        preset: benchmark protocol preset; ``protocol`` (a full config) or the single protocol
            values (``short_side`` ... ``area_threshold``) override its fields.
        overlay: also write ``<stem>_overlay.jpg``.
        overwrite: redo images whose outputs exist.
        shard: ``"I/N"``: only the I-th of N round-robin parts of the sorted inputs.
        quiet: no progress bar and no messages on stderr.
        jsonl_stream: where to write one JSON line per finished image, flushed per line:
            ``{"path", "status", "mask", "json", "width", "height", "classes"}`` (plus ``overlay``
            / ``color`` when written). ``status`` is ``done``, or ``skipped`` for images a
            previous run completed (listed first); failed inputs are in ``failures.jsonl`` only.
        stdin: where ``"-"`` reads paths (``sys.stdin`` by default).
        read_workers: decoding threads (default ``min(8, CPUs)``).
        progress: show the progress bar; by default when not ``quiet`` and stderr is a terminal.

    Returns:
        The run's :class:`RunSummary` (``exit_code`` 0 when nothing failed, 1 otherwise), also
        written to ``summary.json`` (``summary.shard-I-of-N.json`` with a shard; see
        :mod:`scclip_cli.run_summary`).

    Raises:
        ScclipError: usage and configuration errors found before any image is processed (no
            inputs, output collisions, bad shard, unknown model, bad vocabulary, ...).
        KeyboardInterrupt: after recording the interrupted run.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if read_workers is not None and read_workers < 1:
        raise UsageError(f"read_workers must be at least 1, got {read_workers}")
    shard_ = parse_shard(shard)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    shard_tag = shard_.file_tag if shard_ is not None else None
    reserved = reserved_names(shard_tag)

    # Everything cheap first, so a typo does not cost a model load.
    discovery = discover_inputs(inputs, stdin=stdin, exclude=out)
    check_collisions(discovery.images, out, overlay=overlay, wide_labels=False, reserved=reserved)
    given: dict[str, object] = {
        "short_side": short_side,
        "crop": crop,
        "stride": stride,
        "logit_scale": logit_scale,
        "prob_threshold": prob_threshold,
        "area_threshold": area_threshold,
    }
    overrides = {name: value for name, value in given.items() if value is not None}
    reporter = _Reporter(quiet)

    segmenter, load_seconds = _obtain_segmenter(
        segmenter,
        vocab,
        model=model,
        pretrained=pretrained,
        device=device,
        precision=precision,
        method=method,
        preset=preset,
        protocol=protocol,
        overrides=overrides,
        batch_size=batch_size,
    )
    if load_seconds:
        reporter.message(f"loaded {model} ({pretrained}) in {load_seconds:.1f} s")

    class_names = tuple(segmenter.class_names)
    wide = len(class_names) > mask_io.MAX_PALETTE_CLASSES
    if wide:
        check_collisions(
            discovery.images, out, overlay=overlay, wide_labels=True, reserved=reserved
        )
    _prepare_out_dir(out, class_names, overwrite=overwrite)

    images = shard_.take(discovery.images) if shard_ is not None else discovery.images
    jobs = [
        _Job(i, image, image.outputs(out, overlay=overlay, wide_labels=wide))
        for i, image in enumerate(images)
    ]
    summary_name, failures_name = run_file_names(shard_tag)
    summary = RunSummary(
        out_dir=out,
        config=_run_config(segmenter, inputs, out, preset, overlay, overwrite, shard_),
        class_names=class_names,
        versions=package_versions(),
        total=len(jobs),
        load_seconds=load_seconds,
        summary_path=out / summary_name,
        failures_path=out / failures_name,
    )
    jsonl = _JsonlSink(jsonl_stream)
    todo = _skip_complete(jobs, summary, jsonl) if not overwrite else jobs
    _remove_stale_temporaries(todo)
    # Until this run ends, summary.json says it is running (a killed run leaves it so), and the
    # failures file lists this run's failures only.
    _write_summary(summary, status="running")
    failure_log = FailureLog(out / failures_name)
    # Folder listing problems belong to no shard; shard 1 (or the only run) reports them.
    if shard_ is None or shard_.index == 1:
        for path, reason in discovery.problems:
            failure = Failure(path, reason, "discover")
            summary.record_failure(failure)
            failure_log.append(failure)
            reporter.message(f"failed: {path}: {reason}")

    shard_text = f" (shard {shard_.label})" if shard_ is not None else ""
    reporter.message(
        f"{len(jobs)} images{shard_text}: {summary.skipped} already complete, {len(todo)} to segment"
    )
    show_progress = progress if progress is not None else (not quiet and _stderr_is_terminal())
    pipeline = _Pipeline(
        segmenter,
        summary=summary,
        failure_log=failure_log,
        jsonl=jsonl,
        reporter=reporter,
        class_names=class_names,
        overlay=overlay,
        read_workers=read_workers or min(DEFAULT_READ_WORKERS, os.cpu_count() or 1),
    )
    start = time.perf_counter()
    try:
        pipeline.run(todo, show_progress=show_progress)
    except BaseException as err:
        # Record what was done before unwinding; never hide the original error.
        summary.interrupted = isinstance(err, KeyboardInterrupt)
        try:
            _finish_run_files(summary, failure_log, time.perf_counter() - start, err)
        except Exception as write_err:
            err.add_note(f"(writing the run summary failed too: {write_err})")
        if summary.interrupted:
            reporter.message(
                f"interrupted after segmenting {summary.done} images; run the same command "
                "again to finish the rest"
            )
        raise
    _finish_run_files(summary, failure_log, time.perf_counter() - start, None)
    reporter.message(
        f"segmented {summary.done}, skipped {summary.skipped}, failed {summary.failed} "
        f"in {summary.segment_seconds:.1f} s ({summary.images_per_second:.2f} images/s); "
        f"summary: {summary.summary_path}"
        + (f"; failures: {summary.failures_path}" if summary.failed else "")
    )
    return summary


# --- setup -------------------------------------------------------------------------------------


def _obtain_segmenter(
    segmenter: Segmenter | None,
    vocab: str | Path | list[str] | QueryEmbeddings | None,
    *,
    preset: str | None,
    protocol: ProtocolConfig | None,
    overrides: dict[str, object],
    **load_options: Any,
) -> tuple[Segmenter, float]:
    """The segmenter passed in, or a freshly loaded one; and the seconds loading took."""
    if segmenter is not None:
        if preset is not None or protocol is not None or overrides:
            raise UsageError(
                "protocol options cannot change an already loaded segmenter; "
                "pass them to Segmenter.load"
            )
        return segmenter, 0.0
    if vocab is None:
        raise UsageError("a vocabulary (--vocab) is needed to load the segmenter")
    if isinstance(vocab, str | os.PathLike) and not Path(vocab).is_file():
        # checked before the (slow) model load
        raise VocabularyError(f"vocabulary file not found: {os.fspath(vocab)}")
    from scclip_cli.segmenter import Segmenter

    start = time.perf_counter()
    loaded = Segmenter.load(
        vocab, protocol=resolve_protocol(preset, protocol, **overrides), **load_options
    )
    return loaded, time.perf_counter() - start


def _prepare_out_dir(out: Path, class_names: tuple[str, ...], *, overwrite: bool) -> None:
    """Create ``out``, refuse to mix vocabularies in it, and write the legend.

    A folder whose ``legend.json`` lists other classes holds masks whose indices mean something
    else; resuming into it would mix them, so that needs ``overwrite``.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder {out}: {err.strerror or err}") from None
    previous = _legend_class_names(out / "legend.json")
    if previous is not None and previous != class_names and not overwrite:
        raise UsageError(
            f"{out} holds results for another vocabulary ({len(previous)} classes in legend.json, "
            f"now {len(class_names)}); pass --overwrite to redo them or choose another --out folder"
        )
    try:
        mask_io.write_legend(out, list(class_names))
    except OSError as err:
        raise InputError(
            f"cannot write to the output folder {out}: {err.strerror or err}"
        ) from None


def _legend_class_names(path: Path) -> tuple[str, ...] | None:
    """The class names of an existing ``legend.json`` (``None`` when absent or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list):
        return None
    names = [entry.get("name") if isinstance(entry, dict) else entry for entry in data]
    strings = [n for n in names if isinstance(n, str)]
    return tuple(strings) if len(strings) == len(names) else None


def _run_config(
    segmenter: Segmenter,
    inputs: Sequence[str | os.PathLike[str]],
    out: Path,
    preset: str | None,
    overlay: bool,
    overwrite: bool,
    shard: Shard | None,
) -> dict[str, Any]:
    """``summary.json``'s configuration: the segmenter's own description (model, weights,
    vocabulary, method, protocol, calibration, batch size) plus the run options."""
    config = dict(segmenter.describe())
    config["run"] = {
        "inputs": [os.fspath(i) for i in inputs],
        "out": str(out),
        "preset": preset,
        "overlay": overlay,
        "overwrite": overwrite,
        "shard": shard.label if shard is not None else None,
    }
    return config


def _skip_complete(jobs: list[_Job], summary: RunSummary, jsonl: _JsonlSink) -> list[_Job]:
    """Count the images a previous run completed and return the others, in order.

    An image is complete when every one of its files exists and its JSON (written last) parses.
    """
    todo = []
    for job in jobs:
        record = _read_complete_record(job.outputs)
        if record is None:
            todo.append(job)
            continue
        summary.record_skipped(record["width"], record["height"], record["classes"])
        jsonl.write(_jsonl_record(job, record, "skipped"))
    return todo


def _read_complete_record(outputs: OutputPaths) -> dict[str, Any] | None:
    if not outputs.complete():
        return None
    try:
        record = json.loads(outputs.json.read_text(encoding="utf-8"))
        int(record["width"]), int(record["height"])
        for entry in record["classes"]:
            int(entry["index"]), int(entry["pixels"]), float(entry["mean_confidence"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not ours, or edited by hand: redo it
    return record if isinstance(record, dict) else None


_TEMPORARY_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")
"""Temporary names of :func:`scclip_cli.atomic.temporary_path_for`."""


def _remove_stale_temporaries(todo: Sequence[_Job]) -> None:
    """Delete temporary files that a killed run left beside the outputs of the images to redo.

    Only temporaries of this run's own images (shards never share one) written by a process that
    is no longer running on this machine are removed; each folder is listed once.
    """
    targets: dict[Path, set[str]] = {}
    for job in todo:
        for path in job.outputs.files():
            targets.setdefault(path.parent, set()).add(path.name[:_MAX_TEMP_NAME])
    for folder, names in targets.items():
        try:
            with os.scandir(folder) as entries:
                stale = [
                    entry.path
                    for entry in entries
                    if (match := _TEMPORARY_RE.match(entry.name)) is not None
                    and match["name"] in names
                    and not _process_alive(int(match["pid"]))
                ]
        except OSError:
            continue  # the folder does not exist yet
        for stale_path in stale:
            with contextlib.suppress(OSError):
                os.unlink(stale_path)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _finish_run_files(
    summary: RunSummary, failure_log: FailureLog, seconds: float, error: BaseException | None
) -> None:
    """Write the final ``failures.jsonl`` and ``summary.json`` (atomically).

    ``error`` is what stopped the run early (``KeyboardInterrupt`` for Ctrl-C), if anything.
    """
    summary.segment_seconds = seconds
    summary.finished_at = time.time()
    failure_log.finalize(summary.sorted_failures())
    if error is None or isinstance(error, KeyboardInterrupt):
        _write_summary(summary)
    else:
        _write_summary(summary, status="error", error=_describe_error(error))


def _write_summary(summary: RunSummary, **replace: Any) -> None:
    """Write ``summary.json`` atomically; ``replace`` overrides top-level keys."""
    assert summary.summary_path is not None
    data = {**summary.to_dict(), **replace}
    atomic_write_text(summary.summary_path, json.dumps(data, indent=2) + "\n")


# --- pipeline ----------------------------------------------------------------------------------


class _Reporter:
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


class _JsonlSink:
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


def _jsonl_record(job: _Job, record: dict[str, Any], status: str) -> dict[str, Any]:
    line: dict[str, Any] = {
        "path": str(job.image.path),
        "status": status,
        "mask": str(job.outputs.mask),
        "json": str(job.outputs.json),
    }
    if job.outputs.overlay is not None:
        line["overlay"] = str(job.outputs.overlay)
    if job.outputs.color is not None:
        line["color"] = str(job.outputs.color)
    line.update(width=record["width"], height=record["height"], classes=record["classes"])
    return line


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _read_one(
    job: _Job, prepare: Callable[[np.ndarray], Any] | None, keep_rgb: bool
) -> _Decoded | Failure:
    """Decode one image and prepare it for the model (runs on a reader thread).

    Never raises for a bad file: returns the :class:`Failure` instead.
    """
    path = str(job.image.path)
    try:
        rgb = image_io.read_image_rgb(job.image.path)  # [H, W, 3] uint8, displayed orientation
    except ImageReadError as err:
        return Failure(path, _without_path(str(err), path), "read", job.order)
    except (OSError, ValueError, SyntaxError, MemoryError) as err:
        # read_image_rgb should have turned these into ImageReadError; one odd file must not stop
        # the run either way.
        return Failure(path, _describe_error(err), "read", job.order)
    height, width = rgb.shape[:2]
    model_input: Any = rgb
    if prepare is not None:
        try:
            model_input = prepare(rgb)
        except Exception as err:
            return Failure(path, _describe_error(err), "segment", job.order)
    return _Decoded(job, model_input, height, width, rgb if keep_rgb else None)


def _without_path(reason: str, path: str) -> str:
    """``"<path>: reason"`` → ``"reason"`` (failures.jsonl has the path in a field of its own)."""
    prefix = f"{path}: "
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


def _describe_error(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class _Progress:
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


class _Writer(threading.Thread):
    """Writes each segmented image's files (mask, colour, overlay, then JSON) and records it.

    ``put`` blocks while the queue is full and raises the writer's own error if it has died.
    """

    def __init__(self, owner: _Pipeline) -> None:
        super().__init__(name="scclip-writer", daemon=True)
        self.owner = owner
        self.queue: Queue[tuple[_Decoded, Segmentation] | None] = Queue(WRITE_QUEUE_SIZE)
        self.error: BaseException | None = None
        self.closing = threading.Event()
        self.wait_seconds = 0.0
        """Time callers spent blocked in :meth:`put` (the queue was full)."""

    def put(self, decoded: _Decoded, result: Segmentation) -> None:
        self._put((decoded, result))

    def finish(self) -> None:
        """Write everything queued, stop, and raise the writer's error if it failed."""
        self._put(None)
        self._join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop after writing what is already queued (the main thread is unwinding)."""
        self.closing.set()
        self._join()

    def _put(self, item: tuple[_Decoded, Segmentation] | None) -> None:
        start = time.perf_counter()
        try:
            self._put_waiting(item)
        finally:
            self.wait_seconds += time.perf_counter() - start

    def _put_waiting(self, item: tuple[_Decoded, Segmentation] | None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            if not self.is_alive():
                raise RuntimeError("the writer thread stopped unexpectedly")
            try:
                self.queue.put(item, timeout=POLL_SECONDS)
                return
            except Full:
                continue

    def _join(self) -> None:
        while self.is_alive():
            self.join(timeout=POLL_SECONDS)

    def run(self) -> None:
        try:
            while True:
                try:
                    item = self.queue.get(timeout=POLL_SECONDS)
                except Empty:
                    if self.closing.is_set():
                        return
                    continue
                if item is None:
                    return
                self.owner.write_outputs(*item)
        except BaseException as err:
            self.error = err


class _Pipeline:
    """Reader pool → model (calling thread) → writer thread, for one run."""

    def __init__(
        self,
        segmenter: Segmenter,
        *,
        summary: RunSummary,
        failure_log: FailureLog,
        jsonl: _JsonlSink,
        reporter: _Reporter,
        class_names: tuple[str, ...],
        overlay: bool,
        read_workers: int,
    ) -> None:
        self.segmenter = segmenter
        self.summary = summary
        self.failure_log = failure_log
        self.jsonl = jsonl
        self.reporter = reporter
        self.class_names = class_names
        self.overlay = overlay
        self.read_workers = read_workers
        self.prefetch = 2 * read_workers + 2
        # Resizing and normalising on the reader threads too, when the segmenter offers it.
        self.prepare: Callable[[np.ndarray], Any] | None = getattr(segmenter, "prepare", None)
        self.progress: _Progress | None = None
        self._feed_error: BaseException | None = None

    def run(self, jobs: list[_Job], *, show_progress: bool) -> None:
        if not jobs:
            return
        self.progress = _Progress(len(jobs), show_progress)
        writer = _Writer(self)
        writer.start()
        pool = ThreadPoolExecutor(self.read_workers, thread_name_prefix="scclip-read")
        try:
            self._segment_all(self._decode_in_order(pool, jobs), writer)
            writer.finish()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            writer.abort()
            raise
        finally:
            pool.shutdown(wait=True)
            self.progress.close()
            self.summary.write_wait_seconds = writer.wait_seconds

    # reading ----------------------------------------------------------------------------------

    def _decode_in_order(
        self, pool: ThreadPoolExecutor, jobs: list[_Job]
    ) -> Iterator[_Decoded | Failure]:
        """Decoded images in ``jobs`` order, at most ``prefetch`` decoded or decoding ahead."""
        pending: deque[Future[_Decoded | Failure]] = deque()
        upcoming = iter(jobs)

        def submit(job: _Job) -> None:
            pending.append(pool.submit(_read_one, job, self.prepare, self.overlay))

        for job in upcoming:
            submit(job)
            if len(pending) >= self.prefetch:
                break
        while pending:
            start = time.perf_counter()
            result = pending.popleft().result()
            self.summary.read_wait_seconds += time.perf_counter() - start
            following = next(upcoming, None)
            if following is not None:
                submit(following)
            yield result

    # segmenting -------------------------------------------------------------------------------

    def _segment_all(self, decoded: Iterator[_Decoded | Failure], writer: _Writer) -> None:
        """Run ``segment_many`` over the decoded images; on a model error, retry its open images
        one by one and carry on with a fresh ``segment_many`` for the rest."""
        while True:
            taken: deque[_Decoded] = deque()
            results = iter(self.segmenter.segment_many(self._feed(decoded, taken)))
            while True:
                try:
                    result = next(results)
                except StopIteration:
                    if taken:
                        raise RuntimeError(
                            f"segment_many returned {len(taken)} results too few"
                        ) from None
                    return
                except Exception:
                    if self._feed_error is not None:
                        raise self._feed_error from None
                    if not taken:
                        raise
                    self._retry_alone(taken, writer)
                    break
                if not taken:
                    raise RuntimeError("segment_many returned more results than images")
                writer.put(taken.popleft(), result)

    def _feed(self, decoded: Iterator[_Decoded | Failure], taken: deque[_Decoded]) -> Iterator[Any]:
        """The model inputs for ``segment_many``; read failures are recorded here and never enter
        it. ``taken`` holds, in order, the images handed over and not yet answered."""
        while True:
            try:
                item = next(decoded, None)
            except BaseException as err:  # a reader bug: surface it instead of ending the feed
                self._feed_error = err
                raise
            if item is None:
                return
            if isinstance(item, Failure):
                self.record_failure(item)
                continue
            taken.append(item)
            yield item.model_input

    def _retry_alone(self, taken: deque[_Decoded], writer: _Writer) -> None:
        """Segment each image of a failed batch on its own; those that fail again are recorded."""
        while taken:
            decoded = taken.popleft()
            try:
                result = next(iter(self.segmenter.segment_many([decoded.model_input])))
            except Exception as err:
                job = decoded.job
                failure = Failure(str(job.image.path), _describe_error(err), "segment", job.order)
                self.record_failure(failure)
                continue
            writer.put(decoded, result)

    # writing (writer thread) ------------------------------------------------------------------

    def write_outputs(self, decoded: _Decoded, result: Segmentation) -> None:
        """Write one image's files, JSON last; record it done, or failed on an OS error."""
        job, height, width = decoded.job, decoded.height, decoded.width
        labels = np.asarray(result.labels)  # [H, W] int32
        if labels.shape != (height, width):
            raise RuntimeError(
                f"the segmenter returned a {labels.shape} mask for a {height}x{width} image "
                f"({job.image.path})"
            )
        outputs = job.outputs
        try:
            # The JSON marks completion: remove a stale one before touching the other files.
            outputs.json.unlink(missing_ok=True)
            outputs.json.parent.mkdir(parents=True, exist_ok=True)
            mask_io.write_label_png(outputs.mask, labels, len(self.class_names))
            if outputs.overlay is not None and decoded.rgb is not None:
                mask_io.write_overlay_jpg(outputs.overlay, decoded.rgb, labels)
            classes = mask_io.class_statistics(labels, result.confidence, list(self.class_names))
            record = {
                "path": str(job.image.path),
                "width": int(width),
                "height": int(height),
                "classes": classes,
            }
            atomic_write_text(outputs.json, json.dumps(record, indent=2) + "\n")
        except (OSError, ScclipError) as err:
            detail = (err.strerror or err) if isinstance(err, OSError) else err
            failure = Failure(
                str(job.image.path), f"cannot write outputs: {detail}", "write", job.order
            )
            self.record_failure(failure)
            return
        self.summary.record_done(width, height, classes)
        self.jsonl.write(_jsonl_record(job, record, "done"))
        if self.progress is not None:
            self.progress.advance()

    # bookkeeping ------------------------------------------------------------------------------

    def record_failure(self, failure: Failure) -> None:
        self.summary.record_failure(failure)
        self.failure_log.append(failure)
        self.reporter.message(f"failed: {failure.path}: {failure.reason}")
        if self.progress is not None:
            self.progress.advance()
