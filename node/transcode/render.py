"""Rendered images of one frame (PS3.18 8.3.5: /rendered and /thumbnail), as JPEG or PNG.

The pipeline of a display (PS3.3 C.11): decode the frame, the Modality LUT
(Rescale Slope / Intercept, or a Modality LUT Sequence), the VOI LUT (the
window asked for, else the data set's first window, else its VOI LUT
Sequence, else the frame's own range), MONOCHROME1 inverted; colour images
converted to RGB (palette colour through its LUTs); then an optional crop
and the fit to a viewport.  Per-frame values of enhanced multi-frame
objects (Pixel Value Transformation, Frame VOI LUT functional groups) are
used for the frame rendered.  One frame in memory, nothing else.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, convert_color_space

from .codec import CodecError, PixelFormat, decode

JPEG = "image/jpeg"
PNG = "image/png"
MEDIA_TYPES = (JPEG, PNG)
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
DEFAULT_QUALITY = 90
THUMBNAIL_VIEWPORT = (128, 128)
MAX_VIEWPORT = 8192  # a larger output would be a memory bomb, not a picture


class RenderError(ValueError):
    """A query parameter is malformed or out of range; the message names it."""


class RenderUnsupported(CodecError):
    """The frame decodes, but the node does not render this kind of pixel data."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class RenderOptions:
    """What was asked: media type, window, viewport (and crop of the source), JPEG quality."""

    media_type: str = JPEG
    window: Window | None = None
    viewport: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh of the source
    quality: int = DEFAULT_QUALITY


def _numbers(name: str, text: str, count: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise RenderError(f"{name}={text!r}: expected comma-separated numbers") from None
    if len(values) not in count or not all(math.isfinite(v) for v in values):
        raise RenderError(f"{name}={text!r}: expected {' or '.join(map(str, count))} numbers")
    return values


def parse_options(
    params: Mapping[str, str], media_type: str, *, viewport: tuple[int, int] | None = None
) -> RenderOptions:
    """RenderOptions from the query parameters of PS3.18 8.3.5.1 (window, viewport, quality).

    *viewport* is the default when none is asked (thumbnails).  Raises
    RenderError naming a malformed parameter.
    """
    window = None
    if text := params.get("window"):
        parts = text.split(",")
        function = parts[2].strip().lower() if len(parts) == 3 else "linear"
        center, width = _numbers("window", ",".join(parts[:2]), (2,))
        if function not in WINDOW_FUNCTIONS:
            raise RenderError(f"window={text!r}: the function is one of {', '.join(WINDOW_FUNCTIONS)}")
        if width < (1 if function == "linear" else 0) or width == 0:
            raise RenderError(f"window={text!r}: the width must be positive (at least 1 for linear)")
        window = Window(center, width, function)
    crop = None
    if text := params.get("viewport"):
        values = _numbers("viewport", text, (2, 6))
        if any(v != int(v) for v in values):
            raise RenderError(f"viewport={text!r}: expected whole numbers")
        vw, vh = int(values[0]), int(values[1])
        if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
            raise RenderError(f"viewport={text!r}: width and height from 1 to {MAX_VIEWPORT}")
        viewport = (vw, vh)
        if len(values) == 6:
            sx, sy, sw, sh = (int(v) for v in values[2:])
            if sx < 0 or sy < 0 or sw <= 0 or sh <= 0:
                raise RenderError(f"viewport={text!r}: the source region must lie in the image")
            crop = (sx, sy, sw, sh)
    quality = DEFAULT_QUALITY
    if text := params.get("quality"):
        try:
            quality = int(text)
        except ValueError:
            raise RenderError(f"quality={text!r}: expected a number from 1 to 100") from None
        if not 1 <= quality <= 100:
            raise RenderError(f"quality={text!r}: expected a number from 1 to 100")
    return RenderOptions(media_type, window, viewport, crop, quality)


def _frame_item(ds: Dataset, index: int, sequence: str) -> Dataset | None:
    """The functional group item *sequence* for frame *index*: per-frame first, then shared."""
    for groups, at in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > at and sequence in items[at] and len(items[at][sequence].value):
            return items[at][sequence][0]
    return None


def _modality(arr: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    item = _frame_item(ds, index, "PixelValueTransformationSequence")
    if item is not None and "RescaleSlope" in item:
        slope = float(item.get("RescaleSlope", 1) or 1)
        intercept = float(item.get("RescaleIntercept", 0) or 0)
        return arr.astype(np.float64) * slope + intercept
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def _first(value) -> float:
    if value is None:
        raise ValueError("no value")
    if isinstance(value, list | tuple) or hasattr(value, "__getitem__") and not isinstance(value, str):
        value = value[0]
    return float(value)


def _stored_window(ds: Dataset, index: int) -> Window | None:
    """The window the data set gives for this frame (its first), if any."""
    for source in (_frame_item(ds, index, "FrameVOILUTSequence"), ds):
        if source is None or "WindowCenter" not in source or "WindowWidth" not in source:
            continue
        try:
            center, width = _first(source.WindowCenter), _first(source.WindowWidth)
        except (TypeError, ValueError, IndexError):
            continue
        function = str(source.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().lower().replace("_", "-")
        if function not in WINDOW_FUNCTIONS:
            function = "linear"
        if width > 0:
            return Window(center, max(width, 1.0) if function == "linear" else width, function)
    return None


def window_to_8bit(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing onto 0..255."""
    c, w = window.center, window.width
    x = values.astype(np.float64, copy=False)
    if window.function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif window.function == "linear-exact":
        out = np.clip(((x - c) / w + 0.5) * 255.0, 0, 255)
    else:
        out = np.clip(((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0, 255) if w > 1 else (x > c - 0.5) * 255.0
    return np.rint(out).astype(np.uint8)


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """*values* from lo..hi onto 0..255."""
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.rint(np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)


def _grey_values(
    values: np.ndarray, fmt: PixelFormat, ds: Dataset, index: int, window: Window | None, used: slice
) -> np.ndarray:
    """Stored values -> display values 0..255: Modality LUT, VOI, MONOCHROME1 inversion.

    *used* selects the values that span the frame's range (an unwindowed
    image is stretched over the frame's own range).
    """
    modality = _modality(values, ds, index)
    window = window or _stored_window(ds, index)
    if window is not None:
        out = window_to_8bit(modality, window)
    else:
        if "VOILUTSequence" in ds:
            modality = np.asarray(apply_voi(modality, ds), dtype=np.float64)
        span = modality[used]
        out = _stretch(modality, float(span.min()), float(span.max()))
    if fmt.photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _grey(arr: np.ndarray, fmt: PixelFormat, ds: Dataset, index: int, window: Window | None) -> np.ndarray:
    """The frame as 8-bit grey levels.

    Integer data of up to 16 bits goes through a lookup table: the pipeline
    runs once over the stored values from the frame's minimum to its maximum
    (4,096 for 12-bit data) and the frame is one table look-up, 5-10x faster
    than running it per pixel.
    """
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        lo, hi = int(arr.min()), int(arr.max())
        # Unsigned values index the table directly (it starts at 0); signed ones are shifted.
        base = 0 if arr.dtype.kind == "u" else lo
        domain = np.arange(base, hi + 1, dtype=np.int64).astype(arr.dtype)
        table = _grey_values(domain, fmt, ds, index, window, slice(lo - base, hi - base + 1))
        return np.take(table, arr if base == 0 else np.subtract(arr, base, dtype=np.int32))
    return _grey_values(arr, fmt, ds, index, window, slice(None))


def _colour(arr: np.ndarray, fmt: PixelFormat, ds: Dataset) -> np.ndarray:
    if fmt.photometric == "PALETTE COLOR":
        rgb = np.asarray(apply_color_lut(arr, ds))
        bits = 16 if rgb.dtype.itemsize > 1 else 8
    else:
        rgb = arr
        if fmt.photometric in ("YBR_FULL", "YBR_FULL_422"):
            rgb = convert_color_space(arr, "YBR_FULL", "RGB")
        elif fmt.photometric != "RGB":
            raise RenderUnsupported(f"rendering {fmt.photometric} pixel data is not supported")
        bits = fmt.bits_stored
    if bits > 8:
        rgb = (rgb.astype(np.uint32) >> (bits - 8)).clip(0, 255)
    return rgb.astype(np.uint8)


def render_frame(
    frame: bytes, header: Dataset, fmt: PixelFormat, syntax: str, index: int, options: RenderOptions
) -> bytes:
    """Frame *index* (0-based; *frame* its stored bytes) of the instance with *header*, rendered.

    Raises CodecError when the frame cannot be decoded or its kind rendered.
    """
    from PIL import Image

    arr, fmt = decode(frame, syntax, fmt)
    if fmt.samples == 1 and fmt.photometric in ("MONOCHROME1", "MONOCHROME2"):
        image = Image.fromarray(_grey(arr, fmt, header, index, options.window), "L")
    elif fmt.samples == 1 and fmt.photometric == "PALETTE COLOR" or fmt.samples == 3:
        image = Image.fromarray(_colour(arr, fmt, header), "RGB")
    else:
        raise RenderUnsupported(
            f"rendering {fmt.samples}-sample {fmt.photometric} pixel data is not supported"
        )
    if options.crop:
        sx, sy, sw, sh = options.crop
        if sx >= image.width or sy >= image.height:
            raise RenderError(
                f"viewport: the source region starts outside the {image.width}x{image.height} image"
            )
        image = image.crop((sx, sy, min(sx + sw, image.width), min(sy + sh, image.height)))
    if options.viewport:
        vw, vh = options.viewport
        scale = min(vw / image.width, vh / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            resample = Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.BOX
            image = image.resize(size, resample)
    buf = io.BytesIO()
    if options.media_type == PNG:
        image.save(buf, "PNG", compress_level=1)  # level 1: 5x faster than the default, ~10% larger
    else:
        image.save(buf, "JPEG", quality=options.quality)
    return buf.getvalue()
