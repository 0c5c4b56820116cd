"""The transfer syntaxes the transcoder knows: what it can read, what it can write, what loses data.

One table, read by the negotiation rules (:mod:`.negotiate`), the codecs
(:mod:`.codec`) and the doors that ask what they may offer.  The plugin
preferences come from ``bench/codecs.py`` on the 2-core machine (median ms
per 512x512 12-bit CT frame, shared load):

- JPEG-LS decode: pyjpegls 7.6, GDCM 9.2, pylibjpeg-libjpeg 36.9; encode:
  pyjpegls 8.4 (GDCM's whole-file change 10.7).
- JPEG 2000 decode: pylibjpeg-openjpeg 38.5, Pillow 42.2, GDCM 60.8; encode:
  openjpeg 43.3 (GDCM 45.1).
- JPEG lossless (process 14, SV1) decode: GDCM 8.0, pylibjpeg-libjpeg 21.1.
- JPEG 12-bit extended decode: only pylibjpeg-libjpeg (GDCM's Python build
  and Pillow refuse 12-bit precision).
- JPEG baseline 8-bit RGB decode: Pillow 4.9, pylibjpeg 10.6, GDCM 11.5.
- RLE decode: pylibjpeg-rle 0.7, pydicom 2.8; encode: GDCM 1.7,
  pylibjpeg-rle 11.6, pydicom 133.
"""

from __future__ import annotations

from pydicom.uid import UID

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE = "1.2.840.10008.1.2.5"

# Pixel data as plain little-endian values (the same bytes in both).
NATIVE_LE = frozenset({IMPLICIT, EXPLICIT})
# Not encapsulated: pixel values in the data set, maybe deflated or big endian.
NATIVE = frozenset({IMPLICIT, EXPLICIT, DEFLATED, BIG_ENDIAN})

# Stored syntaxes whose pixel data the node can decode, frame by frame.
DECODABLE = frozenset(
    NATIVE
    | {
        JPEG_BASELINE,
        JPEG_EXTENDED,
        JPEG_LOSSLESS,
        JPEG_LOSSLESS_SV1,
        JPEG_LS_LOSSLESS,
        JPEG_LS_NEAR,
        J2K_LOSSLESS,
        J2K,
        HTJ2K_LOSSLESS,
        HTJ2K_RPCL,
        HTJ2K,
        RLE,
    }
)

# Targets the node writes without losing anything (decoded values kept exactly).
LOSSLESS_TARGETS = (EXPLICIT, IMPLICIT, DEFLATED, RLE, JPEG_LS_LOSSLESS, J2K_LOSSLESS)
# Targets that lose data: written only when a client asks for exactly one of these.
LOSSY_TARGETS = (JPEG_BASELINE, JPEG_LS_NEAR, J2K)
TARGETS = frozenset(LOSSLESS_TARGETS + LOSSY_TARGETS)

# Syntaxes that always lose data (a stored instance in one of these is lossy whatever its header says).
ALWAYS_LOSSY = frozenset({JPEG_BASELINE, JPEG_EXTENDED, HTJ2K})
# Syntaxes that may or may not have lost data (the codestream tells: JPEG-LS NEAR, J2K wavelet).
MAYBE_LOSSY = frozenset({JPEG_LS_NEAR, J2K})

# LossyImageCompressionMethod (0028,2114) defined terms, PS3.3 C.7.6.1.1.5.1.
LOSSY_METHOD = {
    JPEG_BASELINE: "ISO_10918_1",
    JPEG_EXTENDED: "ISO_10918_1",
    JPEG_LS_NEAR: "ISO_14495_1",
    J2K: "ISO_15444_1",
    HTJ2K: "ISO_15444_15",
}

# Lossy encoding parameters, used only when a client asked for that syntax.
JPEG_QUALITY = 90  # Orthanc's default DicomLossyTranscodingQuality
JLS_NEAR = 2  # DCMTK dcmcjpls' default near-lossless deviation
# openjpeg's quality target for 1.2.840.10008.1.2.4.91: on 512x512 12-bit CT about 5.7:1 with
# errors of at most ~18 (mean 3) stored values; a fixed ratio (10:1) wrecked small images.
J2K_PSNR = 60

# pydicom pixel plugins, fastest first for each syntax (see the module docstring); the next
# is tried when one fails.  GDCM only where it is the fastest: it writes its errors to stderr.
DECODING_PLUGINS: dict[str, tuple[str, ...]] = {
    JPEG_BASELINE: ("pillow", "pylibjpeg"),
    JPEG_EXTENDED: ("pylibjpeg", "pillow"),
    JPEG_LOSSLESS: ("gdcm", "pylibjpeg"),
    JPEG_LOSSLESS_SV1: ("gdcm", "pylibjpeg"),
    JPEG_LS_LOSSLESS: ("pyjpegls", "pylibjpeg"),
    JPEG_LS_NEAR: ("pyjpegls", "pylibjpeg"),
    J2K_LOSSLESS: ("pylibjpeg", "pillow"),
    J2K: ("pylibjpeg", "pillow"),
    HTJ2K_LOSSLESS: ("pylibjpeg",),
    HTJ2K_RPCL: ("pylibjpeg",),
    HTJ2K: ("pylibjpeg",),
    RLE: ("pylibjpeg", "pydicom"),
}
ENCODING_PLUGINS: dict[str, tuple[str, ...]] = {
    RLE: ("gdcm", "pylibjpeg", "pydicom"),
    JPEG_LS_LOSSLESS: ("pyjpegls",),
    JPEG_LS_NEAR: ("pyjpegls",),
    J2K_LOSSLESS: ("pylibjpeg",),
    J2K: ("pylibjpeg",),
}


def name(syntax: str) -> str:
    """``1.2.840.10008.1.2.4.80 (JPEG-LS Lossless Image Compression)``, for messages."""
    uid = UID(syntax)
    return f"{syntax} ({uid.name})" if uid.is_transfer_syntax else repr(syntax)


def is_encapsulated(syntax: str) -> bool:
    """Pixel data in fragments (every known syntax but the native ones)."""
    return syntax not in NATIVE
