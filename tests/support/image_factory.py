"""Small test images of every kind the readers must handle, written on demand.

    from support.image_factory import make_image_zoo
    zoo = make_image_zoo(tmp_path / "zoo")      # {name: path}, plus zoo.failing / zoo.sizes
    for name, path in zoo.readable().items(): ...

Every image is tiny (tests stay fast). Most carry :func:`quadrant_rgb`'s four coloured corners, so
orientation and colour handling can be checked pixel by pixel.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

EXIF_ORIENTATION_TAG = 0x0112


def quadrant_rgb(height: int, width: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: top-left red, top-right green, bottom-left blue, bottom-right white."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    top, left = height // 2, width // 2
    image[:top, :left] = RED
    image[:top, left:] = GREEN
    image[top:, :left] = BLUE
    image[top:, left:] = WHITE
    return image


def gradient_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """``[H, W, 3]`` uint8 smooth colour gradients plus a little noise (photo-like)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 127.5 + 127.5 * np.sin((x + y) / 9.0)
    image = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def save_rgb(path: Path, rgb: np.ndarray, **save_options: object) -> Path:
    """Save ``[H, W, 3]`` uint8 RGB (format from the suffix), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **save_options)  # type: ignore[arg-type]
    return path


def save_blurred_noise(
    path: Path, width: int, height: int, seed: int, cells: tuple[int, int] = (3, 4)
) -> Path:
    """A photo-like image file: a ``cells`` grid (rows, columns) of seeded random colours resized
    bilinearly to ``width × height``, saved in the format of the suffix, folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = np.random.default_rng(seed).integers(0, 256, size=(*cells, 3), dtype=np.uint8)
    Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR).save(path)
    return path


def exif_rotated_jpeg(path: Path, stored: np.ndarray, orientation: int = 6) -> Path:
    """A JPEG of ``stored`` pixels whose EXIF says to display them rotated (6: 90° clockwise)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return save_rgb(path, stored, quality=95, exif=exif.tobytes())


def png_declaring_size(path: Path, width: int, height: int) -> Path:
    """A ~70-byte PNG whose header declares ``width × height`` 1-bit pixels (no real data).

    For decompression-bomb guards: it must be refused from its header, before any decoding.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class ImageZoo(dict[str, Path]):
    """``{name: path}`` of the zoo's files, with what reading each should give.

    Attributes:
        sizes: displayed ``(width, height)`` of every readable file.
        failing: names of the files every reader must refuse (corrupt, not an image, empty).
    """

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[str, tuple[int, int]] = {}
        self.failing: set[str] = set()

    def add(self, name: str, path: Path, size: tuple[int, int] | None) -> None:
        """Record a file: ``size`` is its displayed ``(width, height)``; ``None``: it must fail."""
        self[name] = path
        if size is None:
            self.failing.add(name)
        else:
            self.sizes[name] = size

    def separate_formats(self, folder: Path) -> None:
        """Move ``bmp``, ``webp`` and ``tiff`` to ``folder/formats/<name>/``: ``image.bmp``,
        ``image.webp`` and ``image.tif`` would all write ``image.png`` in one output folder."""
        for name in ("bmp", "webp", "tiff"):
            moved = folder / "formats" / name / self[name].name
            moved.parent.mkdir(parents=True)
            self[name] = self[name].rename(moved)

    def readable(self) -> dict[str, Path]:
        return {k: v for k, v in self.items() if k not in self.failing}

    def unreadable(self) -> dict[str, Path]:
        return {k: v for k, v in self.items() if k in self.failing}


def make_image_zoo(folder: Path) -> ImageZoo:
    """Write one small file of every kind under ``folder`` (created); see :class:`ImageZoo`.

    Readable: ``rgb_jpg``, ``upper_ext_jpg`` (``.JPG``), ``nested_png`` (in ``a/b/``), ``gray_png``,
    ``one_bit_png``, ``palette_png``, ``palette_transparent_png``, ``rgba_png``, ``la_png``,
    ``cmyk_jpg``, ``gray16_png``, ``float_tiff``, ``exif_rotated_jpg`` (stored 40×24, displayed
    24×40), ``bmp``, ``webp`` (lossless), ``tiff``, ``tiny_png`` (3×5), ``extreme_aspect_png``
    (600×8), ``unicode_name_png`` (``ünïcødé_猫.png``). Failing: ``truncated_jpg``, ``text_as_jpg``,
    ``empty_png``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    zoo = ImageZoo()
    quad = quadrant_rgb(24, 40)  # 40 wide, 24 high

    zoo.add("rgb_jpg", save_rgb(folder / "rgb.jpg", quad, quality=95), (40, 24))
    zoo.add("upper_ext_jpg", save_rgb(folder / "UPPER.JPG", quad, quality=95), (40, 24))
    zoo.add("nested_png", save_rgb(folder / "a" / "b" / "nested.png", quad), (40, 24))

    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (6, 1))  # 32 wide, 6 high
    Image.fromarray(gray).save(folder / "gray.png")
    zoo.add("gray_png", folder / "gray.png", (32, 6))

    bits = np.zeros((6, 10), dtype=bool)
    bits[:, 5:] = True
    Image.fromarray(bits).convert("1").save(folder / "one_bit.png")
    zoo.add("one_bit_png", folder / "one_bit.png", (10, 6))

    palette = Image.fromarray(np.array([[0, 1, 2, 3]] * 3, dtype=np.uint8))  # 4 wide, 3 high
    palette.putpalette([*RED, *GREEN, *BLUE, *WHITE])
    palette.save(folder / "palette.png")
    zoo.add("palette_png", folder / "palette.png", (4, 3))
    palette.save(folder / "palette_transparent.png", transparency=bytes([0, 128, 255, 255]))
    zoo.add("palette_transparent_png", folder / "palette_transparent.png", (4, 3))

    rgba = np.dstack([quad, np.tile(np.linspace(0, 255, 40).astype(np.uint8), (24, 1))])
    Image.fromarray(rgba).save(folder / "rgba.png")
    zoo.add("rgba_png", folder / "rgba.png", (40, 24))
    Image.fromarray(np.dstack([gray, np.full_like(gray, 7)])).save(folder / "la.png")
    zoo.add("la_png", folder / "la.png", (32, 6))

    Image.fromarray(quad).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    zoo.add("cmyk_jpg", folder / "cmyk.jpg", (40, 24))

    deep = np.array([[0, 255, 256, 32768, 65280, 65535]] * 2, dtype=np.uint16)  # 6 wide, 2 high
    Image.fromarray(deep).save(folder / "gray16.png")
    zoo.add("gray16_png", folder / "gray16.png", (6, 2))
    real = np.array([[0.0, 0.25, 0.5, 1.0]] * 2, dtype=np.float32)
    Image.fromarray(real).save(folder / "float.tiff")
    zoo.add("float_tiff", folder / "float.tiff", (4, 2))

    zoo.add("exif_rotated_jpg", exif_rotated_jpeg(folder / "exif_rotated.jpg", quad), (24, 40))
    zoo.add("bmp", save_rgb(folder / "image.bmp", quad), (40, 24))
    zoo.add("webp", save_rgb(folder / "image.webp", quad, lossless=True), (40, 24))
    zoo.add("tiff", save_rgb(folder / "image.tif", quad), (40, 24))
    zoo.add("tiny_png", save_rgb(folder / "tiny.png", quadrant_rgb(5, 3)), (3, 5))
    zoo.add("extreme_aspect_png", save_rgb(folder / "strip.png", gradient_rgb(8, 600)), (600, 8))
    zoo.add("unicode_name_png", save_rgb(folder / "ünïcødé_猫.png", quad), (40, 24))

    encoded = io.BytesIO()
    Image.fromarray(gradient_rgb(64, 64)).save(encoded, format="JPEG", quality=90)
    data = encoded.getvalue()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    zoo.add("truncated_jpg", folder / "truncated.jpg", None)
    (folder / "text.jpg").write_text("this is not a picture\n", encoding="utf-8")
    zoo.add("text_as_jpg", folder / "text.jpg", None)
    (folder / "empty.png").write_bytes(b"")
    zoo.add("empty_png", folder / "empty.png", None)
    return zoo
