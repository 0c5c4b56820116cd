"""C-FIND responses in the right character set: (0008,0005) whenever a value is not ASCII.

DCMTK findscu asks without a SpecificCharacterSet; the node stored a German
name (ISO_IR 100) and a Cyrillic one (ISO_IR 144).  The responses must say
ISO_IR 192 and carry UTF-8 bytes, so that findscu shows the right
characters; a request in ISO_IR 100 gets its own character set back when it
can hold the value.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from tests.harness import NODE_AE, RunningNode, dcmtk, node_config

NAMES = {
    "CS-DE": ("Müller^Jürgen", "ISO_IR 100"),
    "CS-RU": ("Иванов^Иван", "ISO_IR 144"),
    "CS-EN": ("DOE^JANE", None),
}


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> RunningNode:
    root = tmp_path_factory.mktemp("charset")
    for pid, (name, charset) in NAMES.items():
        ds = make_dataset(
            study_uid=generate_uid(),
            series_uid=generate_uid(),
            patient_id=pid,
            patient_name=name,
            charset=charset,
        )
        write(ds, root / "corpus" / f"{pid}.dcm")
    n = RunningNode(root, node_config(root, storage={"fsync": False}))
    assert n.cli("import", "-q", str(root / "corpus")).returncode == 0
    n.start()
    yield n
    n.stop()


def findscu(node: RunningNode, out: Path, *keys: str, show: bool = True) -> tuple[str, list]:
    """Run findscu at STUDY level with *keys*; (its console output, the response files read back).

    *show* prints the responses (as UTF-8 text: only for responses in ISO_IR 192 or ASCII).
    """
    out.mkdir(parents=True, exist_ok=True)
    args = [arg for k in ("0008,0052=STUDY", "PatientName", *keys) for arg in ("-k", k)]
    result = dcmtk(
        "findscu", "-S", *(("-v", "--show-responses") if show else ()), "-aet", "ME", "-aec", NODE_AE,
        "127.0.0.1", str(node.dicom_port), *args, "-X", "-od", str(out),
    )  # fmt: skip
    return result.stdout + result.stderr, [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.mark.parametrize("pid", ["CS-DE", "CS-RU"])
def test_no_charset_in_the_request_answers_utf8(node, tmp_path, pid):
    name, _ = NAMES[pid]
    output, (rsp,) = findscu(node, tmp_path, f"PatientID={pid}")
    assert name in output  # findscu shows the right characters
    assert rsp.SpecificCharacterSet == "ISO_IR 192"
    assert rsp.get_item(0x00100010).value.rstrip(b" ") == name.encode("utf-8")
    assert str(rsp.PatientName) == name


def test_ascii_values_need_no_charset_and_the_requests_own_is_kept(node, tmp_path):
    _, (rsp,) = findscu(node, tmp_path / "en", "PatientID=CS-EN")
    assert "SpecificCharacterSet" not in rsp
    # ISO_IR 100 holds the German name: answered in it.
    _, (rsp,) = findscu(
        node, tmp_path / "de", "SpecificCharacterSet=ISO_IR 100", "PatientID=CS-DE", show=False
    )
    assert rsp.SpecificCharacterSet == "ISO_IR 100"
    assert rsp.get_item(0x00100010).value.rstrip(b" ") == "Müller^Jürgen".encode("latin-1")
    # ... but not the Cyrillic one: UTF-8.
    _, (rsp,) = findscu(node, tmp_path / "ru", "SpecificCharacterSet=ISO_IR 100", "PatientID=CS-RU")
    assert rsp.SpecificCharacterSet == "ISO_IR 192"
    assert str(rsp.PatientName) == "Иванов^Иван"
