"""The command line for running it for real: help, init, ls, start-up refusals (ports, schema)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import subprocess
import sys

import httpx
import pytest
from pydicom.uid import MRImageStorage, generate_uid

from bench.corpus import make_dataset, write
from node.admin.initdir import render
from node.cli import build_parser, main
from node.config import known_keys
from tests.harness import REPO, RunningNode, dcmtk, free_port, node_config, run_node, stop_process, wait_port


def subcommands() -> list[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return sorted(sub.choices)


def test_every_command_has_help(capsys):
    commands = subcommands()
    assert {"serve", "migrate", "import", "check", "forward", "ls", "delete", "echo", "init"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as stopped:
            main([command, "--help"])
        assert stopped.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: dicom-node {command}"), out
        assert "--log-level" in out
    top = run_node("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in commands)


# -- init ----------------------------------------------------------------------------


def test_init_into_an_empty_folder_then_serve_with_it(tmp_path):
    folder = tmp_path / "srv" / "dicom"
    dicom_port, http_port = free_port(), free_port()
    args = ("--dicom-host", "127.0.0.1", "--dicom-port", str(dicom_port), "--http-port", str(http_port))
    # Run from elsewhere than the checkout: nothing may depend on the repository's config.
    made = run_node("init", str(folder), "--ae-title", "HOSPITAL_NODE", *args, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    config = folder / "config.toml"
    assert f"start the node with: dicom-node serve --config {config}" in made.stdout
    assert (folder / "storage").is_dir() and (folder / "storage" / "zip").is_dir()
    text = config.read_text()
    assert 'ae_title = "HOSPITAL_NODE"' in text and "# [[remotes]]" in text

    again = run_node("init", str(folder), cwd=tmp_path)
    assert again.returncode == 1 and "already exists; not overwritten" in again.stderr
    assert config.read_text() == text
    bad = run_node("init", str(tmp_path / "other"), "--ae-title", "A\\B", cwd=tmp_path)
    assert bad.returncode == 2 and "[dicom].ae_title" in bad.stderr
    assert not (tmp_path / "other" / "config.toml").exists()

    # Started as users start it (a fresh interpreter, not the suite's zygote).
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "serve", "--config", str(config)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(http_port)
        wait_port(dicom_port)
        health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10).json()
        assert health["ae_title"] == "HOSPITAL_NODE" and health["dicom_port"] == dicom_port
        dcmtk("echoscu", "-aet", "ME", "-aec", "HOSPITAL_NODE", "127.0.0.1", str(dicom_port))
    finally:
        assert stop_process(proc, 15, 30) == 0
        log.close()
    assert (folder / "storage" / "index.sqlite").is_file()


def test_the_repository_config_is_what_init_writes():
    assert (REPO / "config.toml").read_text() == render(), (
        "config.toml differs from node/admin/config_template.toml with the defaults: "
        "edit the template and write config.toml from it (node.admin.initdir.render())"
    )


def test_the_init_template_has_every_key():
    section = ""
    found: dict[str, set[str]] = {}
    for line in render().splitlines():
        line = line.strip().removeprefix("#").strip()
        if m := re.match(r"^\[\[?(\w+)\]?\]", line):
            section = m.group(1)
        elif m := re.match(r"^(\w+)\s*=", line):
            found.setdefault(section, set()).add(m.group(1))
    for name, keys in known_keys().items():
        missing = set(keys) - found.get(name, set())
        assert not missing, f"[{name}] keys missing from node/admin/config_template.toml: {sorted(missing)}"


# -- start-up refusals -----------------------------------------------------------------


@pytest.mark.parametrize(("door", "section"), [("HTTP", "http"), ("DICOM", "dicom")])
def test_a_port_in_use_stops_start_up_with_one_line(tmp_path, door, section):
    node = RunningNode(tmp_path / "node", node_config(tmp_path / "node"))
    port = node.config[section]["port"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        r = node.cli("serve", timeout=60)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, r.stderr
    assert f"{door} port {port} on 127.0.0.1 is already in use" in errors[0]
    assert f"[{section}].port" in errors[0]
    assert "serving" not in r.stderr


def test_an_index_of_a_newer_version_is_refused(tmp_path):
    node = RunningNode(tmp_path / "node", node_config(tmp_path / "node"))
    assert node.cli("migrate").returncode == 0
    node.index_rows(
        "INSERT INTO schema_migration (name, applied_at) VALUES ('9999_from_the_future', '2030-01-01')"
    )
    for command in ("serve", "migrate"):
        r = node.cli(command, timeout=60)
        assert r.returncode == 1, (command, r.stderr)
        assert "written by a newer dicom-node" in r.stderr and "9999_from_the_future" in r.stderr
        assert "serving" not in r.stderr


def test_a_missing_config_says_how_to_make_one(tmp_path):
    r = run_node("serve", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2
    assert "config file not found" in r.stderr and "dicom-node init" in r.stderr


# -- ls ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> RunningNode:
    """An index (no server needed) with three studies of two patients."""
    root = tmp_path_factory.mktemp("ls")
    uids = {k: generate_uid() for k in ("s1", "s2", "s3", "se1", "se2", "se3", "se4")}
    rows = [
        # study, series, patient, name, accession, date, modality, description, count
        ("s1", "se1", "P1", "DOE^JOHN", "ACC1", "20240110", "CT", "CT HEAD", 2),
        ("s1", "se2", "P1", "DOE^JOHN", "ACC1", "20240110", "MR", "CT HEAD", 1),
        ("s2", "se3", "P1", "DOE^JOHN", "ACC2", "20240301", "CT", "CHEST", 1),
        ("s3", "se4", "P2", "ROE^JANE", "ACC3", "20231231", "MR", "KNEE", 3),
    ]
    for n, (study, series, pid, name, acc, date, modality, description, count) in enumerate(rows):
        for i in range(count):
            ds = make_dataset(
                study_uid=uids[study],
                series_uid=uids[series],
                patient_id=pid,
                patient_name=name,
                accession=acc,
                study_date=date,
                modality=modality,
                study_description=description,
                series_number=n + 1,
                instance_number=i + 1,
            )
            if modality == "MR":
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            write(ds, root / "in" / series / f"{i}.dcm")
    node = RunningNode(root / "node", node_config(root / "node", storage={"fsync": False}))
    assert node.cli("import", "-q", str(root / "in")).returncode == 0
    node.uids = uids  # type: ignore[attr-defined]
    return node


def run_ls(node: RunningNode, *args: str) -> tuple[int, str, str]:
    """``dicom-node ls ARGS`` in this process (the command only reads the index): status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["ls", *args, "--config", str(node.config_path), "--log-level", "WARNING"])
    return code, out.getvalue(), err.getvalue()


def ls(node: RunningNode, *args: str) -> tuple[list[str], str]:
    code, out, err = run_ls(node, *args)
    assert code == 0, err
    return out.splitlines(), err.strip()


def test_ls_studies_as_a_table(listed):
    lines, summary = ls(listed)
    assert summary == "3 studies"
    assert lines[0].split() == [
        "Name", "Patient", "ID", "Date", "Accession", "Modalities", "Description", "Series", "Instances",
        "Study", "UID",
    ]  # fmt: skip
    doe = next(line for line in lines if "ACC1" in line)
    assert doe.split() == [
        "DOE^JOHN", "P1", "2024-01-10", "ACC1", "CT,MR", "CT", "HEAD", "2", "3", listed.uids["s1"],
    ]  # fmt: skip


def test_ls_filters_like_findscu(listed):
    assert ls(listed, "--name", "doe*")[1] == "2 studies"  # person names case-insensitive
    lines, summary = ls(listed, "--date", "20240101-", "--modality", "MR")
    assert summary == "1 study" and "ACC1" in lines[1]
    assert ls(listed, "-k", "StudyDescription=*HEAD*")[1] == "1 study"
    assert ls(listed, "-k", "0008,0050=ACC3")[1] == "1 study"
    assert ls(listed, "--accession", "NOPE") == ([], "0 studies")
    lines, summary = ls(listed, "--limit", "1")
    assert len(lines) == 2 and "more not shown" in summary


def test_ls_patients_and_series(listed):
    lines, summary = ls(listed, "patients")
    assert summary == "2 patients"
    assert next(line for line in lines if "DOE^JOHN" in line).split()[-3:] == ["2", "3", "4"]
    lines, summary = ls(listed, "series", "--study", listed.uids["s1"])
    assert summary == "2 series"
    assert [line.split()[4] for line in lines[1:]] == ["CT", "MR"]
    lines, _ = ls(listed, "series", "--modality", "MR", "--json")
    matches = json.loads("\n".join(lines))
    assert sorted(m["SeriesInstanceUID"] for m in matches) == sorted([listed.uids["se2"], listed.uids["se4"]])


def test_ls_refuses_what_it_cannot_match(listed):
    for args, words in (
        (("--date", "yesterday"), "StudyDate: 'yesterday' is not a date"),
        (("patients", "--modality", "CT"), "ModalitiesInStudy is a STUDY level key"),
        (("-k", "9999,9999=x"), "9999,9999 is not a known tag"),
        (("-k", "Nonsense=x"), "Nonsense is not supported"),
    ):
        code, _, err = run_ls(listed, *args)
        assert code == 2 and words in err, (args, err)
