"""The HTTP facade: Starlette app with DICOMweb, ZIP export and the gateway."""
