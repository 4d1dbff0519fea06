"""Score label maps against ground truth: ``scclip eval`` as a plain Python function.

    >>> from scclip_cli.runs.evaluate import evaluate
    >>> result = evaluate(pred_dir="masks/", gt_dir="gt/", vocab="vocab/voc21.txt")
    >>> result.metrics["mIoU"]

Three sources of predictions, one scoring loop:

- ``pred_dir``: label PNGs already written (``scclip segment`` masks: pixel value = class index).
- ``images_dir``: images segmented on the fly by a :class:`~scclip_cli.predict.segmenter.Segmenter`.
- ``dataset`` + ``data_root``: one of the eight benchmarks (:mod:`scclip_cli.files.datasets`), segmented
  on the fly, or scored from ``pred_dir`` when it is given too.

The segmentation source is injectable (``predict``): any callable that takes the sorted samples and
yields ``(key, labels)`` in the same order.

Pairing (``pred_dir`` / ``images_dir`` against ``gt_dir``): files are paired by their path relative
to their folder, without the extension; a ground-truth suffix (``gt_suffix``, e.g.
``_gtFine_labelTrainIds``) and a prediction suffix (``pred_suffix``) are stripped first, and files
whose names do not end with a given suffix are not considered. Label files are ``.png``;
``*_color.png`` renderings, overlays, JSON and hidden files in the prediction folder are ignored.
A folder written by ``scclip segment`` (it has a ``legend.json``) is read as it is: its predictions
are the label maps that have their per-image ``<stem>.json`` beside them
(:mod:`scclip_cli.files.segment_folder`), whatever else the run wrote there.

Checks, all before any score is reported:

1. pairing: every prediction has its ground truth and the reverse (all unmatched files listed);
2. headers: every file opens and prediction / ground-truth sizes agree (image headers only);
3. values, during the one streaming pass that scores: a prediction outside ``0..K-1`` or a ground
   truth outside it that is not the ignore index. With ``pred_dir`` the pass carries on to collect
   every problem and then raises; with a segmenter it stops at the first problem (no point in
   running the model further). Either way :class:`EvaluationError` (exit code 2) is raised instead
   of a score, listing at most 20 problems and how many more there were.

Only one prediction / ground-truth pair is in memory at a time.

Sharding (``shard="I/N"``) keeps positions ``I-1, I-1+N, ...`` of the sorted samples (after
``limit``), the rule ``scclip segment`` uses. Each shard's :class:`ConfusionMatrix` records the shard
id and the settings (including a digest of the full sample list), so :func:`merge_results` only sums
shards of the same run, and refuses a shard given twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

from scclip_cli.config import ProtocolConfig, protocol_preset
from scclip_cli.errors import ConfigError, EvaluationError, ScclipError, UsageError
from scclip_cli.files.image_io import IMAGE_EXTENSIONS
from scclip_cli.files.mask_io import COLOR_SUFFIX
from scclip_cli.files.segment_folder import is_segment_output, scan_segment_folder
from scclip_cli.maps.metrics import IGNORE_INDEX, ConfusionMatrix, merge_confusions
from scclip_cli.predict.model_options import ModelOptions
from scclip_cli.runs.bookkeeping import Reporter
from scclip_cli.runs.caching import CacheOptions
from scclip_cli.runs.engine import Engine, ModelSpec, ScoreTask
from scclip_cli.runs.scoring import (
    EvalSample,
    Predict,
    naming_path,
    problem_text,
    show_progress,
)

if TYPE_CHECKING:
    from scclip_cli.predict.segmenter import Segmenter
    from scclip_cli.runs.ray_engine import RayOptions

__all__ = [
    "EvalPlan",
    "EvalSample",
    "EvaluationResult",
    "Predict",
    "evaluate",
    "merge_results",
    "pair_images",
    "pair_predictions",
    "plan_evaluation",
]

LABEL_EXTENSION = ".png"
IGNORED_PRED_SUFFIXES = (COLOR_SUFFIX,)
"""Files in a prediction folder that are renderings, not label maps (``scclip segment`` writes a
``<stem>_color.png`` beside 16-bit masks)."""
RUN_LOCAL_KEYS = ("device", "batch_size", "torch", "feature_cache", "precision_reason")
"""Segmenter description keys that may differ between the shards of one run (they are reported,
not compared when merging)."""


@dataclass
class EvaluationResult:
    """What an evaluation (or a merge of shards) produced."""

    confusion: ConfusionMatrix
    """The summed ``[K, K]`` confusion matrix with its classes, settings and shard ids."""
    run_info: dict[str, Any] = field(default_factory=dict)
    """Settings that are not compared when merging (paths, device), for the report."""
    notes: list[str] = field(default_factory=list)
    """Warnings for the user (an incomplete set of shards, ...)."""

    @property
    def metrics(self) -> dict[str, Any]:
        """:meth:`ConfusionMatrix.metrics`: mIoU, mAcc, aAcc (percent), per_class, num_images."""
        return self.confusion.metrics()

    @property
    def config(self) -> dict[str, Any]:
        """The scoring settings and the run's paths, for the report."""
        shards = self.confusion.shards
        return {
            **self.confusion.config,
            "num_classes": self.confusion.num_classes,
            "ignore_index": self.confusion.ignore_index,
            "shards": None if shards == ((1, 1),) else [f"{i}/{n}" for i, n in shards],
            **self.run_info,
        }


# ------------------------------------------------------------------------------------ the API
def evaluate(
    *,
    gt_dir: str | Path | None = None,
    pred_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    vocab: str | Path | None = None,
    num_classes: int | None = None,
    reduce_zero_label: bool | None = None,
    ignore_index: int = IGNORE_INDEX,
    gt_suffix: str = "",
    pred_suffix: str = "",
    limit: int | None = None,
    shard: str | tuple[int, int] | None = None,
    save_pred: str | Path | None = None,
    model: ModelOptions | None = None,
    engine: str | RayOptions = "local",
    segmenter: Segmenter | None = None,
    predict: Predict | None = None,
    preset: str | None = None,
    protocol: ProtocolConfig | None = None,
    protocol_overrides: dict[str, object] | None = None,
    progress: bool | None = None,
    quiet: bool = False,
    caching: CacheOptions | None = None,
    sweep: Sequence[str] = (),
) -> EvaluationResult:
    """Score predictions against ground truth and return the summed confusion matrix.

    Args:
        gt_dir: ground-truth label PNGs (values are class indices; ``ignore_index`` not scored).
            Not used with ``dataset``.
        pred_dir: existing prediction label PNGs. Without ``images_dir`` / ``dataset`` /
            ``predict``, these are what is scored; with ``dataset``, they replace the segmenter.
        images_dir: images to segment and score against ``gt_dir``.
        dataset, data_root: a benchmark of :mod:`scclip_cli.files.datasets` and where it lies;
            sets the vocabulary, protocol preset, ``reduce_zero_label`` and number of classes.
        vocab: class list (``.txt``), for the class names and count (and the segmenter).
        num_classes: the number of classes when no vocabulary is given (``pred_dir`` mode).
        reduce_zero_label: apply mmseg's ``reduce_zero_label`` to the ground truth (default: the
            dataset's convention, else off).
        ignore_index: ground-truth value left out of the scores.
        gt_suffix, pred_suffix: name endings stripped before pairing (see the module docstring).
        limit: score only the first ``limit`` samples (sorted by key).
        shard: ``"I/N"``: score only the I-th of N round-robin parts of the sorted samples.
        save_pred: also write each on-the-fly prediction as ``<save_pred>/<key>.png``.
        model: the model that segments the images (:class:`ModelOptions`; default: its defaults).
        engine: ``"local"`` or a :class:`~scclip_cli.runs.ray_engine.RayOptions` (Ray workers
            segment and score; the result is the local one exactly, and
            ``run_info["engine"]`` records the Ray settings).
        segmenter: an already loaded segmenter (local engine only).
        predict: an injected segmentation source (see :data:`Predict`), e.g. a fake in tests
            (local engine only); ``class names`` then come from ``vocab`` / ``num_classes`` /
            the dataset.
        preset, protocol, protocol_overrides: the protocol: a preset (default: the dataset's) or a
            full config, with the explicitly given fields replaced.
        caching: text-embedding and feature caches for the segmenter loaded here
            (:class:`~scclip_cli.runs.caching.CacheOptions`); with a feature cache, the result's
            ``run_info`` gets a ``feature_cache`` record (hits, misses, size).
        sweep: post-processing settings to sweep (``["prob-threshold=0,0.1",
            "logit-scale=40,50"]``, see :mod:`scclip_cli.runs.sweep`): every combination is
            scored in one pass over the images; the result is the best combination's (highest
            mIoU) and its ``run_info["sweep"]`` lists every combination's scores.
        progress: progress bar on stderr (default: when stderr is a terminal).
        quiet: no messages on stderr (the Ray engine's).

    Raises:
        UsageError: an invalid combination of sources.
        DatasetLayoutError: ``data_root`` lacks the dataset's layout.
        EvaluationError: unmatched files, size mismatches, out-of-range values, unreadable files.
    """
    if engine != "local":
        from scclip_cli.runs.ray_engine import import_ray

        import_ray()  # before any work: Ray may be missing
    plan = plan_evaluation(
        gt_dir=gt_dir,
        pred_dir=pred_dir,
        images_dir=images_dir,
        dataset=dataset,
        data_root=data_root,
        vocab=vocab,
        num_classes=num_classes,
        reduce_zero_label=reduce_zero_label,
        gt_suffix=gt_suffix,
        pred_suffix=pred_suffix,
        limit=limit,
        shard=shard,
        save_pred=save_pred,
        preset=preset,
        classes_from_model=predict is None and segmenter is None,
    )
    axes = _sweep_axes(sweep, plan, predict, save_pred, engine)
    caching = caching or CacheOptions()
    if caching.features is not None and engine != "local":
        raise UsageError("--feature-cache needs the local engine")
    spec = None
    if plan.uses_images and predict is None and segmenter is None:
        plan.run_info["caching"] = caching.describe()
        spec = _model_spec(plan, model, protocol, protocol_overrides, caching)
    if axes is not None:
        sweeping = segmenter if segmenter is not None else spec.load()  # type: ignore[union-attr]
        names = plan.record_segmenter(tuple(sweeping.class_names), sweeping.describe())
        return _evaluate_sweep(plan, sweeping, axes, names, ignore_index)
    # a given segmenter segments the images, unless a source is injected; saved masks need none
    use_segmenter = segmenter if plan.uses_images and predict is None else None
    runner = _pick_engine(engine, use_segmenter, predict, quiet=quiet)
    task = ScoreTask(
        plan.reduce_zero_label, ignore_index, Path(save_pred) if save_pred is not None else None
    )
    message = Reporter(quiet).message
    with runner.session(spec, message) as session:
        started = session.start_scoring(plan.selected, task)
        class_names = plan.class_names
        if started.description is not None and started.class_names is not None:
            class_names = plan.record_segmenter(started.class_names, started.description)
        confusion = plan.confusion(class_names, ignore_index)
        with _progress_bar(len(plan.selected), show_progress(progress)) as advance:
            problems = session.score(plan.selected, confusion, advance)
    if problems:
        raise EvaluationError(problem_text("problems", [text for _, text in problems]))
    if started.engine_record is not None:
        plan.run_info["engine"] = started.engine_record
    if spec is not None and spec.feature_cache is not None:
        plan.run_info["feature_cache"] = spec.feature_cache.report()
    return EvaluationResult(confusion, run_info=plan.run_info)


def _sweep_axes(
    sweep: Sequence[str],
    plan: EvalPlan,
    predict: Predict | None,
    save_pred: str | Path | None,
    engine: str | RayOptions,
) -> dict[str, tuple[float | None, ...]] | None:
    """The settings to sweep (:func:`~scclip_cli.runs.sweep.parse_sweep`), or ``None``; refused
    before any model loads where a sweep cannot run."""
    if not sweep:
        return None
    from scclip_cli.runs.sweep import parse_sweep

    axes = parse_sweep(sweep)
    if not plan.uses_images or predict is not None:
        raise UsageError("--sweep segments images: use it with --images or --dataset")
    if save_pred is not None:
        raise UsageError("--sweep scores many settings; --save-pred saves one: drop one")
    if engine != "local":
        raise UsageError("--sweep runs on the local engine")
    return axes


def _model_spec(
    plan: EvalPlan,
    model: ModelOptions | None,
    protocol: ProtocolConfig | None,
    protocol_overrides: dict[str, object] | None,
    caching: CacheOptions,
) -> ModelSpec:
    """What the engine loads to segment the plan's images (checked before any model loads)."""
    if plan.vocab is None:
        raise UsageError("--vocab is needed to segment images")
    vocab_class_names(plan.vocab)  # a bad vocabulary fails before any model loads
    return ModelSpec.checked(
        model or ModelOptions(),
        plan.vocab,
        plan.preset,
        protocol,
        protocol_overrides,
        caching.load_options(),
    )


def _pick_engine(
    engine: str | RayOptions,
    segmenter: Segmenter | None,
    predict: Predict | None,
    *,
    quiet: bool,
) -> Engine:
    """The engine ``engine`` names: ``"local"`` or Ray options (Ray must be installed)."""
    if engine == "local":
        from scclip_cli.runs.local_engine import LocalEngine

        return LocalEngine(segmenter=segmenter, predict=predict, announce_load=False)
    from scclip_cli.runs.ray_engine import RayEngine, RayOptions

    if not isinstance(engine, RayOptions):
        raise UsageError(f"engine must be 'local' or RayOptions, got {engine!r}")
    if segmenter is not None or predict is not None:
        raise UsageError("a loaded segmenter or a predict source cannot travel to Ray workers")
    return RayEngine(engine, quiet=quiet)


def _evaluate_sweep(
    plan: EvalPlan,
    segmenter: Segmenter,
    axes: dict[str, tuple[float | None, ...]],
    class_names: tuple[str, ...] | None,
    ignore_index: int,
) -> EvaluationResult:
    """Score every combination of ``axes`` in one pass over the images (their features computed,
    or read from the feature cache, once); the best combination's result, with every
    combination's scores in ``run_info["sweep"]``."""
    import dataclasses

    from scclip_cli.runs.scoring import collect_problems, sample_images
    from scclip_cli.runs.sweep import combinations, sweep_rows

    settings = combinations(axes)
    protocols = [
        dataclasses.replace(segmenter.protocol, **cast(dict[str, Any], setting))
        for setting in settings
    ]
    confusions = [plan.confusion(class_names, ignore_index) for _ in settings]
    variants = segmenter.segment_variants(
        sample_images(plan.selected, segmenter), protocols, confidence=False
    )
    for sample, results in zip(plan.selected, variants, strict=True):
        for confusion, result in zip(confusions, results, strict=True):
            problems = collect_problems(
                [sample],
                confusion,
                predictions=[(sample.key, result.labels)],
                reduce_zero_label=plan.reduce_zero_label,
            )
            if problems:
                raise EvaluationError(problem_text("problems", [text for _, text in problems]))
    rows = sweep_rows(settings, [c.metrics() for c in confusions])
    best = next(i for i, row in enumerate(rows) if row["best"])
    run_info = {**plan.run_info, "sweep": rows, "sweep_best": rows[best]["settings"]}
    if segmenter.feature_cache is not None:
        run_info["feature_cache"] = segmenter.feature_cache.report()
    return EvaluationResult(confusions[best], run_info=run_info)


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """The ``eval`` progress bar on stderr; yields the function that advances it."""
    from tqdm import tqdm

    with tqdm(
        total=total,
        desc="eval",
        unit="img",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    ) as bar:
        yield bar.update


@dataclass
class EvalPlan:
    """What an evaluation settles before any model is loaded: the samples, classes, conventions
    and the settings recorded with the result (shared by the local and the Ray engines)."""

    samples: list[EvalSample]
    """Every sample of the run, sorted (after ``limit``); their digest identifies the run."""
    selected: list[EvalSample]
    """This shard's samples."""
    uses_images: bool
    """Images are segmented on the fly (no ``pred_dir``)."""
    reduce_zero_label: bool
    vocab: str | Path | None
    """The class list: given, or the dataset's."""
    num_classes: int | None
    """The expected number of classes, when known (given, or the dataset's)."""
    class_names: tuple[str, ...] | None
    """From ``vocab``, unless a segmenter loaded later gives them."""
    preset: str | None
    """The protocol preset: given, or the dataset's."""
    shard: tuple[int, int] | None
    config: dict[str, Any] = field(default_factory=dict)
    """Settings compared when shards are merged."""
    run_info: dict[str, Any] = field(default_factory=dict)
    """Paths and run-local settings, reported only."""

    def record_segmenter(
        self, class_names: tuple[str, ...], description: dict[str, Any]
    ) -> tuple[str, ...]:
        """Take the segmenter's classes (checked against :attr:`num_classes`) and record its
        description: compared settings in :attr:`config`, run-local ones (:data:`RUN_LOCAL_KEYS`)
        in :attr:`run_info`.

        Raises:
            ConfigError: the segmenter has another number of classes than expected.
        """
        if self.num_classes is not None and len(class_names) != self.num_classes:
            raise ConfigError(
                f"the segmenter has {len(class_names)} classes but {self.num_classes} are expected"
            )
        self.config.update(segmenter=_strip_keys(description, frozenset(RUN_LOCAL_KEYS)))
        self.run_info.update({key: _find_key(description, key) for key in RUN_LOCAL_KEYS})
        return class_names

    def confusion(
        self, class_names: tuple[str, ...] | None, ignore_index: int = IGNORE_INDEX
    ) -> ConfusionMatrix:
        """The run's empty confusion matrix, carrying its settings and shard id.

        Raises:
            UsageError: no class names and no number of classes.
        """
        if class_names is None:
            if self.num_classes is None:
                raise UsageError("give --vocab or --num-classes to say how many classes there are")
            class_names = tuple(f"class {k}" for k in range(self.num_classes))
        return ConfusionMatrix(
            len(class_names),
            class_names,
            ignore_index=ignore_index,
            config=self.config,
            shard=self.shard or (1, 1),
        )


def plan_evaluation(
    *,
    gt_dir: str | Path | None,
    pred_dir: str | Path | None,
    images_dir: str | Path | None,
    dataset: str | None,
    data_root: str | Path | None,
    vocab: str | Path | None,
    num_classes: int | None,
    reduce_zero_label: bool | None,
    gt_suffix: str,
    pred_suffix: str,
    limit: int | None,
    shard: str | tuple[int, int] | None,
    save_pred: str | Path | None,
    preset: str | None,
    classes_from_model: bool,
) -> EvalPlan:
    """Check the sources, list and pair the samples, settle the conventions and check every
    file's header: everything :func:`evaluate` does before a model is loaded.

    Arguments are those of :func:`evaluate`; ``classes_from_model``: the images are segmented by a
    model loaded later, which gives the class names (``vocab`` is then not read here).

    Raises:
        UsageError, ConfigError, DatasetLayoutError, EvaluationError: as :func:`evaluate`.
    """
    shard_ = _parse_shard(shard)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    uses_images = pred_dir is None  # --images, or --dataset without --pred
    _check_sources(gt_dir, pred_dir, images_dir, dataset, data_root)
    if save_pred is not None and not uses_images:
        raise UsageError(
            "--save-pred writes the masks made on the fly; it needs --images or "
            "--dataset without --pred"
        )

    if dataset is not None:
        assert data_root is not None
        found = _dataset_samples(dataset, data_root, pred_dir, limit=limit)
        found.settle(vocab, reduce_zero_label, num_classes, preset)
    else:
        assert gt_dir is not None
        found = _folder_samples(gt_dir, pred_dir, images_dir, gt_suffix, pred_suffix, limit)
        found.settle(vocab, reduce_zero_label, num_classes, preset)
    if pred_dir is not None:
        found.run_info.update(pred=str(pred_dir))
    if found.preset is not None:
        protocol_preset(found.preset)  # an unknown preset fails here, before any model loads
    class_names = _plan_classes(found, read_vocab=not (uses_images and classes_from_model))
    if save_pred is not None:
        found.run_info.update(save_pred=str(save_pred))
    samples = found.samples
    found.config.update(
        reduce_zero_label=bool(found.reduce_zero_label),
        limit=limit,
        num_samples=len(samples),
        samples_digest=_digest(samples),
    )
    selected = samples if shard_ is None else samples[shard_[0] - 1 :: shard_[1]]
    check_headers(selected, use_images=uses_images)  # cheap, before any model is loaded
    return EvalPlan(
        samples=samples,
        selected=selected,
        uses_images=uses_images,
        reduce_zero_label=bool(found.reduce_zero_label),
        vocab=found.vocab,
        num_classes=found.num_classes,
        class_names=class_names,
        preset=found.preset,
        shard=shard_,
        config=found.config,
        run_info=found.run_info,
    )


@dataclass
class _Found:
    """The samples of a plan and the conventions that come with them (a dataset's, or none)."""

    samples: list[EvalSample]
    config: dict[str, Any]
    run_info: dict[str, Any]
    vocab: str | Path | None = None
    reduce_zero_label: bool | None = None
    num_classes: int | None = None
    preset: str | None = None
    dataset: str | None = None

    def settle(
        self,
        vocab: str | Path | None,
        reduce_zero_label: bool | None,
        num_classes: int | None,
        preset: str | None,
    ) -> None:
        """The values given win over the dataset's; a class count that contradicts it fails."""
        if (
            num_classes is not None
            and self.num_classes is not None
            and num_classes != self.num_classes
        ):
            raise ConfigError(f"{self.dataset} has {self.num_classes} classes, not {num_classes}")
        self.vocab = vocab if vocab is not None else self.vocab
        if reduce_zero_label is not None:
            self.reduce_zero_label = reduce_zero_label
        self.num_classes = self.num_classes if self.num_classes is not None else num_classes
        self.preset = preset or self.preset


def _dataset_samples(
    dataset: str, data_root: str | Path, pred_dir: str | Path | None, *, limit: int | None
) -> _Found:
    """A benchmark's samples (scored from ``pred_dir`` when given) and its conventions."""
    from scclip_cli.files.datasets import benchmark_vocab_path, find_dataset

    found = find_dataset(dataset, data_root, limit=limit)
    bench = found.layout.preset
    samples = [
        EvalSample(s.key, gt=s.label, image=s.image, pred=_dataset_pred(pred_dir, s.key))
        for s in found.samples
    ]
    if pred_dir is not None:
        _check_pred_files(samples)
    return _Found(
        samples,
        config={"dataset": dataset, "total_samples": found.total},
        run_info={"data_root": str(found.root)},
        vocab=benchmark_vocab_path(dataset),
        reduce_zero_label=bench.reduce_zero_label,
        num_classes=bench.num_classes,
        preset=dataset,
        dataset=dataset,
    )


def _folder_samples(
    gt_dir: str | Path,
    pred_dir: str | Path | None,
    images_dir: str | Path | None,
    gt_suffix: str,
    pred_suffix: str,
    limit: int | None,
) -> _Found:
    """Images or predictions paired with the ground truth, the first ``limit`` of them."""
    run_info: dict[str, Any] = {}
    if images_dir is not None:
        samples = pair_images(images_dir, gt_dir, gt_suffix=gt_suffix)
        run_info.update(images=str(images_dir))
    else:
        assert pred_dir is not None
        samples = pair_predictions(pred_dir, gt_dir, gt_suffix=gt_suffix, pred_suffix=pred_suffix)
    if limit is not None:
        samples = samples[:limit]
    run_info.update(gt=str(gt_dir))
    config = {"gt_suffix": gt_suffix or None, "pred_suffix": pred_suffix or None}
    return _Found(samples, config=config, run_info=run_info)


def _plan_classes(found: _Found, *, read_vocab: bool) -> tuple[str, ...] | None:
    """The class names of the vocabulary (when ``read_vocab``), checked against the count."""
    vocab, num_classes = found.vocab, found.num_classes
    class_names = vocab_class_names(vocab) if vocab is not None and read_vocab else None
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ConfigError(
            f"vocabulary {vocab} has {len(class_names)} classes but {num_classes} are expected"
        )
    if vocab is not None:
        found.run_info.update(vocab=str(vocab))
    return class_names


def merge_results(paths: Sequence[str | Path]) -> EvaluationResult:
    """Merge confusion matrices saved by sharded runs into one result.

    The result equals that of the single unsharded run when every shard is given. A missing shard
    gives a note (the scores then cover only the merged shards).

    Raises:
        EvaluationError: unreadable files, different classes or settings, a duplicate or
            overlapping shard.
    """
    if not paths:
        raise UsageError("--merge needs at least one confusion-matrix file")
    merged = merge_confusions((str(p), ConfusionMatrix.load(p)) for p in paths)
    notes = []
    missing = merged.missing_shards()
    if missing:
        notes.append(
            "incomplete: shard(s) "
            + ", ".join(f"{i}/{n}" for i, n in missing)
            + " not merged; the scores cover only part of the samples"
        )
    return EvaluationResult(merged, run_info={"merged": [str(p) for p in paths]}, notes=notes)


# ------------------------------------------------------------------------------------ pairing
def pair_predictions(
    pred_dir: str | Path,
    gt_dir: str | Path,
    *,
    gt_suffix: str = "",
    pred_suffix: str = "",
) -> list[EvalSample]:
    """Pair prediction and ground-truth label PNGs by relative path and stem.

    Returns:
        The pairs sorted by key.

    Raises:
        EvaluationError: a folder is missing, there is nothing to pair, or some files have no
            partner (every unmatched file listed, up to 20).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    problems: list[str] = []
    if is_segment_output(pred_dir):
        preds = _segment_output_masks(pred_dir, pred_suffix, problems)
    else:
        preds = _label_files(pred_dir, pred_suffix, "--pred", ignore=IGNORED_PRED_SUFFIXES)
    gts = _label_files(gt_dir, gt_suffix, "--gt")
    problems += [
        f"no ground truth for prediction {preds[k]} (expected {_expected(gt_dir, k, gt_suffix)})"
        for k in sorted(set(preds) - set(gts), key=_key_order)
    ]
    problems += [
        f"missing prediction for ground truth {gts[k]} "
        f"(expected {_expected(pred_dir, k, pred_suffix)})"
        for k in sorted(set(gts) - set(preds), key=_key_order)
    ]
    if problems:
        raise EvaluationError(problem_text("unmatched files", problems))
    keys = sorted(preds, key=_key_order)
    if not keys:
        raise EvaluationError(f"no label PNGs in --pred {pred_dir} or --gt {gt_dir}")
    return [EvalSample(k, gt=gts[k], pred=preds[k]) for k in keys]


def _segment_output_masks(folder: Path, suffix: str, problems: list[str]) -> dict[str, Path]:
    """``key → mask`` of a ``scclip segment`` output: its label maps that have their per-image
    record (:mod:`scclip_cli.files.segment_folder`), so legends, colour renderings, confidence
    maps and summaries are left out by what they are. A label map without its record (an image
    the run did not finish) is added to ``problems``."""
    scanned = scan_segment_folder(folder)
    problems += [
        f"incomplete prediction {path}: no per-image record {path.with_suffix('.json').name} "
        "beside it (rerun scclip segment to finish it)"
        for path in scanned.masks_without_record
    ]
    tail = _suffix_tail(suffix)[: -len(LABEL_EXTENSION)]
    return {
        image.key[: len(image.key) - len(tail)]: image.mask
        for image in scanned.images
        if image.key.endswith(tail)
    }


def pair_images(
    images_dir: str | Path, gt_dir: str | Path, *, gt_suffix: str = ""
) -> list[EvalSample]:
    """Pair images (:data:`scclip_cli.files.image_io.IMAGE_EXTENSIONS`) with ground-truth label PNGs.

    Raises:
        EvaluationError: as :func:`pair_predictions`; also two images with the same stem.
    """
    images_dir, gt_dir = Path(images_dir), Path(gt_dir)
    if not images_dir.is_dir():
        raise EvaluationError(f"--images {images_dir}: no such folder")
    images: dict[str, Path] = {}
    problems = []
    for rel in _walk(images_dir):
        if rel.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        key = rel.with_suffix("").as_posix()
        if key in images:
            problems.append(f"images {images[key]} and {images_dir / rel} have the same name")
        images[key] = images_dir / rel
    gts = _label_files(gt_dir, gt_suffix, "--gt")
    problems += [
        f"no ground truth for image {images[k]} (expected {_expected(gt_dir, k, gt_suffix)})"
        for k in sorted(set(images) - set(gts), key=_key_order)
    ]
    problems += [
        f"missing image for ground truth {gts[k]}"
        for k in sorted(set(gts) - set(images), key=_key_order)
    ]
    if problems:
        raise EvaluationError(problem_text("unmatched files", problems))
    keys = sorted(images, key=_key_order)
    if not keys:
        raise EvaluationError(f"no images in --images {images_dir}")
    return [EvalSample(k, gt=gts[k], image=images[k]) for k in keys]


# ------------------------------------------------------------------------------------- checks
def check_headers(samples: Sequence[EvalSample], *, use_images: bool = False) -> None:
    """Open every file's header: each must be readable and prediction / image sizes must equal
    the ground truth's. ``use_images`` compares the image (EXIF orientation applied) instead of
    the prediction file.

    Raises:
        EvaluationError: listing every problem (up to 20).
    """
    problems: list[str] = []
    for sample in samples:
        other = sample.image if use_images else sample.pred
        gt_size = _header_size(sample.gt, problems, image=False)
        if other is None:
            continue
        other_size = _header_size(other, problems, image=use_images)
        if gt_size is not None and other_size is not None and gt_size != other_size:
            what = "image" if use_images else "prediction"
            problems.append(
                f"size mismatch: {what} {other} is {other_size[0]}x{other_size[1]}, "
                f"ground truth {sample.gt} is {gt_size[0]}x{gt_size[1]}"
            )
    if problems:
        raise EvaluationError(problem_text("problems", problems))


# ------------------------------------------------------------------------------------ helpers
def vocab_class_names(vocab: str | Path) -> tuple[str, ...]:
    """Class names of a vocabulary: a class list (``.txt``, each line's first synonym) or an
    embedding cache (``.npz`` made by ``scclip vocab``). Neither loads a model.

    Raises:
        VocabularyError: missing, unreadable or malformed file.
    """
    from scclip_cli.model.text_embeddings import vocabulary_class_names

    return vocabulary_class_names(vocab)


def _check_sources(
    gt_dir: str | Path | None,
    pred_dir: str | Path | None,
    images_dir: str | Path | None,
    dataset: str | None,
    data_root: str | Path | None,
) -> None:
    if dataset is not None:
        if data_root is None:
            raise UsageError("--dataset needs --data-root")
        if images_dir is not None or gt_dir is not None:
            raise UsageError(
                "--dataset takes its images and ground truth from --data-root; drop --images / --gt"
            )
        return
    if data_root is not None:
        raise UsageError("--data-root is only used with --dataset")
    if gt_dir is None:
        raise UsageError("--gt is needed (or --dataset with --data-root)")
    if (pred_dir is None) == (images_dir is None):
        raise UsageError("give exactly one of --pred (existing masks) and --images (segment them)")


def _dataset_pred(pred_dir: str | Path | None, key: str) -> Path | None:
    return None if pred_dir is None else Path(pred_dir) / f"{key}{LABEL_EXTENSION}"


def _check_pred_files(samples: Sequence[EvalSample]) -> None:
    missing = [f"missing prediction {s.pred}" for s in samples if s.pred and not s.pred.is_file()]
    if missing:
        raise EvaluationError(problem_text("unmatched files", missing))


def _label_files(
    folder: Path, suffix: str, option: str, *, ignore: Sequence[str] = ()
) -> dict[str, Path]:
    """``key → path`` of the ``.png`` files under ``folder`` that end with ``suffix``."""
    if not folder.is_dir():
        raise EvaluationError(f"{option} {folder}: no such folder")
    tail = _suffix_tail(suffix)
    found: dict[str, Path] = {}
    for rel in _walk(folder):
        name = rel.name
        if not name.lower().endswith(LABEL_EXTENSION) or not name.endswith(tail):
            continue
        if any(name.endswith(s) and not tail.endswith(s) for s in ignore):
            continue
        key = (rel.parent / name[: -len(tail)]).as_posix()
        found[key] = folder / rel
    return found


def _suffix_tail(suffix: str) -> str:
    """The whole name ending: ``_gtFine_labelTrainIds`` → ``_gtFine_labelTrainIds.png``."""
    if suffix.lower().endswith(LABEL_EXTENSION):
        return suffix
    return suffix + LABEL_EXTENSION


def _expected(folder: Path, key: str, suffix: str) -> Path:
    return folder / f"{key}{_suffix_tail(suffix)}"


def _walk(folder: Path) -> Iterator[PurePosixPath]:
    """Relative paths of the files under ``folder``, hidden files and folders skipped."""
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        yield PurePosixPath(rel.as_posix())


def _header_size(path: Path, problems: list[str], *, image: bool) -> tuple[int, int] | None:
    """``(width, height)`` from the file header; an image's as displayed (EXIF orientation
    applied, as :func:`~scclip_cli.files.image_io.read_image_rgb` reads it), a label map's as stored.
    A problem is appended to ``problems`` (and ``None`` returned) when the header is unreadable."""
    from PIL import Image, UnidentifiedImageError

    from scclip_cli.files.image_io import read_image_size

    try:
        if image:
            return read_image_size(path)
        with Image.open(path) as img:
            return img.size
    except ScclipError as err:
        problems.append(naming_path(path, err))
    except FileNotFoundError:
        problems.append(f"{path}: no such file")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        problems.append(f"{path}: unreadable ({err})")
    return None


def _parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    from scclip_cli.runs.inputs import parse_shard

    parsed = parse_shard(shard)
    return None if parsed is None else (parsed.index, parsed.count)


def _digest(samples: Sequence[EvalSample]) -> str:
    """Identifies the sorted sample list, so shards of different runs are not merged."""
    h = hashlib.sha256()
    for sample in samples:
        h.update(sample.key.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def _key_order(key: str) -> tuple[str, ...]:
    return tuple(key.split("/"))


def _strip_keys(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list | tuple):
        return [_strip_keys(v, keys) for v in value]
    return value


def _find_key(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for v in value.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None
