"""Synthetic DICOM corpora for tests and benchmarks.

``python -m bench.corpus OUT --studies 2 --series 2 --instances 100 --size ct``
writes Part-10 files (explicit VR little endian) under OUT, one folder per
study.  ``ct`` instances are 512x512x16 bit (512 KiB of pixel data), ``tiny``
ones 32x32.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SIZES = {"ct": 512, "tiny": 32}


def phantom_pixels(side: int, seed: int = 0) -> bytes:
    """CT-like 12-bit pixels (uint16 little endian): air, a body ellipse, organs, bone, and noise.

    Codecs are timed on these rather than on the repeating pattern of
    :func:`make_dataset`'s default: a compressor's speed and ratio depend on
    the image, and real CT compresses about 2-3x losslessly, as these do.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    img = np.full((side, side), 24.0, np.float32)  # air (-1000 HU with intercept -1024)
    body = (x / 0.42) ** 2 + (y / 0.34) ** 2 < 1
    img[body] = 1064  # soft tissue (+40 HU)
    for cx, cy, r, v in ((-0.15, -0.05, 0.09, 1000), (0.16, -0.04, 0.1, 1000), (0.0, 0.12, 0.05, 1084)):
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = v  # lungs, a vessel
    img[((x / 0.05) ** 2 + ((y - 0.22) / 0.04) ** 2 < 1)] = 1724  # vertebra (+700 HU)
    img += rng.normal(0, 12 + 4 * (seed % 3), img.shape).astype(np.float32)
    return np.clip(img, 0, 4095).astype("<u2").tobytes()


def make_dataset(
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str | None = None,
    patient_id: str = "PAT001",
    patient_name: str = "DOE^JOHN",
    accession: str = "ACC001",
    study_date: str = "20240101",
    study_description: str = "Synthetic study",
    modality: str = "CT",
    instance_number: int = 1,
    series_number: int = 1,
    size: str = "tiny",
    charset: str | None = None,
    sop_class_uid: str = CTImageStorage,
    phantom: bool = False,
) -> Dataset:
    """One CT-like instance with the attributes the index and queries use."""
    side = SIZES[size]
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = accession
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.StudyDescription = study_description
    ds.ReferringPhysicianName = "REF^DOC"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"Series {series_number}"
    ds.InstanceNumber = instance_number
    ds.Rows = side
    ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if phantom:
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelData = phantom_pixels(side, instance_number)
    else:
        # Cheap, non-constant pixel bytes (so compression has work to do).
        row = bytes((i * 7 + instance_number) & 0xFF for i in range(side * 2))
        ds.PixelData = row * side
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Save *ds* as a Part-10 file at *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# Transfer syntaxes encode_as() writes, and how.
DCMTK_ENCODERS = {
    "1.2.840.10008.1.2.4.50": ["dcmcjpeg", "+un", "+eb"],
    "1.2.840.10008.1.2.4.51": ["dcmcjpeg", "+un", "+ee"],
    "1.2.840.10008.1.2.4.70": ["dcmcjpeg", "+e1"],
    "1.2.840.10008.1.2": ["dcmconv", "+ti"],
    "1.2.840.10008.1.2.1.99": ["dcmconv", "+td"],
    "1.2.840.10008.1.2.2": ["dcmconv", "+tb"],
}


def encode_as(ds: Dataset, syntax: str, path: Path) -> Path:
    """Write *ds* (native pixel data) at *path* in transfer syntax *syntax*.

    JPEG-LS, JPEG 2000 and RLE with pydicom's encoders (the codecs
    node.transcode uses); JPEG baseline / extended / lossless SV1, deflated
    and big endian with DCMTK (``dcmcjpeg``, ``dcmconv``), so that the
    node's decoders read what another implementation wrote.
    """
    import subprocess
    import tempfile

    if syntax == ExplicitVRLittleEndian:
        return write(ds, path)
    if syntax in DCMTK_ENCODERS:
        with tempfile.TemporaryDirectory() as tmp:
            plain = write(ds, Path(tmp) / "plain.dcm")
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([*DCMTK_ENCODERS[syntax], str(plain), str(path)], check=True, capture_output=True)
        return path
    ds = ds.copy()
    kwargs = {"jls_error": 2} if syntax == "1.2.840.10008.1.2.4.81" else {}
    if syntax == "1.2.840.10008.1.2.4.91":
        kwargs = {"j2k_psnr": [60]}
    ds.compress(syntax, generate_instance_uid=False, **kwargs)
    return write(ds, path)


def write_corpus(
    out: Path,
    *,
    studies: int = 2,
    series: int = 1,
    instances: int = 100,
    size: str = "tiny",
    accession_prefix: str = "ACC",
    patient_prefix: str = "PAT",
    start_date: dt.date = dt.date(2024, 1, 1),
) -> list[Path]:
    """Write studies x series x instances files under *out*; return their paths."""
    paths = []
    for s in range(studies):
        study_uid = generate_uid()
        date = (start_date + dt.timedelta(days=s)).strftime("%Y%m%d")
        for r in range(series):
            series_uid = generate_uid()
            for i in range(instances):
                ds = make_dataset(
                    study_uid=study_uid,
                    series_uid=series_uid,
                    patient_id=f"{patient_prefix}{s:05d}",
                    patient_name=f"PATIENT^{s:05d}",
                    accession=f"{accession_prefix}{s:05d}",
                    study_date=date,
                    instance_number=i + 1,
                    series_number=r + 1,
                    size=size,
                )
                paths.append(write(ds, out / f"study{s:05d}" / f"s{r:02d}_i{i:05d}.dcm"))
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--studies", type=int, default=2)
    p.add_argument("--series", type=int, default=1)
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--accession-prefix", default="ACC")
    a = p.parse_args(argv)
    paths = write_corpus(
        a.out,
        studies=a.studies,
        series=a.series,
        instances=a.instances,
        size=a.size,
        accession_prefix=a.accession_prefix,
    )
    print(f"wrote {len(paths)} files under {a.out}")


if __name__ == "__main__":
    main()
