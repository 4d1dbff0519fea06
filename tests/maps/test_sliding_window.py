"""Window placement and overlap averaging."""

import pytest
import torch

from scclip_cli.maps.sliding_window import Window, WindowCanvas, axis_spans, windows


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (336, [(0, 224), (112, 336)]),
        (504, [(0, 224), (112, 336), (224, 448), (280, 504)]),
        (224, [(0, 224)]),
        (100, [(0, 100)]),  # smaller than the crop: one window of its own size
        (225, [(0, 224), (1, 225)]),
    ],
)
def test_axis_spans(size, expected):
    assert axis_spans(size, 224, 112) == expected


def test_windows_cover_every_pixel_rows_first():
    ws = windows(336, 504, 224, 112)
    assert len(ws) == 8
    assert ws[0] == Window(0, 224, 0, 224) and ws[1] == Window(0, 224, 112, 336)
    canvas = WindowCanvas(2, 336, 504, torch.device("cpu"))
    for w in ws:
        canvas.add(w, torch.ones(2, w.y2 - w.y1, w.x2 - w.x1) * (w.x1 + 1))
    avg = canvas.average()
    assert canvas.count.min() >= 1
    # pixel (0, 0) is covered only by the first window
    assert avg[0, 0, 0] == 1
    # pixel (0, 150) is covered by windows starting at x=0 and x=112: mean of 1 and 113
    assert avg[1, 0, 150] == pytest.approx(57)


def test_uncovered_canvas_is_a_bug():
    canvas = WindowCanvas(1, 4, 4, torch.device("cpu"))
    with pytest.raises(RuntimeError):
        canvas.average()


@pytest.mark.parametrize("queries", [3, 8, 200])
@pytest.mark.parametrize("size", [(336, 448), (504, 336), (336, 597)])  # coverage 1 to 4; 3
def test_canvas_is_the_eager_interpolate_sum_bit_for_bit(queries, size):
    """Windows upsampled by F.interpolate's kernel (in channel groups), summed in order, averaged."""
    import torch.nn.functional as F

    ws = windows(*size, 224, 112)
    patches = torch.randn(len(ws), 14, 14, queries, generator=torch.Generator().manual_seed(0))
    canvas = WindowCanvas(queries, *size, torch.device("cpu"))
    total, count = torch.zeros(queries, *size), torch.zeros(size)
    for w, p in zip(ws, patches, strict=True):
        canvas.add_patches(w, p)
        # the reference: a channels-last [1, Q, 14, 14] view, as the patch scores come out
        up = F.interpolate(
            p.permute(2, 0, 1)[None], size=(224, 224), mode="bilinear", align_corners=False
        )[0]
        total[:, w.y1 : w.y2, w.x1 : w.x2] += up
        count[w.y1 : w.y2, w.x1 : w.x2] += 1
    assert {1, 2, 4} <= set(count.unique().tolist())
    assert torch.equal(canvas.average(), total / count)
    assert torch.equal(canvas.rows(100, 130), (total / count).permute(1, 2, 0)[100:130])


def test_channel_groups_are_aligned():
    from scclip_cli.maps.sliding_window import channel_groups

    assert channel_groups(150) == [(0, 150)]
    assert channel_groups(200) == [(0, 128), (128, 200)]
    assert channel_groups(300) == [(0, 128), (128, 300)]  # a short remainder joins the last group
    for q in (1, 64, 129, 1000):
        groups = channel_groups(q)
        assert groups[0][0] == 0 and groups[-1][1] == q
        assert all(a % 64 == 0 for a, _ in groups)
        assert len(groups) == 1 or groups[-1][1] - groups[-1][0] >= 64
