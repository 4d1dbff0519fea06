"""Components and their outlines: 8-connectivity, exact loops through boundary-pixel centres."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from scclip_cli.maps.contours import boundary_loops, connected_components


def test_pixels_touching_at_a_corner_are_one_component() -> None:
    mask = np.zeros((5, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours
    mask[1, 4] = True  # alone
    labels, count = connected_components(mask)
    assert count == 2
    assert labels[1, 1] == labels[2, 2] != labels[1, 4]
    assert (labels[~mask] == 0).all()


def test_a_single_pixel_is_a_loop_of_four_equal_vertices() -> None:
    mask = np.zeros((3, 3), dtype=bool)
    mask[1, 2] = True
    (loop,) = boundary_loops(mask)
    assert loop.tolist() == [[2, 1]] * 4


def test_a_ring_has_an_outer_loop_and_a_hole_running_the_other_way() -> None:
    mask = np.zeros((7, 7), dtype=bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False
    loops = boundary_loops(mask)
    assert len(loops) == 2

    def signed_area(loop: np.ndarray) -> float:
        x, y = loop[:, 0].astype(float), loop[:, 1].astype(float)
        return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))

    areas = sorted(signed_area(loop) for loop in loops)
    assert areas[0] < 0 < areas[1] or areas[1] < 0 < areas[0]  # opposite orientations
    outer = max(loops, key=lambda loop: abs(signed_area(loop)))
    assert sorted(map(tuple, outer.tolist())) == [(1, 1), (1, 5), (5, 1), (5, 5)]


def test_filling_an_outline_with_its_edge_gives_back_the_component() -> None:
    rng = np.random.default_rng(3)
    mask = (
        np.asarray(
            Image.fromarray((rng.random((6, 8)) > 0.5).astype(np.uint8) * 255).resize((40, 30)),
        )
        > 127
    )
    labels, count = connected_components(mask)
    checked = 0
    for k in range(1, count + 1):
        component = labels == k
        if component.sum() < 30 or len(boundary_loops(component)) != 1:
            continue  # components with holes are joined by cuts (tested through the YOLO export)
        (loop,) = boundary_loops(component)
        canvas = Image.new("L", (mask.shape[1], mask.shape[0]), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in loop.tolist()], fill=1, outline=1)
        assert np.array_equal(np.asarray(canvas).astype(bool), component)
        checked += 1
    assert checked >= 1
