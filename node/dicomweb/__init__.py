"""DICOMweb core: what WADO-RS and QIDO-RS need, free of Starlette."""
