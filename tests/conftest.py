"""Shared fixtures: a real node process on free loopback ports (see tests/harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    NODE_AE,
    TEST_DB_ENV,
    RunningNode,
    dataset_bytes,
    dcmtk,
    free_port,
    index_backend,
    node_config,
    stop_session_postgres,
)

__all__ = ["NODE_AE", "RunningNode", "dataset_bytes", "dcmtk", "free_port"]


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


def pytest_report_header(config) -> str:
    return f"index database: {index_backend()} (${TEST_DB_ENV})"


def pytest_sessionfinish(session, exitstatus) -> None:
    stop_session_postgres()
