"""Durable before acknowledged: what a sender was told is stored survives a SIGKILL.

The ingest path fsyncs the file and its folder while it writes the rows,
and waits for both before the index commits (node/store.py,
node/ingest.py).  Killed in the middle of several
associations' traffic, the node must come back holding every instance it
acknowledged, whole and byte for byte as sent, and no row without its file.
A failed fsync of either kind is a refused instance with nothing left
behind, never an acknowledged one.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from bench.corpus import make_dataset, write
from node import store as store_module
from node.index.db import open_database
from node.index.migrate import migrate
from node.index.models import Instance
from node.ingest import Ingest, Source, Status
from node.statuses import PROCESSING_FAILURE
from node.store import InstanceStore
from tests.harness import NODE_AE, RunningNode, dataset_bytes, index_database, node_config, wait_until

SENDERS = 3
KILL_AFTER = 24  # acknowledged instances (all senders together) before the SIGKILL


def _sender(port: int, folder: Path, acked: dict[str, bytes], lock: threading.Lock, stop: threading.Event):
    """C-STORE fresh tiny instances until the association breaks; note each one acknowledged."""
    ae = AE(ae_title="KILLSCU")
    study, series = generate_uid(), generate_uid()
    first = make_dataset(study_uid=study, series_uid=series, size="tiny")
    ae.add_requested_context(first.SOPClassUID, first.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        number = 0
        while not stop.is_set() and assoc.is_established:
            number += 1
            ds = make_dataset(study_uid=study, series_uid=series, size="tiny", instance_number=number)
            path = write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
            status = assoc.send_c_store(ds)
            if status and status.Status == 0x0000:
                with lock:
                    acked[ds.SOPInstanceUID] = dataset_bytes(path)
    except Exception:  # noqa: BLE001 - the kill breaks the association mid-request
        pass
    finally:
        if assoc.is_established:
            assoc.abort()


def test_every_acknowledged_instance_survives_a_sigkill(tmp_path):
    root = tmp_path / "node"
    node = RunningNode(root, node_config(root, storage={"fsync": True})).start()
    acked: dict[str, bytes] = {}
    lock, stop = threading.Lock(), threading.Event()
    (tmp_path / "sent").mkdir()
    threads = [
        threading.Thread(target=_sender, args=(node.dicom_port, tmp_path / "sent", acked, lock, stop))
        for _ in range(SENDERS)
    ]
    try:
        for t in threads:
            t.start()
        wait_until("instances acknowledged", lambda: len(acked) >= KILL_AFTER, timeout=60)
        node.stop(signal.SIGKILL)  # most likely with instances of several senders in flight
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    with lock:
        acknowledged = dict(acked)
    assert len(acknowledged) >= KILL_AFTER

    node.start()
    try:
        held = dict(node.index_rows('SELECT "sop_uid", "path" FROM "instance"'))
        lost = sorted(set(acknowledged) - set(held))
        assert not lost, f"{len(lost)} acknowledged instance(s) lost in the kill: {lost[:3]}"
        for sop_uid, sent in acknowledged.items():
            assert dataset_bytes(node.storage / held[sop_uid]) == sent, f"{sop_uid} not as sent"
        # No row without its file (an instance caught mid-way has neither, or both).
        check = node.cli("check")
        assert check.stdout.startswith("0 rows without file"), check.stdout + check.stderr
    finally:
        node.stop()


# -- a failed fsync is a refusal ------------------------------------------------------


@pytest.fixture
def durable_ingest(tmp_path) -> Ingest:
    migrate(open_database(index_database(tmp_path), durable=True))
    return Ingest(InstanceStore(tmp_path / "storage", fsync=True))


def _incoming(ingest: Ingest, tmp_path: Path) -> Path:
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), size="tiny")
    source = write(ds, tmp_path / "in" / f"{ds.SOPInstanceUID}.dcm")
    temp = ingest.store.temp_path()
    os.replace(source, temp)
    return temp


@pytest.mark.parametrize("which", ["_fsync_file", "_fsync_dir"])
def test_a_failed_fsync_refuses_the_instance_and_leaves_nothing(durable_ingest, tmp_path, monkeypatch, which):
    real = getattr(store_module, which)

    def failing(path: Path) -> None:
        real(path)
        time.sleep(0.01)  # later than the work it overlaps: the failure must still be waited for
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module, which, failing)
    outcome = durable_ingest.ingest_file(_incoming(durable_ingest, tmp_path), Source("dimse"), take=True)
    assert outcome.status is Status.FAILED
    assert outcome.failure_code == PROCESSING_FAILURE
    assert "Input/output error" in outcome.reason
    assert Instance.select().count() == 0  # the row did not commit
    store = durable_ingest.store
    assert list(store.iter_files()) == []  # no file in place
    assert [p.name for p, _ in store.temp_files()] == []  # nor in the temp folder

    monkeypatch.setattr(store_module, which, real)
    again = durable_ingest.ingest_file(_incoming(durable_ingest, tmp_path), Source("dimse"), take=True)
    assert again.status is Status.STORED
    assert Instance.select().count() == 1
