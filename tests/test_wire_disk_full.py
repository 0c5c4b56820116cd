"""A full disk during C-STORE: 0xA700 with an ErrorComment, the association goes on, nothing half-written.

The storage folder is a 4 MiB tmpfs (the index lives in it too, as in the
default layout), nearly filled before the instances arrive.  Runs with the
fast path on and off (see tests/test_wire_hostile.py).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from bench.corpus import make_dataset, write
from tests.harness import NODE_AE, RunningNode, index_backend, node_config, storescu


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")


@pytest.fixture
def full_node(tmp_path):
    storage = tmp_path / "storage"
    _mount_tmpfs(storage, "4m")
    # No free-space floor: this module is about the disk really filling up (the floor is
    # test_faults' subject); with one, whether the floor or the disk answers depends on
    # when the node last sampled the free space.
    node = RunningNode(tmp_path, node_config(tmp_path, storage={"min_free_bytes": 0}))
    try:
        node.start()
        yield node
    finally:
        try:
            node.stop()
        finally:
            subprocess.run(["umount", "-l", str(storage)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """Write a filler file until only about *leave* bytes are free on *folder*'s file system."""
    filler = folder / "filler.bin"
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with filler.open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def _ct(tmp_path: Path, n: int) -> list[Path]:
    """*n* CT instances of ~513 KB each."""
    paths = []
    study, series = generate_uid(), generate_uid()
    for i in range(n):
        ds = make_dataset(study_uid=study, series_uid=series, instance_number=i + 1, size="ct")
        paths.append(write(ds, tmp_path / "in" / f"{i}.dcm"))
    return paths


def _temp_files(node: RunningNode) -> list[Path]:
    return [p for p in (node.storage / ".tmp").iterdir()]


def _store(node: RunningNode, paths: list[Path]):
    """C-STORE *paths* over one pynetdicom association; the responses, and a C-ECHO after them."""
    ae = AE(ae_title="FULLSCU")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(dcmread(path)) for path in paths]
        # Still usable after the refusals.
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    return statuses


def test_disk_full_is_0xA700_and_the_association_goes_on(full_node, tmp_path):
    node = full_node
    paths = _ct(tmp_path, 3)
    filler = _fill(node.storage, leave=200 * 1024)
    for rsp in _store(node, paths[:2]):
        assert rsp.Status == 0xA700, rsp
        assert "No space left on device" in str(rsp.ErrorComment)
    time.sleep(0.3)
    assert _temp_files(node) == [], "a half-written file stayed in the temp folder"
    refusals = [line for line in node.log().splitlines() if "refused 0xA700" in line]
    assert len(refusals) == 2, refusals
    assert "Traceback" not in node.log()

    # Space freed: the next association stores fine.
    filler.unlink()
    storescu(NODE_AE, node.dicom_port, *paths[:2])
    assert node.count() == 2
    assert _temp_files(node) == []

    if index_backend() != "sqlite":
        return  # a PostgreSQL index lives on its server's disk, not on this tmpfs
    # Room for the file but not for the index to grow: 0xA700 as well.
    filler = _fill(node.storage, leave=paths[2].stat().st_size + 8192)
    (rsp,) = _store(node, paths[2:])
    assert rsp.Status == 0xA700, rsp
    assert "database or disk is full" in str(rsp.ErrorComment)
    filler.unlink()
    assert _temp_files(node) == []
    assert "Traceback" not in node.log()
