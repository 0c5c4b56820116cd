"""The node as a cache in front of upstream PACS: read-through queries, what it keeps and for how long."""
