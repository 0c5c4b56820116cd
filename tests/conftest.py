"""Shared fixtures: a real node process on free loopback ports, configs, corpora."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
NODE_AE = "DICOM_NODE"


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
        "dicom": {"ae_title": NODE_AE, "host": "127.0.0.1", "port": free_port()},
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
        log = self.log_path.open("ab")
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
        """Signal the node and wait for it; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

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


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., RunningNode]]:
    """Make (not start) nodes: ``node_factory(name="n1", dicom={...}, remotes=[...])``."""
    made: list[RunningNode] = []

    def make(name: str = "node", **sections: dict[str, Any]) -> RunningNode:
        root = tmp_path / name
        n = RunningNode(root, node_config(root, **sections))
        made.append(n)
        return n

    yield make
    for n in made:
        try:
            n.stop(timeout=15)
        except Exception:
            if n.proc:
                n.proc.kill()


@pytest.fixture
def node(node_factory) -> RunningNode:
    """A running node with the default config."""
    return node_factory().start()


def dcmtk(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run a DCMTK command line; fail the test with its output when it fails."""
    env = dict(os.environ)
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part-10 file (everything after the file meta)."""
    import struct

    data = path.read_bytes()
    assert data[128:132] == b"DICM", f"{path} is not a Part-10 file"
    # (0002,0000) UL group length, explicit VR: tag, 'UL', 2-byte length, value.
    assert data[132:136] == b"\x02\x00\x00\x00", f"{path}: no file meta group length"
    (meta_len,) = struct.unpack("<I", data[140:144])
    return data[144 + meta_len :]
