"""Post-processing straight from window patch scores against the canvas route and the reference."""

import pytest
import torch
import torch.nn.functional as F

import scclip_cli.maps.window_resize as window_resize
from scclip_cli.config import ProtocolConfig
from scclip_cli.maps.parts import IN_ORDER, PartThreads
from scclip_cli.maps.postprocess import labels_from_scores, make_resizer
from scclip_cli.maps.sliding_window import Window, WindowCanvas, windows
from scclip_cli.maps.window_resize import WindowPatches, WindowResizer, axis_map
from scclip_cli.maps.workspace import Workspace
from support.torch_threads import torch_threads

# (resized h, w, crop, stride, patch grid, output H, W): two windows per axis; three windows over
# one row band (a window flush with the border); an image smaller than the crop (one window)
GEOMETRIES = [
    (150, 200, 112, 56, 7, 301, 397),
    (200, 150, 112, 56, 7, 97, 77),
    (100, 90, 224, 112, 5, 37, 51),
]


def _patches(h, w, crop, stride, grid, queries, seed=0, smooth=False):
    g = torch.Generator().manual_seed(seed)
    wins = windows(h, w, crop, stride)
    if smooth:  # regions that span windows: most pixels have one best query around them
        field = torch.randn(queries, 3, 4, generator=g)
        field = F.interpolate(field[None], size=(h, w), mode="bilinear")[0]
        scores = [
            F.adaptive_avg_pool2d(field[:, y1:y2, x1:x2], grid).permute(1, 2, 0).contiguous()
            for y1, y2, x1, x2 in wins
        ]
    else:
        scores = [torch.randn(grid, grid + 1, queries, generator=g) * 0.1 for _ in wins]
    return wins, scores


def _canvas_reference(h, w, wins, scores, out_h, out_w):
    """The reference: each window upsampled, summed, divided by the coverage, then resized."""
    q = scores[0].shape[-1]
    canvas, count = torch.zeros(q, h, w), torch.zeros(h, w)
    for (y1, y2, x1, x2), patch in zip(wins, scores, strict=True):
        up = F.interpolate(patch.permute(2, 0, 1)[None], size=(y2 - y1, x2 - x1), mode="bilinear")
        canvas[:, y1:y2, x1:x2] += up[0]
        count[y1:y2, x1:x2] += 1
    full = F.interpolate((canvas / count)[None], size=(out_h, out_w), mode="bilinear")[0]
    return full.permute(1, 2, 0)  # [H, W, Q]


def _canvas(h, w, wins, scores):
    canvas = WindowCanvas(scores[0].shape[-1], h, w, torch.device("cpu"))
    for window, patch in zip(wins, scores, strict=True):
        canvas.add_patches(window, patch)
    return canvas


@pytest.mark.parametrize(("h", "w", "crop", "stride", "grid", "out_h", "out_w"), GEOMETRIES)
@pytest.mark.parametrize("tile_pixels", [None, 30])  # whole rows; parts of rows
def test_values_are_the_canvas_resized(h, w, crop, stride, grid, out_h, out_w, tile_pixels):
    wins, scores = _patches(h, w, crop, stride, grid, 9)
    patches = WindowPatches.from_windows(h, w, wins, scores)
    tile_elements = 1 << 20 if tile_pixels is None else 9 * tile_pixels
    resizer = WindowResizer(patches, out_h, out_w, tile_elements)
    out = torch.full((out_h, out_w, 9), float("nan"))
    for rows, cols, values in resizer.tiles(scale=2.0):
        out[rows, cols] = values
    expected = _canvas_reference(h, w, wins, scores, out_h, out_w) * 2.0
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)


def test_each_output_position_blends_a_short_run_of_patches_with_weights_summing_to_one():
    spans = ((0, 112), (56, 168), (88, 200))  # the last window flush with the border
    m = axis_map(397, 200, spans, (7, 7, 7))
    centres = [s + (a + 0.5) * (e - s) / 7 for k, a in m.patches for s, e in [spans[k]]]
    assert centres == sorted(centres)
    torch.testing.assert_close(m.weights.sum(1), torch.ones(397, dtype=torch.float64))
    assert m.weights.shape[1] <= 8  # a few patches per position, not all 21
    assert bool((m.weights >= 0).all())
    # every reached position has a weight, every weight is reached
    for y in range(397):
        nonzero = {int(m.start[y]) + s for s in range(m.weights.shape[1]) if m.weights[y, s] != 0}
        assert set(m.reached[y].tolist()) == nonzero
    assert torch.equal(m.reached_sets[m.reached_set], m.reached)


@pytest.mark.parametrize(("h", "w", "crop", "stride", "grid", "out_h", "out_w"), GEOMETRIES)
def test_known_best_queries_are_the_full_argmax(h, w, crop, stride, grid, out_h, out_w):
    wins, scores = _patches(h, w, crop, stride, grid, 6, seed=1, smooth=True)
    resizer = WindowResizer(WindowPatches.from_windows(h, w, wins, scores), out_h, out_w, 6 * 50)
    expected = _canvas_reference(h, w, wins, scores, out_h, out_w).argmax(-1)
    known = torch.full((out_h, out_w), -2, dtype=torch.long)
    for y0, y1 in resizer.chunks():
        for c0 in range(0, out_w, resizer.tile_w):
            rows, cols = slice(y0, y1), slice(c0, min(c0 + resizer.tile_w, out_w))
            known[rows, cols] = resizer.known_best(rows, cols).view(y1 - y0, -1)
    found = known >= 0
    assert bool((known >= -1).all())
    assert 0.1 < found.float().mean() < 1  # both ways to the label are taken
    assert torch.equal(known[found], expected[found])


PROTOCOLS = [
    ProtocolConfig(logit_scale=40),
    ProtocolConfig(logit_scale=50, prob_threshold=0.2, area_threshold=0.2),
]


@pytest.mark.parametrize(("h", "w", "crop", "stride", "grid", "out_h", "out_w"), GEOMETRIES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_labels_from_patches_are_the_canvas_routes(
    h, w, crop, stride, grid, out_h, out_w, protocol
):
    wins, scores = _patches(h, w, crop, stride, grid, 7, seed=2, smooth=True)
    query_class = torch.tensor([2, 0, 1, 0, 2, 1, 3])  # synonyms interleaved
    canvas = _canvas(h, w, wins, scores)
    assert isinstance(make_resizer(canvas, out_h, out_w, None, 1 << 20, Workspace()), WindowResizer)
    from_patches = labels_from_scores(canvas, out_h, out_w, query_class, 4, protocol, 7 * 40)
    built = _canvas(h, w, wins, scores)
    built.build()  # read once: the canvas route
    from_canvas = labels_from_scores(built, out_h, out_w, query_class, 4, protocol, 7 * 40)
    assert torch.equal(from_patches.labels, from_canvas.labels)
    torch.testing.assert_close(from_patches.confidence, from_canvas.confidence)
    assert len(from_patches.labels.unique()) > 1


def test_very_wide_outputs_and_pixel_windows_take_the_canvas_route(monkeypatch):
    h, w = 150, 200
    wins, scores = _patches(h, w, 112, 56, 7, 5)
    canvas = _canvas(h, w, wins, scores)
    assert isinstance(make_resizer(canvas, 300, 400, None, 1 << 20, Workspace()), WindowResizer)
    monkeypatch.setattr(window_resize, "MAX_CANVAS_RATIO", 0.1)
    canvas = _canvas(h, w, wins, scores)
    assert not isinstance(make_resizer(canvas, 300, 400, None, 1 << 20, Workspace()), WindowResizer)
    monkeypatch.undo()
    canvas = _canvas(h, w, wins, scores)
    canvas.add(Window(0, 10, 0, 10), torch.zeros(5, 10, 10))  # pixel scores: not a patch grid
    assert WindowPatches.from_canvas(canvas) is None


def test_windows_that_are_not_one_full_grid_have_no_patch_grid():
    scores = torch.zeros(2, 2, 3)
    full = [Window(0, 4, 0, 4), Window(0, 4, 2, 6), Window(2, 6, 0, 4), Window(2, 6, 2, 6)]
    assert WindowPatches.from_windows(6, 6, full, [scores] * 4) is not None
    assert WindowPatches.from_windows(6, 6, full[:3], [scores] * 3) is None  # a hole
    assert WindowPatches.from_windows(6, 7, full, [scores] * 4) is None  # a column uncovered
    assert WindowPatches.from_windows(6, 6, [*full, full[0]], [scores] * 5) is None  # twice


def test_confidence_without_the_shift_by_the_best_logit_is_the_same(monkeypatch):
    wins, scores = _patches(150, 200, 112, 56, 7, 9, seed=3)
    patches = WindowPatches.from_windows(150, 200, wins, scores)
    protocol = ProtocolConfig(logit_scale=50)
    query_class = torch.arange(9)
    unshifted = labels_from_scores(patches, 301, 397, query_class, 9, protocol)
    init = WindowResizer.__init__

    def unknown_bound(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.bound = None

    monkeypatch.setattr(WindowResizer, "__init__", unknown_bound)
    shifted = labels_from_scores(patches, 301, 397, query_class, 9, protocol)
    assert torch.equal(unshifted.labels, shifted.labels)
    torch.testing.assert_close(unshifted.confidence, shifted.confidence, rtol=1e-6, atol=0)


@pytest.mark.parametrize("tile_pixels", [2 * 397, 100])
def test_parts_change_no_output_bit(tile_pixels):
    wins, scores = _patches(150, 200, 112, 56, 7, 150, seed=4, smooth=True)
    query_class = torch.randint(0, 3, (150,), generator=torch.Generator().manual_seed(4))
    query_class[:3] = torch.arange(3)
    protocol = ProtocolConfig(logit_scale=40, prob_threshold=0.2, area_threshold=0.2)
    results = []
    two, three = PartThreads(2), PartThreads(3)
    for runner in (IN_ORDER, two, three):
        with torch_threads(1) if runner is IN_ORDER else torch_threads(torch.get_num_threads()):
            results.append(
                labels_from_scores(
                    _canvas(150, 200, wins, scores),
                    301,
                    397,
                    query_class,
                    3,
                    protocol,
                    150 * tile_pixels,
                    Workspace(per_thread=False),
                    runner,
                )
            )
    two.close()
    three.close()
    for other in results[1:]:
        assert torch.equal(other.labels, results[0].labels)
        assert torch.equal(other.confidence, results[0].confidence)
    assert len(results[0].labels.unique()) > 1


def _tile_boxes_by_loop(mask, tile_h, tile_w):
    height, width = mask.shape
    boxes = []
    for y in range(0, height, tile_h):
        for x in range(0, width, tile_w):
            ys, xs = torch.nonzero(mask[y : y + tile_h, x : x + tile_w], as_tuple=True)
            if len(ys):
                boxes.append(
                    (
                        y + int(ys.min()),
                        y + int(ys.max()) + 1,
                        x + int(xs.min()),
                        x + int(xs.max()) + 1,
                    )
                )
    return boxes


@pytest.mark.parametrize(("height", "width", "tile_h", "tile_w"), [(37, 50, 8, 16), (8, 16, 8, 16)])
@pytest.mark.parametrize("density", [0.0, 0.002, 0.05, 1.0])
def test_tile_boxes_are_the_smallest_box_of_each_tiles_pixels(
    height, width, tile_h, tile_w, density
):
    # ragged last tiles (37 = 4·8 + 5 rows, 50 = 3·16 + 2 columns), lone pixels, full tiles
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(height, width, generator=g) < density
    mask[-1, -1] = density > 0  # a pixel in the corner of the last, cut-short tile
    boxes = window_resize.tile_boxes(mask, tile_h, tile_w)
    assert boxes == _tile_boxes_by_loop(mask, tile_h, tile_w)
    assert (boxes == []) == (density == 0)


@pytest.mark.parametrize("cells", [True, False])
def test_group_rows_is_group_values_over_whole_rows(cells):
    h, w, crop, stride, grid, out_h, out_w = GEOMETRIES[0]
    wins, scores = _patches(h, w, crop, stride, grid, 6, seed=1, smooth=True)
    patches = WindowPatches.from_windows(h, w, wins, scores)
    resizer = WindowResizer(patches, out_h * 2, out_w * 2, 6 * 50, cells=cells)
    assert resizer.canvas_cells == cells
    table = resizer.known_table()
    rows = slice(13, 47)
    out = torch.full((34, out_w * 2), -5, dtype=table.dtype)
    got = resizer.group_rows(table, rows, out=out)
    assert got.data_ptr() == out.data_ptr()
    expected = resizer.group_values(table, rows, slice(0, out_w * 2)).view(34, -1)
    assert torch.equal(out, expected)
    assert torch.equal(resizer.known_best(rows, slice(0, out_w * 2)).view(34, -1), expected)
