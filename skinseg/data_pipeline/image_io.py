"""Decode images and masks into uint8 / bool arrays, with documented conversions.

Pillow decodes because it *detects* truncated files (OpenCV returns a half-grey image with a
warning); OpenCV resizes. Every failure becomes an `ImageReadError` naming the file.

Images and masks are read as a viewer shows them: an EXIF orientation tag is applied.

Conversions (also listed in the README):
- grayscale image -> replicated to RGB; RGBA/LA -> alpha dropped; palette -> RGB; CMYK -> RGB;
  16-bit image -> scaled to 8 bits by its bit depth (10/12/14/16); float image in [0, 1] -> x255;
  multi-page TIFF / animated WebP -> first frame.
- masks, one rule per file: exactly two values {0, k} (k = 1, 255, a label, a 16-bit 1000) ->
  lesion where k; more values (JPEG noise, anti-aliased edges) -> lesion above half the range
  (> 127; 16-bit > 32767; float > 0.5), refused when the maximum does not reach it (noise and
  lesion cannot be told apart); grey saved as RGB (channels within 24) or with an opaque alpha -> its
  grey; a colour mask or one with transparency -> refused (which colour, or which part, is lesion
  is ambiguous).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skinseg.core.atomic import atomic_path
from skinseg.core.errors import ImageReadError, is_out_of_memory, memory_problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

# Checked by hand in _open: Pillow's own warning at its limit would need a per-call warnings filter,
# which is not thread-safe (images are decoded in threads), so it is silenced once here.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class Decoded:
    array: np.ndarray
    original_size: tuple[int, int]  # (height, width) of the file, before any draft decoding
    notes: tuple[str, ...] = ()  # conversions applied, for `inspect`
    # (height, width) in original pixels that `array` covers. A JPEG decoded at 1/s scale covers
    # its size rounded up to whole s-pixel blocks (the decoder averages edge-replicated padding
    # into its last row and column), so a 1022-pixel-wide image decoded at 1/4 covers 1024.
    extent: tuple[int, int] | None = None
    orientation: int = 1  # the EXIF orientation that was applied (1: none)

    @property
    def covers(self) -> tuple[int, int]:
        return self.extent or self.original_size


def _open(path: str) -> Image.Image:
    try:
        size = os.path.getsize(path)
    except PermissionError:
        raise ImageReadError(path, "permission denied (make the file readable)") from None
    except OSError as err:  # ELOOP for a symlink loop, ENOENT for a dangling link
        raise ImageReadError(path, f"cannot access file ({err.strerror})") from None
    if not os.path.isfile(path):
        raise ImageReadError(path, "not a regular file")
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        im = Image.open(path)  # Pillow itself refuses twice its limit (DecompressionBombError)
    except PermissionError:
        raise ImageReadError(path, "permission denied (make the file readable)") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a readable image (unknown format or corrupt header)") from None
    except Image.DecompressionBombError:
        raise _too_large(path) from None
    except OSError as err:
        raise ImageReadError(path, f"cannot open ({err})") from None
    if Image.MAX_IMAGE_PIXELS and im.size[0] * im.size[1] > Image.MAX_IMAGE_PIXELS:
        im.close()
        raise _too_large(path)
    return im


def _too_large(path: str) -> ImageReadError:
    return ImageReadError(
        path,
        f"image too large to decode safely: more than {Image.MAX_IMAGE_PIXELS:,} pixels, the "
        "decompression-bomb guard (predict.py --max-pixels N raises it)",
    )


def _load(path: str, im: Image.Image) -> None:
    try:
        im.load()
    except OSError as err:
        message = str(err)
        if "truncated" in message:
            raise ImageReadError(path, "truncated file (incomplete download?)") from None
        raise ImageReadError(path, f"corrupt image data ({message})") from None
    except (SyntaxError, ValueError, EOFError) as err:  # Pillow's PNG chunk errors
        raise ImageReadError(path, f"corrupt image data ({err})") from None


def peek_size(path: str) -> tuple[int, int]:
    """(height, width) from the header alone."""
    with _open(path) as im:
        return im.size[1], im.size[0]


def read_image(path: str, min_size: tuple[int, int] | None = None) -> Decoded:
    """RGB uint8 array (H, W, 3). `min_size` lets JPEGs decode at a reduced scale that is still
    at least that large (DCT scaling: 1/2 to 1/8 of the work for a 128 px target). An image too
    large for the memory left is an ImageReadError naming its size."""
    path = str(path)
    try:
        return _read_image(path, min_size)
    except (MemoryError, cv2.error) as err:
        if not is_out_of_memory(err):
            raise
        height, width = peek_size(path)
        raise ImageReadError(path, memory_problem(height, width, "decode it")) from None


def _read_image(path: str, min_size: tuple[int, int] | None) -> Decoded:
    extent = None
    with _open(path) as opened:
        stored = (opened.size[1], opened.size[0])
        # Only a JPEG's EXIF sits in its header; Pillow decodes a PNG whole to find its eXIf chunk,
        # and would swallow the decoding error in doing so: those are loaded (and checked) first.
        if opened.format != "JPEG":
            _load(path, opened)
        orientation = exif_orientation(opened)
        # A rotated image is decoded whole: the DCT decoder's padding would land on another side.
        if min_size is not None and opened.format == "JPEG" and orientation == 1:
            drafted = opened.draft(opened.mode, (min_size[1], min_size[0]))
            if drafted is not None:
                scale = round(stored[1] / drafted[1][2])
                extent = (opened.size[1] * scale, opened.size[0] * scale)
        _load(path, opened)
        notes: list[str] = []
        if getattr(opened, "n_frames", 1) > 1:
            notes.append(f"{opened.n_frames} frames (multi-page or animated): the first one used")
        im = opened
        if orientation != 1:
            im = ImageOps.exif_transpose(opened)
            notes.append(f"EXIF orientation {orientation} applied (the image as a viewer shows it)")
        original = (im.size[1], im.size[0]) if orientation != 1 else stored
        mode = im.mode
        if mode == "RGB":
            arr = np.asarray(im)
        elif mode in ("L", "1"):
            arr = np.asarray(im.convert("L"))
            notes.append("grayscale image replicated to RGB")
        elif mode in _HIGH_DEPTH_MODES:
            arr = _to_uint8(np.asarray(im))
            notes.append(f"{mode} image scaled to 8 bits (by its bit depth) and replicated to RGB")
        elif mode in ("RGBA", "LA", "PA"):
            arr = np.asarray(im.convert("RGB"))
            notes.append(f"{mode} image: alpha channel dropped")
        elif mode == "CMYK":
            arr = np.asarray(im.convert("RGB"))
            notes.append("CMYK image converted to RGB")
        else:
            arr = np.asarray(im.convert("RGB"))
            notes.append(f"{mode} image converted to RGB")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return Decoded(np.ascontiguousarray(arr, dtype=np.uint8), original, tuple(notes), extent, orientation)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """8 bits from a high-depth image: floats with maximum <= 1 are read as [0, 1]; integers above
    255 as 10, 12, 14 or 16 bits, the smallest depth that holds their maximum (cameras store 12-bit
    data in 16-bit files; scaling by 65535 would make it nearly black)."""
    peak = float(arr.max(initial=0))
    if np.issubdtype(arr.dtype, np.floating) and peak <= 1.0:
        top = 1.0
    elif peak > 255:
        top = next((2.0**bits - 1 for bits in (10, 12, 14) if peak <= 2**bits - 1), 65535.0)
    else:
        top = 255.0
    return np.clip(np.rint(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 1 when absent or unreadable)."""
    try:
        value = im.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def read_mask(path: str) -> Decoded:
    """Boolean lesion mask (H, W); see the module docstring for the binarisation rules."""
    path = str(path)
    with _open(path) as opened:
        _load(path, opened)
        notes: list[str] = []
        orientation = exif_orientation(opened)
        im = opened
        if orientation != 1:
            im = ImageOps.exif_transpose(opened)
            notes.append(f"EXIF orientation {orientation} applied (the mask as a viewer shows it)")
        original = (im.size[1], im.size[0])
        if im.mode == "1":
            return Decoded(np.asarray(im, dtype=bool), original, tuple(notes), orientation=orientation)
        if im.mode in ("L", *_HIGH_DEPTH_MODES):
            values = np.asarray(im)
        else:
            values = _one_channel(path, im, notes)
    return Decoded(_lesion(path, values, notes), original, tuple(notes), orientation=orientation)


# Channels of a grey mask saved as RGB JPEG differ by chroma noise; a colour mask by much more.
_GREY_SPREAD = 24


def _one_channel(path: str, im: Image.Image, notes: list[str]) -> np.ndarray:
    """A mask stored with several channels, as one: refused when its alpha is not opaque (is the
    lesion the transparent part or the opaque one?) or its channels differ (a colour mask: which
    colour is lesion?); a grey mask saved as RGB, or with an opaque alpha, is its grey."""
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if alpha.min(initial=255) < 255:
            raise ImageReadError(
                path,
                f"{im.mode} mask with transparency ({np.count_nonzero(alpha < 255)} pixels not opaque): "
                "whether the lesion is the transparent or the opaque part is ambiguous; save masks as "
                "one channel, lesion 255 (or 1) on 0",
            )
        notes.append(f"{im.mode} mask: opaque alpha channel dropped")
    rgb = np.asarray(im.convert("RGB")).astype(np.int16)
    spread = int(np.abs(rgb - rgb[..., :1]).max(initial=0))
    if spread > _GREY_SPREAD:
        raise ImageReadError(
            path,
            f"colour mask ({im.mode}, channels differ by up to {spread}): which colour is lesion is "
            "ambiguous (a dark red lesion would read as background); save masks as one channel, lesion "
            "255 (or 1) on 0",
        )
    if not has_alpha:
        notes.append(f"{im.mode} mask with equal channels read as grey")
    return np.asarray(im.convert("L"))


def _lesion(path: str, values: np.ndarray, notes: list[str]) -> np.ndarray:
    """One rule per file. Two values {0, k} (any k: 1, 255, a label, a 16-bit 1000): lesion where k.
    More values (JPEG compression noise, anti-aliased edges): lesion above half the range (> 127
    for 8 bits, > 32767 for 16, > 0.5 for a float mask in [0, 1]), provided the maximum reaches it;
    below that, noise and lesion cannot be told apart and the file is refused."""
    top = values.max(initial=0)
    if top <= 0:
        return np.zeros(values.shape, bool)
    if values.dtype == np.uint8:  # the common case, in linear time
        distinct = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    else:
        distinct = np.unique(values)
    if len(distinct) == 1:  # one value, not 0: lesion everywhere
        return np.ones(values.shape, bool)
    sixteen = top > 255
    if len(distinct) == 2 and distinct[0] == 0:
        if sixteen:
            notes.append(f"16-bit mask with values {{0, {top:g}}}: lesion where {top:g}")
        elif top == 1:
            notes.append("mask values {0, 1} read as background/lesion")
        elif top != 255:
            notes.append(f"mask values {{0, {top:g}}}: lesion where {top:g}")
        return values == top
    half = 0.5 if values.dtype.kind == "f" and top <= 1 else 32767 if sixteen else 127
    if top <= half:
        raise ImageReadError(
            path,
            f"mask with {len(distinct)} distinct values up to {top:g}: too low to tell a lesion from "
            f"compression noise (with more than two values, lesion is > {half:g}); save masks as one "
            "channel, lesion 255 (or 1) on 0",
        )
    mask = values > half
    if sixteen:
        notes.append(f"16-bit mask: lesion where value > {half}")
    else:
        grey = np.count_nonzero((values > 0) & (values < 255))
        notes.append(f"non-binary mask ({grey} grey pixels, e.g. JPEG): binarised at > {half:g}")
    return mask


def _interpolation(source: tuple[int, int], target: tuple[int, int]) -> int:
    """Area when shrinking (no aliasing), bilinear otherwise. Both are centre-aligned: output
    pixel i covers source pixels [i, i + 1) * scale. (Nearest neighbour is not: OpenCV's
    INTER_NEAREST samples floor(i * scale), which moves a mask half a pixel down and right.)"""
    shrinking = source[0] >= target[0] and source[1] >= target[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


FITS = ("stretch", "pad")


def content_box(
    source: tuple[int, int], size: tuple[int, int], fit: str = "stretch"
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside a `size` input. `stretch` fills it (the
    aspect ratio changes, as the reference did); `pad` scales the image to fit, keeping its aspect
    ratio, and centres it (the rest is padding: black in the image, background in the mask)."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    if fit == "stretch":
        return 0, 0, size[0], size[1]
    scale = min(size[0] / source[0], size[1] / source[1])
    h, w = max(1, round(source[0] * scale)), max(1, round(source[1] * scale))
    return (size[0] - h) // 2, (size[1] - w) // 2, h, w


def _place(content: np.ndarray, size: tuple[int, int], top: int, left: int) -> np.ndarray:
    out = np.zeros((*size, *content.shape[2:]), dtype=content.dtype)
    out[top : top + content.shape[0], left : left + content.shape[1]] = content
    return out


def _fit(array: np.ndarray, size: tuple[int, int], fit: str) -> np.ndarray:
    """Resized into its content box, then placed on a `size` canvas when it does not fill it."""
    top, left, h, w = content_box(array.shape[:2], size, fit)
    if array.shape[:2] != (h, w):
        array = cv2.resize(array, (w, h), interpolation=_interpolation(array.shape[:2], (h, w)))
    return array if (h, w) == tuple(size) else _place(array, tuple(size), top, left)


def resize_image(image: np.ndarray, size: tuple[int, int], fit: str = "stretch") -> np.ndarray:
    return _fit(image, size, fit)


def resize_mask(
    mask: np.ndarray, size: tuple[int, int], extent: tuple[int, int] | None = None, fit: str = "stretch"
) -> np.ndarray:
    """Resample a boolean mask with exactly the geometry of `resize_image` (the same
    interpolation on 0/255, the same `fit`), then keep the pixels that are more than half
    lesion: the mask stays binary and centred on its image. `extent`: the original pixels the
    *image* array covers when that is more than the mask (a DCT-scaled JPEG); the mask is
    edge-padded to it first, as the JPEG decoder padded the image."""
    mask = np.asarray(mask).astype(np.uint8) * 255 if mask.dtype == bool else np.asarray(mask, np.uint8)
    if extent is not None and extent != mask.shape[:2]:
        pad_h, pad_w = extent[0] - mask.shape[0], extent[1] - mask.shape[1]
        mask = cv2.copyMakeBorder(mask, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
    return _fit(mask, size, fit) > 127


def to_original(
    values: np.ndarray, original_size: tuple[int, int], extent=None, fit: str = "stretch"
) -> np.ndarray:
    """The inverse of the image's resampling: a model-resolution map (e.g. lesion probabilities)
    cut to the image's part of the input (`pad`), resized bilinearly onto the original pixels
    (through `extent` when the image was DCT-scaled, then cropped to the original size)."""
    h, w = extent or original_size
    top, left, ch, cw = content_box((h, w), values.shape[:2], fit)
    values = values[top : top + ch, left : left + cw]
    out = cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR)
    return out[: original_size[0], : original_size[1]]


def write_image(path: str, array: np.ndarray, quality: int = 95) -> None:
    """Write a PNG/JPEG/BMP (by suffix) atomically."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[os.path.splitext(path)[1].lower()]
    # PNG level 1: masks compress almost as well as at the default 6, in about half the time
    options = {"quality": quality} if fmt == "JPEG" else {"compress_level": 1} if fmt == "PNG" else {}
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=fmt, **options)
