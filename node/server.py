"""Lifecycle of ``dicom-node serve``: DIMSE and HTTP in one process, reload, graceful stop.

Start-up binds both doors before anything runs or says "serving": a port in
use stops it with one line naming the port and the door (exit 1).  On
SIGHUP the remotes and the ACL are read again from the config file
(node/reload.py); a file with an error keeps the running config.  On
SIGTERM/SIGINT the DIMSE listener closes at once (no new associations),
uvicorn stops accepting and finishes in-flight requests, running
associations are given time to finish, and the process exits 0.

With ``[server].workers`` above 1 this runs in each worker process
(node/workers/): on listening sockets the supervisor bound, with the
association limit counted for the whole node, a doorbell to wake the
forward job another worker holds, and the one-time start-up work (temp
files, interrupted deletions) left to the supervisor.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from . import deletion, metrics
from .cache.access import AccessTracker
from .cache.eviction import Evictor
from .check import IN_PROGRESS_S
from .config import ConfigError, Settings
from .context import NodeContext, open_context
from .dimse import ae as dimse_ae
from .dimse import wire
from .export.service import ExportService
from .jobs.runner import JobRunner
from .reload import reload_settings
from .remotes.forwarder import Forwarder
from .remotes.read_through import ReadThrough
from .remotes.send_job import KIND as SEND
from .remotes.send_job import MAX_ATTEMPTS as SEND_ATTEMPTS
from .remotes.send_job import SendJobs
from .store import use_store_tempdir
from .web.app import create_app
from .workers.doorbell import Doorbell
from .workers.slots import AssociationSlots

if TYPE_CHECKING:
    from .workers.spec import WorkerSpec

log = logging.getLogger("node.server")

ASSOCIATION_GRACE_S = 60.0


class _Server(uvicorn.Server):
    """uvicorn's server, also closing the DIMSE listener the moment a signal arrives."""

    def __init__(self, config: uvicorn.Config, on_exit) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig, frame) -> None:  # noqa: ANN001 - uvicorn's signature
        self._on_exit()
        super().handle_exit(sig, frame)


def _drain(dimse_server, grace_s: float) -> None:
    """Let established associations finish (up to *grace_s*), then abort the rest.

    A connection that never negotiated an association (a port probe, a
    half-open peer) has nothing in flight and is not waited for.
    """
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(a.is_established for a in dimse_server.active_associations):
        time.sleep(0.05)
    for assoc in dimse_server.active_associations:
        if assoc.is_established:
            log.warning("aborting association with %s after %.0fs grace", assoc.requestor.ae_title, grace_s)
        assoc.abort()


class DoorError(Exception):
    """A door cannot listen on its port; the message names the door and the port."""


def door_error(door: str, key: str, host: str, port: int, exc: OSError) -> DoorError:
    """The one line start-up stops with when *door* cannot listen on *host*:*port*."""
    if exc.errno == errno.EADDRINUSE:
        why = f"is already in use (another process listens there: stop it, or change {key})"
    elif exc.errno == errno.EACCES:
        why = "needs privileges (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"cannot be bound: {host} is not an address of this machine"
    else:
        why = f"cannot be bound: {exc.strerror or exc}"
    return DoorError(f"{door} port {port} on {host} {why}")


def listen_http(host: str, port: int) -> socket.socket:
    """Bind the HTTP door's socket now (uvicorn serves on it later); raise DoorError."""
    return listen("HTTP", "[http].port", host, port)


def listen(door: str, key: str, host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on *host*:*port* for *door*; raise DoorError naming *key*."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise door_error(door, key, host, port, exc) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise door_error(door, key, host, port, exc) from None
    return sock


def start_dimse(
    ctx: NodeContext, *, sock: socket.socket | None = None, slots: AssociationSlots | None = None
):
    """Start the DIMSE listener (non-blocking); raise DoorError when its port cannot be bound."""
    s = ctx.settings.dicom
    try:
        return dimse_ae.start(ctx, sock=sock, slots=slots)
    except OSError as exc:
        raise door_error("DICOM", "[dicom].port", s.host, s.port, exc) from None


class Reloader:
    """Applies SIGHUP reloads to the running pieces, one at a time, off the signal handler."""

    def __init__(self, ctx: NodeContext, dimse_server, exports: ExportService, app, forwarder: Forwarder):
        self.ctx = ctx
        self.dimse_server = dimse_server
        self.exports = exports
        self.app = app
        self.forwarder = forwarder
        self._lock = threading.Lock()

    def on_signal(self, *_args) -> None:
        threading.Thread(target=self.reload, name="config-reload", daemon=True).start()

    def reload(self) -> bool:
        """Read the config file again and apply its remotes and ACL; False (logged) on an error."""
        with self._lock:
            source = self.ctx.settings.source
            try:
                change = reload_settings(self.ctx.settings)
            except ConfigError as exc:
                log.error("config reload failed, keeping the running config: %s", exc)
                return False
            self.ctx.settings = change.settings
            self.exports.settings = change.settings
            self.dimse_server.ae.require_calling_aet = list(change.settings.calling_aets_accepted())
            if change.forwarding_changed:
                # Rows queued meanwhile are durable: the reconfigured workers send them.
                self.forwarder.reconfigure(self.ctx)
            log.info(
                "config reloaded from %s: %s",
                source,
                "; ".join(change.changes) or "no change to the remotes or the ACL",
            )
            for key in change.restart_needed:
                log.warning("%s changed in %s: it takes effect at the next restart", key, source)
            return True


def prepare_store(ctx: NodeContext) -> None:
    """Start-up work on the store, once per node start (the supervisor's, with workers).

    Temp files are debris unless another process holds the store: a second
    node on a shared storage folder (docs/scaling.md) may be writing them, so
    then only those older than ``check`` would call left over go.
    """
    shared = ctx.store.in_use()
    ctx.store.hold()
    ctx.store.discard_temp(IN_PROGRESS_S if shared else 0.0)
    finished = deletion.finish_pending(ctx)
    if finished:
        log.info("finished %d file removal(s) of an interrupted deletion", finished)


def serve(settings: Settings, *, worker: WorkerSpec | None = None) -> int:
    """Run the node (or one *worker* process of it) until SIGTERM/SIGINT; return the exit code."""
    # Until the reloader is in place a SIGHUP must not kill the node (its default action).
    signal.signal(signal.SIGHUP, lambda *_: log.warning("SIGHUP during start-up ignored: send it again"))
    # Before any association exists: the node's hooks into pynetdicom (the safety
    # ones always, the fast path per [dicom].fast_path).
    wire.install(fast_path=settings.dicom.fast_path)
    ctx: NodeContext = open_context(settings)
    h = settings.http
    if worker is None:
        prepare_store(ctx)
        try:
            http_socket = listen_http(h.host, h.port)
        except DoorError as exc:
            log.error("%s", exc)
            return 1
        try:
            dimse_server = start_dimse(ctx)
        except DoorError as exc:
            http_socket.close()
            log.error("%s", exc)
            return 1
    else:
        ctx.store.hold()
        http_socket = socket.socket(fileno=worker.http_fd)
        slots = AssociationSlots(worker.slots_dir, settings.dicom.max_associations)
        dimse_server = start_dimse(ctx, sock=socket.socket(fileno=worker.dimse_fd), slots=slots)
    use_store_tempdir(ctx.store)
    # One job runner for every kind of long work; each kind is one registration.
    ctx.ingest.add_listener(metrics.ingest_listener)
    runner = JobRunner(settings.jobs)
    forwarder = Forwarder(ctx, runner)
    forwarder.install()
    exports = ExportService(ctx, runner)
    exports.install()
    ctx.read_through = ReadThrough(ctx, runner)
    ctx.read_through.install()
    runner.register(SEND, SendJobs(ctx), concurrency=settings.jobs.send_workers, max_attempts=SEND_ATTEMPTS)
    runner.start()
    # The bounded store: reads are recorded (in every worker) for its least-recently-used
    # order; one process runs the passes, now and then and soon after an ingest takes the
    # store over [storage].max_bytes (another node's evictor beside it is safe, only redundant).
    ctx.store.read_listener = AccessTracker()
    evictor = Evictor(ctx) if worker is None or worker.index == 1 else None
    if evictor is not None:
        ctx.ingest.add_listener(evictor.on_ingest)
        evictor.start()
    doorbell = _doorbell(worker, forwarder)
    closed = threading.Event()

    app = create_app(ctx)
    app.state.forwarder = forwarder
    app.state.exports = exports
    app.state.jobs = runner
    reloader = Reloader(ctx, dimse_server, exports, app, forwarder)

    def stop_listening() -> None:
        if not closed.is_set():
            closed.set()
            # Exports and sends stop at a checkpoint (resumable); forwarding goes on
            # while the associations drain.
            runner.request_stop()
            # shutdown() blocks until serve_forever returns: do it off the signal handler.
            threading.Thread(target=dimse_server.shutdown, name="dimse-shutdown").start()

    config = uvicorn.Config(
        app,
        host=h.host,
        port=h.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=ASSOCIATION_GRACE_S,
    )
    server = _Server(config, stop_listening)
    # uvicorn's own handler from now on, not only once run() installs it: a stop
    # signal in between (a worker told to stop while still starting) was lost,
    # and the node served on until killed.  Set early, it makes run() start and
    # end at once.  uvicorn re-raises the captured signal once it has shut down,
    # into this same handler: harmless, and we exit 0 as promised.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server.handle_exit)
    signal.signal(signal.SIGHUP, reloader.on_signal)
    if worker is not None:
        _watch_supervisor(worker.supervisor_pid)
    log.info(
        "%s %s: DICOM on %s:%d (fast path %s), HTTP on %s:%d, store %s",
        "serving" if worker is None else f"worker {worker.index} of {worker.workers} serving",
        settings.dicom.ae_title,
        settings.dicom.host,
        settings.dicom.port,
        "on" if settings.dicom.fast_path else "off",
        h.host,
        h.port,
        settings.storage.path,
    )
    server.run(sockets=[http_socket])
    stop_listening()
    _drain(dimse_server, ASSOCIATION_GRACE_S)
    runner.stop()  # a few seconds at most (node/jobs/runner.py: STOP_GRACE_S)
    # What a job left behind (or anything else) still holds open would keep the process alive.
    wire.abort_requested()
    if evictor is not None:
        evictor.stop()
    if doorbell is not None:
        doorbell.close()
    ctx.db.close()
    if not server.started:
        log.error("HTTP server could not start on %s:%d", h.host, h.port)
        return 1
    log.info("stopped")
    return 0


def _doorbell(worker: WorkerSpec | None, forwarder: Forwarder) -> Doorbell | None:
    """A worker's doorbell: rows queued here for a forward job another worker holds wake it at once."""
    if worker is None:
        return None
    from .workers.spec import FORWARD_TOPIC

    def heard(topic: str) -> None:
        if topic.startswith(FORWARD_TOPIC):
            forwarder.wake_here(topic[len(FORWARD_TOPIC) :])

    bell = Doorbell(worker.wake_dir, heard)
    forwarder.elsewhere = lambda remote: bell.ring(FORWARD_TOPIC + remote)
    return bell


def _watch_supervisor(pid: int) -> None:
    """Drain and exit (as on SIGTERM) if the supervisor is gone: a killed one cannot stop its workers."""

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(1.0)
        log.warning("the supervisor (pid %d) is gone: stopping", pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
