"""The DIMSE side: pynetdicom AE, presentation contexts, ACL and handlers."""
