"""Prometheus metrics of the node: what happened (counters, histograms) and what is (gauges).

Two kinds, kept apart on purpose:

- **Events** are counted where they happen, by the small functions below
  that the doors call (:func:`instance_received`, :func:`timed`,
  :func:`association_opened` ...).  Each is a counter increment or a
  histogram observation under prometheus-client's own lock: no SQL, no I/O,
  correct under concurrent ingest.
- **State** (stored instances and bytes, free space, outbox depth, export
  jobs) is read from the index and the file system when ``/metrics`` is
  scraped (:class:`StateCollector`), so the hot path pays nothing for it and
  every process sees the same figures.

Several worker processes (issue 16): set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty folder in the environment *before* the workers start (prometheus-client
picks its storage when it is imported); every worker then writes its event
metrics to memory-mapped files there, and :func:`exposition` in any worker
adds them up.  The supervisor (node/workers/supervisor.py) creates that
folder and calls ``prometheus_client.multiprocess.mark_process_dead(pid)``
for a worker that exits, so that its live gauges
(``dicom_node_associations_active``) drop out.

This module is core: it knows neither pynetdicom nor Starlette; callers hand
it plain values (an ingest Outcome and Source, an association object).
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from . import __version__
from .statuses import label as status_label

if TYPE_CHECKING:
    from .context import NodeContext

# The *_created series double every counter's output for a timestamp that process_start_time gives.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The ingest doors as the metrics name them.
DOORS = {"gateway": "forward-gateway"}
# Doors whose instances come from a DICOM peer: their AE title is the calling_ae label.
_AE_DOORS = {"dimse", "retrieve"}
# A calling AE title is chosen by the peer: past this many distinct ones
# (any AE may associate when allowed_calling_aets is empty), the rest are
# counted as "other", so the label set stays bounded.
MAX_CALLING_AES = 256
OTHER_AE = "other"

OPERATIONS = ("c_store", "c_find", "c_move", "c_get", "stow", "qido", "wado", "zip")
# From a C-STORE of a tiny instance (~1 ms) to a ZIP of a large study (minutes).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# Not registered anywhere at import: each scrape builds its registry (see exposition),
# so that several apps in one process (tests) do not collide on a global registry.
RECEIVED = Counter(
    "dicom_node_instances_received_total",
    "Instances stored (or replaced), by the door they came in by and the calling AE title (DICOM doors).",
    ["door", "calling_ae"],
    registry=None,
)
RECEIVED_BYTES = Counter("dicom_node_received_bytes_total", "Bytes of the instances stored.", registry=None)
STORE_FAILURES = Counter(
    "dicom_node_store_failures_total",
    "Instances refused or not stored by the ingest path, by reason.",
    ["reason"],
    registry=None,
)
REQUEST_DURATION = Histogram(
    "dicom_node_request_duration_seconds",
    "Time to serve a DIMSE or DICOMweb request, by operation (C-STORE: per instance, from the data"
    " set received to the answer; HTTP: until the last byte of the answer was sent).",
    ["operation"],
    buckets=BUCKETS,
    registry=None,
)
ASSOCIATIONS = Gauge(
    "dicom_node_associations_active",
    "DICOM associations other nodes hold with this node right now.",
    multiprocess_mode="livesum",
    registry=None,
)
FORWARDED = Counter(
    "dicom_node_forwarded_total",
    "Instances store-and-forward delivered to a remote (success or warning), by remote name.",
    ["remote"],
    registry=None,
)
TRANSCODED = Counter(
    "dicom_node_transcoded_total",
    "Instances converted to another transfer syntax because a DICOM peer took none it is stored in"
    " (C-GET, C-MOVE, forwarding, the /forward gateway, send jobs), by the syntax sent.",
    ["transfer_syntax"],
    registry=None,
)
EVICTED = Counter(
    "dicom_node_evicted_studies_total",
    "Studies evicted from the bounded store ([storage].max_bytes, max_age_days), by reason (size, age).",
    ["reason"],
    registry=None,
)
_EVENT_METRICS = (
    RECEIVED,
    RECEIVED_BYTES,
    STORE_FAILURES,
    REQUEST_DURATION,
    ASSOCIATIONS,
    FORWARDED,
    TRANSCODED,
    EVICTED,
)

_aes_lock = threading.Lock()
_aes_seen: set[str] = set()


def _calling_ae_label(ae_title: str) -> str:
    title = ae_title.strip()
    if title in _aes_seen:
        return title
    with _aes_lock:
        if len(_aes_seen) >= MAX_CALLING_AES:
            return OTHER_AE
        _aes_seen.add(title)
    return title


# -- events: the calls the doors make ------------------------------------------------


def instance_received(outcome: Any, source: Any) -> None:
    """Count one ingest outcome (an ``node.ingest.Outcome``) from *source* (a ``Source``)."""
    door = DOORS.get(source.door, source.door)
    if outcome.ok:
        calling = _calling_ae_label(source.calling_aet) if door in _AE_DOORS else ""
        RECEIVED.labels(door, calling).inc()
        RECEIVED_BYTES.inc(outcome.size)
    else:
        STORE_FAILURES.labels(status_label(outcome.failure_code)).inc()


F = TypeVar("F", bound=Callable[..., Any])


def ingest_listener(ingested: Any) -> None:
    """After-commit listener of the ingest path (``node.ingest.Ingested``): count its outcome."""
    instance_received(ingested.outcome, ingested.source)


def observe(operation: str, seconds: float) -> None:
    """Record one request of *operation* (one of OPERATIONS) that took *seconds*."""
    REQUEST_DURATION.labels(operation).observe(seconds)


def timed(operation: str) -> Callable[[F], F]:
    """Decorator: time each call of a handler as *operation*.

    A generator function (the C-FIND / C-MOVE / C-GET handlers) is timed
    from its first step until it is exhausted or closed, which is how long
    the request took to answer.
    """
    child = REQUEST_DURATION.labels(operation)

    def decorate(func: F) -> F:
        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def generator(*args, **kwargs) -> Iterator[Any]:
                started = time.perf_counter()
                try:
                    return (yield from func(*args, **kwargs))
                finally:
                    child.observe(time.perf_counter() - started)

            return generator  # type: ignore[return-value]

        @functools.wraps(func)
        def plain(*args, **kwargs) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                child.observe(time.perf_counter() - started)

        return plain  # type: ignore[return-value]

    return decorate


_COUNTED = "_node_metrics_counted"


def association_opened(event: Any) -> None:
    """An association was established with this node (an event whose ``assoc`` is it)."""
    assoc = event.assoc
    if not getattr(assoc, _COUNTED, False):
        setattr(assoc, _COUNTED, True)
        ASSOCIATIONS.inc()


def association_closed(event: Any) -> None:
    """A connection ended: uncount its association if it was counted (once)."""
    assoc = event.assoc
    if getattr(assoc, _COUNTED, False):
        setattr(assoc, _COUNTED, False)
        ASSOCIATIONS.dec()


def forwarded(remote: str, n: int = 1) -> None:
    """*n* instances were delivered to *remote* by store-and-forward."""
    FORWARDED.labels(remote).inc(n)


def transcoded(transfer_syntax: str) -> None:
    """One instance was converted to *transfer_syntax* to be sent to a DICOM peer."""
    TRANSCODED.labels(transfer_syntax).inc()


def evicted(reason: str) -> None:
    """One study was evicted, for *reason* ("size" or "age")."""
    EVICTED.labels(reason).inc()


def active_associations() -> int:
    """Associations held with the node now: this process's, or every worker's in multi-process mode."""
    shared = multiproc_dir()
    if not shared:
        return int(ASSOCIATIONS._value.get())
    registry = CollectorRegistry(auto_describe=False)
    _multiprocess.MultiProcessCollector(registry, path=shared)
    return int(registry.get_sample_value("dicom_node_associations_active") or 0)


def prepare(remote_names: list[str]) -> None:
    """Create the labelled series that should read 0 before anything happens."""
    for name in remote_names:
        FORWARDED.labels(name)
    for reason in ("size", "age"):
        EVICTED.labels(reason)


# -- state: read when scraped -------------------------------------------------------------


class StateCollector:
    """Gauges read from the index and the file system at scrape time (node-wide, any process)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def describe(self) -> list[Metric]:
        # Registering must not query the database; the names are fixed.
        return []

    def collect(self) -> Iterator[Metric]:
        from .index import figures  # the index imports ingest, which imports this module

        settings = self.ctx.settings
        totals = figures.recent_store_totals()
        yield GaugeMetricFamily("dicom_node_stored_instances", "Instances the index holds.", totals.instances)
        yield GaugeMetricFamily(
            "dicom_node_storage_bytes", "Bytes of the stored instance files.", totals.bytes
        )
        free = GaugeMetricFamily(
            "dicom_node_storage_free_bytes", "Free bytes on the file system of [storage].path."
        )
        try:
            free.add_metric([], shutil.disk_usage(settings.storage.path).free)
        except OSError:
            pass  # the folder is gone: no sample rather than a wrong one
        yield free

        outbox = figures.outbox_by_remote()
        pending = GaugeMetricFamily(
            "dicom_node_outbox_pending", "Instances waiting to be forwarded, by remote.", labels=["remote"]
        )
        failed = GaugeMetricFamily(
            "dicom_node_outbox_failed",
            "Instances a remote refused for good (until retried), by remote.",
            labels=["remote"],
        )
        names = [r.name for r in settings.remotes if r.forward]
        names += sorted(set(outbox) - set(names))
        for name in names:
            rows = outbox.get(name, {})
            pending.add_metric([name], rows.get("pending", 0))
            failed.add_metric([name], rows.get("failed", 0))
        yield pending
        yield failed

        jobs = GaugeMetricFamily("dicom_node_export_jobs", "ZIP export jobs, by state.", labels=["state"])
        for state, count in figures.export_jobs_by_state().items():
            jobs.add_metric([state], count)
        yield jobs

        info = GaugeMetricFamily(
            "dicom_node_info", "This node: version and AE title.", labels=["version", "ae_title"]
        )
        info.add_metric([__version__, settings.dicom.ae_title], 1)
        yield info

        yield GaugeMetricFamily(
            "dicom_node_start_time_seconds",
            "When the node started (Unix time); time() minus this is its uptime.",
            self.ctx.started_at,
        )


def multiproc_dir() -> str | None:
    """The folder the worker processes share their metrics in, when multi-process mode is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(ctx: NodeContext, *, accept: str = "", shared_dir: str | None = None) -> tuple[bytes, str]:
    """Every metric and its content type, for ``GET /metrics`` (runs SQL: call it off the event loop).

    The format follows *accept* as prometheus-client's own handler does: the
    classic text format (0.0.4) unless the scraper asks for OpenMetrics or
    text 1.0.0.  With *shared_dir* (default: ``$PROMETHEUS_MULTIPROC_DIR``)
    the event metrics are the sum over every process writing there;
    otherwise they are this process's, with its CPU, memory and GC figures.
    """
    shared_dir = shared_dir or multiproc_dir()
    registry = CollectorRegistry(auto_describe=False)
    if shared_dir:
        _multiprocess.MultiProcessCollector(registry, path=shared_dir)
    else:
        for metric in _EVENT_METRICS:
            registry.register(metric)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    registry.register(StateCollector(ctx))
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
