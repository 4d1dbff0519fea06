"""Names with accents (and CJK where a font for it is installed) are drawn as glyphs, not boxes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont

from scclip_cli.files.fonts import SHIPPED_FONT, label_font, missing_glyphs
from scclip_cli.files.mask_io import write_legend_png

ACCENTED = "chat été, Ärger, straße, ñandú, Ωμέγα, кошка"
CJK = "猫"


def test_pillows_default_font_draws_accents_as_boxes():
    """What the issue saw: the check below tells a box from a glyph."""
    default = ImageFont.load_default(size=13)
    assert "é" in missing_glyphs(default, "chat été")
    assert missing_glyphs(default, "chat") == []


def test_the_legend_font_draws_every_accented_letter():
    font = label_font(13, [ACCENTED])
    assert missing_glyphs(font, ACCENTED) == []
    assert SHIPPED_FONT.is_file() and SHIPPED_FONT.stat().st_size < 200_000


def test_cjk_names_use_a_font_that_has_them_when_one_is_installed():
    font = label_font(13, [f"chat {CJK}"])
    if missing_glyphs(font, CJK):
        pytest.skip("no font with CJK glyphs on this machine (the shipped subset has none)")
    assert missing_glyphs(font, "chat été") == []


def test_legend_png_ink_of_accented_name_differs_from_boxes(tmp_path):
    """The rendered legend: the row of ``chat été`` and a row of ``chat`` + two missing
    characters differ exactly where the accented letters are."""
    write_legend_png(tmp_path / "a", ["chat été"])
    write_legend_png(tmp_path / "b", ["chat \U0010fffd\U0010fffd"])
    a = np.asarray(Image.open(tmp_path / "a/legend.png").convert("L"))
    b = np.asarray(Image.open(tmp_path / "b/legend.png").convert("L"))
    width = min(a.shape[1], b.shape[1])
    assert not np.array_equal(a[:, :width], b[:, :width])
    assert (a < 128).sum() > 0
