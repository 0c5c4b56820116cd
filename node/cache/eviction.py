"""A bounded store: evict whole studies, least recently used first, that have a copy elsewhere.

``[storage].max_bytes`` bounds the bytes of the stored instances and
``[storage].max_age_days`` how long a study is kept after its last use
(its last read or change); 0 leaves either unbounded.  A pass goes through
the studies in least-recently-used order and evicts each that is too old,
or while the store is over ``max_bytes``, **only** if every instance of it
has a known copy elsewhere (node/index/eviction.py says when): a study with
an instance not yet forwarded stays, however full the store.  Dcm4chee's
"deletion of studies with a copy on external storage" and Orthanc's
recycling (oldest first, unless protected) are the models; here the
protection is implicit in the copy rule.

Eviction is the admin's deletion (:func:`node.deletion.delete`: rows and
journal in one transaction, then the files; archives invalidated, outbox
rows dropped), with the copy rule checked again inside its transaction so
that an instance arriving meanwhile is never taken with it.  Each evicted
study is recorded in ``evicted_study`` with the remotes that hold it.

:class:`Evictor` runs a pass in a thread of its own: at start, every
:data:`INTERVAL_S`, and soon after an ingest takes the store over the
limit; ``dicom-node evict`` runs one in the foreground.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

from .. import deletion, metrics
from ..config import Settings
from ..context import NodeContext
from ..index import eviction as index
from ..index.deletion import Target
from ..index.figures import store_totals
from ..index.models import utcnow

log = logging.getLogger("node.eviction")

INTERVAL_S = 60.0  # between passes when nothing wakes the evictor
# Between passes however often ingests wake it: at least this, and 20 times what the last
# pass took, so that a store over its limit with nothing evictable (the forward remote is
# down) costs at most ~5% of a core on a large index.
MIN_GAP_S = 1.0
GAP_FACTOR = 20.0
PAGE = 500  # studies judged per query (ids per IN list: below every database's parameter limit)
WARN_EVERY_S = 600.0  # "over max_bytes, nothing evictable": once per this while it lasts
SIZE = "size"
AGE = "age"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 0  # 0: unbounded
    max_age_days: float = 0.0  # 0: forever

    @property
    def active(self) -> bool:
        return bool(self.max_bytes or self.max_age_days)

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.storage.max_bytes, settings.storage.max_age_days)


def copy_rule(settings: Settings) -> index.CopyRule:
    """Which remotes count as holding what came from them, and which must have received the rest.

    Upstreams (remotes the node retrieves from: ``read_through``, or with
    ``accession_prefixes``) and forward remotes keep what they send; a
    remote that only sends (a modality) proves nothing.
    """
    holders = tuple(
        r.name
        for r in settings.remotes
        if r.forward or r.accession_prefixes or r.read_through
    )
    return index.CopyRule(holders=holders, forward=tuple(r.name for r in settings.remotes if r.forward))


@dataclass(frozen=True)
class Eviction:
    """One study a pass evicted (or, dry, would evict)."""

    study_uid: str
    instances: int
    bytes: int
    reason: str  # SIZE or AGE
    remotes: tuple[str, ...]  # where copies are
    last_used: dt.datetime

    def describe(self) -> str:
        why = "store over max_bytes" if self.reason == SIZE else "not used for max_age_days"
        return (
            f"study {self.study_uid}: {self.instances} instance(s), {_amount(self.bytes)},"
            f" reason {self.reason} ({why}; last used {self.last_used:%Y-%m-%d %H:%M:%S} UTC),"
            f" copy on {', '.join(self.remotes)}"
        )


@dataclass
class Pass:
    """What one pass did."""

    evicted: list[Eviction]
    bytes_before: int
    bytes_after: int
    kept: int = 0  # studies due for eviction that have no known copy elsewhere


def _amount(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


class Evictor:
    """Runs eviction passes for one node (see the module docstring)."""

    def __init__(self, ctx: NodeContext, *, interval_s: float = INTERVAL_S) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pass_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Bytes stored as of the last pass plus what arrived since (replacements counted twice:
        # an overestimate only brings the next pass forward).
        self._estimate = 0
        self._warned_at = float("-inf")

    # -- the thread -----------------------------------------------------------------

    def start(self) -> None:
        """Start the pass thread (nothing when both limits are off)."""
        if not Limits.of(self.ctx.settings).active or self._thread is not None:
            return
        self._wake.set()  # a first pass at once: the store may be over the limit already
        self._thread = threading.Thread(target=self._loop, name="eviction", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread, letting a pass in progress finish its study."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def on_ingest(self, ingested) -> None:
        """Ingest listener (``node.ingest.Ingested``): wake the thread when the store goes over the limit."""
        limit = self.ctx.settings.storage.max_bytes
        if limit and ingested.outcome.ok:
            self._estimate += ingested.outcome.size
            if self._estimate > limit:
                self._wake.set()

    def _loop(self) -> None:
        next_at = float("-inf")
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            gap = next_at - time.monotonic()
            if self._stop.is_set() or (gap > 0 and self._stop.wait(gap)):
                return
            self._wake.clear()
            started = time.monotonic()
            try:
                self.run_once(stop=self._stop)
            except Exception:  # noqa: BLE001 - the next pass tries again; the node keeps serving
                log.exception("eviction pass failed")
            ended = time.monotonic()
            next_at = ended + max(MIN_GAP_S, GAP_FACTOR * (ended - started))

    # -- a pass ---------------------------------------------------------------------

    def run_once(self, *, dry_run: bool = False, stop: threading.Event | None = None) -> Pass:
        """One pass over the studies, least recently used first; *dry_run* only says what would go."""
        with self._pass_lock:
            return self._pass(dry_run, stop)

    def _pass(self, dry_run: bool, stop: threading.Event | None) -> Pass:
        limits = Limits.of(self.ctx.settings)
        used = store_totals().bytes
        self._estimate = used
        done = Pass([], used, used)
        if not limits.active:
            return done
        rule = copy_rule(self.ctx.settings)
        cutoff = utcnow() - dt.timedelta(days=limits.max_age_days) if limits.max_age_days else None
        after: tuple[dt.datetime, int] | None = None
        finished = False
        while not finished and not (stop and stop.is_set()):
            page = index.least_recent(PAGE, after)
            if not page:
                break
            after = (page[-1].last_used, page[-1].id)
            judged = index.judge([s.id for s in page], rule)
            for study in page:
                old = cutoff is not None and study.last_used < cutoff
                over = bool(limits.max_bytes) and used > limits.max_bytes
                if not (old or over):
                    finished = True  # the rest were used later, and the store is within its limit
                    break
                found = judged.get(study.id)
                if found is None:  # an instance has no known copy elsewhere
                    done.kept += 1
                    continue
                reason = AGE if old else SIZE
                if dry_run:
                    evicted: Eviction | None = _eviction(study, found, rule, reason)
                else:
                    evicted = self._evict(study, rule, reason)
                if evicted is not None:
                    used -= evicted.bytes
                    done.evicted.append(evicted)
                if stop and stop.is_set():
                    break
        done.bytes_after = used
        self._estimate = used
        still_over = bool(limits.max_bytes) and used > limits.max_bytes
        if still_over and not dry_run and time.monotonic() - self._warned_at >= WARN_EVERY_S:
            # New data is still accepted (a cache that refuses would stop the modalities);
            # [storage].min_free_bytes is what guards the disk.
            self._warned_at = time.monotonic()
            log.warning(
                "store holds %s, over max_bytes %s: %d stud(ies) due for eviction have no known copy "
                "elsewhere (not yet forwarded to every forward remote) and stay",
                _amount(used),
                _amount(limits.max_bytes),
                done.kept,
            )
        return done

    def _evict(self, study: index.Used, rule: index.CopyRule, reason: str) -> Eviction | None:
        """Delete *study* if it may still go when the deletion's transaction starts; log one line."""
        checked: list[Eviction] = []
        gone = False

        def still_evictable() -> bool:
            # Inside the deletion's write transaction: no instance can arrive or be re-armed
            # for forwarding between this check and the deletion of the rows.
            nonlocal gone
            again = index.judge([study.id], rule).get(study.id)
            if again is None:
                gone = not index.exists(study.id)  # deleted meanwhile (an operator, another pass)
                return False
            index.record_evicted(study.id, again, rule, reason)
            checked.append(_eviction(study, again, rule, reason))
            return True

        deleted = deletion.delete(self.ctx, [Target("study", study.study_uid)], within=still_evictable)
        if not deleted.instances or not checked:
            if not gone:
                log.info("study %s changed while it was being evicted: kept", study.study_uid)
            return None
        evicted = checked[0]
        log.info("evicted %s", evicted.describe())
        metrics.evicted(reason)
        return evicted


def _eviction(study: index.Used, judged: index.Judged, rule: index.CopyRule, reason: str) -> Eviction:
    return Eviction(
        study.study_uid,
        judged.instances,
        judged.bytes,
        reason,
        tuple(index.remotes_holding(judged, rule)),
        study.last_used,
    )


def run_evict(ctx: NodeContext, *, dry_run: bool = False) -> int:
    """``dicom-node evict [--dry-run]``: one pass in the foreground; prints a line per study and a total.

    Exit status 0, or 1 when the store stays over ``max_bytes`` (studies
    without a known copy elsewhere), or 2 when neither limit is set.
    """
    limits = Limits.of(ctx.settings)
    if not limits.active:
        print("dicom-node evict: [storage].max_bytes and max_age_days are 0: the store is unbounded")
        return 2
    done = Evictor(ctx).run_once(dry_run=dry_run)
    verb = "would evict" if dry_run else "evicted"
    if dry_run:  # a real pass logs its own line per study
        for evicted in done.evicted:
            print(f"{verb} {evicted.describe()}")
    freed = done.bytes_before - done.bytes_after
    print(
        f"{verb} {len(done.evicted)} stud(ies), {_amount(freed)}; store {_amount(done.bytes_after)}"
        + (f" of max_bytes {_amount(limits.max_bytes)}" if limits.max_bytes else "")
        + (f"; {done.kept} stud(ies) without a known copy elsewhere kept" if done.kept else "")
    )
    return 1 if limits.max_bytes and done.bytes_after > limits.max_bytes else 0
