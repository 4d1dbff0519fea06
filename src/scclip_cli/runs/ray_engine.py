"""``segment`` and ``eval`` across many processes, GPUs and machines, on Ray.

    >>> from scclip_cli.runs.ray_engine import RayOptions
    >>> from scclip_cli.runs.segment import segment
    >>> options = RayOptions(address="auto", gpus_per_worker=0.5)   # two workers per GPU
    >>> summary = segment(["photos/"], "vocab/voc21.txt", "masks/", engine=options)

:class:`RayEngine` is the engine (:mod:`scclip_cli.runs.engine`) that
:func:`~scclip_cli.runs.segment.segment` and :func:`~scclip_cli.runs.evaluate.evaluate` use when
given :class:`RayOptions`. Same outputs as a local run, same summary, same failures; only the timing
differs::

    driver (this process)                           Ray worker actors (one model each)
    ─────────────────────                           ──────────────────────────────────
    discover, check, skip complete  ──batches of──▶ read → segment → write mask, overlay,
    one progress bar                  image jobs    then <stem>.json last (the local pipeline)
    summary.json, failures.jsonl  ◀──per-image──── done records and failures (small)
    legend.json                       results

- Workers are plain Ray actors, each holding one :class:`~scclip_cli.predict.segmenter.Segmenter` (model
  and vocabulary embeddings loaded once). Every batch runs the local engine's own pipeline
  (:func:`scclip_cli.runs.local_engine.segment_jobs`), so masks, JSON, overlays and failure reasons are the
  local ones; the driver replays each batch's reports on the run's
  :class:`~scclip_cli.runs.engine.ImageEvents`, as the local pipeline reports each image.
- The driver keeps :data:`TASKS_PER_WORKER` batches queued per worker (nothing large passes
  through Ray: paths go in, per-image statistics come back), so a million images stream through
  with bounded memory. Workers that start late (a busy or autoscaling cluster) join when ready.
- ``eval``: each batch returns its partial ``[K, K]`` confusion matrix; the driver sums them.
  Integer sums do not depend on the order, so the result equals the local one exactly.

Fault tolerance: actors restart when their process dies (``max_restarts=-1``) and Ray redoes the
batches they had (``max_task_retries``). A redo is idempotent: every file is written atomically and
``<stem>.json`` (the completion marker) last, and a redone batch skips images whose marker the
lost attempt already wrote; the driver counts each image once, from the one result Ray delivers.
When a batch has used up its retries (an image that kills its worker every time, e.g. by running
out of memory), its images are retried one by one and the one that still kills its worker is
recorded in ``failures.jsonl`` (``segment``) or stops the run (``eval``). When the driver dies,
Ray ends its workers; rerunning the same command skips every complete image and does the rest.

Why plain actors rather than Ray Data's ``map_batches``: the driver must know, per image, what
was done and what failed (for ``failures.jsonl`` and the summary), and an image that kills its
worker must fail alone. Ray Data's actor pools retry a dying batch forever by default, and bounding
the retries fails the whole dataset instead of one image. What Ray Data adds, streaming large
blocks between stages with backpressure, is not needed when only paths and statistics travel, and
it costs pyarrow and pandas (about 250 MB installed) and its own progress bars and logs.

Paths are used as given: every worker changes to the driver's working folder, so inputs and
``--out`` must be visible at the same path on every node (a shared file system). Joining a cluster
by address that wants a token (Ray 2.60 and later) is explained by :func:`token_auth_hint`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scclip_cli.errors import EvaluationError, ModelLoadError, ScclipError, UsageError
from scclip_cli.files.image_record import ImageRecord
from scclip_cli.maps.metrics import ConfusionMatrix
from scclip_cli.runs.engine import (
    ImageEvents,
    Message,
    ModelSpec,
    ScoreTask,
    SegmentTask,
    Started,
)
from scclip_cli.runs.inputs import Job
from scclip_cli.runs.summary import Failure

if TYPE_CHECKING:
    from scclip_cli.predict.segmenter import Segmenter
    from scclip_cli.runs.scoring import EvalSample

INSTALL_HINT = 'pip install "scclip-cli[ray]"'
DEFAULT_IMAGES_PER_TASK = 32
"""Images per Ray task: large enough that a worker's read / segment / write threads overlap and
the per-task overhead (milliseconds) vanishes; small enough that a worker that dies loses little
and the last tasks of a run finish together."""
DEFAULT_EVAL_SAMPLES_PER_TASK = 8
"""Samples per ``eval`` task (each returns a ``[K, K]`` matrix)."""
TASKS_PER_WORKER = 2
"""Tasks queued per worker: the next batch is waiting when one finishes."""
DEFAULT_MAX_TASK_RETRIES = 3
"""How often Ray redoes a task whose worker died, before its images are retried one by one."""
WAIT_SECONDS = 1.0
"""How long one ``ray.wait`` blocks (Ctrl-C is handled between waits)."""
WORKER_WAIT_NOTICE_SECONDS = 60.0
"""After this long without a ready worker, say which resources the workers are waiting for."""
STOP_SECONDS = 30.0
"""How long stopping waits for busy workers to be gone."""
CONTROL_GROUP = "control"
"""The workers' concurrency group for quick calls (``pid``) next to the batch being processed."""
MAX_READ_WORKERS = 8
"""Decoding threads per worker at most (one per CPU of the worker by default)."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a Ray run goes. Defaults use every CPU or GPU of the cluster."""

    address: str | None = None
    """Cluster to join: ``None`` joins ``RAY_ADDRESS`` if set, else starts a Ray instance on this
    machine; ``"auto"`` joins the cluster running on this machine (``ray start --head``);
    ``"ray://host:10001"`` connects through Ray Client. Ignored when Ray is already initialised
    in this process."""
    workers: int | None = None
    """Worker actors (each loads the model once). ``None``: as many as the cluster's GPUs (or
    CPUs) hold, and no more than there are batches."""
    gpus_per_worker: float | None = None
    """GPUs reserved per worker; fractions share a GPU (``0.5``: two workers per GPU). ``None``:
    1 when the cluster has GPUs, else 0."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker; also its torch threads on CPU and its decoding threads."""
    images_per_task: int | None = None
    """Images (``eval``: samples) per task; ``None`` for :data:`DEFAULT_IMAGES_PER_TASK`
    (:data:`DEFAULT_EVAL_SAMPLES_PER_TASK`)."""
    max_task_retries: int = DEFAULT_MAX_TASK_RETRIES
    """Retries of a task whose worker died (the worker itself is always restarted)."""
    on_batch_done: Callable[[Sequence[Any]], None] | None = field(default=None, compare=False)
    """Called on the driver after each finished batch with the worker actor handles
    (monitoring; fault-injection tests)."""

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if (
            self.gpus_per_worker is not None
            and self.gpus_per_worker > 1
            and not (float(self.gpus_per_worker).is_integer())
        ):
            raise UsageError(
                f"--gpus-per-worker above 1 must be a whole number, got {self.gpus_per_worker}"
            )
        if not self.cpus_per_worker > 0:
            raise UsageError(f"--cpus-per-worker must be more than 0, got {self.cpus_per_worker}")
        if self.images_per_task is not None and self.images_per_task < 1:
            raise UsageError(f"images per task must be at least 1, got {self.images_per_task}")
        if self.max_task_retries < 0:
            raise UsageError(f"max_task_retries must be 0 or more, got {self.max_task_retries}")


def import_ray() -> Any:
    """The ``ray`` module; :class:`UsageError` (exit 2) with the install command when missing."""
    try:
        import ray
    except ImportError as err:
        raise UsageError(
            f"--engine ray needs Ray, which is not installed ({err}); install it with: "
            f"{INSTALL_HINT}"
        ) from None
    return ray


# ================================================================================== engine
class RayEngine:
    """The Ray engine (:class:`~scclip_cli.runs.engine.Engine`): worker actors, each holding a
    model, fed batches of images (``segment``) or samples (``eval``).

    Raises:
        UsageError: Ray is not installed (at construction, before any work).
    """

    name = "ray"

    def __init__(
        self,
        options: RayOptions | None = None,
        *,
        read_workers: int | None = None,
        quiet: bool = False,
    ) -> None:
        self.options = options or RayOptions()
        self.ray = import_ray()
        self.read_workers = read_workers
        self.quiet = quiet

    @contextlib.contextmanager
    def session(self, spec: ModelSpec | None, message: Message) -> Iterator[RaySession]:
        """Connected to Ray (and disconnected at the end when this session connected); the
        workers are stopped when the block ends, whatever happens."""
        # Ray prints worker deaths on stdout: keep stdout for the --jsonl lines.
        with _ray_session(self.ray, self.options.address, quiet=self.quiet) as connection:
            session = RaySession(self, connection, spec, message)
            try:
                yield session
            finally:
                session.stop()


class RaySession:
    """One run on Ray: plans the batches, starts the workers, dispatches and collects."""

    def __init__(
        self,
        engine: RayEngine,
        connection: RayConnection,
        spec: ModelSpec | None,
        message: Message,
    ) -> None:
        self.ray = engine.ray
        self.options = engine.options
        self.read_workers = engine.read_workers
        self.connection = connection
        self.spec = spec
        self.message = message
        self.pool: WorkerPool | None = None
        self.batches: list[list[Any]] = []

    # segment ------------------------------------------------------------------------------------

    def start_segmenting(self, todo: Sequence[Job], task: SegmentTask) -> Started:
        if self.spec is None:
            raise UsageError("a vocabulary (--vocab) is needed to load the segmenter")
        resources, self.batches = plan_batches(
            self.ray, self.options, list(todo), DEFAULT_IMAGES_PER_TASK, needs_model=True
        )
        init_args = (
            os.getcwd(),
            [os.fspath(p) for p in task.probe],
            self._worker_spec(resources),
            self.read_workers or default_read_workers(resources.cpus),
            task.overlay,
            task.overwrite,
        )
        return self._start(SegmentWorker, resources, init_args)

    def segment(self, todo: Sequence[Job], events: ImageEvents) -> None:
        pool = self._pool()
        try:
            pool.dispatch(
                self.batches,
                method="segment_batch",
                on_result=lambda batch, result: result.report_to(batch, events),
                on_lost=functools.partial(_lost_batch, events),
                on_batch_done=self.options.on_batch_done,
            )
        except BaseException:
            pool.stop()  # no worker writes after this
            # images of the unanswered batches that a worker finished count as done
            for job in (job for _, batch, _ in pool.pending.values() for job in batch):
                record = job.outputs.complete_record()
                if record is not None:
                    events.image_done(job, record)
            raise

    # eval ---------------------------------------------------------------------------------------

    def start_scoring(self, samples: Sequence[EvalSample], task: ScoreTask) -> Started:
        resources, self.batches = plan_batches(
            self.ray,
            self.options,
            list(enumerate(samples)),
            DEFAULT_EVAL_SAMPLES_PER_TASK,
            needs_model=self.spec is not None,
        )
        init_args = (
            os.getcwd(),
            [os.fspath(p) for p in _sample_files(samples[:1])],
            self._worker_spec(resources),
            task.reduce_zero_label,
            task.ignore_index,
            task.save_pred,
        )
        return self._start(EvalWorker, resources, init_args)

    def score(
        self,
        samples: Sequence[EvalSample],
        confusion: ConfusionMatrix,
        on_scored: Callable[[int], None],
    ) -> list[tuple[int, str]]:
        pool = self._pool()
        scoring = _ScoreSum(confusion, fail_fast=self.spec is not None, on_scored=on_scored)
        pool.set_call_args(confusion.num_classes, confusion.class_names)
        pool.dispatch(
            self.batches,
            method="score_batch",
            on_result=scoring.record_batch,
            on_lost=_raise_lost_samples,
            on_batch_done=self.options.on_batch_done,
            stop=scoring.should_stop,
        )
        return sorted(scoring.problems, key=lambda item: item[0])

    # shared -------------------------------------------------------------------------------------

    def _worker_spec(self, resources: WorkerResources) -> ModelSpec | None:
        """The model spec as the workers load it: a worker without a GPU reserved takes none."""
        spec = self.spec
        if spec is None or resources.gpus > 0:
            return spec
        return dataclasses.replace(spec, options=spec.options.without_gpu())

    def _start(
        self, worker_class: type, resources: WorkerResources, init_args: tuple[Any, ...]
    ) -> Started:
        self.pool = pool = WorkerPool(
            self.ray, worker_class, resources, self.options, init_args=init_args
        )
        start = time.perf_counter()
        first = pool.wait_first_ready(self.message)
        seconds = time.perf_counter() - start
        head = f"{pool.size} Ray worker(s) ({resources_text(resources)} each) on "
        if self.spec is not None and worker_class is SegmentWorker:
            options = self.spec.options
            loaded = f"first loaded {options.model} ({options.pretrained}) in {seconds:.1f} s"
            self.message(f"{head}{self.connection.description}; {loaded}")
        else:
            self.message(f"{head}{self.connection.description}, first ready in {seconds:.1f} s")
        description = first["description"]
        class_names = None if description is None else tuple(description.get("class_names", ()))
        record = _engine_record(self.options, resources, pool.size)
        return Started(description, seconds, class_names, record)

    def _pool(self) -> WorkerPool:
        assert self.pool is not None, "start_segmenting / start_scoring first"
        return self.pool

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()


def _lost_batch(events: ImageEvents, batch: Sequence[Job], error: BaseException) -> None:
    """A single image whose worker died on every attempt: a failure of that image."""
    for job in batch:
        reason = f"its Ray worker died on every attempt: {_first_line(error)}"
        events.image_failed(Failure(str(job.image.path), reason, "segment", job.order))


def _engine_record(options: RayOptions, resources: WorkerResources, workers: int) -> dict[str, Any]:
    return {
        "name": "ray",
        "address": options.address,
        "workers": workers,
        "gpus_per_worker": resources.gpus,
        "cpus_per_worker": resources.cpus,
    }


def _sample_files(samples: Sequence[EvalSample]) -> Iterator[Path]:
    for sample in samples:
        yield from (p for p in (sample.gt, sample.pred, sample.image) if p is not None)


class _ScoreSum:
    """The driver's sum of the workers' confusion matrices."""

    def __init__(
        self, confusion: ConfusionMatrix, *, fail_fast: bool, on_scored: Callable[[int], None]
    ) -> None:
        self.confusion = confusion
        self.fail_fast = fail_fast
        self.on_scored = on_scored
        self.problems: list[tuple[int, str]] = []

    def record_batch(self, batch: Sequence[tuple[int, EvalSample]], result: dict[str, Any]) -> None:
        matrix = np.asarray(result["matrix"], dtype=np.int64)
        if matrix.shape != self.confusion.matrix.shape:
            raise RuntimeError(f"a worker returned a {matrix.shape} confusion matrix")
        self.confusion.matrix += matrix
        self.confusion.num_images += int(result["num_images"])
        self.confusion.per_image += result.get("per_image", [])
        self.problems += result["problems"]
        self.on_scored(len(batch))

    def should_stop(self) -> bool:
        """Stop dispatching at the first problem when segmenting (as the local run does)."""
        return self.fail_fast and bool(self.problems)


def _raise_lost_samples(batch: Sequence[tuple[int, EvalSample]], error: BaseException) -> None:
    sample = batch[0][1]
    raise EvaluationError(
        f"{sample.image or sample.pred or sample.key}: its Ray worker died on every attempt "
        f"({_first_line(error)}); nothing was scored"
    )


# ================================================================= workers (in Ray processes)
@dataclass
class _SegmentBatchResult:
    """What a worker returns for one batch of images (small: no pixels): the pipeline's reports,
    collected (:class:`~scclip_cli.runs.engine.ImageEvents`), to replay on the driver."""

    done: list[tuple[int, ImageRecord]] = field(default_factory=list)
    """``(job order, record)`` of each image written."""
    failures: list[Failure] = field(default_factory=list)
    read_wait_seconds: float = 0.0
    write_wait_seconds: float = 0.0

    def image_done(self, job: Job, record: ImageRecord) -> None:
        self.done.append((job.order, record))

    def image_failed(self, failure: Failure) -> None:
        self.failures.append(failure)

    def waited(self, *, read: float = 0.0, write: float = 0.0) -> None:
        self.read_wait_seconds += read
        self.write_wait_seconds += write

    def report_to(self, batch: Sequence[Job], events: ImageEvents) -> None:
        """Replay on the driver what happened on the worker."""
        jobs = {job.order: job for job in batch}
        for order, record in self.done:
            events.image_done(jobs[order], record)
        for failure in sorted(self.failures, key=lambda f: (f.order, f.path)):
            events.image_failed(failure)
        events.waited(read=self.read_wait_seconds, write=self.write_wait_seconds)


class _WorkerBase:
    """Shared by the workers: the driver's working folder, lazy model loading, identity."""

    def __init__(
        self,
        cwd: str,
        probe: Sequence[str],
        spec: ModelSpec | None,
        threads: float,
    ) -> None:
        self.cwd = cwd
        self.cwd_ok = os.path.isdir(cwd)
        if self.cwd_ok:
            os.chdir(cwd)  # relative paths mean what they mean on the driver
        self.probe = list(probe)
        self.spec = spec
        self.threads = max(1, math.floor(threads))
        self.segmenter: Segmenter | None = None
        self.load_seconds = 0.0

    def _segmenter(self) -> Segmenter | None:
        """Load the model and vocabulary once per process (again after a restart)."""
        if self.segmenter is None and self.spec is not None:
            import torch

            torch.set_num_threads(self.threads)
            start = time.perf_counter()
            self.segmenter = self.spec.load()
            self.load_seconds = time.perf_counter() - start
        return self.segmenter

    def setup(self) -> dict[str, Any]:
        """Check the shared files, load the model, and say who this worker is.

        Returns:
            ``{"description": segmenter description or None, "load_seconds", "pid", "node",
            "missing": the probe paths this node cannot see, "cwd_ok"}``.
        """
        missing = [p for p in self.probe if not os.path.exists(p)]
        if missing:  # no point loading a model that cannot reach the files
            return {"missing": missing, "cwd_ok": self.cwd_ok, "node": socket.gethostname()}
        segmenter = self._segmenter()
        return {
            "description": segmenter.describe() if segmenter is not None else None,
            "load_seconds": self.load_seconds,
            "pid": os.getpid(),
            "node": socket.gethostname(),
            "missing": [],
            "cwd_ok": self.cwd_ok,
        }

    def pid(self) -> int:
        """This worker's process id (tests kill it to check that the run survives)."""
        return os.getpid()


class SegmentWorker(_WorkerBase):
    """A Ray actor holding one segmenter; segments batches of jobs with the local pipeline."""

    def __init__(
        self,
        cwd: str,
        probe: Sequence[str],
        spec: ModelSpec,
        read_workers: int,
        overlay: bool,
        overwrite: bool,
        threads: float,
    ) -> None:
        super().__init__(cwd, probe, spec, threads)
        self.read_workers = read_workers
        self.overlay = overlay
        self.overwrite = overwrite

    def segment_batch(self, jobs: list[Job]) -> _SegmentBatchResult:
        """Segment and write ``jobs`` exactly as the local run does; return what happened.

        Images already complete were finished by an earlier attempt of this batch (its worker
        died after writing them): they are reported done, not written again.
        """
        from scclip_cli.runs.local_engine import segment_jobs

        segmenter = self._segmenter()
        assert segmenter is not None
        report = _SegmentBatchResult()
        todo = []
        for job in jobs:
            record = None if self.overwrite else job.outputs.complete_record()
            if record is None:
                todo.append(job)
            else:
                report.image_done(job, record)
        segment_jobs(
            segmenter,
            todo,
            report,
            class_names=tuple(segmenter.class_names),
            overlay=self.overlay,
            read_workers=self.read_workers,
        )
        return report


class EvalWorker(_WorkerBase):
    """A Ray actor that segments (when it has a model) and scores batches of samples."""

    def __init__(
        self,
        cwd: str,
        probe: Sequence[str],
        spec: ModelSpec | None,
        reduce_zero_label: bool,
        ignore_index: int,
        save_pred: str | Path | None,
        threads: float,
    ) -> None:
        super().__init__(cwd, probe, spec, threads)
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.save_pred = save_pred

    def score_batch(
        self,
        items: list[tuple[int, EvalSample]],
        num_classes: int,
        class_names: tuple[str, ...],
    ) -> dict[str, Any]:
        """The confusion matrix of ``items`` (``(position, sample)``) and their problems.

        Returns:
            ``{"matrix": [K, K] int64, "num_images": int, "per_image": [row], "problems":
            [(position, text)]}``.
            With a model, scoring stops at the first problem, as ``evaluate`` does.
        """
        from scclip_cli.runs.scoring import collect_problems, segmenter_source

        confusion = ConfusionMatrix(num_classes, class_names, ignore_index=self.ignore_index)
        segmenter = self._segmenter()
        samples = [sample for _, sample in items]
        found = collect_problems(
            samples,
            confusion,
            predictions=(
                segmenter_source(segmenter, self.save_pred)(samples)
                if segmenter is not None
                else None
            ),
            reduce_zero_label=self.reduce_zero_label,
            fail_fast=segmenter is not None,
        )
        positions = [position for position, _ in items]
        problems = [(positions[min(i, len(items) - 1)], text) for i, text in found]
        return {
            "matrix": confusion.matrix,
            "num_images": confusion.num_images,
            "per_image": confusion.per_image,
            "problems": problems,
        }


# ================================================================================== driver
class RayConnection:
    """Use the Ray connection of this process, or connect (and disconnect at the end)."""

    def __init__(self, ray: Any, address: str | None, *, quiet: bool) -> None:
        self.ray = ray
        self.address = address
        self.quiet = quiet
        self.started = False
        self.description = "Ray"

    def __enter__(self) -> RayConnection:
        ray = self.ray
        if not ray.is_initialized():
            own_sigterm = _python_sigterm_handler()
            try:
                ray.init(
                    address=self.address,
                    logging_level=logging.ERROR if self.quiet else logging.WARNING,
                    log_to_driver=not self.quiet,
                )
            except (ConnectionError, ValueError, RuntimeError) as err:
                where = self.address or os.environ.get("RAY_ADDRESS") or "a local instance"
                hint = token_auth_hint(self.address or os.environ.get("RAY_ADDRESS"), err)
                raise UsageError(f"cannot start or join Ray ({where}): {err}{hint}") from None
            self.started = True
            if own_sigterm is not None:
                # ray.init replaced it with sys.exit; the CLI's handler stops the run cleanly
                signal.signal(signal.SIGTERM, own_sigterm)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        resources = ray.cluster_resources()
        self.description = (
            f"{len(nodes)} node(s), {resources.get('CPU', 0):g} CPU, "
            f"{resources.get('GPU', 0):g} GPU"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.ray.shutdown()


TOKEN_FILE = Path("~/.ray/auth_token")
"""Where ``ray start --head`` keeps the cluster's authentication token (Ray 2.60 and later)."""


def token_auth_hint(address: str | None, error: BaseException) -> str:
    """What to do when joining the cluster at ``address`` failed because it wants a token.

    Ray 2.60 turns token authentication on when ``ray start --head`` runs, and a driver joining
    by ``HOST:PORT`` only says "Failed to connect" unless ``RAY_AUTH_MODE=token`` is set. The hint
    is given for an explicit address (not ``auto`` / ``local``, which Ray resolves itself) when
    ``RAY_AUTH_MODE`` is not ``token`` and either a token is at hand or the error says so.
    Returns ``""`` when the hint does not apply.
    """
    if not address or address in ("auto", "local"):
        return ""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    text = str(error).lower()
    has_token = bool(os.environ.get("RAY_AUTH_TOKEN")) or TOKEN_FILE.expanduser().is_file()
    if not (has_token or "failed to connect" in text or "auth" in text or "token" in text):
        return ""
    return (
        "; the cluster probably requires token authentication (Ray 2.60 and later switch it on "
        "with 'ray start --head'): set RAY_AUTH_MODE=token and give this machine the cluster's "
        f"token, in {TOKEN_FILE} or RAY_AUTH_TOKEN (every node of the cluster needs the same token "
        "and RAY_AUTH_MODE=token)"
    )


def _python_sigterm_handler() -> Callable[..., Any] | None:
    """The SIGTERM handler installed in Python (by the CLI), if any, on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGTERM)
    return handler if callable(handler) else None


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None, *, quiet: bool) -> Iterator[RayConnection]:
    """Connected to Ray, with ``sys.stdout`` sent to stderr: Ray prints its messages (a worker
    died, ...) on stdout, which belongs to ``--jsonl`` lines and reports."""
    with contextlib.redirect_stdout(sys.stderr), RayConnection(ray, address, quiet=quiet) as c:
        yield c


@dataclass(frozen=True)
class WorkerResources:
    workers: int
    gpus: float
    cpus: float


def _worker_resources(
    ray: Any, options: RayOptions, most_workers: int, *, needs_model: bool
) -> WorkerResources:
    """How many workers, and what each reserves, from the options and the cluster."""
    cluster = ray.cluster_resources()
    cluster_gpus = float(cluster.get("GPU", 0))
    cluster_cpus = float(cluster.get("CPU", 0))
    gpus = options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if needs_model and cluster_gpus > 0 else 0.0
    cpus = options.cpus_per_worker
    if gpus > 0 and cluster_gpus < gpus:
        raise UsageError(
            f"--gpus-per-worker {gpus:g}, but the Ray cluster has {cluster_gpus:g} GPU(s); "
            "use --gpus-per-worker 0 to run on CPUs"
        )
    if cluster_cpus < cpus:
        raise UsageError(
            f"--cpus-per-worker {cpus:g}, but the Ray cluster has {cluster_cpus:g} CPU(s)"
        )
    workers = options.workers
    if workers is None:
        workers = int(cluster_gpus // gpus) if gpus > 0 else int(cluster_cpus // cpus)
    workers = max(1, min(workers, most_workers))
    return WorkerResources(workers=workers, gpus=float(gpus), cpus=float(cpus))


def plan_batches(
    ray: Any, options: RayOptions, items: list[Any], most_per_task: int, *, needs_model: bool
) -> tuple[WorkerResources, list[list[Any]]]:
    """The workers' resources and the batches of ``items`` (in order) they get.

    Batches hold ``options.images_per_task`` items, or by default up to ``most_per_task``: fewer
    when there are not enough items to give every worker :data:`TASKS_PER_WORKER` batches.
    """
    # at most one worker per TASKS_PER_WORKER items: starting a worker costs a model load
    most_workers = max(1, math.ceil(len(items) / TASKS_PER_WORKER))
    resources = _worker_resources(ray, options, most_workers, needs_model=needs_model)
    per_task = options.images_per_task or max(
        1, min(most_per_task, math.ceil(len(items) / (resources.workers * TASKS_PER_WORKER)))
    )
    batches = [items[i : i + per_task] for i in range(0, len(items), per_task)]
    workers = max(1, min(resources.workers, len(batches)))
    return dataclasses.replace(resources, workers=workers), batches


def resources_text(resources: WorkerResources) -> str:
    return f"{resources.cpus:g} CPU, {resources.gpus:g} GPU"


def default_read_workers(cpus: float) -> int:
    return max(1, min(MAX_READ_WORKERS, math.floor(cpus)))


class WorkerPool:
    """The run's worker actors and the loop that keeps them busy."""

    def __init__(
        self,
        ray: Any,
        worker_class: type,
        resources: WorkerResources,
        options: RayOptions,
        *,
        init_args: tuple[Any, ...],
    ) -> None:
        self.ray = ray
        self.resources = resources
        self.options = options
        remote_class = ray.remote(
            num_cpus=resources.cpus,
            num_gpus=resources.gpus,
            max_restarts=-1,
            max_task_retries=options.max_task_retries,
            # pid() and the like answer while a batch runs (the default group runs one at a time)
            concurrency_groups={CONTROL_GROUP: 1},
        )(worker_class)
        self.actors = [
            remote_class.remote(*init_args, resources.cpus) for _ in range(resources.workers)
        ]
        self.not_ready: dict[Any, int] = {
            actor.setup.remote(): i for i, actor in enumerate(self.actors)
        }
        self.ready: list[int] = []
        self.call_args: tuple[Any, ...] = ()
        self.pending: dict[Any, tuple[int, Sequence[Any], bool]] = {}
        """Task → (worker, batch, suspect) of the batches sent and not answered."""
        self.startup_death: BaseException | None = None
        errors = ray.exceptions
        self.died: tuple[type[BaseException], ...] = (
            errors.RayActorError,  # the worker process died (killed, crashed, node lost)
            errors.WorkerCrashedError,
            errors.OutOfMemoryError,  # killed by Ray's memory monitor
            errors.ObjectLostError,
        )

    @property
    def size(self) -> int:
        return len(self.actors)

    def set_call_args(self, *args: Any) -> None:
        """Extra arguments of every task call (after the batch)."""
        self.call_args = args

    def wait_first_ready(self, message: Message | None) -> dict[str, Any]:
        """Block until one worker has loaded its model; return its :meth:`setup` answer."""
        start = time.monotonic()
        noticed = False
        while True:
            done, _ = self.ray.wait(list(self.not_ready), num_returns=1, timeout=WAIT_SECONDS)
            if done:
                answer = self._mark_ready(done[0])
                if answer is not None:
                    return answer
                if not self.not_ready:
                    raise ModelLoadError(
                        "every Ray worker died while loading the model: "
                        + _first_line(self.startup_death or RuntimeError())
                    )
                continue
            if not noticed and time.monotonic() - start > WORKER_WAIT_NOTICE_SECONDS:
                noticed = True
                available = self.ray.available_resources()
                if message is not None:
                    message(
                        f"waiting for Ray to start a worker ({resources_text(self.resources)} "
                        f"each); the cluster has {available.get('CPU', 0):g} CPU and "
                        f"{available.get('GPU', 0):g} GPU free"
                    )

    def _mark_ready(self, ref: Any) -> dict[str, Any] | None:
        """Take a worker's :meth:`setup` answer, or ``None`` when its process kept dying while it
        started (that worker is left out); raise what keeps the run from working."""
        index = self.not_ready.pop(ref)
        try:
            answer: dict[str, Any] = self.ray.get(ref)
        except self.died as err:
            self.startup_death = err
            with contextlib.suppress(Exception):
                self.ray.kill(self.actors[index], no_restart=True)
            return None
        except Exception as err:
            raise _unwrap(err) from None
        if answer["missing"]:
            folder = "" if answer["cwd_ok"] else f" (nor the working folder {os.getcwd()})"
            raise UsageError(
                f"the Ray worker on {answer['node']} cannot see {answer['missing'][0]}{folder}; "
                "inputs and --out must be on a file system every node shares, at the same path"
            )
        self.ready.append(index)
        return answer

    def dispatch(
        self,
        batches: Sequence[Sequence[Any]],
        *,
        method: str,
        on_result: Callable[[Sequence[Any], Any], None],
        on_lost: Callable[[Sequence[Any], BaseException], None],
        on_batch_done: Callable[[Sequence[Any]], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Run every batch on the workers, :data:`TASKS_PER_WORKER` queued per ready worker.

        A batch whose worker died on each of its attempts may have died for a batch queued before
        it on the same worker, so its items are retried one by one, each alone on its worker. An
        item that still kills its worker goes to ``on_lost``. Errors raised inside a task (not
        the death of its worker) stop the run.
        """
        queue: deque[tuple[Sequence[Any], bool]] = deque((b, False) for b in batches)
        pending = self.pending = {}
        busy = [0] * self.size
        isolated = [False] * self.size  # running a suspect item: nothing is queued behind it
        while queue or pending:
            if stop is not None and stop():
                return
            for index in sorted(self.ready, key=lambda i: busy[i]):
                while queue and not isolated[index] and busy[index] < TASKS_PER_WORKER:
                    batch, suspect = queue[0]
                    if suspect and busy[index]:
                        break
                    queue.popleft()
                    call = getattr(self.actors[index], method)
                    pending[call.remote(list(batch), *self.call_args)] = (index, batch, suspect)
                    busy[index] += 1
                    isolated[index] = suspect
            done, _ = self.ray.wait(
                [*pending, *self.not_ready], num_returns=1, timeout=WAIT_SECONDS
            )
            for ref in done:
                if ref in self.not_ready:
                    self._mark_ready(ref)
                    continue
                index, batch, suspect = pending.pop(ref)
                busy[index] -= 1
                isolated[index] = False
                try:
                    result = self.ray.get(ref)
                except self.died as err:
                    if suspect:
                        on_lost(batch, err)
                    else:
                        queue.extendleft(([item], True) for item in reversed(batch))
                    continue
                except Exception as err:
                    raise _unwrap(err) from None
                on_result(batch, result)
                if on_batch_done is not None:
                    on_batch_done(list(self.actors))

    def stop(self) -> None:
        """Kill the workers (their GPU memory is freed; a half-written image has no JSON) and wait
        until the ones that were busy are gone, so that nothing is written after this returns."""
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        # Their tasks (and the set-up of workers never ready) fail once their worker is dead;
        # waiting for that also lets Ray report it while stdout is still sent to stderr.
        refs = [*self.pending, *self.not_ready]
        if refs:
            with contextlib.suppress(Exception):
                self.ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS)


def _unwrap(err: BaseException) -> BaseException:
    """The user-facing error inside a Ray task error (a ``ScclipError`` keeps its message)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, ScclipError):
        return cause
    if isinstance(cause, BaseException) and not isinstance(cause, Exception):
        return cause
    return err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
