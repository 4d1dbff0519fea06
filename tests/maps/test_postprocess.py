"""Tiled upsampling and post-processing against the straightforward full-tensor computation."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from scclip_cli.config import ProtocolConfig
from scclip_cli.maps.postprocess import labels_from_scores, upsample_scores


def _reference(scores, h, w, query_class, k, p: ProtocolConfig):
    """The reference's post-processing on the full upsampled tensor."""
    full = F.interpolate(scores[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    probs = torch.softmax(full * p.logit_scale, 0)
    if k != probs.shape[0]:
        onehot = F.one_hot(query_class, k).T.view(k, -1, 1, 1)
        probs = (probs[None] * onehot).max(1)[0]
    if p.area_threshold is not None:
        pred = F.one_hot(probs.argmax(0), k).to(probs.dtype)
        area = pred[:, :, 1:].sum((0, 1), keepdim=True)
        area = (area > p.area_threshold * area.sum()).to(probs.dtype)
        probs[1:] *= area.transpose(0, -1)
    labels = probs.argmax(0)
    conf = probs.max(0)[0]
    labels[conf < p.prob_threshold] = 0
    return labels, conf


@pytest.mark.parametrize(
    "protocol",
    [
        ProtocolConfig(logit_scale=40),
        ProtocolConfig(logit_scale=50, prob_threshold=0.3, area_threshold=0.1),
        ProtocolConfig(logit_scale=10, area_threshold=0.3),
    ],
)
def test_tiled_postprocess_equals_full_tensor(protocol):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 13, 17, generator=g) * 0.05
    scores[2, 3:9, 4:12] += 0.2  # a big region of class 1
    scores[6, 0:2, 0:2] += 0.2  # a tiny region of class 3 (dropped by the area rule)
    query_class = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    ref_labels, ref_conf = _reference(scores, 50, 61, query_class, 4, protocol)
    # a tiny tile budget forces many tiles
    out = labels_from_scores(scores, 50, 61, query_class, 4, protocol, tile_elements=7 * 61 * 3)
    assert torch.equal(out.labels, ref_labels)
    torch.testing.assert_close(out.confidence, ref_conf)


@pytest.mark.parametrize("tile_elements", [7 * 20, 7 * 61 * 2, 1 << 20])
def test_tiles_and_row_sources_change_nothing(tile_elements):
    """Column tiles (a row wider than a tile), row tiles and one tile; a tensor or rows by band."""
    from scclip_cli.maps.postprocess import TensorRows

    g = torch.Generator().manual_seed(1)
    scores = torch.randn(7, 13, 17, generator=g) * 0.05
    scores[2, 3:9, 4:12] += 0.2
    scores[6, 0:2, 0:2] += 0.2
    query_class = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    protocol = ProtocolConfig(logit_scale=50, prob_threshold=0.3, area_threshold=0.1)
    ref_labels, ref_conf = _reference(scores, 50, 61, query_class, 4, protocol)
    for source in (scores, TensorRows(scores)):
        out = labels_from_scores(source, 50, 61, query_class, 4, protocol, tile_elements)
        assert torch.equal(out.labels, ref_labels)
        torch.testing.assert_close(out.confidence, ref_conf)


@pytest.mark.parametrize("tile_elements", [None, 6 * 40 * 2])
def test_unsorted_synonyms_keep_the_reference_argmax(tile_elements):
    """In one tile, and in many: then the reordered queries are read by bands of source rows
    that neither start at the first row nor end at the last (rows 3..7 and 6..9 of 9 for the
    tiles, 0..7 and 7..9 for each source pixel's best query); from a tensor or from rows."""
    from scclip_cli.maps.postprocess import TensorRows

    g = torch.Generator().manual_seed(2)
    scores = torch.randn(6, 9, 11, generator=g) * 0.1
    query_class = torch.tensor([2, 0, 1, 0, 2, 1])  # synonyms interleaved
    protocol = ProtocolConfig(logit_scale=40)
    ref_labels, ref_conf = _reference(scores, 30, 40, query_class, 3, protocol)
    for source in (scores, TensorRows(scores)):
        out = labels_from_scores(source, 30, 40, query_class, 3, protocol, tile_elements)
        assert torch.equal(out.labels, ref_labels)
        torch.testing.assert_close(out.confidence, ref_conf)


def test_area_rule_removes_small_classes():
    scores = torch.zeros(3, 10, 10)
    scores[1] += 0.5
    scores[2, :1, :1] += 1.0  # 1 pixel of class 2 out of 100 foreground
    p = ProtocolConfig(logit_scale=50, area_threshold=0.05)
    out = labels_from_scores(scores, 10, 10, torch.arange(3), 3, p)
    assert set(out.labels.unique().tolist()) == {1}


def test_upsample_matches_torch_interpolate():
    from scclip_cli.maps.postprocess import TensorRows

    scores = torch.randn(3, 9, 14)
    for h, w in [(20, 31), (9, 14), (5, 7), (100, 3)]:
        expected = F.interpolate(scores[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(upsample_scores(scores, h, w), expected, atol=5e-6, rtol=1e-5)
        by_rows = upsample_scores(TensorRows(scores), h, w)  # scores served by rows
        torch.testing.assert_close(by_rows, expected, atol=5e-6, rtol=1e-5)


@pytest.fixture
def float64_by_default():
    """torch's default dtype set to float64 (as some scientific code does) for one test."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def test_upsampled_scores_stay_float32_whatever_the_default_dtype(float64_by_default):
    scores = torch.randn(3, 9, 14, dtype=torch.float32)
    out = upsample_scores(scores, 20, 31)
    assert out.dtype == torch.float32
    expected = F.interpolate(scores[None], size=(20, 31), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, expected, atol=5e-6, rtol=1e-5)
    labels = labels_from_scores(scores * 0.1, 20, 31, torch.arange(3), 3, ProtocolConfig())
    assert labels.labels.dtype == torch.int32 and labels.confidence.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_upsampled_scores_and_labels_stay_on_the_scores_device():
    scores = torch.randn(3, 9, 14, device="cuda")
    out = upsample_scores(scores, 20, 31)
    assert out.device == scores.device
    expected = F.interpolate(scores[None], size=(20, 31), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, expected, atol=5e-6, rtol=1e-5)
    protocol = ProtocolConfig(logit_scale=40, area_threshold=0.1)
    query_class = torch.tensor([1, 0, 1], device="cuda")
    labels = labels_from_scores(scores, 20, 31, query_class, 2, protocol, tile_elements=3 * 31)
    assert labels.labels.device == scores.device and labels.confidence.device == scores.device
    ref_labels, ref_conf = _reference(scores, 20, 31, query_class, 2, protocol)
    assert torch.equal(labels.labels, ref_labels.to(labels.labels.dtype))
    torch.testing.assert_close(labels.confidence, ref_conf)


def test_first_best_query_of_source_pixels_breaks_ties_by_the_first():
    from scclip_cli.maps.postprocess import TensorRows, source_best_query

    g = torch.Generator().manual_seed(3)
    scores = torch.randn(5, 6, 7, generator=g)
    scores[3, 0, 0] = scores[1, 0, 0] = scores[:, 0, 0].max() + 1  # a tie: query 1 comes first
    for band in (7 * 5, 7 * 5 * 4, 1):  # one row, several rows, less than a row
        best = source_best_query(TensorRows(scores), band)
        assert torch.equal(best, scores.argmax(0))
        assert best[0, 0] == 1


def test_best_query_of_source_pixels_in_parts_at_once():
    """Bands of rows in two parts that run at once: every row is done once, by one part."""
    from scclip_cli.maps.parts import PartThreads
    from scclip_cli.maps.postprocess import TensorRows, source_best_query

    scores = torch.randn(24, 800, 60, generator=torch.Generator().manual_seed(12))
    scores[5, 1:700:3, 7] = scores[2, 1:700:3, 7] = 9.0  # ties in both parts: query 2 first
    runner = PartThreads(2)
    try:
        for _ in range(3):
            best = source_best_query(TensorRows(scores), 60 * 24, runner)
            assert torch.equal(best, scores.argmax(0))
            assert bool((best[1:700:3, 7] == 2).all())
    finally:
        runner.close()


def test_shared_cells_are_the_ones_whose_four_corners_agree():
    from scclip_cli.maps.postprocess import shared_cell_best

    best = torch.tensor([[0, 0, 1], [0, 0, 1], [2, 2, 1]])
    expected = torch.tensor([[0, -1, 1], [-1, -1, 1], [2, -1, 1]])
    assert torch.equal(shared_cell_best(best), expected)


@pytest.mark.parametrize("size", [(200, 230), (9, 11), (4, 30)])
def test_labels_inside_and_between_agreeing_cells_match_the_full_argmax(size):
    """Smooth scores (big regions, so most output pixels take the shortcut) upsampled a lot,
    kept, and shrunk: the labels are the full tensor's argmax."""
    from scclip_cli.maps.postprocess import shared_cell_best

    g = torch.Generator().manual_seed(4)
    coarse = torch.randn(6, 4, 5, generator=g)
    scores = F.interpolate(coarse[None], size=(12, 15), mode="bilinear")[0].contiguous()
    query_class = torch.arange(6)
    shared = shared_cell_best(scores.argmax(0)) >= 0
    assert 0.5 < shared.float().mean() < 1  # both ways to the label are taken
    protocol = ProtocolConfig(logit_scale=40)
    ref_labels, ref_conf = _reference(scores, *size, query_class, 6, protocol)
    out = labels_from_scores(scores, *size, query_class, 6, protocol, tile_elements=6 * 230 * 3)
    assert torch.equal(out.labels, ref_labels)
    torch.testing.assert_close(out.confidence, ref_conf)


# --- ties, decided as the reference decides them (scclip_segmentor.py, postprocess_result):
#   area_pred = (area_pred > self.area_thd * area_pred.sum())   a class at exactly the share goes
#   seg_pred[seg_logits.max(0)[0] < self.prob_thd] = 0          a pixel at exactly the threshold stays


def test_a_class_covering_exactly_the_area_share_is_removed():
    """8 foreground pixels, threshold 0.25: class 2 covers 2 pixels, 0.25 × 8 exactly (a power of
    two, so no rounding can decide): the reference's strict ``>`` removes it."""
    scores = torch.zeros(3, 4, 4)
    scores[0, :2] += 1.0  # background: top half
    scores[1, 2:] += 1.0  # class 1: bottom half, 8 pixels...
    scores[2, 3, :2] += 2.0  # ...of which class 2 takes 2
    p = ProtocolConfig(logit_scale=50, area_threshold=0.25)
    plain = labels_from_scores(scores, 4, 4, torch.arange(3), 3, ProtocolConfig(logit_scale=50))
    assert torch.bincount(plain.labels.flatten(), minlength=3).tolist() == [8, 6, 2]
    out = labels_from_scores(scores, 4, 4, torch.arange(3), 3, p)
    assert torch.bincount(out.labels.flatten(), minlength=3).tolist() == [8, 8, 0]
    ref_labels, _ = _reference(scores, 4, 4, torch.arange(3), 3, p)
    assert torch.equal(out.labels, ref_labels)
    # one pixel more than the share and the class stays
    scores[2, 3, 2] += 2.0
    kept = labels_from_scores(scores, 4, 4, torch.arange(3), 3, p)
    assert torch.bincount(kept.labels.flatten(), minlength=3).tolist() == [8, 5, 3]


def test_area_rule_removes_a_class_that_fills_whole_tiles():
    """One-row tiles: the bottom rows are all of the small class, so their tiles hold no other
    class, and they are recomputed too."""
    scores = torch.zeros(4, 13, 17)
    scores[1] += 0.2  # class 1 everywhere...
    scores[3, 12] += 0.5  # ...but the last source row: class 3, the last 4 of 50 output rows
    protocol = ProtocolConfig(logit_scale=50, area_threshold=0.1)
    plain = labels_from_scores(scores, 50, 61, torch.arange(4), 4, ProtocolConfig(logit_scale=50))
    assert bool((plain.labels[-4:] == 3).all())  # whole rows, whole tiles of class 3
    out = labels_from_scores(scores, 50, 61, torch.arange(4), 4, protocol, tile_elements=4 * 61)
    ref_labels, ref_conf = _reference(scores, 50, 61, torch.arange(4), 4, protocol)
    assert out.labels.unique().tolist() == [1]
    assert torch.equal(out.labels, ref_labels)
    torch.testing.assert_close(out.confidence, ref_conf)


def test_with_one_foreground_class_an_area_share_of_one_removes_it():
    """Two classes: the foreground is all of the foreground area, which an ``area_threshold`` of
    1 does not exceed, so the reference's rule removes it and every pixel is background."""
    scores = torch.zeros(2, 4, 4)
    scores[1, :, 2:] += 1.0  # right half: class 1
    p = ProtocolConfig(logit_scale=50, area_threshold=1.0)
    out = labels_from_scores(scores, 4, 4, torch.arange(2), 2, p)
    ref_labels, ref_conf = _reference(scores, 4, 4, torch.arange(2), 2, p)
    assert out.labels.unique().tolist() == [0]
    assert torch.equal(out.labels, ref_labels)
    torch.testing.assert_close(out.confidence, ref_conf)
    below = labels_from_scores(scores, 4, 4, torch.arange(2), 2, p.replace(area_threshold=0.99))
    assert below.labels.unique().tolist() == [0, 1]


def test_a_pixel_exactly_at_the_probability_threshold_keeps_its_class():
    """Two classes tie at every pixel of the left half (the background's term underflows): their
    probability is 1 / 2 exactly. With the threshold at 0.5 the reference's strict ``<`` keeps
    them (the first of the tied classes); a hair above 0.5 sends them to class 0."""
    scores = torch.full((3, 4, 4), -1.0)
    scores[1:, :, :2] = 1.0  # left: classes 1 and 2 tie
    scores[1, :, 2:] = 1.0  # right: class 1 alone
    at = labels_from_scores(scores, 4, 4, torch.arange(3), 3, ProtocolConfig(prob_threshold=0.5))
    assert bool((at.confidence[:, :2] == 0.5).all())
    assert bool((at.labels == 1).all())
    ref_labels, _ = _reference(scores, 4, 4, torch.arange(3), 3, ProtocolConfig(prob_threshold=0.5))
    assert torch.equal(at.labels, ref_labels)
    above = labels_from_scores(
        scores, 4, 4, torch.arange(3), 3, ProtocolConfig(prob_threshold=0.5000001)
    )
    assert above.labels[:, :2].unique().tolist() == [0]
    assert above.labels[:, 2:].unique().tolist() == [1]


def test_area_rule_keeps_probabilities_where_cosines_span_the_whole_range():
    """Cosines of -1 and 1 in one tile at logit scale 50: the logits differ by 144 in base 2, so
    each pixel's softmax must be shifted by its own maximum (2^-144 summed over the queries has no
    float32 reciprocal). The left half ties all classes at -1: probability 1/3, background."""
    scores = torch.full((3, 4, 8), -1.0)
    scores[1, :, 4:] = 1.0  # right half: class 1
    scores[2, 0, 4], scores[1, 0, 4] = 1.0, 0.9  # one pixel of class 2, removed by the area rule
    protocol = ProtocolConfig(logit_scale=50, area_threshold=0.1)
    out = labels_from_scores(scores, 4, 8, torch.arange(3), 3, protocol)
    ref_labels, ref_conf = _reference(scores, 4, 8, torch.arange(3), 3, protocol)
    assert torch.equal(out.labels, ref_labels)
    assert out.labels[:, 4:].unique().tolist() == [1]
    torch.testing.assert_close(out.confidence, ref_conf)
    torch.testing.assert_close(out.confidence[:, :4], torch.full((4, 4), 1 / 3))


@pytest.mark.parametrize(
    "tile_elements",
    [7, 7 * 20, 7 * 61, 7 * 61 * 3, 1 << 20],
    ids=["one pixel", "column tiles", "one row", "three rows", "one tile"],
)
def test_tiles_cover_every_output_pixel_once_within_the_budget(tile_elements):
    """The tiles partition the output (no pixel computed twice) and none holds more than
    ``tile_elements`` values; put together they are the upsampled scores."""
    from scclip_cli.maps.postprocess import BilinearResizer, TensorRows

    scores = torch.randn(7, 13, 17, generator=torch.Generator().manual_seed(5))
    resizer = BilinearResizer(TensorRows(scores), 50, 61, tile_elements)
    covered = torch.zeros(50, 61, dtype=torch.int64)
    full = torch.full((50, 61, 7), float("nan"))
    for rows, cols, values in resizer.tiles():
        assert values.numel() <= tile_elements
        covered[rows, cols] += 1
        full[rows, cols] = values
    assert bool((covered == 1).all())
    expected = F.interpolate(scores[None], size=(50, 61), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(full.permute(2, 0, 1), expected, atol=5e-6, rtol=1e-5)


def test_area_rule_removes_a_small_class_below_chunks_without_it():
    """Many chunks of rows; the small class lies only in the last ones, so the second pass skips
    the chunks above it and must still reach it."""
    g = torch.Generator().manual_seed(6)
    scores = torch.randn(4, 13, 17, generator=g) * 0.05
    scores[1, :, :] += 0.2  # class 1 everywhere...
    scores[3, 11:, 15:] += 0.5  # ...but a tiny bottom-right corner of class 3
    protocol = ProtocolConfig(logit_scale=50, area_threshold=0.05)
    ref_labels, ref_conf = _reference(scores, 50, 61, torch.arange(4), 4, protocol)
    plain = labels_from_scores(scores, 50, 61, torch.arange(4), 4, ProtocolConfig(logit_scale=50))
    assert 3 in plain.labels[40:].unique().tolist()  # without the rule the corner is class 3
    out = labels_from_scores(scores, 50, 61, torch.arange(4), 4, protocol, tile_elements=4 * 61 * 2)
    assert 3 not in out.labels.unique().tolist()
    assert torch.equal(out.labels, ref_labels)
    torch.testing.assert_close(out.confidence, ref_conf)


def test_the_default_tile_budget_fits_the_cpu_caches_and_is_larger_elsewhere():
    """4 MiB of float32 per tile on the CPU (docs/performance.md), 64 MiB on an accelerator,
    where fewer, larger tiles mean fewer kernel launches."""
    from scclip_cli.maps.postprocess import default_tile_elements

    assert default_tile_elements(torch.device("cpu")) == 1 << 20
    assert default_tile_elements(torch.device("cuda", 0)) == 1 << 24
    assert default_tile_elements(torch.device("mps")) == 1 << 24


def test_known_best_queries_are_the_upsampled_argmax_and_need_no_prepare_call():
    """Asked first, the resizer finds the source pixels' best queries itself; every pixel it
    knows has the upsampled scores' first best query, the others are -1."""
    from scclip_cli.maps.postprocess import BilinearResizer, TensorRows

    coarse = torch.randn(4, 3, 4, generator=torch.Generator().manual_seed(7))
    scores = F.interpolate(coarse[None], size=(9, 11), mode="bilinear")[0].contiguous()
    resizer = BilinearResizer(TensorRows(scores), 30, 40, 4 * 40 * 2)
    known = resizer.known_best(slice(0, 30), slice(0, 40)).view(30, 40)
    upsampled = F.interpolate(scores[None], size=(30, 40), mode="bilinear", align_corners=False)[0]
    argmax = upsampled.argmax(0)
    assert 0.5 < (known >= 0).float().mean() < 1
    assert torch.equal(known[known >= 0], argmax[known >= 0])
    again = resizer.known_best(slice(10, 20), slice(5, 40))  # a later tile, same answers
    assert torch.equal(again, known[10:20, 5:40].reshape(-1))


def test_each_chunk_alone_gives_its_own_rows():
    """``tiles(chunks=...)`` yields the rows of the chunks asked for and no others (parts of the
    work take runs of chunks)."""
    from scclip_cli.maps.postprocess import BilinearResizer, TensorRows

    scores = torch.randn(7, 13, 17, generator=torch.Generator().manual_seed(8))
    resizer = BilinearResizer(TensorRows(scores), 50, 61, 7 * 61 * 3)
    plan = resizer.chunks()
    assert len(plan) > 2 and plan[0][0] == 0 and plan[-1][1] == 50
    for y0, y1 in plan:
        rows = [
            r for tile_rows, _, _ in resizer.tiles(chunks=[(y0, y1)]) for r in range(50)[tile_rows]
        ]
        assert rows == list(range(y0, y1))


def test_parts_at_once_on_one_workspace_give_the_in_order_result():
    """A segmenter's workspace is shared by the parts that run at once (each asks for buffers of
    its own names): two threads, whole-row tiles, the area rule's second pass; bit for bit."""
    from scclip_cli.maps.parts import IN_ORDER, PartThreads
    from scclip_cli.maps.workspace import Workspace

    g = torch.Generator().manual_seed(9)
    scores = torch.randn(24, 40, 50, generator=g) * 0.05
    scores[2, 5:30, 5:40] += 0.2
    scores[6, 35:, 45:] += 0.3  # a small class, removed by the area rule
    query_class = torch.arange(24) % 4
    protocol = ProtocolConfig(logit_scale=50, prob_threshold=0.3, area_threshold=0.05)
    args = (300, 400, query_class, 4, protocol, 24 * 400 * 3)
    first = labels_from_scores(scores, *args, Workspace(per_thread=False), IN_ORDER)
    runner = PartThreads(2)
    try:
        for _ in range(6):  # two parts that clobber one buffer do not always collide
            out = labels_from_scores(scores, *args, Workspace(per_thread=False), runner)
            assert torch.equal(out.labels, first.labels)
            assert torch.equal(out.confidence, first.confidence)
    finally:
        runner.close()
    assert len(first.labels.unique()) > 1


def test_post_processing_warns_about_nothing():
    """No buffer is resized behind the user's back (torch warns when an ``out=`` tensor has the
    wrong shape)."""
    scores = torch.randn(7, 13, 17, generator=torch.Generator().manual_seed(10)) * 0.05
    query_class = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    protocol = ProtocolConfig(logit_scale=50, area_threshold=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # column tiles; row tiles of 3, 8 and 7 rows, whose chunks end with shorter tiles
        for tile_rows, height in ((None, 50), (3, 50), (8, 61), (7, 100)):
            tile_elements = 7 * 20 if tile_rows is None else 7 * 61 * tile_rows
            out = labels_from_scores(scores, height, 61, query_class, 4, protocol, tile_elements)
            assert out.labels.shape == (height, 61)
            upsample_scores(scores, height, 61)


def _window_canvas(seed: int, peak: float | None = None):
    """Patch scores of 2 x 3 overlapping 112 px windows over a 150 x 200 image (a full grid),
    from smooth score fields (regions span windows), 7 queries; ``peak``: scores clipped to
    ``±peak``, with plateaus there."""
    from scclip_cli.maps.sliding_window import WindowCanvas, windows

    g = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.randn(7, 3, 4, generator=g)[None], size=(150, 200), mode="bilinear")
    if peak is not None:
        field = (field * 2 * peak / field.abs().max()).clamp(-peak, peak)
    canvas = WindowCanvas(7, 150, 200, torch.device("cpu"))
    for window in windows(150, 200, 112, 56):
        y1, y2, x1, x2 = window
        patch = F.adaptive_avg_pool2d(field[0, :, y1:y2, x1:x2], 7)
        canvas.add_patches(window, patch.permute(1, 2, 0).contiguous())
    return canvas


@pytest.mark.parametrize("peak", [None, 0.3], ids=["large scores", "cosine-sized scores"])
@pytest.mark.parametrize("route", ["from patches", "built canvas"])
def test_window_scores_give_the_labels_of_their_averaged_canvas(route, peak, monkeypatch):
    """Straight from the window patches (the usual route) or, when the output is too wide for
    that, from the built canvas: the labels of the averaged canvas, with interleaved synonyms.
    Cosine-sized scores take the softmax without the shift by the best logit (their bound is
    known and small); large ones need the shift."""
    import scclip_cli.maps.window_resize as window_resize
    from scclip_cli.maps.postprocess import make_resizer
    from scclip_cli.maps.workspace import Workspace

    query_class = torch.tensor([2, 0, 1, 0, 2, 1, 3])  # synonyms interleaved
    protocol = ProtocolConfig(logit_scale=50, prob_threshold=0.2, area_threshold=0.2)
    built = _window_canvas(11, peak)
    average = built.rows(0, 150).permute(2, 0, 1).contiguous()  # [Q, h, w], the canvas route
    expected = labels_from_scores(average, 301, 397, query_class, 4, protocol)
    if route == "built canvas":
        monkeypatch.setattr(window_resize, "MAX_CANVAS_RATIO", 0.1)
    resizer = make_resizer(_window_canvas(11, peak), 301, 397, None, 1 << 20, Workspace())
    assert isinstance(resizer, window_resize.WindowResizer) == (route == "from patches")
    out = labels_from_scores(_window_canvas(11, peak), 301, 397, query_class, 4, protocol, 7 * 40)
    assert torch.equal(out.labels, expected.labels)
    torch.testing.assert_close(out.confidence, expected.confidence)
    assert len(out.labels.unique()) > 2


def test_cosines_up_to_one_at_a_large_logit_scale_keep_finite_confidences():
    """Scores straight from the window patches at logit scale 100: 2^(1 x 100 x log2 e) exceeds
    float32, so each pixel's softmax must be shifted by its best logit; the result is the canvas
    route's."""
    query_class = torch.tensor([2, 0, 1, 0, 2, 1, 3])
    protocol = ProtocolConfig(logit_scale=100)
    built = _window_canvas(13, peak=1.0)
    average = built.rows(0, 150).permute(2, 0, 1).contiguous()
    assert float((average > 0.9).float().mean()) > 0.01  # 2^(0.9 x 100 x log2 e) > 2^128
    expected = labels_from_scores(average, 301, 397, query_class, 4, protocol)
    out = labels_from_scores(_window_canvas(13, peak=1.0), 301, 397, query_class, 4, protocol)
    assert bool(out.confidence.isfinite().all())
    assert torch.equal(out.labels, expected.labels)
    torch.testing.assert_close(out.confidence, expected.confidence)


def test_area_rule_with_the_last_classes_absent():
    """Classes 3 and 4 are never chosen (class 4's query always scores low) and the small class 2
    is removed."""
    scores = torch.zeros(5, 8, 8)
    scores[1] += 0.2
    scores[2, :1, :1] += 0.5  # a tiny corner of class 2
    scores[3:] -= 1.0
    protocol = ProtocolConfig(logit_scale=50, area_threshold=0.1)
    out = labels_from_scores(scores, 16, 16, torch.arange(5), 5, protocol)
    ref_labels, ref_conf = _reference(scores, 16, 16, torch.arange(5), 5, protocol)
    assert out.labels.unique().tolist() == [1]
    assert torch.equal(out.labels, ref_labels)
    torch.testing.assert_close(out.confidence, ref_conf)


def test_window_scores_at_their_bound_on_every_query_just_below_the_float32_limit():
    """Every query scores 1 everywhere, at a logit scale where 2^(1 x scale x log2 e) = 2^125.5:
    one term fits float32, seven do not, so the softmax must be shifted. All queries tie: the
    confidence is 1/7 and the label the first class."""
    from scclip_cli.maps.sliding_window import WindowCanvas, windows

    canvas = WindowCanvas(7, 150, 200, torch.device("cpu"))
    for window in windows(150, 200, 112, 56):
        canvas.add_patches(window, torch.ones(7, 7, 7))
    protocol = ProtocolConfig(logit_scale=125.5 / math.log2(math.e))
    out = labels_from_scores(canvas, 75, 100, torch.tensor([2, 0, 1, 0, 2, 1, 3]), 4, protocol)
    assert out.labels.unique().tolist() == [0]
    torch.testing.assert_close(out.confidence, torch.full((75, 100), 1 / 7))
