"""Patch-to-patch affinities of a middle layer and the feature aggregation they drive (per crop)."""

from __future__ import annotations

import torch


def cosine_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of tokens in each crop.

    Args:
        tokens: ``[B, N, C]``.
    Returns:
        ``[B, N, N]`` in the tokens' dtype.
    """
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    return unit @ unit.transpose(1, 2)


def sparsify(similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero the entries below ``threshold`` (beta). ``[B, N, N] -> [B, N, N]``."""
    return similarity.masked_fill(similarity < threshold, 0.0)


def aggregate(features: torch.Tensor, similarity: torch.Tensor, eps: float) -> torch.Tensor:
    """Average each token's features over the tokens it is similar to.

    ``agg(F, S) = (S / (rowsum(S) + eps)) @ F``.

    Args:
        features: ``[B, N, C]``.
        similarity: ``[B, N, N]`` non-negative affinities.
    Returns:
        ``[B, N, C]``.
    """
    weights = similarity / (similarity.sum(dim=-1, keepdim=True) + eps)
    return weights @ features


def similarity_attention(similarity: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Attention weights from a similarity map, as the last block's enhancement term.

    ``softmax(row, M)`` with ``M = sharpness · (S − mean(S))`` and entries ``M < 0`` masked out. The
    mean is over all ``N × N`` entries *of each crop*. The diagonal (1, above the mean) keeps every
    row non-empty.

    Args:
        similarity: ``[B, N, N]``.
    Returns:
        ``[B, N, N]`` row-stochastic weights.
    """
    centred = (similarity - similarity.mean(dim=(1, 2), keepdim=True)) * sharpness
    centred = centred.masked_fill(centred < 0.0, float("-inf"))
    return torch.softmax(centred, dim=-1)
