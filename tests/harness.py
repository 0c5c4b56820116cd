"""Real peers for tests and benchmarks: the node, DCMTK storescp/dcmqrscp, Orthanc.

Each runs as a subprocess on free loopback ports and is stopped by its
``stop()`` (or when used as a context manager).
"""

from __future__ import annotations

import atexit
import copy
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
NODE_AE = "DICOM_NODE"
# "false": every node a test starts runs without the wire layer's fast path
# (`make test` runs the DIMSE modules a second time that way).
ENV_FAST_PATH = "DICOM_NODE_TEST_FAST_PATH"


def fast_path_default() -> bool:
    """The ``[dicom].fast_path`` the harness writes unless a test sets it."""
    return os.environ.get(ENV_FAST_PATH, "true").strip().lower() not in ("0", "false", "no", "off")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on *port*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_text(config: dict[str, Any]) -> str:
    """A config dict (sections of scalars, ``remotes`` a list of tables) as TOML."""
    lines = []
    for section, values in config.items():
        if section == "remotes":
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for remote in config.get("remotes", []):
        lines.append("[[remotes]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in remote.items()]
        lines.append("")
    return "\n".join(lines)


def node_config(root: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A complete config for a node under *root* on free ports; *sections* override keys.

    The index is SQLite under *root*, or a fresh database on the session's
    PostgreSQL server when ``DICOM_NODE_TEST_DB=postgresql`` (see index_database).
    """
    config: dict[str, Any] = {
        "dicom": {
            "ae_title": NODE_AE,
            "host": "127.0.0.1",
            "port": free_port(),
            "fast_path": fast_path_default(),
        },
        "http": {"host": "127.0.0.1", "port": free_port()},
        # min_free_bytes: the default (1 GiB) would refuse data on a nearly full test machine.
        "storage": {
            "path": str(root / "storage"),
            "database": index_database(root),
            "min_free_bytes": 1 << 20,
        },
        "export": {"path": str(root / "storage/zip"), "compression": 3},
        # One process unless a test asks for workers (tests/test_workers.py): faster to start.
        "server": {"workers": 1},
    }
    for name, values in sections.items():
        if name == "remotes":
            config["remotes"] = values
        else:
            config.setdefault(name, {}).update(values)
    return config


def twin_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a node's config on other ports: a second node on the same index and storage."""
    twin = copy.deepcopy(config)
    twin["dicom"]["port"] = free_port()
    twin["http"]["port"] = free_port()
    return twin


def stop_process(proc: subprocess.Popen | None, sig: int, timeout: float, *, strict: bool = False) -> int:
    """Signal *proc* and wait; kill it after *timeout* (and raise, if *strict*)."""
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else 0
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        if strict:
            raise
        return code


class _Zygote:
    """The test session's fork server for node commands (tests/zygote.py)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exits: dict[int, int] = {}
        self.changed = threading.Condition()
        self.pids: list[int] = []
        self.log_path = Path(tempfile.gettempdir()) / f"dicom-node-zygote-{os.getpid()}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.zygote"],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        threading.Thread(target=self._read, name="zygote-reader", daemon=True).start()
        atexit.register(self.close)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            with self.changed:
                if "pid" in message:
                    self.pids.append(message["pid"])
                else:
                    self.exits[message["exit"]] = message["code"]
                self.changed.notify_all()

    def spawn(
        self, argv: list[str], cwd: Path, log: Path, stdin: Path | None = None, stderr: Path | None = None
    ) -> ForkedProcess:
        """Fork ``dicom-node ARGV`` (output appended to *log*); its Popen-like handle."""
        request = {"argv": argv, "cwd": str(cwd), "log": str(log), "env": dict(os.environ)}
        if stdin is not None:
            request["stdin"] = str(stdin)
        if stderr is not None:
            request["stderr"] = str(stderr)
        with self.lock:
            with self.changed:
                seen = len(self.pids)
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            with self.changed:
                answered = lambda: len(self.pids) > seen or self.proc.poll() is not None  # noqa: E731
                if not self.changed.wait_for(answered, 60):
                    raise RuntimeError("the zygote did not answer")
                if len(self.pids) == seen:
                    raise RuntimeError(f"the zygote exited with {self.proc.returncode}")
                return ForkedProcess(self, self.pids[seen], argv)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.log_path.exists() and self.log_path.stat().st_size == 0:
            self.log_path.unlink()  # kept only when the zygote had something to say


class ForkedProcess:
    """A node command forked by the zygote, with the part of Popen's interface the tests use."""

    def __init__(self, zygote: _Zygote, pid: int, args: list[str]) -> None:
        self.zygote = zygote
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        with self.zygote.changed:
            self.returncode = self.zygote.exits.get(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self.zygote.changed:
            if not self.zygote.changed.wait_for(lambda: self.pid in self.zygote.exits, timeout):
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = self.zygote.exits[self.pid]
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()
# "false": every node command goes through a fresh interpreter (python -m node), as users run it.
ENV_ZYGOTE = "DICOM_NODE_TEST_ZYGOTE"


def node_command(
    argv: list[str],
    cwd: Path,
    log: Path,
    stdin: Path | None = None,
    stderr: Path | None = None,
    tree: Path = REPO,
) -> ForkedProcess | subprocess.Popen:
    """Start ``dicom-node ARGV`` in *cwd*, output appended to *log* (standard error too,
    unless *stderr* names a file for it), running the code of the source *tree*.

    Forked from the session's pre-imported zygote (tests/zygote.py: much
    cheaper than a new interpreter) for this checkout's code; a fresh
    ``python -m node`` for another revision's tree (a benchmark's before /
    after) or with ``DICOM_NODE_TEST_ZYGOTE=false``.
    """
    global _zygote
    if tree == REPO and os.environ.get(ENV_ZYGOTE, "true").lower() not in ("0", "false", "no"):
        with _zygote_lock:
            if _zygote is None or _zygote.proc.poll() is not None:
                _zygote = _Zygote()
        return _zygote.spawn(argv, cwd, log, stdin, stderr)
    with log.open("ab") as out, (stdin.open("rb") if stdin else open(os.devnull, "rb")) as inp:
        err = stderr.open("ab") if stderr else None
        env = {**os.environ, "PYTHONPATH": str(tree)} if tree != REPO else None
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "node", *argv],
                cwd=cwd,
                env=env,
                stdin=inp,
                stdout=out,
                stderr=err or subprocess.STDOUT,
            )
        finally:
            if err:
                err.close()


def run_node(
    *argv: str, timeout: float = 120, input: str | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """``dicom-node ARGV`` run to its end, like ``subprocess.run(..., capture_output=True, text=True)``."""
    with tempfile.TemporaryDirectory(prefix="dicom-node-cli-") as tmp:
        folder = Path(tmp)
        stdin = None
        if input is not None:
            stdin = folder / "stdin"
            stdin.write_text(input)
        out, err = folder / "stdout", folder / "stderr"
        proc = node_command(list(argv), cwd, out, stdin, err)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
        return subprocess.CompletedProcess(["dicom-node", *argv], code, read(out), read(err))


@dataclass
class RunningNode:
    """A ``dicom-node serve`` subprocess and how to reach it."""

    root: Path
    config: dict[str, Any]
    proc: subprocess.Popen | None = None
    # The source tree whose node runs (another revision's, for a benchmark's before/after).
    repo: Path = REPO
    log_path: Path = field(init=False)
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "node.log"
        self.config_path = self.root / "config.toml"
        self.write_config()

    def write_config(self) -> None:
        """Write ``self.config`` to the config file (a running node reads it again on SIGHUP)."""
        self.config_path.write_text(toml_text(self.config))

    @property
    def dicom_port(self) -> int:
        return self.config["dicom"]["port"]

    @property
    def http_port(self) -> int:
        return self.config["http"]["port"]

    @property
    def ae_title(self) -> str:
        return self.config["dicom"]["ae_title"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def storage(self) -> Path:
        return Path(self.config["storage"]["path"])

    def start(self, timeout: float = 30.0) -> RunningNode:
        """Start the node; return once it answers (with workers: once every worker serves)."""
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = ["serve", "--config", str(self.config_path)]
        self.proc = node_command(argv, self.repo, self.log_path, tree=self.repo)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1, headers=self.auth_headers()).status_code == 200:
                    wait_port(self.dicom_port, timeout=max(1.0, deadline - time.monotonic()))
                    self._wait_workers(log_start, deadline)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"node did not start in {timeout}s:\n{self.log()}")

    def _wait_workers(self, log_start: int, deadline: float) -> None:
        """With ``[server].workers`` above 1: wait for every worker's "serving" line, not just the first."""
        workers = self.config.get("server", {}).get("workers", 0) or os.cpu_count() or 1
        if workers <= 1:
            return
        line = f"of {workers} serving".encode()
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as fh:
                fh.seek(log_start)
                if fh.read().count(line) >= workers:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"not every worker of the node started:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the node and wait for it; returns its exit code (a node that hangs fails the test)."""
        return stop_process(self.proc, sig, timeout, strict=True)

    def restart(self) -> RunningNode:
        self.stop()
        return self.start()

    def auth_headers(self) -> dict[str, str]:
        token = self.config.get("http", {}).get("token")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def health(self) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/health", timeout=10)
        r.raise_for_status()
        return r.json()

    def count(self, level: str = "instances") -> int:
        return self.health()["counts"][level]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def index_rows(self, sql: str, *args: Any) -> list[tuple]:
        """Rows of *sql* (``?`` placeholders) read straight from this node's index."""
        return index_rows(self.config["storage"]["database"], sql, *args)

    def cli(self, *args: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``dicom-node ARGS --config <this node's config>`` (*input* on its stdin)."""
        return run_node(*args, "--config", str(self.config_path), timeout=timeout, input=input)


# -- the index database: SQLite, or a private PostgreSQL server for the session ------

TEST_DB_ENV = "DICOM_NODE_TEST_DB"  # "postgresql": every node and test index on PostgreSQL
PG_PASSWORD = "pg-test-secret"  # the superuser's; tests check that logs never show it


def index_backend() -> str:
    """``"sqlite"`` (default) or ``"postgresql"``, from $DICOM_NODE_TEST_DB."""
    value = os.environ.get(TEST_DB_ENV, "sqlite").strip().lower() or "sqlite"
    if value in ("postgres", "postgresql", "pg"):
        return "postgresql"
    if value != "sqlite":
        raise ValueError(f"${TEST_DB_ENV}: expected sqlite or postgresql, got {value!r}")
    return value


def index_database(root: Path) -> str:
    """The ``[storage].database`` value for a node (or an in-process index) under *root*."""
    if index_backend() == "postgresql":
        return session_postgres().create_database()
    return str(root / "storage" / "index.sqlite")


def index_rows(database: str, sql: str, *args: Any) -> list[tuple]:
    """Rows of *sql* (``?`` placeholders) on the index *database* (a path or a URL), committed.

    For tests that look into (or tamper with) a node's index; [] for a
    statement that returns no rows (INSERT, UPDATE).
    """
    if "://" in database:
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), args)
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []
    with sqlite3.connect(database) as db:
        return db.execute(sql, args).fetchall()


def postgres_bindir() -> Path | None:
    """The bin folder of the newest PostgreSQL server installed (Debian's layout), if any."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


class PostgresServer:
    """A private PostgreSQL server in a temp folder on a free loopback port.

    It runs as the ``postgres`` system user when started by root (the server
    refuses to run as root); stopped by its PID (fast shutdown).  *durable*
    False turns fsync off: tests measure nothing that needs it, benchmarks
    keep it on.  Databases come from :meth:`create_database`.
    """

    def __init__(self, root: Path | None = None, *, port: int | None = None, durable: bool = False) -> None:
        self.root = root
        self.port = port or free_port()
        self.durable = durable
        self.proc: subprocess.Popen | None = None
        self._owned_root = root is None
        self._names = itertools.count(1)
        self._lock = threading.Lock()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def _as_postgres(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        import pwd

        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def start(self, timeout: float = 60.0) -> PostgresServer:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="dicom-node-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        as_pg = self._as_postgres()
        if as_pg:
            os.chown(self.root, as_pg["user"], as_pg["group"])
        if not (data / "PG_VERSION").exists():  # else a kept cluster (benchmarks): start it as it is
            self._initdb(bindir, data, as_pg)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "300",
            "shared_buffers": "128MB",
            "log_min_messages": "warning",
            "fsync": "on" if self.durable else "off",
            "synchronous_commit": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        args = [str(bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, **as_pg)
        # A script that dies before its stop() (a benchmark's exception) leaves no server behind.
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log()}")
            try:
                index_rows(self.url(), "SELECT 1")
                return self
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"PostgreSQL did not start in {timeout}s:\n{self.log()}") from None
                time.sleep(0.1)

    def _initdb(self, bindir: Path, data: Path, as_pg: dict[str, Any]) -> None:
        assert self.root is not None
        pwfile = self.root / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        if as_pg:
            os.chown(pwfile, as_pg["user"], as_pg["group"])
        # A non-C locale on purpose: the index must not depend on the database's collation.
        locale = "en_US.UTF-8" if _has_locale("en_US.utf8") else "C.UTF-8"
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale",
                locale,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            cwd=self.root,
            **as_pg,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def create_database(self, name: str | None = None) -> str:
        """A new, empty UTF8 database; returns its URL."""
        import psycopg

        with self._lock:
            # The pid keeps names apart in a cluster kept between runs (benchmarks).
            name = name or f"t{os.getpid()}_{next(self._names):05d}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log(self) -> str:
        path = (self.root or Path("/nonexistent")) / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        # SIGINT is PostgreSQL's fast shutdown: sessions are ended, no waiting for clients.
        atexit.unregister(self.stop)
        code = stop_process(self.proc, signal.SIGINT, timeout)
        if self._owned_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        return code

    def restart(self) -> PostgresServer:
        """Stop the server and start it again on the same data and port."""
        stop_process(self.proc, signal.SIGINT, 30.0)
        return self.start()

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _has_locale(name: str) -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return name.lower() in out.lower().split()


_session_pg: PostgresServer | None = None
_session_pg_lock = threading.Lock()


def session_postgres() -> PostgresServer:
    """The PostgreSQL server of this test session (or benchmark), started on first use."""
    global _session_pg
    with _session_pg_lock:
        if _session_pg is None:
            _session_pg = PostgresServer().start()
            atexit.register(stop_session_postgres)
        return _session_pg


def stop_session_postgres() -> None:
    """Stop the session's PostgreSQL server, if one was started."""
    global _session_pg
    with _session_pg_lock:
        server, _session_pg = _session_pg, None
    if server is not None:
        server.stop()


def dcmtk(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run a DCMTK command line; fail the test with its output when it fails."""
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def storescu_args(ae_title: str, port: int, *paths: Path, aet: str = "STORESCU") -> list[str]:
    """The storescu command line sending files or folders (recursively) to *ae_title* on *port*."""
    return [
        "storescu",
        "-aet",
        aet,
        "-aec",
        ae_title,
        "+sd",
        "+r",
        "-nh",
        "127.0.0.1",
        str(port),
        *map(str, paths),
    ]


def storescu(
    ae_title: str, port: int, *paths: Path, aet: str = "STORESCU", check: bool = True
) -> subprocess.CompletedProcess:
    """Send files or folders with DCMTK storescu; fail the test if it fails (when *check*)."""
    return dcmtk(*storescu_args(ae_title, port, *paths, aet=aet), check=check)


def c_store(ae_title: str, port: int, ds, *, aet: str = "PYSCU"):
    """C-STORE one pydicom Dataset with pynetdicom; returns the response status data set."""
    from pynetdicom import AE

    ae = AE(ae_title=aet)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established, f"no association with {ae_title} on port {port}"
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part-10 file (everything after the file meta)."""

    data = path.read_bytes()
    assert data[128:132] == b"DICM", f"{path} is not a Part-10 file"
    # (0002,0000) UL group length, explicit VR: tag, 'UL', 2-byte length, value.
    assert data[132:136] == b"\x02\x00\x00\x00", f"{path}: no file meta group length"
    (meta_len,) = struct.unpack("<I", data[140:144])
    return data[144 + meta_len :]


def split_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """Parts of a multipart/related response as (headers, body); fails if the body is not closed."""
    import re

    boundary = re.search(r"boundary=([^;]+)", response.headers["content-type"]).group(1).strip('"')
    chunks = response.content.split(b"--" + boundary.encode())
    assert chunks[-1].strip() == b"--", "multipart body not closed"
    parts = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        fields = (line.split(":", 1) for line in head.decode().split("\r\n"))
        headers = {k.strip().lower(): v.strip() for k, v in fields}
        assert body.endswith(b"\r\n")
        parts.append((headers, body[:-2]))
    return parts


def proc_status_kb(pid: int, key: str = "VmRSS") -> int:
    """A size field of /proc/<pid>/status (VmRSS, VmHWM, ...) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def nodelay_env() -> dict[str, str]:
    """Environment that makes Debian's DCMTK and Orthanc turn Nagle's algorithm off."""
    return {**os.environ, "TCP_NODELAY": "1"}


class _Process:
    proc: subprocess.Popen | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        return stop_process(self.proc, sig, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class StoreSCP(_Process):
    """DCMTK ``storescp`` writing every received instance under *folder*."""

    def __init__(
        self,
        folder: Path,
        *,
        ae_title: str = "STORESCP",
        port: int | None = None,
        nodelay: bool = True,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.folder = folder
        self.ae_title = ae_title
        self.port = port or free_port()
        self.nodelay = nodelay
        self.extra = extra

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["storescp", "-aet", self.ae_title, "-od", str(self.folder), "+B", *self.extra, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=nodelay_env() if self.nodelay else None,
        )
        wait_port(self.port)
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def remote(self, name: str = "storescp", **extra: Any) -> dict[str, Any]:
        """This peer as a ``[[remotes]]`` table."""
        return {"name": name, "ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port, **extra}


class QRSCP(_Process):
    """DCMTK ``dcmqrscp``: an upstream PACS (C-STORE in, C-FIND/C-MOVE/C-GET out).

    *peers* are ``(ae_title, port)`` it may move to (e.g. the node).
    """

    def __init__(
        self,
        root: Path,
        *,
        ae_title: str = "UPSTREAM",
        port: int | None = None,
        peers: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.root = root
        self.ae_title = ae_title
        self.port = port or free_port()
        self.peers = peers

    def start(self) -> QRSCP:
        db = self.root / "db"
        db.mkdir(parents=True, exist_ok=True)
        hosts = "\n".join(f"peer{i} = ({ae}, 127.0.0.1, {port})" for i, (ae, port) in enumerate(self.peers))
        names = ", ".join(f"peer{i}" for i in range(len(self.peers)))
        config = self.root / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 65536\nMaxAssociations = 16\n"
            f"HostTable BEGIN\n{hosts}\n" + (f"peers = {names}\n" if names else "") + "HostTable END\n"
            "VendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{self.ae_title} {db} RW (10000, 4096mb) ANY\nAETable END\n"
        )
        self.proc = subprocess.Popen(
            ["dcmqrscp", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=nodelay_env(),
        )
        wait_port(self.port)
        return self

    def load(self, *paths: Path) -> None:
        """Store files (or folders) into this PACS with storescu."""
        subprocess.run(
            ["storescu", "-aec", self.ae_title, "+sd", "+r", "127.0.0.1", str(self.port), *map(str, paths)],
            check=True,
            capture_output=True,
            env=nodelay_env(),
        )

    def remote(self, name: str = "upstream", **extra: Any) -> dict[str, Any]:
        return {"name": name, "ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port, **extra}


ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def orthanc_gdcm_plugin() -> str | None:
    """The library of Debian's orthanc-gdcm plugin (from ``dpkg -L orthanc-gdcm``), None if absent."""
    try:
        listed = subprocess.run(["dpkg", "-L", "orthanc-gdcm"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    libraries = [line for line in listed.stdout.splitlines() if "/plugins/" in line and line.endswith(".so")]
    return libraries[0] if libraries and Path(libraries[0]).exists() else None


def orthanc_available() -> bool:
    return shutil.which("Orthanc") is not None


class Orthanc(_Process):
    """Debian's Orthanc (SQLite index) with the DICOMweb plugin, on free ports."""

    def __init__(
        self,
        root: Path,
        *,
        ae_title: str = "ORTHANC",
        modalities: dict[str, tuple[str, int]] | None = None,
        gdcm: bool = False,
        builtin_codecs_first: bool = False,
        dicomweb_servers: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.modalities = modalities or {}
        # GDCM plugin: Orthanc's decoder and transcoder for JPEG 2000 / JPEG-LS (tried before DCMTK).
        self.gdcm = orthanc_gdcm_plugin() if gdcm else None
        if gdcm and self.gdcm is None:
            raise RuntimeError("the orthanc-gdcm plugin is not installed (apt-get install -y orthanc-gdcm)")
        # True: DCMTK decodes/transcodes what it can, the plugin the rest (Orthanc's default: plugin first).
        self.builtin_codecs_first = builtin_codecs_first
        # name -> DICOMweb root URL: servers Orthanc's DICOMweb client can reach (/dicom-web/servers/{name}).
        self.dicomweb_servers = dicomweb_servers or {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench",
            "StorageDirectory": str(self.root / "db"),
            "IndexDirectory": str(self.root / "db"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "TcpNoDelay": True,
            "DicomScpTimeout": 60,
            "DicomModalities": {k: [ae, "127.0.0.1", p] for k, (ae, p) in self.modalities.items()},
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckCalledAet": False,
            "StorageCompression": False,
            "Plugins": ([ORTHANC_DICOMWEB] if Path(ORTHANC_DICOMWEB).exists() else [])
            + ([self.gdcm] if self.gdcm else []),
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "Servers": {name: [url] for name, url in self.dicomweb_servers.items()},
            },
            "HttpServerEnabled": True,
            "KeepAlive": True,
            "HttpThreadsCount": 8,
        }
        if self.gdcm:
            config["Gdcm"] = {"Enable": True}
            config["BuiltinDecoderTranscoderOrder"] = "Before" if self.builtin_codecs_first else "After"
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            ["Orthanc", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=nodelay_env(),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    wait_port(self.dicom_port)
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("Orthanc did not start")

    def remote(self, name: str = "orthanc", **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "ae_title": self.ae_title,
            "host": "127.0.0.1",
            "port": self.dicom_port,
            **extra,
        }


def wait_until(what: str, check: Callable[[], bool], timeout: float = 45.0) -> None:
    """Poll *check* until it is true; fail the test naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def time_calls(
    commands: dict[str, list[str]], n: int, env: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Wall time in ms of *n* runs of each command line (each must exit 0), interleaved.

    Round i runs every command once, so that load from elsewhere on the
    machine falls on all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(n):
        for name, args in commands.items():
            started = time.perf_counter()
            subprocess.run(args, check=True, capture_output=True, env=env)
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if n else float("nan")


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


# -- a real browser: Debian's chromium through its chromedriver (no browser download) -------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_available() -> str | None:
    """Why a browser test cannot run here, or None when chromium and chromedriver are installed."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def chromium(profile: Path, *, width: int = 1440, height: int = 960, downloads: Path | None = None):
    """A headless Chromium session (selenium WebDriver) with a fresh profile in *profile*.

    The browser's console log is kept (``driver.get_log("browser")``); files
    the pages download go to *downloads*.  Quit it with ``driver.quit()``.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads is not None:
        downloads.mkdir(parents=True, exist_ok=True)
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
                "safebrowsing.enabled": False,
            },
        )
    service = Service(executable_path=CHROMEDRIVER, log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(service=service, options=options)
    if downloads is not None:
        behavior = {"behavior": "allow", "downloadPath": str(downloads)}
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", behavior)
    return driver


def browser_errors(driver, *, allow: tuple[str, ...] = ()) -> list[str]:
    """The SEVERE entries of the browser's console log since the last call, minus those matching *allow*."""
    entries = driver.get_log("browser")
    return [
        e["message"] for e in entries if e["level"] == "SEVERE" and not any(a in e["message"] for a in allow)
    ]
