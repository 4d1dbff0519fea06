"""The seam between a command's orchestrator and what does its heavy work: the engine interface.

:func:`scclip_cli.runs.segment.segment` and :func:`scclip_cli.runs.evaluate.evaluate` each exist
once; they plan the run, keep its books and write its files, and hand the images to an engine:

=================================================  ==============================================
:class:`~scclip_cli.runs.local_engine.LocalEngine`  this process: reader threads, the model on the
                                                    calling thread, a writer thread
:class:`~scclip_cli.runs.ray_engine.RayEngine`      Ray worker actors, each holding a model, on
                                                    this machine or a cluster
=================================================  ==============================================

An engine opens a :class:`EngineSession` for one run (the local engine loads its model then; the
Ray engine connects to Ray); the session then starts (Ray: worker actors that load the model) and
segments or scores::

    with engine.session(spec, message) as session:       # model loaded / Ray connected
        started = session.start_segmenting(todo, task)   # workers ready; what they loaded
        session.segment(todo, events)                    # each image reported to events

    with engine.session(spec, message) as session:
        started = session.start_scoring(samples, task)
        problems = session.score(samples, confusion, on_scored)

Both engines write the same files and report the same events, so a run's outputs do not depend on
the engine (only the order of ``--jsonl`` lines and the timing do).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from scclip_cli.config import ProtocolConfig, resolve_protocol
from scclip_cli.predict.model_options import ModelOptions

if TYPE_CHECKING:
    from scclip_cli.files.feature_cache import FeatureCache
    from scclip_cli.files.image_record import ImageRecord
    from scclip_cli.maps.metrics import ConfusionMatrix
    from scclip_cli.model.text_embeddings import QueryEmbeddings
    from scclip_cli.predict.segmenter import Segmenter
    from scclip_cli.runs.inputs import Job
    from scclip_cli.runs.scoring import EvalSample
    from scclip_cli.runs.summary import Failure

Message = Callable[[str], None]
"""Where an engine says what it is doing (the run's messages on stderr; silent when quiet)."""


@dataclass(frozen=True)
class ModelSpec:
    """What every model holder of a run loads: the model options, vocabulary and protocol.

    The protocol is resolved by each holder once its model is loaded: a benchmark preset takes
    the values of the model's backbone (:func:`~scclip_cli.config.preset_backbone`). Build it with
    :meth:`checked`, so bad protocol values fail before any model loads.
    """

    options: ModelOptions
    vocab: str | os.PathLike[str] | list[str] | QueryEmbeddings
    preset: str | None = None
    protocol: ProtocolConfig | None = None
    """A full protocol: wins over ``preset``."""
    protocol_overrides: tuple[tuple[str, object], ...] = ()
    """``(field, value)`` of :class:`ProtocolConfig` replacing single values of either."""
    caching: tuple[tuple[str, object], ...] = ()
    """Keyword arguments of :meth:`~scclip_cli.predict.segmenter.Segmenter.load` for the caches
    (:meth:`~scclip_cli.runs.caching.CacheOptions.load_options`); none: the defaults."""

    @classmethod
    def checked(
        cls,
        options: ModelOptions,
        vocab: str | os.PathLike[str] | list[str] | QueryEmbeddings,
        preset: str | None,
        protocol: ProtocolConfig | None,
        overrides: Mapping[str, object] | None,
        caching: Mapping[str, object] | None = None,
    ) -> ModelSpec:
        """The spec, after checking the protocol values without a model (a ``ConfigError``)."""
        given: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if v is not None}
        resolve_protocol(preset, protocol, **given)
        cache = tuple((caching or {}).items())
        return cls(options, vocab, preset, protocol, tuple(sorted(given.items())), cache)

    @property
    def feature_cache(self) -> FeatureCache | None:
        """The feature cache the model holders read and fill, if any (its counts go into the
        run's record once the run is over)."""
        found = dict(self.caching).get("feature_cache")
        return cast("FeatureCache | None", found)

    def load(self) -> Segmenter:
        """Load the model, embed the vocabulary and resolve the protocol for the model."""
        return self.options.load(
            self.vocab,
            preset=self.preset,
            protocol=self.protocol,
            protocol_overrides=dict(self.protocol_overrides),
            **dict(self.caching),
        )


@dataclass(frozen=True)
class SegmentTask:
    """How a ``segment`` run writes each image."""

    overlay: bool
    """Also write ``<stem>_overlay.jpg``."""
    overwrite: bool
    """Redo images found complete."""
    probe: Sequence[Path] = ()
    """Paths every worker must see (``--out`` and an input: a shared file system)."""


@dataclass(frozen=True)
class ScoreTask:
    """How an ``eval`` run scores each sample."""

    reduce_zero_label: bool
    ignore_index: int
    save_pred: Path | None
    """Also write each on-the-fly prediction as ``<save_pred>/<key>.png``."""


@dataclass(frozen=True)
class Started:
    """What a session's model holders loaded, once the first is ready."""

    description: dict[str, Any] | None
    """The segmenter's :meth:`describe` (``None`` without a model: scoring saved masks)."""
    load_seconds: float
    """Until the first model was ready (0 for a segmenter passed in)."""
    class_names: tuple[str, ...] | None = None
    """The classes the model holders loaded (``None`` without a model)."""
    engine_record: dict[str, Any] | None = None
    """How the engine ran, recorded in ``summary.json`` / the eval report (``None``: local)."""


class ImageEvents(Protocol):
    """Where an engine reports each image of a ``segment`` run (from any thread)."""

    def image_done(self, job: Job, record: ImageRecord) -> None:
        """``job``'s files are written; ``record`` is its ``<stem>.json``."""

    def image_failed(self, failure: Failure) -> None:
        """``failure.path`` could not be read, segmented or written."""

    def waited(self, *, read: float = 0.0, write: float = 0.0) -> None:
        """Seconds the model waited for decoded images or for the writer."""


class EngineSession(Protocol):
    """One run on an engine (see the module docstring)."""

    def start_segmenting(self, todo: Sequence[Job], task: SegmentTask) -> Started:
        """Get ready to segment ``todo``."""

    def segment(self, todo: Sequence[Job], events: ImageEvents) -> None:
        """Segment and write ``todo``, reporting every image to ``events``; a bad image is a
        failure, never an exception. On an interruption, the images written so far are
        reported before the error goes on."""

    def start_scoring(self, samples: Sequence[EvalSample], task: ScoreTask) -> Started:
        """Get ready to score ``samples``."""

    def score(
        self,
        samples: Sequence[EvalSample],
        confusion: ConfusionMatrix,
        on_scored: Callable[[int], None],
    ) -> list[tuple[int, str]]:
        """Add ``samples`` to ``confusion``; return the problems found as ``(index in samples,
        text)``, sorted. When there are any, ``confusion`` is incomplete. ``on_scored(n)``:
        ``n`` more samples were scored."""


class Engine(Protocol):
    """Opens sessions; ``spec`` is ``None`` when the run needs no model."""

    name: str

    def session(
        self, spec: ModelSpec | None, message: Message
    ) -> AbstractContextManager[EngineSession]: ...
