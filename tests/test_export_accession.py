"""Accession numbers: what is refused, and the file names built from the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.export.accession import InvalidAccession, file_stem, inside, validate


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "A" * 17, "a\\b", "a/b", "../x", "..", "CN*", "CN?", "a\nb", "a\x00b", "a\x7fb", "é"],
)
def test_refused(raw: str) -> None:
    with pytest.raises(InvalidAccession):
        validate(raw)


def test_accepted_and_encoded() -> None:
    assert validate(" CN1234 ") == "CN1234"
    assert validate("A" * 16) == "A" * 16
    assert file_stem("CN1234") == "CN1234"
    assert file_stem("A B:1.%") == "A%20B%3A1%2E%25"
    assert file_stem(validate(".hidden")) == "%2Ehidden"


def test_inside(tmp_path: Path) -> None:
    assert inside(tmp_path, "x.zip") == tmp_path.resolve() / "x.zip"
    for name in ("../x.zip", "a/x.zip", "/etc/passwd"):
        with pytest.raises(InvalidAccession):
            inside(tmp_path, name)
