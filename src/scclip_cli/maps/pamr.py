"""Pixel-Adaptive Mask Refinement (PAMR; Araslanov & Roth, CVPR 2020) of class score maps.

PAMR smooths score maps along the image: each pixel's scores become a weighted mean of its
neighbours' scores, with weights from the colour differences, iterated a few times. Written from
the paper's definition:

* Neighbours: the 8 cells of a 3×3 window dilated by each ``d`` in ``dilations``
  (``P = 8 · len(dilations)``), with replicate padding at the image border.
* Local spread: ``σ_c(x)``, the unbiased standard deviation of channel ``c`` over the
  ``9 · len(dilations)`` samples of those windows (the centre once per dilation).
* Kernel: ``κ(x, p) = softmax_p( mean_c -|I_c(x + δ_p) - I_c(x)| / (1e-8 + 0.1 · σ_c(x)) )``.
* One step: ``m(x) ← Σ_p κ(x, p) · m(x + δ_p)`` for every class map (the centre is not a term).

Because every channel difference is divided by that channel's own local spread, the kernel does
not change under a per-channel affine map of the image: normalised or raw pixels, RGB or BGR give
the same weights (up to the ``1e-8``).

SC-CLIP's code (``pamr_steps``, ``pamr_stride=(8, 16)``) applies it to the logits upsampled to the
original image size. scclip applies it to the averaged window scores at the *resized* size, with the
resized normalised image, before the tiled upsampling, so memory stays bounded by the resized image
(see :mod:`scclip_cli.maps.postprocess`). Dilations are therefore in resized pixels.
"""

from __future__ import annotations

import torch

SPREAD_SCALE = 0.1
"""Colour differences are divided by this × the local standard deviation (the paper's 0.1)."""
SPREAD_EPS = 1e-8
"""Added to the scaled local standard deviation, so flat regions get uniform weights."""
CHUNK_ELEMENTS = 1 << 24
"""Upper bound on ``classes × pixels`` refined at once (score maps are refined in class chunks)."""

_RING = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _offsets(dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(dy, dx)`` in pixels of the ``P = 8 · len(dilations)`` neighbours."""
    return [(dy * d, dx * d) for d in dilations for dy, dx in _RING]


def _replicate_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Replicate-pad the last two axes of ``[B, C, H, W]`` by ``pad`` (any size, unlike F.pad)."""
    height, width = x.shape[-2:]
    rows = torch.arange(-pad, height + pad, device=x.device).clamp(0, height - 1)
    cols = torch.arange(-pad, width + pad, device=x.device).clamp(0, width - 1)
    return x[..., rows, :][..., cols]


def _shifted(
    padded: torch.Tensor, pad: int, dy: int, dx: int, height: int, width: int
) -> torch.Tensor:
    """``x(· + (dy, dx))`` from a ``pad``-padded ``[..., H + 2 pad, W + 2 pad]`` tensor."""
    return padded[..., pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def affinity_kernel(image: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """PAMR's per-pixel weights over the dilated 3×3 neighbours.

    Args:
        image: ``[B, C, H, W]`` float image (any per-channel normalisation).
        dilations: positive neighbourhood dilations in pixels.
    Returns:
        ``[B, P, H, W]`` float32 weights (softmax over ``P = 8 · len(dilations)``; each pixel's sum
        to 1), in the order of :func:`_offsets`.
    """
    image = image.float()
    height, width = image.shape[-2:]
    pad = max(dilations)
    padded = _replicate_pad(image, pad)

    # local standard deviation over the 9 samples of each dilated window (centre once per dilation)
    windows = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    mean = torch.zeros_like(image)
    for dy, dx in windows:
        mean += _shifted(padded, pad, dy, dx, height, width)
    mean /= len(windows)
    variance = torch.zeros_like(image)
    for dy, dx in windows:
        variance += (_shifted(padded, pad, dy, dx, height, width) - mean).square()
    spread = (variance / (len(windows) - 1)).sqrt()  # [B, C, H, W]
    scale = SPREAD_EPS + SPREAD_SCALE * spread

    logits = torch.stack(
        [
            -((_shifted(padded, pad, dy, dx, height, width) - image).abs() / scale).mean(1)
            for dy, dx in _offsets(dilations)
        ],
        dim=1,
    )  # [B, P, H, W]
    return torch.softmax(logits, dim=1)


def _propagate(
    scores: torch.Tensor, kernel: torch.Tensor, dilations: tuple[int, ...]
) -> torch.Tensor:
    """One PAMR step: ``[B, K, H, W]`` scores → ``Σ_p kernel_p · scores(· + δ_p)``."""
    height, width = scores.shape[-2:]
    pad = max(dilations)
    padded = _replicate_pad(scores, pad)
    out = torch.zeros_like(scores)
    for p, (dy, dx) in enumerate(_offsets(dilations)):
        out += kernel[:, p : p + 1] * _shifted(padded, pad, dy, dx, height, width)
    return out


def refine(
    scores: torch.Tensor,
    image: torch.Tensor,
    steps: int,
    dilations: tuple[int, ...] = (8, 16),
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Refine class score maps along the image's colour edges (PAMR), ``steps`` times.

    Args:
        scores: ``[K, H, W]`` or ``[B, K, H, W]`` float scores (any monotone scale: cosine scores or
            logits; each class map is refined on its own).
        image: ``[C, H, W]`` or ``[B, C, H, W]`` float image of the same size (e.g. the normalised
            resized image).
        steps: iterations; 0 returns ``scores`` unchanged.
        dilations: neighbourhood dilations in pixels (the reference's ``pamr_stride``).
        chunk_elements: bound on ``classes × pixels`` refined at once (memory).
    Returns:
        Refined scores, same shape as ``scores``, float32 (``scores`` itself when ``steps == 0``).
    """
    if steps < 0:
        raise ValueError(f"PAMR steps must be >= 0, got {steps}")
    if not dilations or min(dilations) < 1:
        raise ValueError(f"PAMR dilations must be positive, got {dilations}")
    if steps == 0:
        return scores
    unbatched = scores.dim() == 3
    if unbatched:
        scores, image = scores[None], image[None]
    if scores.shape[0] != image.shape[0] or scores.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"scores {tuple(scores.shape)} and image {tuple(image.shape)} differ in batch or size"
        )
    kernel = affinity_kernel(image.to(scores.device), tuple(dilations))
    scores = scores.float()
    out = torch.empty_like(scores)
    classes = scores.shape[1]
    step = max(1, chunk_elements // max(1, scores.shape[0] * scores.shape[-2] * scores.shape[-1]))
    for start in range(0, classes, step):
        chunk = scores[:, start : start + step]
        for _ in range(steps):
            chunk = _propagate(chunk, kernel, tuple(dilations))
        out[:, start : start + step] = chunk
    return out[0] if unbatched else out
