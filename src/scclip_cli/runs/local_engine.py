"""The segmenting pipeline: decode ahead of the model, segment in batches, write behind it.

::

    reader pool ──(image | failure) in sorted order──▶ model thread ──(result)──▶ writer thread
    (decode, EXIF,  bounded prefetch                   Segmenter.segment_many     mask, overlay,
     size guard,                                       (crops batched across      then JSON last
     resize, normalise)                                 images; post-processing
                                                        in parts between them)

- Reading: a small thread pool decodes ahead of the model (PIL releases the GIL) and, through
  ``Segmenter.prepare``, resizes and normalises too; at most ``prefetch`` images ahead, handed over
  in sorted order. An image that cannot be read goes straight to the failures; it never reaches
  the model.
- Model: the calling thread runs ``segment_many`` over the decoded arrays (which post-processes
  each image between forward passes, in parts on all cores). When it raises, the images it had
  taken but not answered are retried one at a time, so one image that breaks the model fails
  alone and the rest of its batch is kept.
- Writing: a writer thread (bounded queue) encodes the PNG/JPEG/JSON files, so the model never waits
  on compression. Every file is written to a temporary name and renamed; an image's JSON is
  deleted before anything of it is rewritten and written last, so it marks completion.

What happens to each image goes to a :class:`PipelineEvents` (the local run's
:class:`~scclip_cli.runs.bookkeeping.SegmentRun`, or a Ray worker's collector). Errors in the pipeline
threads propagate to the caller (no silent hang); when the caller is interrupted, reading and
segmenting stop and the writer finishes the images already segmented.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, Full, Queue
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from scclip_cli.errors import ImageReadError, ScclipError
from scclip_cli.files import image_io, mask_io
from scclip_cli.files.atomic import atomic_write_text
from scclip_cli.runs.bookkeeping import Job
from scclip_cli.runs.summary import Failure, describe_error

if TYPE_CHECKING:
    from scclip_cli.predict.segmenter import Segmentation, Segmenter

DEFAULT_READ_WORKERS = 8
"""Decoding threads (capped by the CPU count). Enough to feed a GPU with large JPEGs (~0.1 s each to
decode and resize); on a CPU-only run the model is the bottleneck and idle readers cost nothing,
since at most ``2 × workers + 2`` images are read ahead."""
WRITE_QUEUE_SIZE = 8
"""Segmented images waiting for the writer; bounds memory when encoding is slower than the model."""
POLL_SECONDS = 0.1
"""How often blocked queue operations look for a failed or finished peer thread."""


class PipelineEvents(Protocol):
    """Where the pipeline reports each image (called from the model and writer threads)."""

    def image_done(self, job: Job, record: dict[str, Any]) -> None:
        """``job``'s files are written; ``record`` is its ``<stem>.json``."""

    def image_failed(self, failure: Failure) -> None:
        """``failure.path`` could not be read, segmented or written."""

    def waited(self, *, read: float = 0.0, write: float = 0.0) -> None:
        """Seconds the model thread waited for decoded images or for the writer."""


def segment_jobs(
    segmenter: Segmenter,
    jobs: Sequence[Job],
    events: PipelineEvents,
    *,
    class_names: tuple[str, ...],
    overlay: bool,
    read_workers: int,
) -> None:
    """Read, segment and write ``jobs`` (in order), reporting each image to ``events``.

    A bad image is a failure reported to ``events``, never an exception.

    Raises:
        Whatever stops the whole run: a bug in a pipeline thread, ``KeyboardInterrupt``.
    """
    _Pipeline(segmenter, events, class_names=class_names, overlay=overlay).run(
        list(jobs), read_workers=read_workers
    )


@dataclass(frozen=True)
class _Decoded:
    """One image read (and, when the segmenter can, prepared) on a reader thread."""

    job: Job
    model_input: Any
    """What ``segment_many`` gets: the segmenter's ``PreparedImage`` (resized, normalised) or the
    ``[H, W, 3] uint8`` RGB array."""
    height: int
    width: int
    rgb: np.ndarray | None
    """``[H, W, 3] uint8`` RGB, kept only when an overlay is drawn."""


def _read_one(
    job: Job, prepare: Callable[[np.ndarray], Any] | None, keep_rgb: bool
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
        return Failure(path, describe_error(err), "read", job.order)
    height, width = rgb.shape[:2]
    model_input: Any = rgb
    if prepare is not None:
        try:
            model_input = prepare(rgb)
        except Exception as err:
            return Failure(path, describe_error(err), "segment", job.order)
    return _Decoded(job, model_input, height, width, rgb if keep_rgb else None)


def _without_path(reason: str, path: str) -> str:
    """``"<path>: reason"`` → ``"reason"`` (failures.jsonl has the path in a field of its own)."""
    prefix = f"{path}: "
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


class _Writer(threading.Thread):
    """Writes each segmented image's files (mask, colour, overlay, then JSON) and reports it.

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
    """Reader pool → model (calling thread) → writer thread, for one list of jobs."""

    def __init__(
        self,
        segmenter: Segmenter,
        events: PipelineEvents,
        *,
        class_names: tuple[str, ...],
        overlay: bool,
    ) -> None:
        self.segmenter = segmenter
        self.events = events
        self.class_names = class_names
        self.overlay = overlay
        # Resizing and normalising on the reader threads too, when the segmenter offers it.
        self.prepare: Callable[[np.ndarray], Any] | None = getattr(segmenter, "prepare", None)
        self._feed_error: BaseException | None = None

    def run(self, jobs: list[Job], *, read_workers: int) -> None:
        if not jobs:
            return
        writer = _Writer(self)
        writer.start()
        pool = ThreadPoolExecutor(read_workers, thread_name_prefix="scclip-read")
        prefetch = 2 * read_workers + 2
        try:
            self._segment_all(self._decode_in_order(pool, jobs, prefetch), writer)
            writer.finish()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            writer.abort()
            raise
        finally:
            pool.shutdown(wait=True)
            self.events.waited(write=writer.wait_seconds)

    # reading ----------------------------------------------------------------------------------

    def _decode_in_order(
        self, pool: ThreadPoolExecutor, jobs: list[Job], prefetch: int
    ) -> Iterator[_Decoded | Failure]:
        """Decoded images in ``jobs`` order, at most ``prefetch`` decoded or decoding ahead."""
        pending: deque[Future[_Decoded | Failure]] = deque()
        upcoming = iter(jobs)

        def submit(job: Job) -> None:
            pending.append(pool.submit(_read_one, job, self.prepare, self.overlay))

        for job in upcoming:
            submit(job)
            if len(pending) >= prefetch:
                break
        while pending:
            start = time.perf_counter()
            result = pending.popleft().result()
            self.events.waited(read=time.perf_counter() - start)
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
        """The model inputs for ``segment_many``; read failures are reported here and never enter
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
                self.events.image_failed(item)
                continue
            taken.append(item)
            yield item.model_input

    def _retry_alone(self, taken: deque[_Decoded], writer: _Writer) -> None:
        """Segment each image of a failed batch on its own; those that fail again are reported."""
        while taken:
            decoded = taken.popleft()
            try:
                result = next(iter(self.segmenter.segment_many([decoded.model_input])))
            except Exception as err:
                job = decoded.job
                failure = Failure(str(job.image.path), describe_error(err), "segment", job.order)
                self.events.image_failed(failure)
                continue
            writer.put(decoded, result)

    # writing (writer thread) ------------------------------------------------------------------

    def write_outputs(self, decoded: _Decoded, result: Segmentation) -> None:
        """Write one image's files, JSON last; report it done, or failed on an OS error."""
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
            if outputs.confidence is not None:
                mask_io.write_confidence_png(outputs.confidence, result.confidence)
            classes = mask_io.class_statistics(labels, result.confidence, list(self.class_names))
            record = {
                "path": str(job.image.path),
                "width": int(width),
                "height": int(height),
                "mean_confidence": mask_io.mean_confidence(result.confidence),
                "classes": classes,
            }
            atomic_write_text(outputs.json, json.dumps(record, indent=2) + "\n")
        except (OSError, ScclipError) as err:
            detail = (err.strerror or err) if isinstance(err, OSError) else err
            failure = Failure(
                str(job.image.path), f"cannot write outputs: {detail}", "write", job.order
            )
            self.events.image_failed(failure)
            return
        self.events.image_done(job, record)
