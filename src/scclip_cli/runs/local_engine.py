"""The segmenting pipeline: decode ahead of the model, segment in batches, write behind it.

::

    reader pool ──(image | failure) in sorted order──▶ model thread ──(result)──▶ writer thread
    (decode, EXIF,  bounded prefetch                   Segmenter.segment_many     mask, overlay,
     size guard,                                       (crops batched across      then JSON last
     resize, normalise)                                 images; post-processing
                                                        in parts between them)

- Reading: a small thread pool decodes ahead of the model (PIL releases the GIL) and, through
  ``Segmenter.read``, resizes and normalises too; at most ``prefetch`` images ahead, handed over
  in sorted order. With a feature cache, an image file whose features it holds is not decoded at
  all (``read`` looks the file's bytes up first). An image that cannot be read goes straight to
  the failures; it never reaches the model.
- Model: the calling thread runs ``segment_many`` over the decoded arrays (which post-processes
  each image between forward passes, in parts on all cores). When it raises, the images it had
  taken but not answered are retried one at a time, so one image that breaks the model fails
  alone and the rest of its batch is kept.
- Writing: a writer thread (bounded queue) encodes the PNG/JPEG/JSON files, so the model never waits
  on compression. Every file is written to a temporary name and renamed; an image's JSON is
  deleted before anything of it is rewritten and written last, so it marks completion.

What happens to each image goes to an :class:`~scclip_cli.runs.engine.ImageEvents` (the run's
:class:`~scclip_cli.runs.bookkeeping.SegmentRun`, or a Ray worker's collector). Errors in the pipeline
threads propagate to the caller (no silent hang); when the caller is interrupted, reading and
segmenting stop and the writer finishes the images already segmented.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Full, Queue
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from scclip_cli.errors import ImageReadError, ScclipError, UsageError
from scclip_cli.files import image_io, mask_io
from scclip_cli.files.image_record import ImageRecord
from scclip_cli.runs.engine import ModelSpec, ScoreTask, SegmentTask, Started
from scclip_cli.runs.inputs import Job
from scclip_cli.runs.out_lock import process_alive
from scclip_cli.runs.scoring import Predict, collect_problems, saving_source, segmenter_source
from scclip_cli.runs.summary import Failure, describe_error

if TYPE_CHECKING:
    from scclip_cli.maps.metrics import ConfusionMatrix
    from scclip_cli.predict.segmenter import ReadImage, Segmentation, Segmenter
    from scclip_cli.runs.engine import ImageEvents, Message
    from scclip_cli.runs.scoring import EvalSample

DEFAULT_READ_WORKERS = 8
"""Decoding threads (capped by the CPU count). Enough to feed a GPU with large JPEGs (decoding and
resizing them is the slow part of reading); on a CPU-only run the model is the bottleneck and idle readers cost nothing,
since at most ``2 × workers + 2`` images are read ahead."""
WRITE_QUEUE_SIZE = 8
"""Segmented images waiting for the writer; bounds memory when encoding is slower than the model."""
POLL_SECONDS = 0.1
"""How often blocked queue operations look for a failed or finished peer thread."""
MAX_TEMP_NAME = 200
"""Temporary names keep at most this many characters of the file name (scclip_cli.files.atomic)."""
_TEMPORARY_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")
"""Temporary names of :func:`scclip_cli.files.atomic.temporary_path_for`."""


def segment_jobs(
    segmenter: Segmenter,
    jobs: Sequence[Job],
    events: ImageEvents,
    *,
    class_names: tuple[str, ...],
    overlay: bool,
    read_workers: int,
) -> None:
    """Read, segment and write ``jobs`` (in order), reporting each image to ``events``.

    Temporary files that a killed run left beside these images' outputs are removed first. A bad
    image is a failure reported to ``events``, never an exception.

    Raises:
        Whatever stops the whole run: a bug in a pipeline thread, ``KeyboardInterrupt``.
    """
    remove_stale_temporaries(jobs)
    _Pipeline(segmenter, events, class_names=class_names, overlay=overlay).run(
        list(jobs), read_workers=read_workers
    )


class _Read(Protocol):
    """``Segmenter.read``: an image file → what ``segment_many`` takes, with its sizes."""

    def __call__(self, path: Path, *, keep_rgb: bool) -> ReadImage: ...


@dataclass(frozen=True)
class _Decoded:
    """One image read (and, when the segmenter can, prepared) on a reader thread."""

    job: Job
    model_input: Any
    """What ``segment_many`` gets: what the segmenter's ``read`` made of the file (a
    ``PreparedImage``, resized and normalised, or a ``CachedImage``) or the ``[H, W, 3] uint8`` RGB
    array."""
    height: int
    width: int
    rgb: np.ndarray | None
    """``[H, W, 3] uint8`` RGB, kept only when an overlay is drawn."""


def _read_one(job: Job, read: _Read | None, keep_rgb: bool) -> _Decoded | Failure:
    """Decode one image and prepare it for the model (runs on a reader thread): by the
    segmenter's own ``read`` when it has one (which resizes and normalises too, and skips decoding
    an image whose features the feature cache holds), else decoded here into an RGB array.

    Never raises for a bad file: returns the :class:`Failure` instead.
    """
    path = str(job.image.path)
    try:
        if read is not None:
            got = read(job.image.path, keep_rgb=keep_rgb)
            return _Decoded(job, got.image, got.image.height, got.image.width, got.rgb)
        rgb = image_io.read_image_rgb(job.image.path)  # [H, W, 3] uint8, displayed orientation
    except ImageReadError as err:
        return Failure(path, _without_path(str(err), path), "read", job.order)
    except (OSError, ValueError, SyntaxError, MemoryError) as err:
        # read_image_rgb should have turned these into ImageReadError; one odd file must not stop
        # the run either way.
        return Failure(path, describe_error(err), "read", job.order)
    except Exception as err:
        if read is None:
            raise
        return Failure(path, describe_error(err), "segment", job.order)  # preparing it failed
    height, width = rgb.shape[:2]
    return _Decoded(job, rgb, height, width, rgb if keep_rgb else None)


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
        events: ImageEvents,
        *,
        class_names: tuple[str, ...],
        overlay: bool,
    ) -> None:
        self.segmenter = segmenter
        self.events = events
        self.class_names = class_names
        self.overlay = overlay
        # Resizing and normalising on the reader threads too, when the segmenter offers it.
        self.read: _Read | None = getattr(segmenter, "read", None)
        self._feed_error: BaseException | None = None
        self.confidence = False
        """Whether some image's confidence map is written (else the segmenter skips it)."""

    def run(self, jobs: list[Job], *, read_workers: int) -> None:
        if not jobs:
            return
        self.confidence = any(job.outputs.confidence is not None for job in jobs)
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
            pending.append(pool.submit(_read_one, job, self.read, self.overlay))

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

    def _segment_many(self, images: Iterable[Any]) -> Iterator[Segmentation]:
        """``segment_many`` with the confidence map only when it is written, and the totals of
        the per-image statistics."""
        return self.segmenter.segment_many(images, confidence=self.confidence, statistics=True)

    def _segment_all(self, decoded: Iterator[_Decoded | Failure], writer: _Writer) -> None:
        """Run ``segment_many`` over the decoded images; on a model error, retry its open images
        one by one and carry on with a fresh ``segment_many`` for the rest."""
        while True:
            taken: deque[_Decoded] = deque()
            results = iter(self._segment_many(self._feed(decoded, taken)))
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
                result = next(iter(self._segment_many([decoded.model_input])))
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
                if result.confidence is None:
                    raise RuntimeError(f"the segmenter returned no confidence ({job.image.path})")
                mask_io.write_confidence_png(outputs.confidence, result.confidence)
            totals = result.class_totals()
            record = ImageRecord(
                str(job.image.path),
                int(width),
                int(height),
                tuple(mask_io.class_statistics(totals, None, list(self.class_names))),
                mean_confidence=mask_io.mean_confidence(totals),
            )
            record.write(outputs.json)
        except (OSError, ScclipError) as err:
            detail = (err.strerror or err) if isinstance(err, OSError) else err
            failure = Failure(
                str(job.image.path), f"cannot write outputs: {detail}", "write", job.order
            )
            self.events.image_failed(failure)
            return
        self.events.image_done(job, record)


def remove_stale_temporaries(jobs: Sequence[Job]) -> None:
    """Delete temporary files that a killed run left beside the outputs of ``jobs``.

    Only temporaries of these images written by a process that is no longer running on this
    machine are removed; each folder is listed once.
    """
    targets: dict[Path, set[str]] = {}
    for job in jobs:
        for path in job.outputs.files():
            targets.setdefault(path.parent, set()).add(path.name[:MAX_TEMP_NAME])
    for folder, names in targets.items():
        try:
            with os.scandir(folder) as entries:
                stale = [
                    entry.path
                    for entry in entries
                    if (match := _TEMPORARY_RE.match(entry.name)) is not None
                    and match["name"] in names
                    and not process_alive(int(match["pid"]))
                ]
        except OSError:
            continue  # the folder does not exist yet
        for stale_path in stale:
            with contextlib.suppress(OSError):
                os.unlink(stale_path)


# --- the engine ---------------------------------------------------------------------------------


class LocalEngine:
    """Segments and scores in this process (:class:`~scclip_cli.runs.engine.Engine`).

    Args:
        segmenter: an already loaded segmenter to use instead of loading one.
        predict: (``eval``) an injected segmentation source (:data:`scclip_cli.runs.scoring.Predict`)
            instead of a segmenter.
        read_workers: decoding threads (default ``min(8, CPUs)``).
        announce_load: say how long loading the model took (``segment`` does, ``eval`` does not).
    """

    name = "local"

    def __init__(
        self,
        *,
        segmenter: Segmenter | None = None,
        predict: Predict | None = None,
        read_workers: int | None = None,
        announce_load: bool = True,
    ) -> None:
        self.segmenter = segmenter
        self.announce_load = announce_load
        self.predict = predict
        self.read_workers = read_workers or min(DEFAULT_READ_WORKERS, os.cpu_count() or 1)

    @contextlib.contextmanager
    def session(self, spec: ModelSpec | None, message: Message) -> Iterator[LocalSession]:
        """Load the model of ``spec`` now (unless a segmenter or a source was passed in)."""
        segmenter, load_seconds = self.segmenter, 0.0
        if segmenter is None and self.predict is None and spec is not None:
            start = time.perf_counter()
            segmenter = spec.load()
            load_seconds = time.perf_counter() - start
            if self.announce_load:
                options = spec.options
                message(f"loaded {options.model} ({options.pretrained}) in {load_seconds:.1f} s")
        yield LocalSession(segmenter, self.predict, load_seconds, self.read_workers)


class LocalSession:
    """A run in this process: the pipeline threads, or the scoring loop."""

    def __init__(
        self,
        segmenter: Segmenter | None,
        predict: Predict | None,
        load_seconds: float,
        read_workers: int,
    ) -> None:
        self.segmenter = segmenter
        self.predict = predict
        self.load_seconds = load_seconds
        self.read_workers = read_workers
        self.overlay = False
        self.score_task: ScoreTask | None = None

    def _started(self) -> Started:
        if self.segmenter is None:
            return Started(None, self.load_seconds)
        segmenter = self.segmenter
        return Started(segmenter.describe(), self.load_seconds, tuple(segmenter.class_names))

    def start_segmenting(self, todo: Sequence[Job], task: SegmentTask) -> Started:
        if self.segmenter is None:
            raise UsageError("a vocabulary (--vocab) is needed to load the segmenter")
        self.overlay = task.overlay
        return self._started()

    def segment(self, todo: Sequence[Job], events: ImageEvents) -> None:
        assert self.segmenter is not None
        segment_jobs(
            self.segmenter,
            todo,
            events,
            class_names=tuple(self.segmenter.class_names),
            overlay=self.overlay,
            read_workers=self.read_workers,
        )

    def start_scoring(self, samples: Sequence[EvalSample], task: ScoreTask) -> Started:
        self.score_task = task
        return self._started()

    def score(
        self,
        samples: Sequence[EvalSample],
        confusion: ConfusionMatrix,
        on_scored: Callable[[int], None],
    ) -> list[tuple[int, str]]:
        task = self.score_task
        assert task is not None
        predict = self.predict
        if self.segmenter is not None:
            predict = segmenter_source(self.segmenter, task.save_pred)
        elif predict is not None and task.save_pred is not None:
            predict = saving_source(predict, task.save_pred, confusion.num_classes)
        predictions = predict(samples) if predict is not None else None
        return collect_problems(
            samples,
            confusion,
            predictions=predictions,
            reduce_zero_label=task.reduce_zero_label,
            fail_fast=predictions is not None,
            on_scored=lambda: on_scored(1),
        )
