"""Codec candidates for node.transcode, measured on this machine.

    .venv/bin/python -m bench.codecs [--rounds 15]

pydicom 3's pixel decoders and encoders (plugins: pylibjpeg with
pylibjpeg-openjpeg / -libjpeg / -rle, pyjpegls, pydicom's own RLE) against
python-gdcm, per 512x512 CT-like 12-bit frame (``bench.corpus.phantom_pixels``)
and, for JPEG baseline, a 512x512 RGB frame.  Prints the median ms per frame
of decoding each stored syntax with each plugin, and of encoding each
lossless target; GDCM is timed both through pydicom's gdcm decoder plugin and
as a whole-file ``gdcm.ImageChangeTransferSyntax`` (which holds the whole
instance in memory, so it could not serve a 500-frame instance frame by
frame anyway).  Inputs are written with pydicom's encoders and DCMTK
(``dcmcjpeg``, ``dcmconv``) under a temp folder.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from .corpus import make_dataset, write


def _median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return sorted(times)[len(times) // 2]


def _rgb_dataset():
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), size="ct")
    y, x = np.mgrid[0:512, 0:512]
    rgb = np.stack([(x // 2) % 256, (y // 2) % 256, ((x + y) // 4) % 256], axis=-1).astype(np.uint8)
    rgb = (rgb + np.random.default_rng(1).integers(0, 8, rgb.shape, dtype=np.uint8)).astype(np.uint8)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    return ds


def make_inputs(folder: Path) -> dict[str, Path]:
    """One file per stored syntax (CT phantom; RGB for JPEG baseline)."""
    ct = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), size="ct", phantom=True)
    files = {"explicit": write(ct, folder / "explicit.dcm")}
    for name, ts, kw in (
        ("jls", JPEGLSLossless, {}),
        ("jls-near", JPEGLSNearLossless, {"jls_error": 2}),
        ("j2k", JPEG2000Lossless, {}),
        ("j2k-lossy", JPEG2000, {"j2k_cr": [10]}),
        ("rle", RLELossless, {}),
    ):
        ds = dcmread(files["explicit"])
        ds.compress(ts, generate_instance_uid=False, **kw)
        files[name] = write(ds, folder / f"{name}.dcm")
    for name, flag, src in (("jpeg-sv1", "+e1", "explicit"), ("jpeg-ext", "+ee", "explicit")):
        out = folder / f"{name}.dcm"
        subprocess.run(["dcmcjpeg", flag, str(files[src]), str(out)], check=True)
        files[name] = out
    rgb = write(_rgb_dataset(), folder / "rgb.dcm")
    files["jpeg-base"] = folder / "jpeg-base.dcm"
    subprocess.run(["dcmcjpeg", "+eb", str(rgb), str(files["jpeg-base"])], check=True)
    for name, flag in (("deflated", "+td"), ("big", "+tb")):
        out = folder / f"{name}.dcm"
        subprocess.run(["dcmconv", flag, str(files["explicit"]), str(out)], check=True)
        files[name] = out
    return files


def decode_table(files: dict[str, Path], rounds: int) -> list[tuple[str, str, float]]:
    rows = []
    for name, path in files.items():
        if name == "explicit":
            continue
        ds = dcmread(path)
        decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
        plugins = list(decoder.available_plugins) or [""]
        for plugin in plugins:
            try:
                ms = _median_ms(
                    lambda p=plugin, d=decoder, s=ds: d.as_array(s, index=0, decoding_plugin=p), rounds
                )
            except Exception as exc:  # noqa: BLE001 - a plugin that cannot do it is a result
                rows.append((name, plugin or "pydicom", float("nan")))
                print(f"  {name} with {plugin}: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            rows.append((name, plugin or "pydicom", ms))
    return rows


def encode_table(files: dict[str, Path], rounds: int) -> list[tuple[str, str, float]]:
    rows = []
    ds = dcmread(files["explicit"])
    arr = ds.pixel_array
    from pydicom.pixels import as_pixel_options

    opts = as_pixel_options(ds)
    for ts, name in ((JPEGLSLossless, "jls"), (JPEG2000Lossless, "j2k"), (RLELossless, "rle")):
        encoder = get_encoder(ts)
        for plugin in encoder.available_plugins:
            try:
                ms = _median_ms(lambda p=plugin, e=encoder: e.encode(arr, encoding_plugin=p, **opts), rounds)
            except Exception as exc:  # noqa: BLE001
                print(f"  encode {name} with {plugin}: {type(exc).__name__}: {str(exc)[:80]}")
                ms = float("nan")
            rows.append((name, plugin, ms))
    return rows


def gdcm_table(files: dict[str, Path], folder: Path, rounds: int) -> list[tuple[str, str, float]]:
    import gdcm

    def change(src: Path, ts) -> Callable[[], None]:
        def run() -> None:
            reader = gdcm.ImageReader()
            reader.SetFileName(str(src))
            if not reader.Read():
                raise RuntimeError("gdcm cannot read")
            changer = gdcm.ImageChangeTransferSyntax()
            changer.SetTransferSyntax(gdcm.TransferSyntax(ts))
            changer.SetInput(reader.GetImage())
            if not changer.Change():
                raise RuntimeError("gdcm cannot change")
            writer = gdcm.ImageWriter()
            writer.SetFileName(str(folder / "gdcm-out.dcm"))
            writer.SetFile(reader.GetFile())
            writer.SetImage(changer.GetOutput())
            if not writer.Write():
                raise RuntimeError("gdcm cannot write")

        return run

    TS = gdcm.TransferSyntax
    rows = []
    for name in ("j2k", "jls", "rle", "jpeg-sv1", "jpeg-ext", "jpeg-base", "jls-near", "j2k-lossy"):
        rows.append(
            (
                f"{name} -> explicit",
                "gdcm file",
                _median_ms(change(files[name], TS.ExplicitVRLittleEndian), rounds),
            )
        )
    for name, ts in (("jls", TS.JPEGLSLossless), ("j2k", TS.JPEG2000Lossless), ("rle", TS.RLELossless)):
        rows.append((f"explicit -> {name}", "gdcm file", _median_ms(change(files["explicit"], ts), rounds)))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = make_inputs(folder)
        sizes = {n: f.stat().st_size for n, f in files.items()}
        print("inputs (bytes):", ", ".join(f"{n} {s}" for n, s in sizes.items()))
        print("\ndecode one frame (median ms)")
        for name, plugin, ms in decode_table(files, a.rounds):
            print(f"  {name:10} {plugin:10} {ms:8.2f}")
        print("\nencode one frame from the CT array (median ms)")
        for name, plugin, ms in encode_table(files, a.rounds):
            print(f"  {name:10} {plugin:10} {ms:8.2f}")
        print("\nGDCM whole-file ImageChangeTransferSyntax, read + change + write (median ms)")
        for name, _plugin, ms in gdcm_table(files, folder, a.rounds):
            print(f"  {name:22} {ms:8.2f}")
        print(
            f"\nExplicit VR LE reference size {sizes['explicit']}; lossless ratios:",
            ", ".join(f"{n} {sizes['explicit'] / sizes[n]:.2f}" for n in ("jls", "j2k", "rle", "jpeg-sv1")),
        )


if __name__ == "__main__":
    main()
