"""Talking to other DICOM nodes: sending (C-STORE), retrieving, forwarding."""
