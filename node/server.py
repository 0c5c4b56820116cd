"""Lifecycle of ``dicom-node serve``: DIMSE and HTTP in one process, graceful stop.

On SIGTERM/SIGINT the DIMSE listener closes at once (no new associations),
uvicorn stops accepting and finishes in-flight requests, running
associations are given time to finish, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import uvicorn

from .config import Settings
from .context import NodeContext, open_context
from .dimse import ae as dimse_ae
from .dimse import wire
from .export.service import ExportService
from .remotes.forwarder import Forwarder
from .store import use_store_tempdir
from .web.app import create_app

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


def serve(settings: Settings) -> int:
    """Run the node until SIGTERM/SIGINT; return the exit code."""
    # Before any association exists: the node's hooks into pynetdicom (the safety
    # ones always, the fast path per [dicom].fast_path).
    wire.install(fast_path=settings.dicom.fast_path)
    ctx: NodeContext = open_context(settings)
    ctx.store.discard_temp()
    use_store_tempdir(ctx.store)
    forwarder = Forwarder(ctx)
    forwarder.install()
    forwarder.start()

    dimse_server = dimse_ae.start(ctx)
    exports = ExportService(ctx)
    exports.start()
    closed = threading.Event()

    def stop_listening() -> None:
        if not closed.is_set():
            closed.set()
            exports.request_stop()
            # shutdown() blocks until serve_forever returns: do it off the signal handler.
            threading.Thread(target=dimse_server.shutdown, name="dimse-shutdown").start()

    h = settings.http
    app = create_app(ctx)
    app.state.forwarder = forwarder
    app.state.exports = exports
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
    # uvicorn re-raises the captured signal once it has shut down; with these
    # handlers in place that re-raise is harmless and we exit 0 as promised.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    log.info(
        "serving %s: DICOM on %s:%d (fast path %s), HTTP on %s:%d, store %s",
        settings.dicom.ae_title,
        settings.dicom.host,
        settings.dicom.port,
        "on" if settings.dicom.fast_path else "off",
        h.host,
        h.port,
        settings.storage.path,
    )
    server.run()
    stop_listening()
    exports.stop()
    _drain(dimse_server, ASSOCIATION_GRACE_S)
    forwarder.stop()
    ctx.db.close()
    if not server.started:
        log.error("HTTP server could not start on %s:%d", h.host, h.port)
        return 1
    log.info("stopped")
    return 0
