"""From averaged window scores to labels, tile by tile at the original image size.

The reference upsamples the whole ``[Q, H, W]`` score tensor to the original size and then takes the
argmax. Here each tile of output rows is upsampled, turned into class probabilities and reduced to a
label and a confidence before the next, so memory grows with ``Q × tile`` rather than ``Q × H × W``.
The bilinear arithmetic is PyTorch's ``interpolate(mode="bilinear", align_corners=False)``.

Post-processing rules (the reference's): scores × logit scale, softmax over queries, max over each
class's synonyms; the area rule zeroes classes 1.. whose predicted area is at most
``area_threshold`` × the foreground area, before the argmax; pixels whose best class probability is
below ``prob_threshold`` become class 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scclip_cli.config import ProtocolConfig

TILE_ELEMENTS = 1 << 24
"""Upper bound on ``Q × tile rows × W`` elements materialised at once (64 MiB of float32)."""


def _source_index(
    out_size: int, in_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output position: lower source index, upper source index and the upper weight (float32)."""
    scale = in_size / out_size
    dst = torch.arange(out_size, device=device, dtype=torch.float32)
    src = ((dst + 0.5) * scale - 0.5).clamp_min(0.0)
    lo = src.to(torch.long)
    hi = torch.clamp(lo + 1, max=in_size - 1)
    return lo, hi, src - lo.to(torch.float32)


@dataclass
class BilinearResizer:
    """Row-tiled bilinear upsampling of a ``[Q, h, w]`` map to ``[Q, H, W]``."""

    source: torch.Tensor  # [Q, h, w] float32
    out_height: int
    out_width: int

    def __post_init__(self) -> None:
        device = self.source.device
        _, h, w = self.source.shape
        self._rows = _source_index(self.out_height, h, device)
        self._cols = _source_index(self.out_width, w, device)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Output rows ``start:stop`` as ``[Q, stop - start, W]`` float32."""
        lo, hi, frac = (t[start:stop] for t in self._rows)
        src = self.source
        top, bottom = src[:, lo], src[:, hi]  # [Q, rows, w]
        f = frac[None, :, None]
        blended = top * (1 - f) + bottom * f
        clo, chi, cfrac = self._cols
        g = cfrac[None, None, :]
        return blended[:, :, clo] * (1 - g) + blended[:, :, chi] * g


def class_probabilities(
    scores: torch.Tensor, query_class: torch.Tensor, num_classes: int, logit_scale: float
) -> torch.Tensor:
    """``[Q, ...]`` cosine scores → ``[K, ...]`` class probabilities (softmax over queries, max over synonyms)."""
    probs = torch.softmax(scores * logit_scale, dim=0)
    if num_classes == probs.shape[0]:
        return probs
    out = probs.new_zeros((num_classes, *probs.shape[1:]))
    index = query_class.view(-1, *([1] * (probs.dim() - 1))).expand_as(probs)
    return out.scatter_reduce_(0, index, probs, reduce="amax", include_self=True)


@dataclass(frozen=True)
class LabelMap:
    labels: torch.Tensor  # [H, W] int64
    confidence: torch.Tensor  # [H, W] float32


def labels_from_scores(
    scores: torch.Tensor,
    out_height: int,
    out_width: int,
    query_class: torch.Tensor,
    num_classes: int,
    protocol: ProtocolConfig,
    tile_elements: int = TILE_ELEMENTS,
) -> LabelMap:
    """Upsample averaged window scores to the original size and post-process, tile by tile.

    Args:
        scores: ``[Q, h, w]`` float32 cosine scores at the resized size.
        query_class: ``[Q]`` int64 class of each query.
    Returns:
        labels ``[H, W]`` int64 and confidence ``[H, W]`` float32 on ``scores.device``.
    """
    resizer = BilinearResizer(scores, out_height, out_width)
    q = scores.shape[0]
    step = max(1, tile_elements // max(1, q * out_width))
    device = scores.device
    labels = torch.empty(out_height, out_width, dtype=torch.long, device=device)
    confidence = torch.empty(out_height, out_width, dtype=torch.float32, device=device)

    def run(keep: torch.Tensor | None) -> None:
        for start in range(0, out_height, step):
            stop = min(start + step, out_height)
            probs = class_probabilities(
                resizer.rows(start, stop), query_class, num_classes, protocol.logit_scale
            )
            if keep is not None:
                probs = probs * keep[:, None, None]
            best, index = probs.max(dim=0)
            labels[start:stop] = index
            confidence[start:stop] = best

    run(None)
    if protocol.area_threshold is not None and num_classes > 1:
        area = torch.bincount(labels.flatten(), minlength=num_classes)[1:].to(torch.float64)
        keep_fg = area > protocol.area_threshold * area.sum()
        # Removing a class no pixel chose cannot change any pixel: rerun only if a chosen one goes.
        if bool((~keep_fg & (area > 0)).any()):
            keep = torch.cat([keep_fg.new_ones(1), keep_fg]).to(torch.float32)
            run(keep)
    if protocol.prob_threshold > 0:
        labels[confidence < protocol.prob_threshold] = 0
    return LabelMap(labels, confidence)


def upsample_scores(scores: torch.Tensor, out_height: int, out_width: int) -> torch.Tensor:
    """The full ``[Q, H, W]`` upsampled scores (memory-heavy; for tests and diagnostics)."""
    return BilinearResizer(scores, out_height, out_width).rows(0, out_height)
