"""Full disks: the right statuses, no debris, and ingest works again once space is freed.

Storage and index on small tmpfs mounts (the tests need root to mount them):

- free space below ``[storage].min_free_bytes``: C-STORE 0xA700, STOW-RS 507,
  ``/health`` degraded, before the disk is completely full;
- the index cannot grow (SQLITE_FULL, a failed COMMIT): C-STORE 0xA700 and
  STOW-RS 507 naming the cause, the stored file removed again;
- the storage fills while a STOW-RS body is spooled: 507, the spool removed.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from tests import harness
from tests.harness import RunningNode, node_config
from tests.test_stow import content_type, dicom_parts, failed_items, multipart, post


@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """mount(name, size): a fresh tmpfs of *size* under tmp_path; unmounted at the end."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
        result = subprocess.run(command, capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(folder: Path, leave: int = 0) -> Path:
    """A filler file that leaves about *leave* bytes free on *folder*'s file system."""
    filler = folder / "filler.bin"
    with filler.open("ab") as f:
        chunk = b"\0" * 65536
        try:
            while free_bytes(folder) > leave:
                f.write(chunk[: max(4096, min(len(chunk), free_bytes(folder) - leave))])
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def instance(folder: Path, size: str = "tiny") -> Path:
    ds = make_dataset(study_uid=generate_uid(), series_uid=generate_uid(), size=size)
    return write(ds, folder / f"{ds.SOPInstanceUID}.dcm")


def c_store(node: RunningNode, path: Path):
    return harness.c_store(node.ae_title, node.dicom_port, dcmread(path))


def make_node(tmp_path: Path, **storage) -> RunningNode:
    root = tmp_path / "n"
    values = {k: str(v) if isinstance(v, Path) else v for k, v in storage.items()}
    return RunningNode(root, node_config(root, storage=values))


def assert_no_debris(node: RunningNode) -> None:
    """As many files as rows, no temp file, and ``dicom-node check`` says so."""
    files = [p for p in node.storage.rglob("*.dcm") if ".tmp" not in p.parts]
    assert len(files) == node.count()
    assert not list((node.storage / ".tmp").iterdir())
    result = node.cli("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_below_min_free_bytes_new_data_is_refused_and_health_degraded(tmpfs, tmp_path):
    disk = tmpfs("disk", "8m")
    storage = disk / "storage"
    node = make_node(tmp_path, path=storage, database=storage / "index.sqlite", min_free_bytes=3 << 20)
    node.start()
    try:
        assert c_store(node, instance(tmp_path / "in")).Status == 0x0000
        assert node.health()["status"] == "ok"
        filler = fill(disk, leave=2 << 20)  # 2 MiB free: below the 3 MiB floor, far from full
        time.sleep(1.1)  # the guard looks at free space at most once a second

        status = c_store(node, instance(tmp_path / "in"))
        assert status.Status == 0xA700
        assert "almost full" in status.ErrorComment
        r = post(node, multipart(dicom_parts([instance(tmp_path / "in")])), content_type())
        assert r.status_code == 507
        assert "below [storage].min_free_bytes" in r.json()["error"]
        health = node.health()
        assert health["status"] == "degraded"
        assert "below [storage].min_free_bytes (3.1 MB)" in health["reason"]
        assert node.count() == 1
        assert_no_debris(node)

        filler.unlink()
        time.sleep(1.1)
        assert c_store(node, instance(tmp_path / "in")).Status == 0x0000
        assert node.health()["status"] == "ok"
        assert node.count() == 2
    finally:
        node.stop()


def test_index_full_is_a700_and_507_and_leaves_no_file(tmpfs, tmp_path):
    index = tmpfs("index", "2m")
    node = make_node(tmp_path, database=index / "index.sqlite", min_free_bytes=0)
    node.start()
    try:
        assert c_store(node, instance(tmp_path / "in")).Status == 0x0000
        filler = fill(index)
        # The write-ahead log may still have room it used before: store until the index cannot grow.
        for _ in range(100):
            status = c_store(node, instance(tmp_path / "in"))
            if status.Status != 0x0000:
                break
        assert status.Status == 0xA700, status
        assert status.ErrorComment.startswith("index full: database or disk is full")
        r = post(node, multipart(dicom_parts([instance(tmp_path / "in")])), content_type())
        assert r.status_code == 507, r.text
        (item,) = failed_items(r.json())
        assert item["00081197"]["Value"] == [0xA700]
        assert "index full: database or disk is full" in item["00000902"]["Value"][0]
        assert "cannot rollback" not in node.log()
        assert node.health()["status"] == "degraded"
        assert_no_debris(node)

        filler.unlink()
        stored = node.count()
        assert c_store(node, instance(tmp_path / "in")).Status == 0x0000
        r = post(node, multipart(dicom_parts([instance(tmp_path / "in")])), content_type())
        assert r.status_code == 200
        assert node.count() == stored + 2
        assert_no_debris(node)
    finally:
        node.stop()


def test_storage_filling_while_a_stow_body_is_spooled_is_507_and_removes_the_spool(tmpfs, tmp_path):
    disk = tmpfs("disk", "4m")
    node = make_node(tmp_path, path=disk / "storage", database=tmp_path / "index.sqlite", min_free_bytes=0)
    node.start()
    try:
        body = multipart(dicom_parts([instance(tmp_path / "in", "ct") for _ in range(3)]))  # ~1.6 MB
        filler = fill(disk, leave=512 << 10)
        r = post(node, body, content_type())
        assert r.status_code == 507, r.text
        assert r.json()["error"].startswith("storage full: the body cannot be spooled")
        assert node.count() == 0
        assert_no_debris(node)

        filler.unlink()
        r = post(node, body, content_type())
        assert r.status_code == 200, r.text
        assert node.count() == 3
        assert_no_debris(node)
        assert httpx.get(f"{node.url}/health").json()["status"] == "ok"
    finally:
        node.stop()


def test_check_exits_1_on_debris_and_repair_clears_it(tmp_path):
    node = RunningNode(tmp_path / "n", node_config(tmp_path / "n", storage={"fsync": False}))
    assert node.cli("import", "-q", str(instance(tmp_path / "in"))).returncode == 0
    # A spool left by a transfer that died with its process: no node holds the store, so it is debris.
    (node.storage / ".tmp" / "0123abcd.part").write_bytes(b"half an instance")
    result = node.cli("check")
    assert result.returncode == 1
    assert "1 left over" in result.stdout and "0123abcd.part" in result.stdout
    # A file no row points to.
    stray = instance(tmp_path / "stray")
    ds = dcmread(stray)
    target = node.storage / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    target.parent.mkdir(parents=True)
    target.write_bytes(stray.read_bytes())
    assert "1 files without row" in node.cli("check").stdout
    repaired = node.cli("check", "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert not list((node.storage / ".tmp").iterdir())
    assert node.cli("check").returncode == 0
