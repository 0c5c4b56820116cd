"""dicom-node: a DICOM node (Storage, Query/Retrieve, DICOMweb, ZIP export, gateway)."""

__version__ = "0.1.0"
