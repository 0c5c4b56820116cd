"""dicom-node: a DICOM node (Storage, Query/Retrieve, DICOMweb, ZIP export, gateway)."""

__version__ = "0.1.0"

# Identifies this software in association negotiation and in the file meta
# of every Part-10 file it writes (PS3.7 D.3.3.2, PS3.10 7.1).
IMPLEMENTATION_CLASS_UID = "2.25.234764685976677511529475584069490585624"
IMPLEMENTATION_VERSION_NAME = f"DICOM_NODE_{__version__}"[:16]
