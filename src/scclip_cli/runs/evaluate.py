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

import hashlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from scclip_cli.config import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    MethodConfig,
    ProtocolConfig,
    protocol_preset,
    resolve_protocol,
)
from scclip_cli.errors import ConfigError, EvaluationError, ScclipError, UsageError
from scclip_cli.files.image_io import IMAGE_EXTENSIONS
from scclip_cli.files.mask_io import COLOR_SUFFIX
from scclip_cli.maps.metrics import (
    IGNORE_INDEX,
    ConfusionMatrix,
    label_problems,
    merge_confusions,
    reduce_zero_label,
)
from scclip_cli.runs.caching import CacheOptions

if TYPE_CHECKING:
    from scclip_cli.predict.segmenter import Segmenter

MAX_PROBLEMS_SHOWN = 20
LABEL_EXTENSION = ".png"
IGNORED_PRED_SUFFIXES = (COLOR_SUFFIX,)
"""Files in a prediction folder that are renderings, not label maps (``scclip segment`` writes a
``<stem>_color.png`` beside 16-bit masks)."""
RUN_LOCAL_KEYS = ("device", "batch_size", "torch", "feature_cache", "precision_reason")
"""Segmenter description keys that may differ between the shards of one run (they are reported,
not compared when merging)."""


@dataclass(frozen=True)
class EvalSample:
    """One image to score."""

    key: str
    """Relative path without extension (and without the stripped suffixes), ``/``-separated."""
    gt: Path
    """Ground-truth label PNG."""
    pred: Path | None = None
    """Prediction label PNG (``pred_dir`` mode)."""
    image: Path | None = None
    """Image to segment (``images_dir`` / ``dataset`` mode)."""


Predict = Callable[[Sequence[EvalSample]], Iterable[tuple[str, np.ndarray]]]
"""A segmentation source: given the samples, yields ``(key, labels [H, W] int)`` in their order."""


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
    segmenter: Segmenter | None = None,
    predict: Predict | None = None,
    model: str = DEFAULT_MODEL,
    pretrained: str = DEFAULT_PRETRAINED,
    device: str = "auto",
    precision: str = "auto",
    method: str | MethodConfig = "sc-clip",
    preset: str | None = None,
    protocol: ProtocolConfig | None = None,
    protocol_overrides: dict[str, object] | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
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
        dataset, data_root: a benchmark of :mod:`scclip_cli.files.datasets` and where it lies; sets the
            vocabulary, protocol preset, ``reduce_zero_label`` and number of classes.
        vocab: class list (``.txt``), for the class names and count (and the segmenter).
        num_classes: the number of classes when no vocabulary is given (``pred_dir`` mode).
        reduce_zero_label: apply mmseg's ``reduce_zero_label`` to the ground truth (default: the
            dataset's convention, else off).
        ignore_index: ground-truth value left out of the scores.
        gt_suffix, pred_suffix: name endings stripped before pairing (see the module docstring).
        limit: score only the first ``limit`` samples (sorted by key).
        shard: ``"I/N"``: score only the I-th of N round-robin parts of the sorted samples.
        save_pred: also write each on-the-fly prediction as ``<save_pred>/<key>.png``.
        segmenter: an already loaded segmenter (else loaded from the model arguments).
        predict: an injected segmentation source (see :data:`Predict`), e.g. a fake in tests;
            ``class names`` then come from ``vocab`` / ``num_classes`` / the dataset.
        model, pretrained, device, precision, method, batch_size: for :meth:`Segmenter.load`
            (``batch_size`` by default :func:`~scclip_cli.predict.segmenter.default_batch_size`).
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

    Raises:
        UsageError: an invalid combination of sources.
        DatasetLayoutError: ``data_root`` lacks the dataset's layout.
        EvaluationError: unmatched files, size mismatches, out-of-range values, unreadable files.
    """
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
    class_names = plan.class_names
    axes = None
    if sweep:
        from scclip_cli.runs.sweep import parse_sweep

        axes = parse_sweep(sweep)  # refused before any model loads
        if not plan.uses_images or predict is not None:
            raise UsageError("--sweep segments images: use it with --images or --dataset")
        if save_pred is not None:
            raise UsageError("--sweep scores many settings; --save-pred saves one: drop one")
    # -- the prediction source
    if plan.uses_images and predict is None:
        if segmenter is None:
            if plan.vocab is None:
                raise UsageError("--vocab is needed to segment images")
            segmenter = _load_segmenter(
                plan.vocab,
                model=model,
                pretrained=pretrained,
                device=device,
                precision=precision,
                method=method,
                preset=plan.preset,
                protocol=resolve_protocol(plan.preset, protocol, **(protocol_overrides or {})),
                batch_size=batch_size,
                **(caching or CacheOptions()).load_options(),
            )
        class_names = plan.record_segmenter(tuple(segmenter.class_names), segmenter.describe())
        if axes is not None:
            return _evaluate_sweep(plan, segmenter, axes, class_names, ignore_index, progress)
        predict = segmenter_source(segmenter, save_pred)
    elif predict is not None and save_pred is not None:
        predict = _saving(predict, save_pred, len(class_names or ()) or (plan.num_classes or 0))

    confusion = plan.confusion(class_names, ignore_index)
    predictions = predict(plan.selected) if predict is not None else None
    score_samples(
        plan.selected,
        confusion,
        predictions=predictions,
        reduce_zero_label=plan.reduce_zero_label,
        progress=show_progress(progress),
        fail_fast=predictions is not None,
    )
    run_info = dict(plan.run_info)
    feature_cache = getattr(segmenter, "feature_cache", None)  # a stand-in may have none
    if feature_cache is not None:
        run_info["feature_cache"] = feature_cache.report()
    return EvaluationResult(confusion, run_info=run_info)


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

    config: dict[str, Any] = {}
    run_info: dict[str, Any] = {}
    # -- which samples, and the dataset's conventions
    if dataset is not None:
        from scclip_cli.files.datasets import benchmark_vocab_path, find_dataset

        assert data_root is not None
        found = find_dataset(dataset, data_root, limit=limit)
        bench = found.layout.preset
        samples = [
            EvalSample(s.key, gt=s.label, image=s.image, pred=_dataset_pred(pred_dir, s.key))
            for s in found.samples
        ]
        if pred_dir is not None:
            _check_pred_files(samples)
        if vocab is None:
            vocab = benchmark_vocab_path(dataset)
        if reduce_zero_label is None:
            reduce_zero_label = bench.reduce_zero_label
        if num_classes is not None and num_classes != bench.num_classes:
            raise ConfigError(f"{dataset} has {bench.num_classes} classes, not {num_classes}")
        num_classes = bench.num_classes
        preset = preset or dataset
        config.update(dataset=dataset, total_samples=found.total)
        run_info.update(data_root=str(found.root))
    else:
        assert gt_dir is not None
        if images_dir is not None:
            samples = pair_images(images_dir, gt_dir, gt_suffix=gt_suffix)
            run_info.update(images=str(images_dir))
        else:
            assert pred_dir is not None
            samples = pair_predictions(
                pred_dir, gt_dir, gt_suffix=gt_suffix, pred_suffix=pred_suffix
            )
        if limit is not None:
            samples = samples[:limit]
        run_info.update(gt=str(gt_dir))
        config.update(gt_suffix=gt_suffix or None, pred_suffix=pred_suffix or None)
    if pred_dir is not None:
        run_info.update(pred=str(pred_dir))
    if preset is not None:
        protocol_preset(preset)  # an unknown preset fails here, before any model loads

    # -- classes
    class_names: tuple[str, ...] | None = None
    if vocab is not None and not (uses_images and classes_from_model):
        class_names = vocab_class_names(vocab)
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ConfigError(
            f"vocabulary {vocab} has {len(class_names)} classes but {num_classes} are expected"
        )
    if vocab is not None:
        run_info.update(vocab=str(vocab))
    if save_pred is not None:
        run_info.update(save_pred=str(save_pred))

    config.update(
        reduce_zero_label=bool(reduce_zero_label),
        limit=limit,
        num_samples=len(samples),
        samples_digest=_digest(samples),
    )
    selected = samples if shard_ is None else samples[shard_[0] - 1 :: shard_[1]]
    # -- cheap checks before any model is loaded
    check_headers(selected, use_images=uses_images)
    return EvalPlan(
        samples=samples,
        selected=selected,
        uses_images=uses_images,
        reduce_zero_label=bool(reduce_zero_label),
        vocab=vocab,
        num_classes=num_classes,
        class_names=class_names,
        preset=preset,
        shard=shard_,
        config=config,
        run_info=run_info,
    )


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
    preds = _label_files(pred_dir, pred_suffix, "--pred", ignore=IGNORED_PRED_SUFFIXES)
    gts = _label_files(gt_dir, gt_suffix, "--gt")
    problems = [
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


def score_samples(
    samples: Sequence[EvalSample],
    confusion: ConfusionMatrix,
    *,
    predictions: Iterable[tuple[str, np.ndarray]] | None = None,
    reduce_zero_label: bool = False,
    progress: bool = False,
    fail_fast: bool = False,
) -> None:
    """Stream the samples through ``confusion``, one pair in memory at a time.

    Args:
        samples: what to score, in order.
        confusion: accumulates the scored pixels.
        predictions: ``(key, labels [H, W] int)`` in the order of ``samples``; ``None`` reads each
            sample's ``pred`` file.
        reduce_zero_label: apply :func:`scclip_cli.maps.metrics.reduce_zero_label` to the ground truth.
        progress: show a progress bar on stderr.
        fail_fast: raise at the first problem instead of collecting them all.

    Raises:
        EvaluationError: listing the problems found (unreadable files, sizes, values). When it is
            raised, ``confusion`` holds an incomplete sum and must not be reported.
    """
    from tqdm import tqdm

    with tqdm(
        total=len(samples),
        desc="eval",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        problems = collect_problems(
            samples,
            confusion,
            predictions=predictions,
            reduce_zero_label=reduce_zero_label,
            fail_fast=fail_fast,
            on_scored=lambda: bar.update(1),
        )
    if problems:
        raise EvaluationError(problem_text("problems", [text for _, text in problems]))


def collect_problems(
    samples: Sequence[EvalSample],
    confusion: ConfusionMatrix,
    *,
    predictions: Iterable[tuple[str, np.ndarray]] | None = None,
    reduce_zero_label: bool = False,
    fail_fast: bool = False,
    on_scored: Callable[[], None] | None = None,
) -> list[tuple[int, str]]:
    """:func:`score_samples` without raising: the problems found, as ``(index in samples,
    text)``. Once a problem is found nothing more is added to ``confusion`` (it must then not be
    reported); with ``fail_fast`` the pass stops there. ``on_scored`` is called after each
    sample the pass goes through."""
    problems: list[tuple[int, str]] = []
    pred_iter: Iterator[tuple[str, np.ndarray]] | None = (
        iter(predictions) if predictions is not None else None
    )
    for index, sample in enumerate(samples):
        try:
            new = _score_one(sample, confusion, pred_iter, reduce_zero_label, bool(problems))
        except EvaluationError as err:  # an image the segmentation source could not read
            new = [str(err)]
        problems += [(index, text) for text in new]
        if new and fail_fast:
            break
        if on_scored is not None:
            on_scored()
    if pred_iter is not None and not problems:
        extra = next(pred_iter, None)
        if extra is not None:
            problems.append(
                (len(samples), f"the segmentation source yielded an extra prediction {extra[0]!r}")
            )
    return problems


def _score_one(
    sample: EvalSample,
    confusion: ConfusionMatrix,
    pred_iter: Iterator[tuple[str, np.ndarray]] | None,
    reduce_zero: bool,
    failed: bool,
) -> list[str]:
    if pred_iter is not None:
        try:
            key, pred = next(pred_iter)
        except StopIteration:
            return [f"the segmentation source stopped before {sample.key!r}"]
        if key != sample.key:
            return [f"the segmentation source yielded {key!r} where {sample.key!r} was expected"]
        pred_name = f"prediction for {sample.image or sample.key}"
        pred = np.asarray(pred)
    else:
        assert sample.pred is not None
        pred_name = str(sample.pred)
        try:
            pred = _read_labels(sample.pred)
        except EvaluationError as err:
            return [str(err)]
    try:
        gt = _read_labels(sample.gt)
    except EvaluationError as err:
        return [str(err)]
    if reduce_zero:
        gt = reduce_zero_label(gt, confusion.ignore_index)
    problems = label_problems(
        pred,
        gt,
        confusion.num_classes,
        ignore_index=confusion.ignore_index,
        pred_name=pred_name,
        gt_name=str(sample.gt),
    )
    if not problems and not failed:
        confusion.add_unchecked(pred, gt)
    return problems


def _evaluate_sweep(
    plan: EvalPlan,
    segmenter: Segmenter,
    axes: dict[str, tuple[float | None, ...]],
    class_names: tuple[str, ...] | None,
    ignore_index: int,
    progress: bool | None,
) -> EvaluationResult:
    """Score every combination of ``axes`` in one pass; the best combination's result, with
    every combination's scores in ``run_info["sweep"]``."""
    import dataclasses

    from scclip_cli.runs.sweep import combinations, sweep_rows

    settings = combinations(axes)
    protocols = [
        dataclasses.replace(segmenter.protocol, **cast(dict[str, Any], setting))
        for setting in settings
    ]
    confusions = [plan.confusion(class_names, ignore_index) for _ in settings]
    variants = segmenter.segment_variants(_sample_images(plan.selected), protocols)
    for sample, results in zip(plan.selected, variants, strict=True):
        for confusion, result in zip(confusions, results, strict=True):
            problems = _score_one(
                sample,
                confusion,
                iter([(sample.key, result.labels)]),
                plan.reduce_zero_label,
                False,
            )
            if problems:
                raise EvaluationError(problem_text("problems", problems))
    rows = sweep_rows(settings, [c.metrics() for c in confusions])
    best = next(i for i, row in enumerate(rows) if row["best"])
    run_info = {**plan.run_info, "sweep": rows, "sweep_best": rows[best]["settings"]}
    if segmenter.feature_cache is not None:
        run_info["feature_cache"] = segmenter.feature_cache.report()
    return EvaluationResult(confusions[best], run_info=run_info)


def _sample_images(samples: Sequence[EvalSample]) -> Iterator[np.ndarray]:
    from scclip_cli.files.image_io import read_image_rgb

    for sample in samples:
        assert sample.image is not None
        try:
            yield read_image_rgb(sample.image)
        except ScclipError as err:
            raise EvaluationError(_naming(sample.image, err)) from None
        except (OSError, ValueError) as err:
            raise EvaluationError(f"{sample.image}: cannot read image ({err})") from None


# ------------------------------------------------------------------------- segmentation source
def segmenter_source(segmenter: Segmenter, save_pred: str | Path | None) -> Predict:
    """A :data:`Predict` that segments ``sample.image`` with ``segmenter`` (streamed, batched)."""

    def predict(samples: Sequence[EvalSample]) -> Iterator[tuple[str, np.ndarray]]:
        from scclip_cli.files.image_io import read_image_rgb

        def images() -> Iterator[np.ndarray]:
            for sample in samples:
                assert sample.image is not None
                try:
                    yield read_image_rgb(sample.image)
                except ScclipError as err:
                    raise EvaluationError(_naming(sample.image, err)) from None
                except (OSError, ValueError) as err:
                    raise EvaluationError(f"{sample.image}: cannot read image ({err})") from None

        results = segmenter.segment_many(images())
        num_classes = len(segmenter.class_names)
        for sample, seg in zip(samples, results, strict=False):
            if save_pred is not None:
                _write_pred(Path(save_pred), sample.key, seg.labels, num_classes)
            yield sample.key, seg.labels

    return predict


def _saving(predict: Predict, save_pred: str | Path, num_classes: int) -> Predict:
    def wrapped(samples: Sequence[EvalSample]) -> Iterator[tuple[str, np.ndarray]]:
        for key, labels in predict(samples):
            _write_pred(Path(save_pred), key, labels, num_classes)
            yield key, labels

    return wrapped


def _write_pred(folder: Path, key: str, labels: np.ndarray, num_classes: int) -> None:
    from scclip_cli.files.mask_io import write_label_png

    write_label_png(folder / f"{key}.png", labels, num_classes)  # creates the folders


def _load_segmenter(vocab: str | Path, **options: Any) -> Segmenter:
    from scclip_cli.predict.segmenter import Segmenter

    return Segmenter.load(vocab, **options)


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
        problems.append(_naming(path, err))
    except FileNotFoundError:
        problems.append(f"{path}: no such file")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        problems.append(f"{path}: unreadable ({err})")
    return None


def _naming(path: Path, err: BaseException) -> str:
    """``err``'s message, prefixed with ``path`` unless it names it already."""
    message = str(err)
    return message if str(path) in message else f"{path}: {message}"


def _read_labels(path: Path) -> np.ndarray:
    """``[H, W]`` int64 labels of a PNG; :class:`EvaluationError` naming the file if unreadable."""
    from scclip_cli.files.mask_io import read_label_png

    try:
        return np.asarray(read_label_png(path), dtype=np.int64)
    except ScclipError as err:
        raise EvaluationError(_naming(path, err)) from None
    except (OSError, ValueError) as err:
        raise EvaluationError(f"{path}: unreadable label PNG ({err})") from None


def problem_text(headline: str, problems: Sequence[str]) -> str:
    shown = [f"  {p}" for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    return f"{headline} ({len(problems)}); nothing was scored:\n" + "\n".join(shown)


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


def show_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


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
