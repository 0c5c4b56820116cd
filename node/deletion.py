"""Deleting studies, series and instances: index rows first, then files, crash-safely.

:func:`delete` is what every door calls (``DELETE /dicom-web/...``,
``dicom-node delete``).  The order and why it is crash-safe are explained
in node/index/deletion.py; :func:`finish_pending` is the second step, also
run at start and by ``dicom-node check`` for what a crash left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial

from .context import NodeContext
from .export.archive import archive_path
from .index import deletion as journal
from .index.db import write_transaction
from .index.deletion import ARCHIVE, FILE, Deleted, Target
from .store import InstanceStore

log = logging.getLogger(__name__)

_BATCH = 256  # journal rows per transaction while removing files


def fingerprint(store: InstanceStore, relative: str) -> str:
    """What the file at *relative* is right now ("" when there is none): inode, size, mtime."""
    try:
        st = store.absolute(relative).stat()
    except FileNotFoundError:
        return ""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def delete(
    ctx: NodeContext, targets: Sequence[Target], *, within: Callable[[], bool] | None = None
) -> Deleted:
    """Delete *targets*: their rows, files, outbox rows and archives.

    Targets that are not held are ignored; ``Deleted.instances`` is 0 when
    nothing was.  The door logs the outcome (one line, :func:`summary`).
    *within*: a check run inside the deletion's transaction that can call it
    off (see :func:`node.index.deletion.delete_rows`).
    """
    deleted = journal.delete_rows(targets, partial(fingerprint, ctx.store), within=within)
    if deleted.instances:
        finish_pending(ctx)
    return deleted


def summary(deleted: Deleted) -> str:
    """One line saying what a deletion removed."""
    levels = [
        f"{n} {word if n == 1 else plural}"
        for n, word, plural in (
            (deleted.series, "series", "series"),
            (deleted.studies, "study", "studies"),
            (deleted.patients, "patient", "patients"),
        )
        if n
    ]
    size = deleted.bytes
    amount = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
    text = f"{', '.join(map(str, deleted.targets))}: {deleted.instances} instance(s), {amount}"
    if levels:
        text += f"; {', '.join(levels)} removed with them"
    dropped = []
    if deleted.outbox:
        dropped.append(f"{deleted.outbox} outbox row(s)")
    if deleted.archives:
        dropped.append(f"the export of accession {', '.join(deleted.archives)}")
    if dropped:
        text += f"; dropped {' and '.join(dropped)}"
    return text


def finish_pending(ctx: NodeContext) -> int:
    """Remove the files and archives the journal names; return how many journal rows were settled.

    Each batch runs in a write transaction: no instance can be indexed at
    a path between the check that no row points to it and its removal.
    A file that cannot be removed (permissions...) keeps its journal row
    and is tried again next time.
    """
    settled = 0
    after = 0
    export_dir = ctx.settings.export.path
    while True:
        with write_transaction():
            rows = journal.pending(_BATCH, after_id=after)
            if not rows:
                return settled
            after = rows[-1].id
            indexed = journal.indexed_paths([r.target for r in rows if r.kind == FILE])
            rebuilt = journal.prepared_again([r.target for r in rows if r.kind == ARCHIVE])
            done = []
            for row in rows:
                try:
                    if row.kind == FILE:
                        # Not if it was stored again since (a row points to it, or it is another file).
                        same = row.fingerprint == fingerprint(ctx.store, row.target)
                        if row.target not in indexed and same:
                            ctx.store.remove(row.target)
                    elif row.kind == ARCHIVE and row.target not in rebuilt:
                        archive_path(export_dir, row.target).unlink(missing_ok=True)
                except OSError as exc:
                    log.warning(
                        "could not remove %s %s of a deletion (kept for the next try): %s",
                        row.kind,
                        row.target,
                        exc,
                    )
                    continue
                done.append(row.id)
            journal.settle(done)
            settled += len(done)
