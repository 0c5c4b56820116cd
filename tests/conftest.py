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


# Modules whose subject is not the index: parsers, encoders, codecs, the wire
# layer's hostile peers, the browser and viewer pages.  The PostgreSQL pass of
# `make test` leaves them out (they are the same on either database and cost
# a third of the suite's time); every module that stores, queries, retrieves,
# exports, forwards, deletes or runs jobs runs on both.
INDEX_INDEPENDENT = {
    "test_console.py",
    "test_cors.py",
    "test_docs.py",
    "test_encapsulate.py",
    "test_export_accession.py",
    "test_multipart.py",
    "test_part10.py",
    "test_request_log.py",
    "test_transcode.py",
    "test_viewer.py",
    "test_wado_transcode.py",
    "test_wire_contract.py",
    "test_wire_hostile.py",
    "test_zipstream.py",
}


def pytest_collection_modifyitems(config, items) -> None:
    if index_backend() != "postgresql":
        return
    kept = [item for item in items if item.path.name not in INDEX_INDEPENDENT]
    dropped = [item for item in items if item.path.name in INDEX_INDEPENDENT]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config) -> str:
    return f"index database: {index_backend()} (${TEST_DB_ENV})"


def pytest_sessionfinish(session, exitstatus) -> None:
    stop_session_postgres()
