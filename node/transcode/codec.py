"""One frame at a time: stored frame bytes -> pixel array -> frame bytes in another syntax.

pydicom 3's pixel decoders and encoders do the work (they know the pixel
module: sign of JPEG-LS / JPEG 2000 data, YCbCr, sub-sampling, precision),
with the plugin chosen per syntax from :data:`.syntaxes.DECODING_PLUGINS`.
JPEG baseline is written with Pillow (pydicom has no JPEG encoder).  Nothing
here holds more than one frame.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, get_encoder

from . import syntaxes as ts

log = logging.getLogger(__name__)
# pydicom logs every failing plugin there with a traceback before it tries the next; the node
# reports the outcome itself, in one line naming the instance and every plugin's reason.
logging.getLogger("pydicom.pixels.decoders.base").setLevel(logging.CRITICAL)
# pylibjpeg-openjpeg narrates every encode ("tile number 1 / 1") at INFO: one line per frame.
logging.getLogger("openjpeg").setLevel(logging.WARNING)
# openjpeg (JPEG 2000) sizes its thread pool from OPJ_NUM_THREADS at every decode, one thread
# when unset.  Two threads decoded a 512x512 CT frame in 60 ms instead of 96 with a core to
# spare (load 6 on the 2-core machine), the same 130 ms as one thread when none was (load 9).
# An operator's own value is kept.
os.environ.setdefault("OPJ_NUM_THREADS", str(min(os.cpu_count() or 1, 4)))

_ITEM = b"\xfe\xff\x00\xe0"


class CodecError(ValueError):
    """A frame cannot be decoded or encoded; the message says why (the caller names the instance)."""


@dataclass(frozen=True)
class PixelFormat:
    """The Image Pixel module values that describe one frame's pixels."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar: int = 0
    pixel_vr: str = "OW"

    @classmethod
    def of(cls, ds: Dataset, pixel_vr: str = "OW") -> PixelFormat:
        """The format from a data set's header; raises CodecError naming a missing attribute."""
        try:
            bits_allocated = int(ds.BitsAllocated)
            return cls(
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                samples=int(ds.get("SamplesPerPixel") or 1),
                bits_allocated=bits_allocated,
                bits_stored=int(ds.get("BitsStored") or bits_allocated),
                pixel_representation=int(ds.get("PixelRepresentation") or 0),
                photometric=str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip(),
                planar=int(ds.get("PlanarConfiguration") or 0),
                pixel_vr=pixel_vr,
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise CodecError(f"the image pixel module is incomplete or invalid ({exc})") from None

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame (a multiple of 8 bits; bit-packed data is not framed here)."""
        length = self.rows * self.columns * self.samples * self.bits_allocated // 8
        if self.photometric == "YBR_FULL_422":
            length = length // 3 * 2
        return length

    def options(self) -> dict[str, Any]:
        """pydicom's decoding/encoding options for one frame of this format."""
        opts: dict[str, Any] = {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric,
            "number_of_frames": 1,
            "pixel_keyword": "PixelData",
            "pixel_vr": self.pixel_vr,
        }
        if self.samples > 1:
            opts["planar_configuration"] = self.planar
        return opts


def _reason(plugin: str, exc: Exception) -> str:
    """One line for a plugin's failure (pydicom wraps the codec's message in a multi-line one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    if text.startswith(f"{plugin}: "):
        text = text[len(plugin) + 2 :]
    return f"{plugin or 'pydicom'}: {text[:200]}"


def _single_frame(frame: bytes) -> bytes:
    """*frame* as encapsulated pixel data of one fragment (empty offset table), as pydicom reads it."""
    pad = b"\0" if len(frame) % 2 else b""
    return _ITEM + b"\0\0\0\0" + _ITEM + struct.pack("<I", len(frame) + len(pad)) + frame + pad


def decode(frame: bytes, syntax: str, fmt: PixelFormat) -> tuple[np.ndarray, PixelFormat]:
    """Decode one stored frame; return the array and the format that describes it.

    Lossy JPEG colour data comes back as RGB (the YCbCr of a baseline JPEG
    is an artefact of the codec); everything else keeps its photometric
    interpretation, so a lossless source stays lossless.
    """
    if syntax == ts.DEFLATED:
        syntax = ts.EXPLICIT  # the caller inflated the data set; the pixel bytes are native
    decoder = get_decoder(syntax) if syntax in ts.DECODABLE else None
    if decoder is None or not decoder.is_available:
        raise CodecError(f"no decoder for {ts.name(syntax)}")
    raw = syntax not in (ts.JPEG_BASELINE, ts.JPEG_EXTENDED)
    src = _single_frame(frame) if ts.is_encapsulated(syntax) else frame
    plugins = [p for p in ts.DECODING_PLUGINS.get(syntax, ("",)) if not p or p in decoder.available_plugins]
    errors = []
    for plugin in plugins or [""]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns per frame about fixable header quirks
                arr, props = decoder.as_array(src, raw=raw, decoding_plugin=plugin, **fmt.options())
        except Exception as exc:  # noqa: BLE001 - each plugin's failure is reported together
            errors.append(_reason(plugin, exc))
            continue
        out = replace(
            fmt,
            samples=int(props.get("samples_per_pixel", fmt.samples)),
            bits_allocated=int(props.get("bits_allocated", fmt.bits_allocated)),
            bits_stored=int(props.get("bits_stored", fmt.bits_stored)),
            pixel_representation=int(props.get("pixel_representation", fmt.pixel_representation)),
            photometric=str(props.get("photometric_interpretation", fmt.photometric)),
            planar=0,
            pixel_vr="OB" if arr.dtype.itemsize == 1 else "OW",
        )
        if out.photometric == "YBR_FULL_422":
            out = replace(out, photometric="YBR_FULL")  # sub-sampling removed by the decoder
        return arr, out
    raise CodecError(f"cannot decode the {ts.name(syntax)} frame: " + "; ".join(errors))


def native_bytes(arr: np.ndarray) -> bytes:
    """A decoded frame as native little-endian pixel bytes (interleaved samples)."""
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def encode(arr: np.ndarray, syntax: str, fmt: PixelFormat) -> tuple[bytes, PixelFormat]:
    """Encode one decoded frame in *syntax*; return the codestream and the format it now has."""
    if syntax in ts.NATIVE:
        return native_bytes(arr), fmt
    if syntax == ts.JPEG_BASELINE:
        return _jpeg_baseline(arr, fmt)
    try:
        encoder = get_encoder(syntax)
    except Exception:  # noqa: BLE001 - pydicom raises various errors for an unknown encoder
        encoder = None
    if encoder is None or not encoder.is_available:
        raise CodecError(f"no encoder for {ts.name(syntax)}")
    kwargs: dict[str, Any] = {}
    if syntax == ts.JPEG_LS_NEAR:
        kwargs["jls_error"] = ts.JLS_NEAR
    elif syntax == ts.J2K:
        kwargs["j2k_psnr"] = [ts.J2K_PSNR]
    opts = fmt.options()
    if fmt.samples > 1:
        opts["planar_configuration"] = 0  # decoded arrays are interleaved
    if syntax in (ts.JPEG_LS_LOSSLESS, ts.JPEG_LS_NEAR, ts.J2K_LOSSLESS, ts.J2K) and fmt.photometric not in (
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "PALETTE COLOR",
    ):
        raise CodecError(f"{ts.name(syntax)} cannot hold {fmt.photometric} pixel data")
    errors = []
    for plugin in ts.ENCODING_PLUGINS.get(syntax, ("",)):
        if plugin and plugin not in encoder.available_plugins:
            continue
        try:
            data = encoder.encode(np.ascontiguousarray(arr), encoding_plugin=plugin, **opts, **kwargs)
        except Exception as exc:  # noqa: BLE001
            errors.append(_reason(plugin, exc))
            continue
        return bytes(data), replace(fmt, planar=0)
    raise CodecError(
        f"cannot encode {fmt.photometric} {fmt.bits_stored}-bit pixels as {ts.name(syntax)}: "
        + "; ".join(errors)
    )


def _jpeg_baseline(arr: np.ndarray, fmt: PixelFormat) -> tuple[bytes, PixelFormat]:
    """8-bit greyscale or RGB as JPEG baseline (Pillow; 4:2:2 chroma as YBR_FULL_422 says)."""
    from PIL import Image

    if fmt.bits_stored > 8 or arr.dtype.itemsize != 1:
        raise CodecError(f"JPEG baseline holds 8-bit samples; these have {fmt.bits_stored} bits")
    if fmt.samples == 1 and fmt.photometric in ("MONOCHROME1", "MONOCHROME2"):
        image = Image.fromarray(arr.astype(np.uint8), "L")
        photometric = fmt.photometric
    elif fmt.samples == 3 and fmt.photometric == "RGB":
        image = Image.fromarray(arr.astype(np.uint8), "RGB")
        photometric = "YBR_FULL_422"
    else:
        raise CodecError(f"JPEG baseline cannot hold {fmt.photometric} pixel data here")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=ts.JPEG_QUALITY, subsampling=1)
    return buf.getvalue(), replace(fmt, photometric=photometric, planar=0, pixel_representation=0)
