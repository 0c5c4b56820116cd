"""The node as a cache in front of other nodes: what it keeps, and for how long."""
