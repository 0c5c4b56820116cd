"""Several worker processes serving one node on the same ports (``[server].workers``).

- :mod:`.supervisor` binds the DIMSE and HTTP listening sockets once, spawns
  the workers with them, restarts one that dies, forwards SIGHUP and drains
  them all on SIGTERM.
- :mod:`.worker` is a worker's entry point: ``node.server.serve`` on the
  inherited sockets.
- :mod:`.doorbell` carries wake-ups between the workers (rows queued for a
  forward job another worker holds).
- :mod:`.slots` counts associations for the whole node (``max_associations``).

What the workers share lives in the index (jobs with leases, the outbox) and
in a private run folder the supervisor creates and removes (metrics,
doorbells, association slots); nothing else in a worker's memory matters to
another one.
"""
