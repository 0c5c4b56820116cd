"""A small corpus for the DICOMweb tests, sent to a node with storescu.

Three studies: two patients with ASCII names (one study of two series, one
of a single series with a 3-frame native instance and a 2-frame JPEG
instance), and a patient with a Cyrillic name (ISO_IR 144).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from bench.corpus import make_dataset, write
from tests.harness import RunningNode, dcmtk


@dataclass
class Corpus:
    """What was sent: files by SOP Instance UID, and the UIDs tests ask for."""

    files: dict[str, Path] = field(default_factory=dict)
    study_a: str = ""
    series_a1: str = ""
    series_a2: str = ""
    study_b: str = ""
    series_b: str = ""
    multiframe: str = ""
    jpeg: str = ""
    study_c: str = ""
    frames: list[bytes] = field(default_factory=list)
    jpeg_frames: list[bytes] = field(default_factory=list)
    icc_profile: bytes = b""

    def in_study(self, study_uid: str) -> dict[str, Path]:
        study = {sop: dcmread(p, stop_before_pixels=True).StudyInstanceUID for sop, p in self.files.items()}
        return {sop: p for sop, p in self.files.items() if study[sop] == study_uid}


def build(folder: Path) -> Corpus:
    """Write the corpus under *folder*."""
    c = Corpus(study_a=generate_uid(), series_a1=generate_uid(), series_a2=generate_uid())
    c.study_b, c.series_b, c.study_c = generate_uid(), generate_uid(), generate_uid()

    def add(ds, name: str) -> None:
        c.files[ds.SOPInstanceUID] = write(ds, folder / name)

    common_a = dict(patient_id="PID-A", patient_name="DOE^JOHN", accession="ACC-A", study_date="20240105")
    for i in range(3):
        ds = make_dataset(study_uid=c.study_a, series_uid=c.series_a1, instance_number=i + 1, **common_a)
        add(ds, f"a1_{i}")
    for i in range(2):
        ds = make_dataset(
            study_uid=c.study_a,
            series_uid=c.series_a2,
            instance_number=i + 1,
            series_number=2,
            modality="MR",
            **common_a,
        )
        add(ds, f"a2_{i}")

    common_b = dict(patient_id="PID-B", patient_name="ROE^JANE", accession="ACC-B", study_date="20240310")
    ds = make_dataset(study_uid=c.study_b, series_uid=c.series_b, **common_b)
    # Three native frames of 32x32x16 bit, each different.
    c.frames = [bytes([n + 1]) * (32 * 32 * 2) for n in range(3)]
    ds.NumberOfFrames = 3
    ds.PixelData = b"".join(c.frames)
    c.multiframe = ds.SOPInstanceUID
    add(ds, "b_multiframe")

    ds = make_dataset(study_uid=c.study_b, series_uid=c.series_b, instance_number=2, **common_b)
    # Not decodable JPEG, but the node never decodes: frames come back as stored.
    c.jpeg_frames = [b"\xff\xd8" + b"frame-1" * 10 + b"\xff\xd9", b"\xff\xd8" + b"frame-2" * 8 + b"\xff\xd9"]
    ds.NumberOfFrames = 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate(c.jpeg_frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    c.jpeg = ds.SOPInstanceUID
    add(ds, "jpeg/b_jpeg")

    ds = make_dataset(
        study_uid=c.study_c,
        series_uid=generate_uid(),
        patient_id="PID-C",
        patient_name="Иванов^Иван",
        accession="ACC-C",
        study_date="20231201",
        charset="ISO_IR 144",
        modality="CR",
    )
    # A bulk element before the pixel data (deferred, never read for metadata).
    c.icc_profile = bytes(range(256)) * 12
    ds.ICCProfile = c.icc_profile
    add(ds, "c_cyrillic")
    return c


def send(node: RunningNode, folder: Path) -> None:
    """storescu every file of *folder* to *node* (the JPEG one proposing JPEG baseline)."""
    port = str(node.dicom_port)
    files = sorted(str(p) for p in folder.iterdir() if p.is_file())
    dcmtk("storescu", "-aec", node.ae_title, "127.0.0.1", port, *files)
    dcmtk("storescu", "-aec", node.ae_title, "-xy", "+sd", "127.0.0.1", port, str(folder / "jpeg"))
