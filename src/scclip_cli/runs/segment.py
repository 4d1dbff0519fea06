"""Batch segmentation of image files: ``scclip segment`` as a plain function.

    >>> from scclip_cli.runs.segment import segment
    >>> from scclip_cli.predict.model_options import ModelOptions
    >>> summary = segment(["photos/"], "vocab/voc21.txt", "masks/",
    ...                   model=ModelOptions("ViT-B-16-quickgelu"))
    >>> summary.done, summary.failed, summary.exit_code

The one orchestrator of a segment run, whichever engine does the work (``engine="local"``: this
process; a :class:`~scclip_cli.runs.ray_engine.RayOptions`: Ray workers)::

    plan_run                  arguments, inputs, collisions: before any model or engine
    out_folder_lock           one run per output folder (per shard): scclip_cli.runs.out_lock
    rerun_without_model       every image complete: finish with no model and no engine
    engine.session            local: load the model; Ray: connect
    SegmentRun.open           output folder, legend.json, what is already done (skipped)
    session.start_segmenting  Ray: workers loaded; the description for summary.json
    run.start / segmenting    summary.json, failures.jsonl, progress, --jsonl lines
    session.segment           each image reported to the run (SegmentRun)

A run killed at any moment leaves each image either complete or without its JSON, which the next
run redoes. Ctrl-C (or SIGTERM) stops reading and segmenting, lets the writer finish the images
already segmented, records the run as interrupted in ``summary.json``, and re-raises.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from scclip_cli.config import ProtocolConfig, protocol_overrides
from scclip_cli.errors import UsageError, VocabularyError
from scclip_cli.predict.model_options import ModelOptions
from scclip_cli.runs.bookkeeping import (
    Reporter,
    RunPlan,
    SegmentRun,
    plan_run,
    read_legend_classes,
    rerun_without_model,
    write_summary,
)
from scclip_cli.runs.caching import CacheOptions, describe_feature_cache
from scclip_cli.runs.engine import Engine, ModelSpec, SegmentTask
from scclip_cli.runs.inputs import Shard
from scclip_cli.runs.out_lock import out_folder_lock
from scclip_cli.runs.summary import RunSummary

if TYPE_CHECKING:
    from scclip_cli.model.text_embeddings import QueryEmbeddings
    from scclip_cli.predict.segmenter import Segmenter
    from scclip_cli.runs.ray_engine import RayOptions


def segment(
    inputs: Sequence[str | os.PathLike[str]],
    vocab: str | os.PathLike[str] | list[str] | QueryEmbeddings | None,
    out_dir: str | os.PathLike[str],
    *,
    model: ModelOptions | None = None,
    engine: str | RayOptions = "local",
    segmenter: Segmenter | None = None,
    preset: str | None = None,
    protocol: ProtocolConfig | None = None,
    short_side: int | None = None,
    crop: int | None = None,
    stride: int | None = None,
    logit_scale: float | None = None,
    prob_threshold: float | None = None,
    area_threshold: float | None = None,
    overlay: bool = False,
    save_confidence: bool = False,
    overwrite: bool = False,
    shard: str | Shard | tuple[int, int] | None = None,
    quiet: bool = False,
    jsonl_stream: TextIO | None = None,
    stdin: TextIO | None = None,
    read_workers: int | None = None,
    progress: bool | None = None,
    report: bool = False,
    caching: CacheOptions | None = None,
) -> RunSummary:
    """Segment image files and folders into label PNGs and per-image JSON under ``out_dir``.

    Args:
        inputs: image files, folders (searched recursively) and ``"-"`` (paths on ``stdin``); see
            :mod:`scclip_cli.runs.inputs` for the order and the output mapping.
        vocab: class list (.txt / .npz path, or a list of class lines, or embeddings); ignored
            when ``segmenter`` is given.
        out_dir: output folder (created).
        model: the model and how it runs (:class:`ModelOptions`; default: its defaults).
        engine: ``"local"`` (this process) or a :class:`~scclip_cli.runs.ray_engine.RayOptions`
            (Ray workers, each loading the model; ``jsonl_stream`` lines then come in the order
            images finish, and ``summary.json``'s ``config["run"]["engine"]`` records the Ray
            settings).
        segmenter: an already loaded :class:`~scclip_cli.predict.segmenter.Segmenter` to reuse
            (local engine only); the vocabulary, model and protocol arguments are then unused.
        preset: benchmark protocol preset; ``protocol`` (a full config) or the single protocol
            values (``short_side`` ... ``area_threshold``) override its fields.
        overlay: also write ``<stem>_overlay.jpg``.
        save_confidence: also write ``<stem>_conf.png`` (uint8, ``round(confidence * 255)``, at
            the image's size); the per-image JSON carries ``mean_confidence`` either way.
        overwrite: redo images whose outputs exist.
        shard: ``"I/N"``: only the I-th of N round-robin parts of the sorted inputs.
        quiet: no progress bar and no messages on stderr.
        jsonl_stream: where to write one JSON line per finished image, flushed per line:
            ``{"path", "status", "mask", "json", "width", "height", "classes"}`` (plus ``overlay``
            / ``color`` when written). ``status`` is ``done``, or ``skipped`` for images a
            previous run completed (listed first); failed inputs are in ``failures.jsonl`` only.
        stdin: where ``"-"`` reads paths (``sys.stdin`` by default).
        read_workers: decoding threads (default ``min(8, CPUs)``; on Ray, per worker: its CPUs,
            at most 8).
        progress: show the progress bar; by default when not ``quiet`` and stderr is a terminal.
        report: at the end, write ``out_dir/report.html``
            (:func:`scclip_cli.runs.report.write_report`), also when some images failed.
        caching: text-embedding and feature caches (:class:`~scclip_cli.runs.caching.CacheOptions`;
            by default text embeddings are cached in the user's cache folder). With a feature
            cache, ``summary.json`` gets a ``feature_cache`` record (hits, misses, size); the
            feature cache is for the local engine.

    Returns:
        The run's :class:`RunSummary` (``exit_code`` 0 when nothing failed, 1 otherwise), also
        written to ``summary.json`` (``summary.shard-I-of-N.json`` with a shard; see
        :mod:`scclip_cli.runs.summary`).

    Raises:
        ScclipError: usage and configuration errors found before any image is processed (no
            inputs, output collisions, bad shard, unknown model, bad vocabulary, another run
            writing to ``out_dir``, Ray missing, ...).
        KeyboardInterrupt: after recording the interrupted run.
    """
    model = model or ModelOptions()
    overrides = protocol_overrides(
        short_side=short_side,
        crop=crop,
        stride=stride,
        logit_scale=logit_scale,
        prob_threshold=prob_threshold,
        area_threshold=area_threshold,
    )
    runner = _pick_engine(engine, segmenter, read_workers=read_workers, quiet=quiet)
    if segmenter is not None and (preset is not None or protocol is not None or overrides):
        raise UsageError(
            "protocol options cannot change an already loaded segmenter; "
            "pass them to Segmenter.load"
        )
    caching = caching or CacheOptions()
    if caching.features is not None and (segmenter is not None or engine != "local"):
        raise UsageError("--feature-cache needs the local engine and a segmenter loaded by the run")
    plan = plan_run(
        inputs,
        out_dir,
        overlay=overlay,
        save_confidence=save_confidence,
        overwrite=overwrite,
        shard=shard,
        preset=preset,
        read_workers=read_workers,
        stdin=stdin,
    )
    class_names = _class_names(vocab, segmenter)
    spec = None
    if segmenter is None:
        assert vocab is not None  # _class_names checked it
        cache_options = caching.load_options()
        spec = ModelSpec.checked(model, vocab, preset, protocol, overrides, cache_options)
    reporter = Reporter(quiet)
    shard_key = (plan.shard.index, plan.shard.count) if plan.shard is not None else None
    with out_folder_lock(plan.out, shard_key):
        legend = read_legend_classes(plan.out)
        if segmenter is None and not plan.overwrite:
            finished = rerun_without_model(
                plan,
                class_names,
                legend,
                model=model.model,
                pretrained=model.pretrained,
                reporter=reporter,
                jsonl_stream=jsonl_stream,
                progress=progress,
            )
            if finished is not None:
                return _reported(finished, report, reporter)
        recorded = {"caching": caching.describe()}
        summary = _segment_on(
            runner, spec, plan, class_names, legend, reporter, jsonl_stream, progress, recorded
        )
        if spec is not None and spec.feature_cache is not None:
            cached = spec.feature_cache.report()
            write_summary(summary, feature_cache=cached)
            reporter.message(describe_feature_cache(cached))
    return _reported(summary, report, reporter)


def _segment_on(
    engine: Engine,
    spec: ModelSpec | None,
    plan: RunPlan,
    class_names: tuple[str, ...],
    legend: tuple[str, ...] | None,
    reporter: Reporter,
    jsonl_stream: TextIO | None,
    progress: bool | None,
    recorded: dict[str, Any],
) -> RunSummary:
    """The run itself, on ``engine``: open the folder, start the engine, segment, write the
    run files (``recorded``: more of the run's settings for ``summary.json``'s ``config.run``)."""
    with engine.session(spec, reporter.message) as session:
        run = SegmentRun.open(
            plan, class_names, legend, reporter=reporter, jsonl_stream=jsonl_stream
        )
        probe = [plan.out, *(job.image.path for job in run.todo[:1])]
        task = SegmentTask(plan.overlay, plan.overwrite, tuple(probe))
        started = session.start_segmenting(run.todo, task)
        description = started.description or {}
        _check_class_names(started.class_names, class_names)
        extra = dict(recorded)
        if started.engine_record is not None:
            extra["engine"] = started.engine_record
        run.start(
            plan.run_config(description, **extra),
            load_seconds=started.load_seconds,
            show_progress=progress,
        )
        with run.segmenting():
            session.segment(run.todo, run)
    return run.summary


def _reported(summary: RunSummary, report: bool, reporter: Reporter) -> RunSummary:
    """``summary``, after writing the run's review page when asked to."""
    if report:
        from scclip_cli.runs.report import write_report

        reporter.message(write_report(summary.out_dir).describe())
    return summary


# --- setup -------------------------------------------------------------------------------------


def _pick_engine(
    engine: str | RayOptions,
    segmenter: Segmenter | None,
    *,
    read_workers: int | None,
    quiet: bool,
) -> Engine:
    """The engine ``engine`` names: ``"local"`` or Ray options (Ray must be installed)."""
    if engine == "local":
        from scclip_cli.runs.local_engine import LocalEngine

        return LocalEngine(segmenter=segmenter, read_workers=read_workers)
    from scclip_cli.runs.ray_engine import RayEngine, RayOptions

    if not isinstance(engine, RayOptions):
        raise UsageError(f"engine must be 'local' or RayOptions, got {engine!r}")
    if segmenter is not None:
        raise UsageError("a loaded segmenter cannot travel to Ray workers; pass the model options")
    return RayEngine(engine, read_workers=read_workers, quiet=quiet)


def _class_names(
    vocab: str | os.PathLike[str] | list[str] | QueryEmbeddings | None,
    segmenter: Segmenter | None,
) -> tuple[str, ...]:
    """The run's classes, without loading a model (a missing file is a VocabularyError)."""
    if segmenter is not None:
        return tuple(segmenter.class_names)
    if vocab is None:
        raise UsageError("a vocabulary (--vocab) is needed to load the segmenter")
    from scclip_cli.model.text_embeddings import vocabulary_class_names

    if isinstance(vocab, os.PathLike):
        vocab = Path(vocab)
    return vocabulary_class_names(vocab)


def _check_class_names(loaded: tuple[str, ...] | None, class_names: tuple[str, ...]) -> None:
    """The model holders loaded the vocabulary's classes (on Ray: the same file on every node)."""
    if loaded is not None and loaded != class_names:
        raise VocabularyError(
            f"the model loaded {len(loaded)} classes, the vocabulary has {len(class_names)}; "
            "is the same vocabulary file visible to every node?"
        )
