"""``dicom-node serve`` with ``[server].workers`` processes on the same two ports.

Why one pair of sockets handed down rather than SO_REUSEPORT: the
supervisor binds the DIMSE and HTTP sockets once, so a port in use stops the
node before anything starts (one line, exit 1, as with one process), and
every worker accepts from the same kernel queue.  With SO_REUSEPORT each
worker would own a queue of its own: the connections waiting in a killed
worker's queue are reset, the kernel spreads connections by a hash rather
than to whichever worker is free, and any other process of the same user
could bind the port beside the node.  An idle worker blocked in ``accept``
and a busy one never compete badly: the socket is non-blocking in every
worker (node/dimse/wire/listener.py) and uvicorn's event loop takes HTTP
connections as they come.

The supervisor does the once-per-start work (migrations, temp files,
interrupted deletions), then spawns each worker as a fresh interpreter
(``python -m node.workers.worker``; a fork of a process with threads and a
database connection is not safe) with the two sockets and its WorkerSpec.
It restarts a worker that dies (logged with its exit code or signal; one
that dies within CRASH_WINDOW_S of starting waits 1, 2, 4 ... up to 30 s),
forwards SIGHUP to every worker (each reloads the config, node/reload.py),
and on SIGTERM/SIGINT closes its own copies of the sockets, asks every
worker to drain (each answers its in-flight requests) and exits 0.

A private run folder (removed at exit) holds what the workers share:
prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``; a dead
worker's live gauges are dropped with ``mark_process_dead``), the doorbells
(node/workers/doorbell.py) and the association slots (node/workers/slots.py).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, Settings
from ..metrics import MULTIPROC_ENV
from ..reload import reload_settings
from .spec import WorkerSpec

log = logging.getLogger("node.workers")

CRASH_WINDOW_S = 10.0  # a worker that dies sooner after its start counts as a crash loop
BACKOFF_MAX_S = 30.0
TICK_S = 0.1  # how often the supervisor looks at its workers
# A worker drains associations (60 s) and then jobs (a few seconds): past this it is killed.
STOP_GRACE_S = 100.0


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    crashes: int = 0  # consecutive quick deaths
    restart_at: float | None = None


def run(settings: Settings, *, log_level: str = "info") -> int:
    """Serve the node with ``[server].workers`` processes (one: in this process); the exit code."""
    count = settings.server.worker_count()
    if count <= 1:
        from ..server import serve

        return serve(settings)
    return Supervisor(settings, count, log_level).run()


class Supervisor:
    """Binds the doors, keeps *count* workers running on them, stops them all on SIGTERM."""

    def __init__(self, settings: Settings, count: int, log_level: str) -> None:
        self.settings = settings
        self.count = count
        self.log_level = log_level
        self.workers = [_Worker(i + 1) for i in range(count)]
        self.stopping = threading.Event()
        self.run_dir: Path | None = None
        self.sockets: list = []

    # -- start ---------------------------------------------------------------

    def _start_up(self) -> int:
        """The once-per-start work and the two listening sockets; non-zero exit code on failure."""
        from ..context import open_context
        from ..dimse.wire.listener import BACKLOG
        from ..server import DoorError, listen, listen_http, prepare_store

        ctx = open_context(self.settings)  # migrations run here, once, not in every worker
        try:
            prepare_store(ctx)
        finally:
            ctx.db.close()
        self.store = ctx.store  # keeps the store held (check sees a node) while workers restart
        d, h = self.settings.dicom, self.settings.http
        try:
            self.sockets.append(listen("DICOM", "[dicom].port", d.host, d.port, BACKLOG))
            self.sockets.append(listen_http(h.host, h.port))
        except DoorError as exc:
            log.error("%s", exc)
            self._close_sockets()
            return 1
        self.run_dir = Path(tempfile.mkdtemp(prefix="dicom-node-"))
        (self.run_dir / "metrics").mkdir()
        return 0

    def _spawn(self, worker: _Worker) -> None:
        assert self.run_dir is not None
        dimse, http = self.sockets
        spec = WorkerSpec(
            index=worker.index,
            workers=self.count,
            settings=self.settings,
            dimse_fd=dimse.fileno(),
            http_fd=http.fileno(),
            run_dir=self.run_dir,
            supervisor_pid=os.getpid(),
            log_level=self.log_level,
        )
        env = dict(os.environ, **{MULTIPROC_ENV: str(self.run_dir / "metrics")})
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.workers.worker"],
            stdin=subprocess.PIPE,
            pass_fds=(dimse.fileno(), http.fileno()),
            env=env,
            # Its own process group: a terminal's Ctrl-C reaches the supervisor only,
            # which stops the workers in order.
            start_new_session=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(spec))
        proc.stdin.close()
        worker.proc, worker.started, worker.restart_at = proc, time.monotonic(), None

    # -- run -----------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGHUP, lambda *_: log.warning("SIGHUP during start-up ignored: send it again"))
        code = self._start_up()
        if code:
            return code
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        try:
            for worker in self.workers:
                self._spawn(worker)
            signal.signal(signal.SIGHUP, self._forward_hup)
            d, h = self.settings.dicom, self.settings.http
            log.info(
                "supervisor of %s: %d workers serving DICOM on %s:%d and HTTP on %s:%d",
                d.ae_title,
                self.count,
                d.host,
                d.port,
                h.host,
                h.port,
            )
            while not self.stopping.wait(TICK_S):
                self._tend()
            return self._stop()
        finally:
            self._close_sockets()
            if self.run_dir is not None:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def _forward_hup(self, *_args) -> None:
        log.info("SIGHUP: asking %d workers to reload the config", self.count)
        self._signal_all(signal.SIGHUP)
        # A worker started later (a restart) must get what the others now run.
        try:
            self.settings = reload_settings(self.settings).settings
        except ConfigError:
            pass  # every worker logs why and keeps its config; so does the supervisor

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                try:
                    worker.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _tend(self) -> None:
        """Restart workers that died, after their back-off."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    self._spawn(worker)
                continue
            assert worker.proc is not None
            code = worker.proc.poll()
            if code is None:
                continue
            self._buried(worker.proc.pid)
            lived = now - worker.started
            worker.crashes = worker.crashes + 1 if lived < CRASH_WINDOW_S else 0
            delay = min(BACKOFF_MAX_S, 2.0 ** (worker.crashes - 1)) if worker.crashes else 0.0
            log.error(
                "worker %d (pid %d) %s after %.1fs; restarting it%s",
                worker.index,
                worker.proc.pid,
                describe_exit(code),
                lived,
                f" in {delay:.0f}s ({worker.crashes} quick deaths in a row)" if delay else "",
            )
            worker.restart_at = now + delay

    def _buried(self, pid: int) -> None:
        """What a dead worker leaves in the run folder: its live gauges, its doorbell."""
        assert self.run_dir is not None
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.run_dir / "metrics"))
        try:
            (self.run_dir / "wake" / str(pid)).unlink()
        except FileNotFoundError:
            pass

    # -- stop ----------------------------------------------------------------

    def _stop(self) -> int:
        """Drain every worker: no new connections once they all close the sockets; exit 0."""
        log.info("stopping: draining %d workers", self.count)
        # Our copies closed first: the ports stop listening as soon as the last worker closes its own.
        self._close_sockets()
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.workers:
            if worker.proc is None or worker.restart_at is not None:
                continue
            try:
                code = worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "worker %d (pid %d) did not stop in %.0fs: killed",
                    worker.index,
                    worker.proc.pid,
                    STOP_GRACE_S,
                )
                worker.proc.kill()
                code = worker.proc.wait()
            if code != 0:
                log.warning(
                    "worker %d (pid %d) %s while stopping", worker.index, worker.proc.pid, describe_exit(code)
                )
        log.info("stopped")
        return 0

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []


def describe_exit(code: int) -> str:
    """A Popen return code in words: ``exited with code 1``, ``was killed by SIGKILL``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"
