"""The Python API: load a segmenter once, then segment images or arrays.

    >>> from scclip_cli import Segmenter
    >>> seg = Segmenter.load(vocab="vocab/everyday.txt")       # ViT-B/16, OpenAI weights
    >>> result = seg.segment("photo.jpg")
    >>> result.labels.shape, result.class_names[result.labels[0, 0]]

Data flow for each image: resize (short side) → normalise → sliding windows → batches of crops
through :class:`~scclip_cli.model.dense_features.DenseFeatureExtractor` → cosine scores against the query
embeddings → overlap averaging and upsampling to the original size as one linear map, tile by
tile (:mod:`scclip_cli.maps.window_resize`) → post-processing (:mod:`scclip_cli.maps.postprocess`). Crops of
several images share batches; each crop keeps its own statistics, so outputs do not depend on the
batch size.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scclip_cli.config import (
    CalibrationConfig,
    ConfigError,
    MethodConfig,
    ProtocolConfig,
    applied_preset,
    calibration_for_depth,
    resolve_protocol,
)
from scclip_cli.errors import VocabularyError
from scclip_cli.maps.parts import IN_ORDER, MAX_PARTS, PartRunner, PartThreads

if TYPE_CHECKING:
    import torch

    from scclip_cli.files.feature_cache import FeatureCache, FeatureEntry, ImageSizes
    from scclip_cli.files.mask_io import ClassTotals
    from scclip_cli.maps.resize import RowSource
    from scclip_cli.maps.sliding_window import Window, WindowCanvas
    from scclip_cli.model.dense_features import DenseFeatureExtractor
    from scclip_cli.model.loading import DeferredClip, LoadedClip
    from scclip_cli.model.text_embeddings import QueryEmbeddings


@dataclass(frozen=True)
class Segmentation:
    """The result for one image, at the image's original (EXIF-applied) size."""

    labels: np.ndarray
    """[H, W] int32 class index per pixel, in 0..K-1."""
    confidence: np.ndarray | None
    """[H, W] float32 winning class probability (after the area rule), in [0, 1]; ``None`` where
    it was not computed (``confidence=False``)."""
    class_names: tuple[str, ...]
    """[K] class names; ``labels`` index into it."""
    totals: ClassTotals | None = None
    """The per-class statistics computed without a confidence map (``statistics=True``); see
    :meth:`class_totals`."""

    def class_totals(self) -> ClassTotals:
        """Per-class pixel counts and confidence statistics: :attr:`totals`, or from the maps
        (no confidence statistics without a confidence map). The same bits whether the confidence
        map was computed or not (with ``statistics=True``)."""
        if self.totals is not None:
            return self.totals
        from scclip_cli.files.mask_io import ClassTotals

        return ClassTotals.from_maps(self.labels, self.confidence, len(self.class_names))


@dataclass
class PreparedImage:
    """An image resized and normalised for the windows; cheap to make on a reader thread."""

    pixels: torch.Tensor
    """[3, h, w] float32 normalised, at the resized size (padded to one patch, see ``content``)."""
    height: int
    """Original height."""
    width: int
    """Original width."""
    content: tuple[int, int] | None = None
    """``(h, w)`` of the resized image inside ``pixels`` when its short side was narrower than one
    patch and it was padded (a strip, e.g. 6000 × 40, whose long side the resize capped); the scores
    are cropped back to it before they are upsampled. ``None``: no padding."""
    cache_key: str | None = None
    """Its feature-cache entry when :meth:`Segmenter.read` looked it up already (by the file's
    bytes): then :attr:`cached_windows` is what it found. ``None``: looked up by the pixels."""
    cached_windows: list[np.ndarray] | None = None
    """``[gh, gw, D]`` float32 features of each window found under :attr:`cache_key` (``None``: a
    miss, and the features computed are stored there)."""

    @property
    def pixels_size(self) -> tuple[int, int]:
        """``(h, w)`` of :attr:`pixels`."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])


@dataclass(frozen=True)
class CachedImage:
    """An image file whose window features the feature cache holds under the file's bytes: all
    that :meth:`Segmenter.segment_many` needs, without decoding the file (made by
    :meth:`Segmenter.read`)."""

    path: Path
    cache_key: str
    windows: list[np.ndarray]
    """Each window's ``[gh, gw, D]`` float32 features, in window order."""
    sizes: ImageSizes

    @property
    def height(self) -> int:
        return self.sizes.height

    @property
    def width(self) -> int:
        return self.sizes.width

    @property
    def content(self) -> tuple[int, int] | None:
        return self.sizes.content

    @property
    def pixels_size(self) -> tuple[int, int]:
        return self.sizes.pixels


@dataclass(frozen=True)
class ReadImage:
    """An image file read for :meth:`Segmenter.segment_many` (:meth:`Segmenter.read`)."""

    image: PreparedImage | CachedImage
    """What ``segment_many`` takes; its ``height`` and ``width`` are the original size (EXIF
    orientation applied)."""
    rgb: np.ndarray | None
    """``[H, W, 3]`` uint8 RGB when asked for (never decoded otherwise)."""


GPU_BATCH_SIZE = 16
"""Crops per forward pass on a GPU by default."""
CPU_BATCH_SIZE = 4
"""Crops per forward pass on the CPU by default: larger batches were slower on a small CPU, whose
caches a batch of 16 crops' activations overflows (docs/performance.md)."""


def default_batch_size(device_type: str) -> int:
    """:data:`CPU_BATCH_SIZE` on the CPU, :data:`GPU_BATCH_SIZE` on an accelerator."""
    return CPU_BATCH_SIZE if device_type == "cpu" else GPU_BATCH_SIZE


@dataclass
class _Job:
    prepared: PreparedImage | CachedImage
    windows: list[Window]
    canvas: WindowCanvas
    remaining: int
    """Windows not scored yet."""
    cache_key: str | None = None
    """Its feature-cache entry, when its features are to be stored there once all computed."""
    features: dict[int, torch.Tensor] | None = None
    """``[gh, gw, D]`` float32 features of each window scored so far (by window index), kept only
    while they are to be stored in the feature cache, or for :meth:`Segmenter.segment_variants`."""
    keep: bool = False
    """Keep :attr:`features` after storing them (for :meth:`Segmenter.segment_variants`)."""


class Segmenter:
    """SC-CLIP (or a baseline method) bound to one model, one vocabulary and one protocol."""

    def __init__(
        self,
        clip: LoadedClip | DeferredClip,
        embeddings: QueryEmbeddings,
        protocol: ProtocolConfig | None = None,
        calibration: CalibrationConfig | None = None,
        method: str | MethodConfig = "sc-clip",
        batch_size: int | None = None,
        feature_cache: FeatureCache | None = None,
        *,
        preset: dict[str, object] | None = None,
    ) -> None:
        """``clip`` may be a :class:`~scclip_cli.model.loading.DeferredClip`: the model then
        loads when the first image's features are not in ``feature_cache``."""
        import torch

        from scclip_cli.maps.workspace import Workspace

        if batch_size is None:
            batch_size = default_batch_size(clip.device.type)
        if batch_size < 1:
            raise ConfigError("batch size must be at least 1")
        self.clip = clip
        self.embeddings = embeddings
        self.protocol = protocol or ProtocolConfig()
        self.preset = preset
        """The benchmark preset the protocol came from, for which backbone
        (:func:`~scclip_cli.config.applied_preset`); ``None`` when no preset was used."""
        self.calibration = calibration or calibration_for_depth(clip.depth)
        self.method = MethodConfig(name=method) if isinstance(method, str) else method
        self.batch_size = batch_size
        self.device = clip.device
        self.feature_cache = feature_cache
        """Where each image's window features are looked up before the model runs and stored
        after (see :mod:`scclip_cli.files.feature_cache`); ``None``: no cache."""
        self._extractor: DenseFeatureExtractor | None = None
        self._decoder: str | None = None  # image_io.decoder_identity(), once
        self.precision_reason: str | None = None
        """Why the model runs in its dtype (set by :meth:`load`; recorded by :meth:`describe`)."""
        features = np.asarray(embeddings.features, dtype=np.float32)
        if features.shape[1] != clip.output_dim:
            raise VocabularyError(
                f"vocabulary embeddings have dimension {features.shape[1]} but the model "
                f"outputs {clip.output_dim}"
            )
        self.text = torch.from_numpy(features).to(self.device)  # [Q, D] float32
        self.query_class = torch.from_numpy(np.asarray(embeddings.query_class, dtype=np.int64)).to(
            self.device
        )
        self._class_names = tuple(embeddings.class_names)
        self.workspace = Workspace(per_thread=False)
        """Post-processing buffers, reused from one image to the next; whichever thread
        post-processes an image holds :attr:`_finishing_lock` (one image at a time)."""
        self._finishing_lock = threading.Lock()
        self.parts: PartRunner = (
            PartThreads(min(torch.get_num_threads(), MAX_PARTS))
            if self.device.type == "cpu" and torch.get_num_threads() > 1
            else IN_ORDER
        )
        """Runs the parts of each image's post-processing: on the CPU at once, one per intra-op
        thread the segmenter was made with (at most :data:`~scclip_cli.maps.parts.MAX_PARTS`), on
        threads of their own; elsewhere one after another."""

    @classmethod
    def load(
        cls,
        vocab: str | Path | list[str] | QueryEmbeddings,
        model: str = "ViT-B-16-quickgelu",
        pretrained: str = "openai",
        device: str = "auto",
        precision: str = "auto",
        protocol: ProtocolConfig | None = None,
        preset: str | None = None,
        calibration: CalibrationConfig | None = None,
        method: str | MethodConfig = "sc-clip",
        batch_size: int | None = None,
        protocol_overrides: dict[str, object] | None = None,
        *,
        text_cache: bool = True,
        cache_dir: str | Path | None = None,
        feature_cache: FeatureCache | None = None,
    ) -> Segmenter:
        """Load the model and embed the vocabulary (a .txt/.npz path, or a list of class lines).

        ``protocol`` wins over ``preset``; with neither, the paper's defaults apply. A preset takes
        the values of the model's backbone (a 24-block ViT: the authors' ViT-L/14 settings, any
        other: ViT-B/16), so it is resolved once the model is loaded. ``protocol_overrides``
        (fields of :class:`ProtocolConfig`, ``None`` values ignored) replace single values of
        either. The model's text tower is released once the vocabulary is embedded (segmenting
        needs only the vision tower); to embed more vocabularies with one model, build it with
        :func:`~scclip_cli.model.loading.load_clip` and pass embeddings to :class:`Segmenter`.

        Args:
            text_cache: read and store a class list's embeddings in the user's cache folder
                (``cache_dir``, by default ``$XDG_CACHE_HOME/scclip``; see
                :class:`~scclip_cli.model.text_embeddings.EmbeddingCache`), and, for a deferred
                model, what its config says (:class:`~scclip_cli.model.loading.DeferredClip`).
            feature_cache: look each image's window features up there before running the model,
                and store them after. With an ``.npz`` vocabulary (or embeddings) the model then
                loads only when an image misses.
        """
        from scclip_cli.model.loading import DeferredClip, load_clip, precision_reason
        from scclip_cli.model.text_embeddings import (
            EmbeddingCache,
            QueryEmbeddings,
            load_embeddings,
            load_vocabulary_embeddings,
        )

        overrides: dict[str, Any] = dict(protocol_overrides or {})
        resolve_protocol(preset, protocol, **overrides)  # bad values fail before the (slow) load
        if isinstance(method, str):
            method = MethodConfig(name=method)  # validate before the (slow) model load
        embedded = isinstance(vocab, QueryEmbeddings) or (
            isinstance(vocab, str | Path) and Path(vocab).suffix.lower() == ".npz"
        )
        clip: LoadedClip | DeferredClip
        if feature_cache is not None and embedded:
            from scclip_cli.files.cache_store import default_cache_dir

            facts_dir = (
                (Path(cache_dir) if cache_dir else default_cache_dir()) if text_cache else None
            )
            clip = DeferredClip(
                model, pretrained, device, precision, release_text=True, facts_dir=facts_dir
            )
            if isinstance(vocab, QueryEmbeddings):
                embeddings = vocab
            else:
                assert isinstance(vocab, str | Path)
                embeddings = load_embeddings(vocab, expect_identity=clip.identity)
        else:
            clip = load_clip(model, pretrained, device=device, precision=precision)
            cache = EmbeddingCache(cache_dir) if text_cache else None
            embeddings = (
                vocab
                if isinstance(vocab, QueryEmbeddings)
                else load_vocabulary_embeddings(vocab, clip, cache=cache)
            )
            clip.release_text_tower()  # this model is ours and the vocabulary is embedded
        resolved = resolve_protocol(preset, protocol, depth=clip.depth, **overrides)
        used = applied_preset(preset, clip.depth) if protocol is None else None
        if calibration is None:
            calibration = calibration_for_depth(clip.depth)
        segmenter = cls(
            clip, embeddings, resolved, calibration, method, batch_size, feature_cache, preset=used
        )
        segmenter.precision_reason = precision_reason(precision, clip.device)
        return segmenter

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    @property
    def extractor(self) -> DenseFeatureExtractor:
        """The dense-feature extractor (building it loads a deferred model)."""
        if self._extractor is None:
            from scclip_cli.model.dense_features import DenseFeatureExtractor

            self._extractor = DenseFeatureExtractor(
                self.clip.model.visual, self.calibration, self.method
            )
        return self._extractor

    @property
    def model_loaded(self) -> bool:
        """Whether the model's weights are loaded (a deferred model loads on its first miss)."""
        return getattr(self.clip, "is_loaded", True)

    def feature_context(self) -> dict[str, Any]:
        """What window features depend on besides the image: the feature cache's key context.

        The model and its dtype, the method's feature options (not PAMR, which refines scores),
        the calibration, and the window geometry. Device type too: features computed on another
        device differ in the last bits.
        """
        method = dataclasses.asdict(self.method)
        method.pop("pamr_steps")
        method.pop("pamr_dilations")
        p = self.protocol
        return {
            "identity": dict(self.clip.identity),
            "dtype": str(self.clip.dtype),
            "device": self.device.type,
            "method": method,
            "calibration": dataclasses.asdict(self.calibration),
            "geometry": {
                "short_side": p.short_side,
                "long_side": p.long_side,
                "crop": p.crop,
                "stride": p.stride,
            },
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: model, weights, method, every protocol and calibration constant."""
        import torch

        return {
            "model": self.clip.model_name,
            "pretrained": self.clip.pretrained,
            "model_identity": dict(self.clip.identity),
            "device": str(self.device),
            "precision": str(self.clip.dtype).replace("torch.", ""),
            "precision_reason": self.precision_reason,
            "method": dataclasses.asdict(self.method),
            "preset": self.preset,
            "protocol": dataclasses.asdict(self.protocol),
            "calibration": dataclasses.asdict(self.calibration),
            "batch_size": self.batch_size,
            "num_classes": len(self._class_names),
            "num_queries": int(self.text.shape[0]),
            "class_names": list(self._class_names),
            "vocabulary_identity": dict(getattr(self.embeddings, "identity", {}) or {}),
            "feature_cache": None if self.feature_cache is None else str(self.feature_cache.folder),
            "torch": torch.__version__,
        }

    # ------------------------------------------------------------------ preparation
    def prepare(self, image: np.ndarray) -> PreparedImage:
        """Resize (as the reference: OpenCV-exact bilinear on uint8) and normalise one image.

        Args:
            image: ``[H, W, 3]`` uint8 RGB.
        """
        from scclip_cli.maps.resize import resize_for_protocol

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an [H, W, 3] uint8 RGB array, got {image.shape} {image.dtype}"
            )
        height, width = image.shape[:2]
        resized = resize_for_protocol(image, self.protocol.short_side, self.protocol.long_side)
        return self._prepared(resized, height, width)

    def _prepare_rows(self, source: RowSource) -> PreparedImage:
        """:meth:`prepare` of an ``[H, W, 3]`` uint8 RGB image served by rows (reading only those
        the resize blends); the same bits."""
        from scclip_cli.maps.resize import resize_rows_for_protocol

        height, width = source.shape[:2]
        short, long = self.protocol.short_side, self.protocol.long_side
        return self._prepared(resize_rows_for_protocol(source, short, long), height, width)

    def _prepared(self, resized: np.ndarray, height: int, width: int) -> PreparedImage:
        """Normalise the resized ``[h, w, 3]`` uint8 pixels of an ``height × width`` image."""
        from scclip_cli.files.image_io import normalize_image
        from scclip_cli.maps.sliding_window import pad_to_size

        pixels = normalize_image(resized)
        # A strip's short side can end up narrower than one patch, which the patch embedding cannot
        # take: pad it (edge pixels repeated) and crop the scores back (see _averaged_scores).
        patch = self.clip.patch_size
        h, w = resized.shape[:2]
        if h >= patch and w >= patch:
            return PreparedImage(pixels, height, width)
        return PreparedImage(pad_to_size(pixels, patch, patch), height, width, content=(h, w))

    def read(self, path: str | Path, *, keep_rgb: bool = False) -> ReadImage:
        """Read an image file for :meth:`segment_many` (on a reader thread, say).

        With a feature cache, the file's bytes are looked up first: when the cache holds the
        image's windows and no pixels are needed (no PAMR, no ``keep_rgb``), the file is not
        decoded at all (a :class:`CachedImage`). Otherwise it is decoded and prepared
        (:meth:`prepare`), carrying what the lookup found.

        Raises:
            ImageReadError: the file cannot be read as an image (as
                :func:`~scclip_cli.files.image_io.read_image_rgb`).
        """
        from scclip_cli.files.feature_cache import file_digest
        from scclip_cli.files.image_io import open_displayed, read_image_rgb

        path = Path(path)
        found = self._find_file(path)
        if found is not None:
            _, key, entry = found
            if (
                entry is not None
                and entry.sizes is not None
                and not keep_rgb
                and self.method.pamr_steps <= 0
                and self._usable(entry.windows, entry.sizes.pixels)
            ):
                sizes = entry.sizes
                return ReadImage(CachedImage(path, key, entry.windows, sizes), None)
        rgb = None
        if keep_rgb:
            rgb = read_image_rgb(path)
            prepared = self.prepare(rgb)
        else:  # the rows the resize reads, not the whole photo as an array
            with open_displayed(path) as shown:
                prepared = self._prepare_rows(shown)
        if found is not None and file_digest(path) != found[0]:
            found = None  # the file changed while it was read: look it up by its pixels instead
        if found is not None:
            _, key, entry = found
            windows = None
            if entry is not None and self._usable(entry.windows, prepared.pixels_size):
                windows = entry.windows
            elif entry is not None:
                self._discard(key)  # not what these windows make: recompute
            prepared = dataclasses.replace(prepared, cache_key=key, cached_windows=windows)
        return ReadImage(prepared, rgb)

    def _find_file(self, path: Path) -> tuple[str, str, FeatureEntry | None] | None:
        """The digest of an image file's bytes, its feature-cache key and what the cache holds
        there; ``None`` without a cache or when the file cannot be read (decoding it then says
        why)."""
        from scclip_cli.files.feature_cache import file_digest
        from scclip_cli.files.image_io import decoder_identity

        if self.feature_cache is None:
            return None
        digest = file_digest(path)
        if digest is None:
            return None
        if self._decoder is None:
            self._decoder = decoder_identity()
        key = self.feature_cache.file_key(digest, self._decoder, self.feature_context())
        return digest, key, self.feature_cache.get_entry(key)

    def _usable(self, windows: list[np.ndarray], pixels_size: tuple[int, int]) -> bool:
        """Whether cached windows are what this segmenter's windows over ``pixels_size`` make:
        their number and feature width (anything else is a damaged or foreign entry)."""
        from scclip_cli.maps.sliding_window import windows as window_grid

        p = self.protocol
        expected = len(window_grid(*pixels_size, p.crop, p.stride))
        width = self.text.shape[1]
        return len(windows) == expected and all(
            f.ndim == 3 and f.shape[2] == width for f in windows
        )

    def _discard(self, key: str) -> None:
        assert self.feature_cache is not None
        self.feature_cache.store.discard(key)

    # ------------------------------------------------------------------ segmentation
    def segment(self, image: np.ndarray | str | Path) -> Segmentation:
        """Segment one image: an ``[H, W, 3] uint8`` RGB array or a path (read with EXIF applied,
        by :meth:`read`)."""
        if isinstance(image, str | Path):
            return next(iter(self.segment_many([self.read(image).image])))
        return next(iter(self.segment_many([image])))

    def segment_many(
        self,
        images: Iterable[np.ndarray | PreparedImage | CachedImage],
        *,
        confidence: bool = True,
        statistics: bool = False,
    ) -> Iterator[Segmentation]:
        """Segment images in order, batching crops across images.

        Accepts ``[H, W, 3] uint8`` arrays, :class:`PreparedImage` (made by :meth:`prepare`) or
        what :meth:`read` made of a file (e.g. on a reader thread). Yields one
        :class:`Segmentation` per image, in input order, as soon as its last crop is scored.

        ``confidence=False`` leaves the confidence map out where the labels do not need it, which
        saves most of the post-processing of large images; ``statistics=True`` makes sure that
        :meth:`Segmentation.class_totals` has the confidence statistics. The labels (and the
        totals) are the same bits either way.

        The model runs on the calling thread; between forward passes, each image whose crops are
        all scored is post-processed (overlap averaging, upsampling, labels) in parts that run at
        once (:attr:`parts`), while the model's threads wait.
        """
        for job in self._scored_jobs(images):
            yield self._finish(job, confidence=confidence, statistics=statistics)

    def segment_variants(
        self,
        images: Iterable[np.ndarray | PreparedImage | CachedImage],
        protocols: Sequence[ProtocolConfig],
        *,
        confidence: bool = True,
        statistics: bool = False,
    ) -> Iterator[list[Segmentation]]:
        """Segment each image once per protocol, running the model (or reading the feature cache)
        once per image: yields, per image in order, one :class:`Segmentation` per protocol
        (``confidence`` and ``statistics`` as in :meth:`segment_many`).

        The protocols may differ from :attr:`protocol` in their post-processing only (logit scale,
        probability and area thresholds); each result is the same bits as :meth:`segment_many`
        of a segmenter with that protocol.

        Raises:
            ConfigError: a protocol with another resize or window geometry.
        """
        import torch

        from scclip_cli.maps.sliding_window import WindowCanvas

        geometry = ("short_side", "long_side", "crop", "stride")
        for protocol in protocols:
            if any(getattr(protocol, g) != getattr(self.protocol, g) for g in geometry):
                raise ConfigError("variants may change post-processing only, not the geometry")
        for job in self._scored_jobs(images, keep_features=True):
            assert job.features is not None
            results = []
            for protocol in protocols:
                h, w = job.prepared.pixels_size
                canvas = WindowCanvas(int(self.text.shape[0]), h, w, self.device, self.workspace)
                variant = _Job(job.prepared, job.windows, canvas, len(job.windows))
                with torch.inference_mode():
                    for index in range(len(job.windows)):
                        self._add_window(variant, index, job.features[index])
                results.append(
                    self._finish(variant, protocol, confidence=confidence, statistics=statistics)
                )
            yield results

    def scores(self, image: np.ndarray | PreparedImage | CachedImage) -> np.ndarray:
        """``[Q, H, W]`` float32 cosine scores at the original size (before the logit scale; refined
        by PAMR when ``method.pamr_steps > 0``).

        Materialises every query at full resolution: meant for diagnostics and parity tests.
        """
        import torch

        from scclip_cli.maps.postprocess import upsample_scores

        job = next(self._scored_jobs([image]))
        prepared = job.prepared
        with self._finishing_lock, torch.inference_mode():
            full = upsample_scores(self._averaged_scores(job), prepared.height, prepared.width)
            return full.contiguous().cpu().numpy()

    def _scored_jobs(
        self,
        images: Iterable[np.ndarray | PreparedImage | CachedImage],
        keep_features: bool = False,
    ) -> Iterator[_Job]:
        from scclip_cli.maps.sliding_window import WindowCanvas, windows

        p = self.protocol
        pending: deque[_Job] = deque()
        batch: list[tuple[_Job, int, torch.Tensor]] = []
        for image in images:
            prepared = (
                image if isinstance(image, PreparedImage | CachedImage) else self.prepare(image)
            )
            if isinstance(prepared, CachedImage) and self.method.pamr_steps > 0:
                raise ConfigError(
                    f"{prepared.path}: PAMR needs the image's pixels; read it with this "
                    "segmenter's read(), which decodes it"
                )
            h, w = prepared.pixels_size
            job_windows = windows(h, w, p.crop, p.stride)
            canvas = WindowCanvas(int(self.text.shape[0]), h, w, self.device, self.workspace)
            job = _Job(prepared, job_windows, canvas, len(job_windows))
            if keep_features:
                job.features, job.keep = {}, True
            pending.append(job)
            if self._from_cache(job):
                job.remaining = 0
            for index, win in enumerate(job_windows if job.remaining else []):
                assert isinstance(prepared, PreparedImage)  # a CachedImage is always a hit
                crop = prepared.pixels[:, win.y1 : win.y2, win.x1 : win.x2]
                if batch and (len(batch) == self.batch_size or batch[0][2].shape != crop.shape):
                    self._run_batch(batch)
                    batch = []
                batch.append((job, index, crop))
            while pending and pending[0].remaining == 0:
                yield pending.popleft()
        if batch:
            self._run_batch(batch)
        while pending:
            yield pending.popleft()

    def _run_batch(self, batch: list[tuple[_Job, int, torch.Tensor]]) -> None:
        """Dense features → cosine scores → each window's patch scores into its image's canvas
        (and, for images to be cached, each window's features kept until the image is whole)."""
        import torch

        crops = torch.stack([crop for _, _, crop in batch])
        if self.device.type == "cuda":
            crops = crops.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            dense = self.extractor(crops.to(self.clip.dtype)).float()  # [B, gh, gw, D]
            dense = dense / dense.norm(dim=-1, keepdim=True)
            for (job, index, _), features in zip(batch, dense, strict=True):
                if job.features is not None:
                    job.features[index] = features
                self._add_window(job, index, features)
                if job.remaining == 0 and job.cache_key is not None:
                    self._store(job)

    def _add_window(self, job: _Job, index: int, features: torch.Tensor) -> None:
        """One window's ``[gh, gw, D]`` float32 unit features → ``[gh, gw, Q]`` cosine scores into
        its image's canvas (kept as patches until post-processing).

        One product per window, whether the features were just computed or read from the
        feature cache, so both give the same bits.
        """
        job.canvas.add_patches(job.windows[index], features @ self.text.T)
        job.remaining -= 1

    def _from_cache(self, job: _Job) -> bool:
        """Score ``job`` from the feature cache when it holds its windows' features; otherwise
        mark it to be stored there once computed (with a cache). Returns whether it was a hit.

        An image that :meth:`read` looked up already brings what it found (a
        :class:`CachedImage`, or :attr:`PreparedImage.cached_windows`); any other is looked up
        here by its pixels."""
        import torch

        from scclip_cli.files.feature_cache import pixels_digest

        prepared = job.prepared
        found: list[np.ndarray] | None
        if isinstance(prepared, CachedImage):
            found = prepared.windows  # checked by read()
        elif self.feature_cache is None:
            return False
        elif prepared.cache_key is not None:
            key, found = prepared.cache_key, prepared.cached_windows  # checked by read()
        else:
            key = self.feature_cache.key(
                pixels_digest(prepared.pixels.numpy()), self.feature_context()
            )
            found = self.feature_cache.get(key)
            if found is not None and not self._usable(found, prepared.pixels_size):
                self._discard(key)  # not what these windows make: recompute
                found = None
        if found is None:
            job.cache_key = key
            if job.features is None:
                job.features = {}
            return False
        with torch.inference_mode():
            for index, array in enumerate(found):
                features = torch.empty(array.shape, dtype=torch.float32)  # aligned, as computed
                np.copyto(features.numpy(), array)  # one copy (the cached arrays are read-only)
                features = features.to(self.device)
                if job.features is not None:
                    job.features[index] = features
                self._add_window(job, index, features)
        return True

    def _store(self, job: _Job) -> None:
        from scclip_cli.files.feature_cache import ImageSizes

        assert self.feature_cache is not None and job.features is not None
        assert job.cache_key is not None
        windows = [job.features[i].cpu().numpy() for i in range(len(job.windows))]
        if not job.keep:
            job.features = None
        p = job.prepared
        sizes = ImageSizes(p.height, p.width, p.pixels_size, p.content)
        self.feature_cache.put(job.cache_key, windows, sizes)

    def _averaged_scores(self, job: _Job) -> WindowCanvas | torch.Tensor:
        """Window-averaged scores: the canvas itself (whose window patches post-processing takes
        straight to the original size, or reads by rows once built: see
        :func:`~scclip_cli.maps.postprocess.make_resizer`), or, when ``method.pamr_steps > 0``, the
        ``[Q, h, w]`` float32 tensor at the resized size refined by PAMR, or cropped to the image
        when it was padded (:attr:`PreparedImage.content`).

        PAMR runs here, on the resized image, rather than at the original size as in the reference,
        so memory stays bounded (see :mod:`scclip_cli.maps.pamr`).
        """
        content = job.prepared.content
        if self.method.pamr_steps <= 0 and content is None:
            return job.canvas
        job.canvas.build(self.parts)
        scores = job.canvas.average()
        if content is not None:  # a padded strip: only its own pixels count
            scores = scores[:, : content[0], : content[1]].contiguous()
        if self.method.pamr_steps <= 0:
            return scores
        from scclip_cli.maps.pamr import refine

        assert isinstance(job.prepared, PreparedImage)  # read() decodes every image PAMR refines
        pixels = job.prepared.pixels
        if content is not None:
            pixels = pixels[:, : content[0], : content[1]]
        pixels = pixels.to(scores.device)
        return refine(scores, pixels, self.method.pamr_steps, self.method.pamr_dilations)

    def _finish(
        self,
        job: _Job,
        protocol: ProtocolConfig | None = None,
        *,
        confidence: bool = True,
        statistics: bool = False,
    ) -> Segmentation:
        import torch

        from scclip_cli.maps.postprocess import labels_from_scores

        with self._finishing_lock, torch.inference_mode():
            result = labels_from_scores(
                self._averaged_scores(job),
                job.prepared.height,
                job.prepared.width,
                self.query_class,
                len(self._class_names),
                protocol or self.protocol,
                workspace=self.workspace,
                runner=self.parts,
                confidence=confidence,
                statistics=statistics,
            )
        return Segmentation(
            labels=result.labels.cpu().numpy(),  # int32
            confidence=None if result.confidence is None else result.confidence.cpu().numpy(),
            class_names=self._class_names,
            totals=result.totals,
        )
