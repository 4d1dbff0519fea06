"""One open_clip transformer block, with QuickGELU's feed-forward in one element-wise pass.

OpenAI's CLIP weights were trained with QuickGELU, ``y · σ(1.702 y)``, which open_clip computes in
three passes over the ``[B, T, 4W]`` hidden activations (a multiplication, a sigmoid and another
multiplication; on noise the sigmoid also underflows to slow denormals). The same function is
``SiLU(1.702 y) / 1.702``, and both scale factors fold into the matrix products around it:

    c_proj(QuickGELU(c_fc(x))) = b_proj + (1 / 1.702) · SiLU(1.702 · (x W_fcᵀ + b_fc)) W_projᵀ

``torch.addmm``'s ``alpha`` and ``beta`` apply them inside the GEMM, so the activation is one
in-place SiLU pass (docs/performance.md has the measurement) and no weight is copied or changed: the model stays open_clip's, which other code may
share. The result equals open_clip's up to float rounding (about 1e-6 relative on the hidden
activations; the golden parity tests pin the whole method).

Blocks of any other shape (another activation, cross-attention, quantised linears, custom blocks)
run through their own ``forward``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn

QUICK_GELU_SCALE = 1.702
"""The constant of QuickGELU, ``y · σ(1.702 y)`` (open_clip's ``QuickGELU``)."""


def quick_gelu_linears(block: Any) -> tuple[nn.Linear, nn.Linear] | None:
    """``(c_fc, c_proj)`` when ``block.mlp`` is exactly ``Linear → QuickGELU → Linear``, else None."""
    mlp = getattr(block, "mlp", None)
    if not isinstance(mlp, nn.Sequential) or len(mlp) != 3:
        return None
    fc, act, proj = mlp
    if type(fc) is not nn.Linear or type(proj) is not nn.Linear or type(act) is not QuickGELU:
        return None
    if fc.bias is None or proj.bias is None:
        return None
    return fc, proj


def feed_forward(block: Any, x: torch.Tensor) -> torch.Tensor:
    """``block.mlp(x)`` for ``x [..., W]``, QuickGELU as one SiLU pass where the block allows it.

    Returns ``[..., W]`` in ``x``'s dtype.
    """
    linears = quick_gelu_linears(block)
    if linears is None:
        return block.mlp(x)
    fc, proj = linears
    flat = x.reshape(-1, x.shape[-1])
    hidden = torch.addmm(
        fc.bias, flat, fc.weight.t(), beta=QUICK_GELU_SCALE, alpha=QUICK_GELU_SCALE
    )  # 1.702 · c_fc(x), [M, 4W]
    F.silu(hidden, inplace=True)  # 1.702 · QuickGELU(c_fc(x))
    out = torch.addmm(proj.bias, hidden, proj.weight.t(), alpha=1.0 / QUICK_GELU_SCALE)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def is_plain_block(block: Any) -> bool:
    """True for open_clip's own ``ResidualAttentionBlock`` used as self-attention (no ``ln_1_kv``)."""
    return type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv")


def block_forward(
    block: Any, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``block(x, attn_mask=attn_mask)`` (self-attention) with :func:`feed_forward` for the MLP.

    ``x`` is ``[B, T, W]`` or ``[T, B, W]``, as the block's attention expects; ``attn_mask``
    ``[T, T]`` additive, as open_clip's (the text tower's causal mask).
    """
    if not is_plain_block(block) or quick_gelu_linears(block) is None:
        return block(x, attn_mask=attn_mask)
    x = x + block.ls_1(block.attention(q_x=block.ln_1(x), attn_mask=attn_mask))
    return x + block.ls_2(feed_forward(block, block.ln_2(x)))


def transformer_forward(
    transformer: Any, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """open_clip's ``Transformer.forward`` (inference) with :func:`block_forward` for each block:
    ``[B, T, W] -> [B, T, W]``."""
    batch_first = bool(getattr(transformer, "batch_first", True))
    if not batch_first:
        x = x.transpose(0, 1)
    for block in transformer.resblocks:
        x = block_forward(block, x, attn_mask)
    return x if batch_first else x.transpose(0, 1)
