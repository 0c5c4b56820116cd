"""The hand-encoded file meta is exactly what pydicom writes for the same values."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.filewriter import write_file_meta_info

from node.part10 import file_meta, header_bytes


@pytest.mark.parametrize(
    ("sop_class", "sop_uid", "ts", "ae"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "STORESCU"),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.45", "1.2.840.10008.1.2", ""),
        ("1.2.840.10008.5.1.4.1.1.104.1", "2.25.1234567", "1.2.840.10008.1.2.4.50", "ODD"),
    ],
)
def test_header_bytes_match_pydicom(sop_class, sop_uid, ts, ae):
    expected = BytesIO()
    expected.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(expected, file_meta(sop_class, sop_uid, ts, ae), enforce_standard=True)
    ours = header_bytes(sop_class, sop_uid, ts, ae)
    assert ours == expected.getvalue()
    meta = dcmread(BytesIO(ours + b"\x08\x00\x18\x00UI\x08\x001.2.3.4\x00"), force=True).file_meta
    assert meta.MediaStorageSOPInstanceUID == sop_uid
    assert meta.TransferSyntaxUID == ts
