"""Similarity, sparsification, aggregation and similarity attention (per crop)."""

import torch

from scclip_cli.model import affinity


def test_cosine_similarity_and_sparsify():
    x = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]])
    s = affinity.cosine_similarity(x)
    torch.testing.assert_close(s.diagonal(dim1=1, dim2=2), torch.ones(1, 3))
    assert abs(s[0, 0, 1].item() - 2**-0.5) < 1e-6 and abs(s[0, 0, 2].item()) < 1e-6
    sp = affinity.sparsify(s, 0.8)
    assert sp[0, 0, 1] == 0 and sp[0, 0, 0] == 1


def test_aggregate_is_row_normalised_average():
    f = torch.tensor([[[1.0], [3.0], [10.0]]])
    s = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    out = affinity.aggregate(f, s, eps=1e-6)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([2.0, 3.0, 0.0]), atol=1e-5, rtol=0)


def test_similarity_attention_mean_is_per_crop():
    g = torch.Generator().manual_seed(0)
    a = affinity.cosine_similarity(torch.randn(1, 12, 4, generator=g))
    b = affinity.cosine_similarity(torch.randn(1, 12, 4, generator=g))
    both = affinity.similarity_attention(torch.cat([a, b]), 3.0)
    torch.testing.assert_close(both[0], affinity.similarity_attention(a, 3.0)[0])
    torch.testing.assert_close(both[1], affinity.similarity_attention(b, 3.0)[0])
    torch.testing.assert_close(both.sum(-1), torch.ones(2, 12))
    # entries below the crop's mean similarity get no weight
    below = a[0] < a[0].mean()
    assert torch.all(both[0][below] == 0)
