"""Read images robustly into ``[H, W, 3] uint8`` RGB, and normalise them for the model.

Every way a file can fail to be an image (missing, empty, not an image, corrupt or truncated data,
too many pixels) raises :class:`~scclip_cli.errors.ImageReadError` with a short reason, so batch
commands can record the file and carry on.

How each Pillow mode becomes RGB (:func:`read_image_rgb`):

- ``RGB``: as stored. ``L`` / ``1`` (grey, 1-bit): the grey level in all three channels.
- ``P`` (palette): the palette colours. Transparency is ignored.
- ``RGBA`` / ``LA`` / ``PA`` / ``RGBa``: the alpha channel is **dropped** (not composited), as
  OpenCV's ``imread(IMREAD_COLOR)`` in the reference pipeline does; fully transparent pixels show
  whatever colour they store.
- ``CMYK`` / ``YCbCr`` / ``LAB`` / ``HSV``: Pillow's conversion to RGB (no colour management).
- 16-bit grey (``I;16*``, or ``I`` with values in [0, 65535]): the high byte (``v >> 8``), so the
  full 16-bit range maps onto 0..255. ``I`` with other values: linearly stretched from its
  [min, max] to [0, 255].
- 32-bit float (``F``): values in [0, 1] when the maximum is at most 1, else in [0, 255]; clipped,
  NaN → 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scclip_cli.errors import ImageReadError

if TYPE_CHECKING:
    import torch
    from PIL import Image as PILImage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File name endings (matched case-insensitively) that input discovery treats as images."""

PIL_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
"""Pillow decoders tried on a file, whatever its name (JPEG covers cameras' multi-picture MPO
files). Restricting the decoders keeps Pillow's rarer, less hardened plugins away from untrusted
files."""

MAX_IMAGE_PIXELS = 178_956_970
"""Decompression-bomb guard: images with more pixels (width × height) are refused before they are
decoded. This is Pillow's own hard limit under its default settings
(2 × ``Image.MAX_IMAGE_PIXELS``): about 13 400 × 13 400, enough for 150-megapixel photographs, whose
decoded RGB takes about 0.5 GB.
It is read from this module on every call, independently of Pillow's global setting; Pillow's own
guard applies as well, so lowering ``PIL.Image.MAX_IMAGE_PIXELS`` lowers the limit further. Pillow
warns (``DecompressionBombWarning``) about images above half this limit, which are still read."""

CLIP_PIXEL_MEAN = (122.771, 116.746, 104.094)
"""Per-channel (RGB) mean subtracted from 0..255 pixel values: OpenAI CLIP's mean × 255, rounded to
three decimals, exactly as the reference's mmseg ``SegDataPreProcessor`` configuration writes it."""
CLIP_PIXEL_STD = (68.501, 66.632, 70.323)
"""Per-channel (RGB) divisor after the mean is subtracted: OpenAI CLIP's std × 255, rounded
likewise."""

_FORMAT_NAMES = {"WEBP": "WebP"}
_EXIF_ORIENTATION = 0x0112
# Orientations that rotate by 90° or transpose: the displayed width is the stored height.
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether the file name ends with one of :data:`IMAGE_EXTENSIONS` (any letter case)."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def open_image(path: Path, formats: tuple[str, ...]) -> PILImage.Image:
    """Open ``path`` with Pillow (header only) and check its pixel count.

    Raises:
        ImageReadError: missing / unreadable / empty file, not an image, or too many pixels.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError(f"{path}: empty file")
        image = Image.open(path, formats=formats)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not a {_format_names(formats)} image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # The warning arrives as an exception only where warnings are turned into errors.
        raise ImageReadError(f"{path}: too many pixels ({err})") from None
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err})") from None
    except Exception as err:  # Pillow raises odd types on malformed headers (SyntaxError, ...)
        raise ImageReadError(f"{path}: unreadable image header ({_describe(err)})") from None
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise ImageReadError(f"{path}: image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageReadError(
            f"{path}: too many pixels ({width}x{height} = {width * height:,} > limit "
            f"{MAX_IMAGE_PIXELS:,}; possible decompression bomb)"
        )
    return image


def _format_names(formats: tuple[str, ...]) -> str:
    names = [_FORMAT_NAMES.get(f, f) for f in formats]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def decode_image(image: PILImage.Image, path: Path) -> None:
    """Decode all pixel data now (Pillow is lazy), so corrupt or truncated files fail here."""
    try:
        image.load()
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode {image.size} pixels") from None
    except Exception as err:  # OSError("image file is truncated"), SyntaxError, ValueError, ...
        raise ImageReadError(
            f"{path}: corrupt or truncated image data ({_describe(err)})"
        ) from None


def _orientation(image: PILImage.Image) -> int:
    """EXIF orientation (1..8) of an opened image; 1 when absent or unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF must not make a readable photo fail
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(image: PILImage.Image) -> PILImage.Image:
    """The image as displayed (EXIF orientation applied); unchanged if the EXIF is unreadable."""
    from PIL import ImageOps

    if _orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _scaled_to_u8(values: np.ndarray, mode: str) -> np.ndarray:
    """``[H, W]`` 16/32-bit integer or float grey values → ``[H, W]`` uint8 (see module doc)."""
    if mode == "F":
        real = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if real.size and real.max() <= 1.0:
            real = real * 255.0
        return np.rint(np.clip(real, 0.0, 255.0)).astype(np.uint8)
    whole = values.astype(np.int64)
    low = int(whole.min()) if whole.size else 0
    high = int(whole.max()) if whole.size else 0
    if mode.startswith("I;16") or (low >= 0 and high <= 0xFFFF):
        return (whole >> 8).astype(np.uint8)
    if high == low:
        return np.zeros(whole.shape, dtype=np.uint8)
    stretched = (whole - low).astype(np.float64) * (255.0 / (high - low))
    return np.rint(stretched).astype(np.uint8)


def _to_rgb_array(image: PILImage.Image, path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of a decoded image of any supported mode (see module doc)."""
    mode = image.mode
    if mode == "RGB":
        rgb = np.asarray(image)
    elif mode.startswith("I") or mode == "F":
        grey = _scaled_to_u8(np.asarray(image), mode)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    elif mode in ("L", "1"):
        grey = np.asarray(image.convert("L"))
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    elif mode in ("LA", "La"):
        grey = np.asarray(image.getchannel(0))
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    elif mode in ("P", "PA"):
        # Palette colours; alpha and the palette's transparency entry are dropped.
        rgb = np.asarray(image.convert("RGBA" if "transparency" in image.info else "RGB"))[..., :3]
    else:
        try:
            rgb = np.asarray(image.convert("RGB"))
        except (ValueError, OSError) as err:
            raise ImageReadError(f"{path}: unsupported image mode {mode} ({err})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported image mode {mode}")
    if not (rgb.flags.c_contiguous and rgb.flags.writeable):
        rgb = rgb.copy()  # Pillow's buffers are read-only; callers get an array of their own
    return rgb


def read_image_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as displayed: ``[H, W, 3]`` uint8 RGB, EXIF orientation applied.

    The whole file is decoded (truncated data is an error, never padded). Alpha is dropped, 16-bit
    data keeps its full range; the module docstring lists how each mode is converted.

    Raises:
        ImageReadError: missing or unreadable path, empty file, not an image, corrupt or truncated
            data, more than :data:`MAX_IMAGE_PIXELS` pixels.
    """
    with open_displayed(path) as shown:
        return shown.rgb()


class DisplayedImage:
    """A decoded image file as displayed (EXIF orientation applied), whose RGB pixels are read as
    a whole (:meth:`rgb`) or by rows (:meth:`rows`): :func:`read_image_rgb`'s pixels either way.

    A downscale reads two source rows per output row: reading only those skips most of the
    conversion of a big photo to an array (docs/performance-cache.md, "Big photos"). Close it (or
    use it as a context manager) to free the decoded pixels.
    """

    def __init__(self, image: PILImage.Image, shown: PILImage.Image, path: Path) -> None:
        self._image, self._shown, self._path = image, shown, path
        self._whole: np.ndarray | None = None
        self.height, self.width = shown.height, shown.width

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)``, as the array :meth:`rgb` gives."""
        return self.height, self.width, 3

    def rgb(self) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB, a writable array of the caller's own."""
        if self._whole is None:
            return _to_rgb_array(self._shown, self._path)
        return self._whole.copy()

    def rows(self, index: np.ndarray) -> np.ndarray:
        """``[n, W, 3]`` uint8 RGB of the rows ``index`` (``[n]`` int, in ``0 .. H - 1``, any order).

        RGB and RGBA images are cut out run by run of consecutive rows; other modes convert the
        whole image once (kept for the next call)."""
        index = np.asarray(index, dtype=np.int64)
        if self._shown.mode not in ("RGB", "RGBA"):
            if self._whole is None:
                self._whole = _to_rgb_array(self._shown, self._path)
            return self._whole[index]
        if index.size and (int(index.min()) < 0 or int(index.max()) >= self.height):
            raise IndexError(f"rows out of 0..{self.height - 1}")
        wanted = np.unique(index)  # sorted
        runs = np.split(wanted, np.flatnonzero(np.diff(wanted) != 1) + 1)
        pieces = [
            np.asarray(self._shown.crop((0, int(run[0]), self.width, int(run[-1]) + 1)))[..., :3]
            for run in runs
            if run.size
        ]
        found = np.concatenate(pieces) if pieces else np.empty((0, self.width, 3), np.uint8)
        if np.array_equal(wanted, index):
            return np.ascontiguousarray(found)
        return found[np.searchsorted(wanted, index)]

    def close(self) -> None:
        if self._shown is not self._image:
            self._shown.close()
        self._image.close()

    def __enter__(self) -> DisplayedImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_displayed(path: str | os.PathLike[str]) -> DisplayedImage:
    """Open and decode an image file (see :func:`read_image_rgb`), as displayed.

    Raises:
        ImageReadError: as :func:`read_image_rgb`.
    """
    path = Path(path)
    image = open_image(path, PIL_FORMATS)
    try:
        decode_image(image, path)
        return DisplayedImage(image, _apply_orientation(image), path)
    except BaseException:
        image.close()
        raise


READER_VERSION = 1
"""Bump when :func:`read_image_rgb` changes the pixels it gives for some file: feature-cache
entries found by a file's bytes (:func:`decoder_identity`) are then not reused."""


def decoder_identity() -> str:
    """What turns an image file's bytes into :func:`read_image_rgb`'s pixels: this module's
    version, Pillow's, and the codec libraries' (another libjpeg may round a JPEG differently)."""
    from PIL import __version__ as pillow
    from PIL import features

    codecs = ",".join(
        f"{name} {features.version(name)}" for name in ("jpg", "zlib", "libtiff", "webp")
    )
    return f"read_image_rgb/{READER_VERSION} Pillow {pillow} ({codecs})"


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of an image file as displayed (EXIF orientation applied).

    Reads only the header: cheap, but a file whose pixel data is corrupt passes.

    Raises:
        ImageReadError: as :func:`read_image_rgb`, except for errors in the pixel data.
    """
    path = Path(path)
    with open_image(path, PIL_FORMATS) as image:
        width, height = image.size
        if _orientation(image) in _SWAPPED_ORIENTATIONS:
            return height, width
        return width, height


def normalize_image(rgb: np.ndarray) -> torch.Tensor:
    """The reference's pixel normalisation: ``(x - CLIP_PIXEL_MEAN) / CLIP_PIXEL_STD`` per channel.

    Computed in float64 and rounded to float32, which reproduces the reference's input tensor
    bit for bit (``tests/data/golden/crop.npz``: ``input``).

    Args:
        rgb: ``[H, W, 3]`` uint8 RGB.

    Returns:
        ``[3, H, W]`` float32 CPU tensor (contiguous).
    """
    import torch

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    out = np.empty((3, height, width), dtype=np.float32)
    levels = np.arange(256, dtype=np.float64)
    for channel in range(3):
        # 256-entry lookup table: the float64 arithmetic once per grey level, not per pixel.
        table = ((levels - CLIP_PIXEL_MEAN[channel]) / CLIP_PIXEL_STD[channel]).astype(np.float32)
        np.take(table, rgb[:, :, channel], out=out[channel])
    return torch.from_numpy(out)
