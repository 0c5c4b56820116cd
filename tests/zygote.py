"""A pre-imported Python process that forks ``dicom-node`` commands for the tests.

Starting ``python -m node serve`` costs over a second of CPU, almost all of
it importing pydicom (which imports numpy and its pixel handlers), peewee,
pynetdicom, Starlette, Jinja2 and psycopg; the suite starts a node several
hundred times per pass.  This process imports all of that once per test
session and then forks one child per command, which runs the real
``node.cli.main`` exactly as ``python -m node`` would: its own process,
its own log file, the environment and working directory of the request,
default signal dispositions, and at exit the same join of non-daemon
threads and ``atexit`` handlers as an interpreter shutting down (so a node
that hangs on exit still hangs here, and fails its test).

Protocol on stdin / stdout, one JSON object per line:

- request ``{"argv": [...], "cwd": "...", "log": "...", "env": {...}}``
  (optional: ``stdin``, a file the child reads as its standard input;
  ``stderr``, a file for its standard error instead of the log) →
  answer ``{"pid": N}``;
- when a child ends: ``{"exit": N, "code": C}`` (``C`` as Popen's
  ``returncode``: negative for a signal).

Single-threaded on purpose: forking a process with other threads is unsafe.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

# numpy's BLAS would start a thread pool at import: no threads before fork.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import node.cli  # noqa: E402, F401  the whole import graph of `serve` and the other commands
import node.server  # noqa: E402, F401


def _child(request: dict) -> None:
    """In the forked child: become the command (never returns)."""
    code = 1
    try:
        stdin = os.open(request.get("stdin") or os.devnull, os.O_RDONLY)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        out = os.open(request["log"], flags, 0o644)
        err = os.open(request["stderr"], flags, 0o644) if request.get("stderr") else out
        os.dup2(stdin, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in {stdin, out, err}:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = ["dicom-node", *request["argv"]]
        try:
            code = node.cli.main(request["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        # What interpreter shutdown does: wait for non-daemon threads, run atexit.
        import threading

        threading._shutdown()  # type: ignore[attr-defined]
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def _send(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> None:
    """Serve fork requests until stdin closes."""
    buffer = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.02)
        _reap()
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(request)
            _send({"pid": pid})


if __name__ == "__main__":
    main()
