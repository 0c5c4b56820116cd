"""DICOMweb data models and instance building (no HTTP here: node.web holds the endpoints)."""
