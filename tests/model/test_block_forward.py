"""QuickGELU folded into the feed-forward's matrix products gives open_clip's block, up to rounding."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, Transformer
from torch import nn

from scclip_cli.model.block_forward import (
    block_forward,
    feed_forward,
    quick_gelu_linears,
    transformer_forward,
)


def _block(
    act: type[nn.Module] = QuickGELU, ls: float | None = None, batch_first: bool = True
) -> ResidualAttentionBlock:
    torch.manual_seed(3)
    block = ResidualAttentionBlock(
        32, 4, act_layer=act, ls_init_value=ls, batch_first=batch_first
    ).eval()
    with torch.no_grad():  # biases are zero at init: make them count
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return block


def _tokens(batch_first: bool = True) -> torch.Tensor:
    torch.manual_seed(4)
    x = torch.randn(3, 17, 32) * 2  # [B, T, W]
    return x if batch_first else x.transpose(0, 1).contiguous()


@pytest.mark.parametrize("ls", [None, 0.5])
@pytest.mark.parametrize("batch_first", [True, False])
def test_quick_gelu_block_matches_open_clip(ls, batch_first):
    block, x = _block(ls=ls, batch_first=batch_first), _tokens(batch_first)
    assert quick_gelu_linears(block) is not None
    before = {k: v.clone() for k, v in block.state_dict().items()}
    with torch.inference_mode():
        expected, got = block(x), block_forward(block, x)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for key, value in block.state_dict().items():  # nothing scaled in place
        assert torch.equal(value, before[key]), key


def test_feed_forward_matches_mlp_on_any_leading_shape():
    block = _block()
    x = torch.randn(2, 5, 7, 32)
    with torch.inference_mode():
        torch.testing.assert_close(feed_forward(block, x), block.mlp(x), rtol=1e-5, atol=1e-5)


def test_folded_scale_is_the_quick_gelu_constant():
    """A wrong constant (1.7 instead of 1.702) must show: this is what the fold relies on."""
    block = _block()
    x = torch.randn(50, 32, generator=torch.Generator().manual_seed(3)) * 4
    with torch.inference_mode():
        exact = block.mlp(x)
        got = feed_forward(block, x)
        fc, proj = block.mlp.c_fc, block.mlp.c_proj
        wrong = proj(torch.nn.functional.silu(1.7 * fc(x)) / 1.7)
    # float32 rounding grows with the magnitude of the outputs (up to ~15 here): compare relatively
    rounding = 1e-6 * exact.abs().max()
    assert (got - exact).abs().max() < 4 * rounding
    assert (wrong - exact).abs().max() > 20 * rounding


@pytest.mark.parametrize("act", [nn.GELU, nn.SiLU])
def test_other_activations_run_open_clips_own_forward(act):
    block, x = _block(act=act), _tokens()
    assert quick_gelu_linears(block) is None
    with torch.inference_mode():
        assert torch.equal(block_forward(block, x), block(x))
        assert torch.equal(feed_forward(block, x), block.mlp(x))


def test_cross_attention_block_runs_its_own_forward():
    """A cross-attention block (its own ``ln_1_kv``) goes through its ``forward``, not the folded
    path: the hook sees the call, and the result is the forward's, bit for bit."""
    block = ResidualAttentionBlock(32, 4, act_layer=QuickGELU, is_cross_attention=True).eval()
    with torch.no_grad():  # ln_1_kv apart from ln_1, so a path that skips it would show
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x = _tokens()
    calls: list[torch.Tensor] = []
    block.register_forward_hook(lambda module, args, output: calls.append(output))
    with torch.inference_mode():
        got = block_forward(block, x)
        assert len(calls) == 1
        assert got is calls[0]
        assert torch.equal(got, block(x))


@pytest.mark.parametrize("batch_first", [True, False])
def test_causal_transformer_matches_open_clip(batch_first):
    """The text tower's path: every block, with the causal mask."""
    torch.manual_seed(5)
    tower = Transformer(32, 3, 4, act_layer=QuickGELU, batch_first=batch_first).eval()
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x = torch.randn(3, 9, 32)  # [B, T, W]
    mask = torch.full((9, 9), float("-inf")).triu(1)
    with torch.inference_mode():
        expected = tower(x, attn_mask=mask)
        got = transformer_forward(tower, x, mask)
        unmasked = transformer_forward(tower, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (unmasked - expected).abs().max() > 1e-2  # the mask is applied
