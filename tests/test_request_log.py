"""Every HTTP request leaves one log line saying what happened."""

from __future__ import annotations

import time

import httpx


def test_one_line_per_request_with_outcome(node):
    r = httpx.get(f"{node.url}/dicom-web/studies/1.2.3/metadata", timeout=10)
    assert r.status_code == 404
    r = httpx.get(f"{node.url}/dicom-web/studies", params={"PatientID": "NOBODY"}, timeout=10)
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while "GET /dicom-web/studies?PatientID=NOBODY" not in node.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in node.log().splitlines() if "node.http" in line and "/dicom-web/" in line]
    assert len(lines) == 2, lines
    assert "GET /dicom-web/studies/1.2.3/metadata -> 404" in lines[0]
    assert "1.2.3" in lines[0].split("->", 1)[1]  # the note names the unknown study
    assert "GET /dicom-web/studies?PatientID=NOBODY -> 200" in lines[1]
