"""One job mechanism for every kind of long work (architecture principle 5).

- ``node/index/jobs.py``: the ``job`` table and every statement on it.
- :mod:`node.jobs.runner`: :class:`~node.jobs.runner.JobRunner`, the workers
  a process hosts (claims with a lease, renewal, takeover, shutdown).
- :mod:`node.jobs.kinds`: what a kind's handler is given (the job row and a
  :class:`~node.jobs.kinds.Progress`) and how it ends (return, ``Failed``,
  ``Retry``, ``Interrupted``).
- :mod:`node.jobs.public`: the one JSON form of a job (``GET /jobs``).
- ``node/index/deletion.py``: a deleted study drops the export jobs of its accessions
  (their archives are stale); a send naming deleted instances reports them missing.

The kinds, each one registration in ``node/server.py``:

- ``export`` (node/export/service.py): a ZIP archive per accession, keyed by
  the accession, so two requests share one job.
- ``forward`` (node/remotes/forwarder.py): one long-lived job per remote
  with ``forward = true``, keyed by the remote's name: whoever holds its
  lease drains that remote's outbox, so exactly one process forwards to it.
- ``send`` (node/remotes/send_job.py): ``POST /remotes/{name}/store`` and
  ``dicom-node send``; never shared (no key).

Adding a kind (``retrieve`` for the read-through cache is the next one):
write a handler whose ``run(job, progress)`` does the work from the row's
payload and reports counts through *progress*; choose the key that makes
concurrent requests share the job (``retrieve``: the Study Instance UID) and
queue it with ``runner.submit(kind, key, payload)``, which returns the job
already queued or running under that key; a request that must wait for the
result polls the row (:func:`node.index.jobs.get`) or, within the process,
whatever the handler publishes.  A partial result is ``Failed("partial",
"retrieved 3 of 10 ...")`` with the counts in the row; a remote that is down
is ``Retry`` with a back-off.  Give the handler a ``details(job)`` for the
kind's own fields in the public form, and register it with its concurrency.
"""
