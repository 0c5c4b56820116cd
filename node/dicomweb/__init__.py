"""DICOMweb core, free of Starlette: data models, instances built from bulk data (STOW-RS),
and what WADO-RS and QIDO-RS read (node.web holds the endpoints)."""
