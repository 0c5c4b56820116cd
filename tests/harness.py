"""Real peers for tests and benchmarks: the node, DCMTK storescp/dcmqrscp, Orthanc.

Each runs as a subprocess on free loopback ports and is stopped by its
``stop()`` (or when used as a context manager).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
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
    """A complete config for a node under *root* on free ports; *sections* override keys."""
    config: dict[str, Any] = {
        "dicom": {
            "ae_title": NODE_AE,
            "host": "127.0.0.1",
            "port": free_port(),
            "fast_path": fast_path_default(),
        },
        "http": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"path": str(root / "storage"), "database": str(root / "storage/index.sqlite")},
        "export": {"path": str(root / "storage/zip"), "compression": 3},
    }
    for name, values in sections.items():
        if name == "remotes":
            config["remotes"] = values
        else:
            config.setdefault(name, {}).update(values)
    return config


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


@dataclass
class RunningNode:
    """A ``dicom-node serve`` subprocess and how to reach it."""

    root: Path
    config: dict[str, Any]
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "node.log"
        self.config_path = self.root / "config.toml"
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
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the handle
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node", "serve", "--config", str(self.config_path)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1, headers=self.auth_headers()).status_code == 200:
                    wait_port(self.dicom_port, timeout=max(1.0, deadline - time.monotonic()))
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"node did not start in {timeout}s:\n{self.log()}")

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

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``dicom-node ARGS --config <this node's config>``."""
        return subprocess.run(
            [sys.executable, "-m", "node", *args, "--config", str(self.config_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


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


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part-10 file (everything after the file meta)."""

    data = path.read_bytes()
    assert data[128:132] == b"DICM", f"{path} is not a Part-10 file"
    # (0002,0000) UL group length, explicit VR: tag, 'UL', 2-byte length, value.
    assert data[132:136] == b"\x02\x00\x00\x00", f"{path}: no file meta group length"
    (meta_len,) = struct.unpack("<I", data[140:144])
    return data[144 + meta_len :]


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


def orthanc_available() -> bool:
    return shutil.which("Orthanc") is not None


class Orthanc(_Process):
    """Debian's Orthanc (SQLite index) with the DICOMweb plugin, on free ports."""

    def __init__(
        self, root: Path, *, ae_title: str = "ORTHANC", modalities: dict[str, tuple[str, int]] | None = None
    ) -> None:
        self.root = root
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.modalities = modalities or {}

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
            "Plugins": [ORTHANC_DICOMWEB] if Path(ORTHANC_DICOMWEB).exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpServerEnabled": True,
            "KeepAlive": True,
            "HttpThreadsCount": 8,
        }
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
