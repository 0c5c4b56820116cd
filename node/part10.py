"""The file meta the node writes in front of every data set it frames as Part 10."""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info

from .uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME


def file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = ""
) -> FileMetaDataset:
    """File meta (PS3.10 7.1) naming the node as the implementation that wrote the file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    return meta


def header_bytes(meta: FileMetaDataset) -> bytes:
    """Preamble, ``DICM`` and the encoded file meta: what precedes the data set in the file."""
    buf = BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()
