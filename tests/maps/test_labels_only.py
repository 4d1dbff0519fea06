"""Post-processing without the confidence map, and the confidence statistics on a grid.

Without the confidence map, tiles whose labels are known skip the values and the softmax; the
labels must be the same bits as with it, and the statistics the same bits whether or not the map
was computed.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import scclip_cli.files.mask_io as mask_io
import scclip_cli.maps.window_resize as window_resize
from scclip_cli.config import ProtocolConfig
from scclip_cli.files.mask_io import ClassTotals, statistics_grid, statistics_step
from scclip_cli.maps.parts import IN_ORDER, PartThreads
from scclip_cli.maps.postprocess import labels_from_scores
from scclip_cli.maps.sliding_window import WindowCanvas, windows
from scclip_cli.maps.window_resize import WindowPatches, WindowResizer
from scclip_cli.maps.workspace import Workspace
from support.torch_threads import torch_threads

H, W, OUT_H, OUT_W, QUERIES = 150, 200, 301, 397, 7
QUERY_CLASS = torch.tensor([2, 0, 1, 0, 2, 1, 3])  # synonyms interleaved
CLASSES = 4


def _patches(seed: int, peak: float = 1.0) -> WindowPatches:
    """Window patch scores with regions that span windows (most pixels have one best query
    around them); ``peak`` scales the scores, so the winning probabilities grow with it."""
    g = torch.Generator().manual_seed(seed)
    wins = windows(H, W, 112, 56)
    field = torch.randn(QUERIES, 3, 4, generator=g)
    field = F.interpolate(field[None], size=(H, W), mode="bilinear")[0] * peak
    scores = [
        F.adaptive_avg_pool2d(field[:, y1:y2, x1:x2], 7).permute(1, 2, 0).contiguous()
        for y1, y2, x1, x2 in wins
    ]
    patches = WindowPatches.from_windows(H, W, wins, scores)
    assert patches is not None
    return patches


def _run(patches, protocol, runner=IN_ORDER, **flags):
    return labels_from_scores(
        patches,
        OUT_H,
        OUT_W,
        QUERY_CLASS,
        CLASSES,
        protocol,
        QUERIES * 40,
        Workspace(per_thread=False),
        runner,
        **flags,
    )


@pytest.fixture(autouse=True, params=["canvas cells", "patch cells"])
def known_by(request, monkeypatch):
    """Every test runs with the best queries known by cells of the resized canvas (as for big
    photos) and by groups of patch cells (as for small ones)."""
    ratio = 0.0 if request.param == "canvas cells" else float("inf")
    monkeypatch.setattr(window_resize, "CANVAS_CELLS_RATIO", ratio)
    return request.param


@pytest.fixture
def small_grid(monkeypatch):
    """A statistics grid of at most 2,000 pixels, so these small maps are sampled (step 8)."""
    monkeypatch.setattr(mask_io, "STATISTICS_PIXELS", 2000)
    assert statistics_step(OUT_H, OUT_W) == 8


def test_statistics_step_keeps_the_grid_under_a_megapixel():
    assert statistics_step(1024, 1024) == 1  # every pixel up to a megapixel
    assert statistics_step(1025, 1024) == 2
    assert statistics_step(3000, 4000) == 4  # 750 x 1000
    assert statistics_grid(3000, 4000) == (slice(2, None, 4), slice(2, None, 4))


PROTOCOLS = [
    ProtocolConfig(logit_scale=40),
    ProtocolConfig(logit_scale=50, prob_threshold=0.5),
    ProtocolConfig(logit_scale=50, prob_threshold=0.9),
    ProtocolConfig(logit_scale=50, prob_threshold=0.5, area_threshold=0.25),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("seed", [0, 1])
def test_labels_are_the_same_bits_without_the_confidence_map(protocol, seed, monkeypatch, known_by):
    patches = _patches(seed, peak=0.3)
    full = _run(patches, protocol)
    computed = []
    values = WindowResizer.values

    def counted(self, *args, **kwargs):
        if self.out_height == OUT_H:  # not the canvas's own pass
            computed.append(args[:2])
        return values(self, *args, **kwargs)

    monkeypatch.setattr(WindowResizer, "values", counted)
    labels_only = _run(patches, protocol, confidence=False)
    assert WindowResizer(patches, OUT_H, OUT_W, 1).canvas_cells == (known_by == "canvas cells")
    assert labels_only.confidence is None
    assert torch.equal(labels_only.labels, full.labels)
    assert len(full.labels.unique()) > 1
    if protocol.area_threshold is None:  # (the area rule computes the tiles it redoes)
        resizer = WindowResizer(patches, OUT_H, OUT_W, QUERIES * 40)
        tiles = sum(1 for _ in resizer.tile_slices())
        touched = {(r.start // resizer.tile_h, c.start // resizer.tile_w) for r, c in computed}
        assert 0 < len(touched) < tiles  # some tiles skipped: their labels were known


def test_the_threshold_computes_values_only_where_a_floor_does_not_clear_it(monkeypatch):
    patches = _patches(2, peak=0.3)
    full = _run(patches, ProtocolConfig(logit_scale=50))
    assert full.confidence is not None
    floor = WindowResizer(patches, OUT_H, OUT_W, QUERIES * 40).confidence_floor(50)
    values = WindowResizer.values

    def tiles_computed(threshold: float) -> int:
        computed = []

        def counted(self, *args, **kwargs):
            if self.out_height == OUT_H:  # not the canvas's own pass
                computed.append(args[:2])
            return values(self, *args, **kwargs)

        protocol = ProtocolConfig(logit_scale=50, prob_threshold=threshold)
        with monkeypatch.context() as patched:  # (undo() would undo the fixtures' patches too)
            patched.setattr(WindowResizer, "values", counted)
            labels = _run(patches, protocol, confidence=False).labels
        assert torch.equal(labels, _run(patches, protocol).labels)
        resizer = WindowResizer(patches, OUT_H, OUT_W, QUERIES * 40)
        return len({(r.start // resizer.tile_h, c.start // resizer.tile_w) for r, c in computed})

    without = tiles_computed(0.0)
    assert tiles_computed(float(floor[floor > 0].min()) / 2) == without  # every floor clears it
    assert tiles_computed(float(full.confidence.median())) > without


def test_the_canvas_is_prepared_once_for_known_queries_and_the_floor(monkeypatch, known_by):
    prepare = WindowResizer.prepare
    canvases = []

    def counted(self, *args, **kwargs):
        if self.out_height == H:  # the canvas's own resizer
            canvases.append(self)
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(WindowResizer, "prepare", counted)
    protocol = ProtocolConfig(logit_scale=50, prob_threshold=0.3)
    _run(_patches(2, peak=0.3), protocol, confidence=False)
    assert len(canvases) == (1 if known_by == "canvas cells" else 0)


def test_the_confidence_floor_bounds_every_pixel_it_covers():
    patches = _patches(3, peak=0.3)
    protocol = ProtocolConfig(logit_scale=50)
    resizer = WindowResizer(patches, OUT_H, OUT_W, QUERIES * 40)
    floor = resizer.confidence_floor(protocol.logit_scale)
    full = _run(patches, protocol)
    assert full.confidence is not None
    covered = 0
    for rows, cols in resizer.tile_slices():
        bound = resizer.group_values(floor, rows, cols)
        confidence = full.confidence[rows, cols].reshape(-1).double()
        assert bool((confidence >= bound * (1 - 1e-5)).all())
        covered += int((bound > 0).sum())
    assert covered > OUT_H * OUT_W // 4  # the floor is known for many pixels
    assert float(floor.max()) > 0.5  # and not trivially small


@pytest.mark.usefixtures("small_grid")
@pytest.mark.parametrize("protocol", [PROTOCOLS[0], PROTOCOLS[3]])
def test_sampled_statistics_are_the_confidence_maps_on_the_grid(protocol):
    patches = _patches(4, peak=0.3)
    reference = _run(patches, protocol)  # the confidence map: the statistics from it
    assert reference.confidence is not None and reference.totals is None
    expected = ClassTotals.from_maps(
        reference.labels.numpy(), reference.confidence.numpy(), CLASSES
    )
    for confidence in (True, False):
        sampled = _run(patches, protocol, confidence=confidence, statistics=True).totals
        assert sampled is not None
        np.testing.assert_array_equal(sampled.pixels, expected.pixels)
        np.testing.assert_array_equal(sampled.confidence_counts, expected.confidence_counts)
        np.testing.assert_allclose(sampled.confidence_sums, expected.confidence_sums, rtol=1e-5)
        assert sampled.image_mean == pytest.approx(expected.image_mean, rel=1e-6)
    with_map = _run(patches, protocol, statistics=True).totals
    without = _run(patches, protocol, confidence=False, statistics=True).totals
    assert with_map is not None and without is not None
    for name in ("pixels", "confidence_sums", "confidence_counts"):
        np.testing.assert_array_equal(getattr(with_map, name), getattr(without, name))
    assert with_map.image_mean == without.image_mean


def test_a_class_the_grid_misses_is_averaged_over_all_its_pixels(monkeypatch):
    monkeypatch.setattr(mask_io, "STATISTICS_PIXELS", 6)  # a 2 x 3 grid
    patches = _patches(5, peak=0.3)
    protocol = ProtocolConfig(logit_scale=50)
    reference = _run(patches, protocol)
    labels = reference.labels
    row_slice, col_slice = statistics_grid(OUT_H, OUT_W)
    on_grid = set(labels[row_slice, col_slice].unique().tolist())
    off_grid = set(labels.unique().tolist()) - on_grid
    assert off_grid, "the seed must give a class off the grid"
    totals = _run(patches, protocol, confidence=False, statistics=True).totals
    assert totals is not None and totals.confidence_counts is not None
    for index in off_grid:
        assert totals.confidence_counts[index] == totals.pixels[index]  # all its pixels
    assert sum(int(totals.confidence_counts[k]) for k in on_grid) == 6
    assert reference.confidence is not None
    expected = ClassTotals.from_maps(labels.numpy(), reference.confidence.numpy(), CLASSES)
    assert expected.confidence_counts is not None
    np.testing.assert_array_equal(totals.confidence_counts, expected.confidence_counts)
    np.testing.assert_allclose(totals.confidence_sums, expected.confidence_sums, rtol=1e-5)


@pytest.mark.usefixtures("small_grid")
def test_parts_change_no_bit_of_labels_or_statistics():
    patches = _patches(6, peak=0.3)
    protocol = ProtocolConfig(logit_scale=50, prob_threshold=0.5, area_threshold=0.25)
    two = PartThreads(2)
    try:
        with torch_threads(1):
            one = _run(patches, protocol, IN_ORDER, confidence=False, statistics=True)
        split = _run(patches, protocol, two, confidence=False, statistics=True)
    finally:
        two.close()
    assert torch.equal(one.labels, split.labels)
    assert one.totals is not None and split.totals is not None
    # the pixel counts go in bands of rows, one per part: together they count every pixel
    every_pixel = np.bincount(one.labels.flatten().numpy(), minlength=len(one.totals.pixels))
    np.testing.assert_array_equal(split.totals.pixels, every_pixel)
    np.testing.assert_array_equal(one.totals.pixels, every_pixel)
    np.testing.assert_array_equal(one.totals.confidence_sums, split.totals.confidence_sums)
    assert one.totals.image_mean == split.totals.image_mean


def test_class_totals_from_maps_average_the_grid_and_whole_missing_classes(monkeypatch):
    monkeypatch.setattr(mask_io, "STATISTICS_PIXELS", 4)
    labels = np.zeros((4, 4), dtype=np.int32)  # step 2: the grid is rows and columns 1 and 3
    labels[0, 0] = 2  # off the grid
    labels[1, 1] = 1
    confidence = np.arange(16, dtype=np.float32).reshape(4, 4) / 16
    totals = ClassTotals.from_maps(labels, confidence, 3)
    assert totals.pixels.tolist() == [14, 1, 1]
    assert totals.confidence_counts is not None and totals.confidence_sums is not None
    assert totals.confidence_counts.tolist() == [3, 1, 1]
    np.testing.assert_allclose(totals.confidence_sums, [(7 + 13 + 15) / 16, 5 / 16, 0])
    assert totals.image_mean == pytest.approx((5 + 7 + 13 + 15) / 64)
    stats = mask_io.class_statistics(totals, None, ["a", "b", "c"])
    assert [s["mean_confidence"] for s in stats] == [round(35 / 48, 6), 0.3125, 0.0]
    assert mask_io.mean_confidence(totals) == round(40 / 64, 6)
    assert mask_io.mean_confidence(confidence) == round(40 / 64, 6)


def test_canvas_cells_know_more_pixels_and_only_right_ones(monkeypatch):
    patches = _patches(7, peak=0.3)
    monkeypatch.setattr(window_resize, "CANVAS_CELLS_RATIO", float("inf"))
    by_patches = WindowResizer(patches, OUT_H, OUT_W, QUERIES * 40)
    monkeypatch.setattr(window_resize, "CANVAS_CELLS_RATIO", 0.0)
    by_canvas = WindowResizer(patches, OUT_H, OUT_W, QUERIES * 40)
    by_canvas.prepare()
    known_patches = torch.cat([by_patches.known_best(r, c) for r, c in by_patches.tile_slices()])
    known_canvas = torch.cat([by_canvas.known_best(r, c) for r, c in by_canvas.tile_slices()])
    full = torch.cat(
        [
            by_canvas.values(r, c, 1.0).reshape(-1, QUERIES).argmax(-1)
            for r, c in by_canvas.tile_slices()
        ]
    )
    assert bool((known_canvas[known_patches >= 0] == known_patches[known_patches >= 0]).all())
    assert int((known_canvas >= 0).sum()) > int((known_patches >= 0).sum())  # more known
    assert torch.equal(known_canvas[known_canvas >= 0], full[known_canvas >= 0])
    assert float((known_canvas >= 0).float().mean()) < 1  # and still some compared


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_labels_from_patches_are_the_canvas_routes(protocol):
    patches = _patches(8, peak=0.3)
    canvas = WindowCanvas(QUERIES, H, W, torch.device("cpu"))
    for window, grid in zip(
        windows(H, W, 112, 56), (s for row in patches.grid for s in row), strict=True
    ):
        canvas.add_patches(window, grid)
    canvas.build()  # read as a whole: the bilinear route, which knows best queries by canvas cells
    from_canvas = labels_from_scores(
        canvas, OUT_H, OUT_W, QUERY_CLASS, CLASSES, protocol, QUERIES * 40
    )
    for confidence in (True, False):
        from_patches = _run(patches, protocol, confidence=confidence)
        assert torch.equal(from_patches.labels, from_canvas.labels)


def test_with_the_map_each_tile_is_computed_once_where_patch_cells_are_known(monkeypatch, known_by):
    """With patch cells (small outputs, many pixels to compare), the labels compare among the
    tile's own values; by canvas cells, among a box of the few pixels that need it."""
    patches = _patches(9, peak=0.3)
    calls = []
    values = WindowResizer.values

    def counted(self, rows, cols, scale, part=0, buffer="tile"):
        if self.out_height == OUT_H:
            calls.append(buffer)
        return values(self, rows, cols, scale, part, buffer)

    monkeypatch.setattr(WindowResizer, "values", counted)
    _run(patches, ProtocolConfig(logit_scale=50))
    tiles = sum(1 for _ in WindowResizer(patches, OUT_H, OUT_W, QUERIES * 40).tile_slices())
    assert calls.count("tile") == tiles
    assert (calls.count("box") > 0) == (known_by == "canvas cells")
