"""The font for the names we draw (``legend.png``, the eval chart), with glyphs for most scripts.

Pillow's built-in font has no glyphs for accented letters, so ``chat été`` came out as ``chat``
and two empty boxes. We ship a subset of DejaVu Sans (``fonts/``, Bitstream Vera licence: Latin
with its extensions, Greek, Cyrillic; 145 kB) and use it unless a name needs glyphs it lacks
(Chinese, Japanese, Korean, Arabic, ...): then the first system font that has every glyph of every
name is used (common Linux, macOS and Windows fonts are looked for, nothing is installed), and
when none has them all, the font that draws the most names, falling back to ours.

Whether a font draws a character is read from what it renders: a character the font lacks is drawn
as the font's ``.notdef`` glyph (the empty box), so its bitmap equals that of a code point no font
has.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SHIPPED_FONT = Path(__file__).with_name("fonts") / "DejaVuSans-subset.ttf"
SYSTEM_FONTS = (
    # Linux (Noto CJK, Droid fallback, WenQuanYi, full DejaVu)
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    # macOS
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    # Windows
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/YuGothM.ttc",
    "C:/Windows/Fonts/malgun.ttf",
    "C:/Windows/Fonts/seguisym.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
"""Fonts looked for, in order, when a name needs glyphs the shipped font lacks."""
_NO_SUCH_CHARACTER = "\U0010fffd"
"""A private-use code point that no font draws: renders as ``.notdef``."""


def missing_glyphs(font: Any, text: str) -> list[str]:
    """The characters of ``text`` that ``font`` (a Pillow font) draws as its ``.notdef`` box.

    Whitespace and control characters are never counted as missing.
    """
    notdef = _bitmap(font, _NO_SUCH_CHARACTER)
    return [
        ch
        for ch in dict.fromkeys(text)
        if ch.isprintable() and not ch.isspace() and _bitmap(font, ch) == notdef
    ]


def _bitmap(font: Any, ch: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(ch)
    return mask.size, bytes(mask)


def label_font(size: int, texts: Iterable[str] = ()) -> Any:
    """A Pillow font of ``size`` pixels that draws every character of ``texts`` if any font
    found can (module docstring); never fails (Pillow's default font is the last resort)."""
    texts = tuple(texts)
    return _label_font(size, "".join(sorted(set("".join(texts)))))


@functools.lru_cache(maxsize=32)
def _label_font(size: int, characters: str) -> Any:
    from PIL import ImageFont

    shipped = _truetype(str(SHIPPED_FONT), size)
    if shipped is not None and not missing_glyphs(shipped, characters):
        return shipped
    best, best_missing = (
        shipped,
        (len(missing_glyphs(shipped, characters)) if shipped is not None else None),
    )
    for path in _existing(SYSTEM_FONTS):
        font = _truetype(path, size)
        if font is None:
            continue
        missing = len(missing_glyphs(font, characters))
        if missing == 0:
            return font
        if best_missing is None or missing < best_missing:
            best, best_missing = font, missing
    if best is not None:
        return best
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _existing(paths: Sequence[str]) -> list[str]:
    return [p for p in paths if Path(p).is_file()]


def _truetype(path: str, size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.truetype(path, size)
    except (OSError, ValueError):
        return None
