"""The node as a cache in front of upstream PACS: read-through queries (and, later, retrieval, eviction)."""
