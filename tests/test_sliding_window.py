"""Window placement and overlap averaging."""

import pytest
import torch

from scclip_cli.sliding_window import Window, WindowCanvas, axis_spans, windows


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
