"""The documentation in docs/ lists exactly what the code has (as datasette's documentation tests do).

A config key, an HTTP route, a SOP class or transfer syntax the node
offers, or a command-line option that the docs do not list fails here, and
so does one the docs list that no longer exists.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from node.cli import build_parser
from node.config import Settings, known_keys
from tests.harness import REPO

DOCS = REPO / "docs"


def text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


# -- configuration ---------------------------------------------------------------------


def documented_keys() -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [type, default, meaning]}}`` from the tables of configuration.md."""
    found: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text("configuration.md").splitlines():
        if m := re.match(r"^## `\[\[?(\w+)\]?\]`$", line):
            section = m.group(1)
            found[section] = {}
        elif section and (m := re.match(r"^\| `(\w+)` \|(.*)\|$", line)):
            found[section][m.group(1)] = [cell.strip() for cell in m.group(2).split("|")]
    return found


def test_every_config_key_is_documented_and_every_documented_key_exists():
    documented = documented_keys()
    keys = known_keys()
    assert set(documented) == set(keys), "sections of docs/configuration.md differ from node.config"
    for section, names in keys.items():
        missing = set(names) - set(documented[section])
        extra = set(documented[section]) - set(names)
        assert not missing, f"[{section}] keys not in docs/configuration.md: {sorted(missing)}"
        assert not extra, f"[{section}] keys in docs/configuration.md that node.config does not have: {extra}"
        for key, cells in documented[section].items():
            assert len(cells) == 3 and all(cells), f"[{section}].{key}: give its type, default and meaning"


def test_documented_defaults_are_the_defaults():
    defaults = Settings()
    for section, rows in documented_keys().items():
        if section == "remotes":
            continue
        for key, (_, default, _) in rows.items():
            value = getattr(getattr(defaults, section), key)
            literal = re.match(r"^`([^`]*)`", default)
            assert literal, f"[{section}].{key}: the default should start with a `literal`"
            parsed = tomllib.loads(f"v = {literal.group(1)}")["v"]
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, tuple):
                value = list(value)
            assert parsed == value, f"[{section}].{key}: docs say {parsed!r}, the default is {value!r}"


# -- what the node offers ---------------------------------------------------------------

# Asked of a child process: importing the app and the AE may change pydicom's
# settings process-wide, which other test modules must not inherit.
_OFFERED = r"""
import json, re
from types import SimpleNamespace
from node.config import Settings
from node.dimse.ae import build_ae
from node.web.app import create_app

ctx = SimpleNamespace(settings=Settings())
routes = []
for route in create_app(ctx).routes:
    path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)  # {accession:export_accession} -> {accession}
    routes += [[method, path] for method in sorted(route.methods - {"HEAD"})]
contexts = [[cx.abstract_syntax, list(cx.transfer_syntax)] for cx in build_ae(ctx).supported_contexts]
print(json.dumps({"routes": routes, "contexts": contexts}))
"""


@pytest.fixture(scope="module")
def offered() -> dict:
    out = subprocess.run([sys.executable, "-c", _OFFERED], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_route_is_documented_and_every_documented_route_exists(offered):
    documented = set(re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s?]*)`", text("http-api.md")))
    routes = {tuple(r) for r in offered["routes"]}
    assert not routes - documented, f"routes not in docs/http-api.md: {sorted(routes - documented)}"
    extra = sorted(documented - routes)
    assert not extra, f"docs/http-api.md lists routes the app lacks: {extra}"


def test_every_route_row_gives_its_statuses():
    for line in text("http-api.md").splitlines():
        if m := re.match(r"^\| `(GET|POST|PUT|PATCH|DELETE) [^`]+` \| ([^|]*)\|", line):
            statuses = [s.strip() for s in m.group(2).split(",")]
            assert statuses and all(re.fullmatch(r"[1-5]\d\d", s) for s in statuses), line


def test_conformance_lists_every_sop_class_and_transfer_syntax_the_node_accepts(offered):
    listed = set(re.findall(r"`(1\.2\.840\.10008\.[\d.]+)`", text("dimse-conformance.md")))
    sop_classes = {sop for sop, _ in offered["contexts"]}
    syntaxes = {ts for _, tss in offered["contexts"] for ts in tss}
    assert not sop_classes - listed, f"SOP classes not in the conformance: {sorted(sop_classes - listed)}"
    assert not syntaxes - listed, f"transfer syntaxes not in the conformance: {sorted(syntaxes - listed)}"
    stale = sorted(listed - sop_classes - syntaxes)
    assert not stale, f"docs/dimse-conformance.md lists what the node does not offer: {stale}"


# -- command line ----------------------------------------------------------------------


def test_every_command_and_option_is_documented():
    doc = text("command-line.md")
    # {command: its heading and section}: "## `dicom-node ls [...]`" up to the next heading.
    pattern = r"^## `dicom-node (\w+)[^`]*`.*?(?=^## |\Z)"
    sections = {m.group(1): m.group(0) for m in re.finditer(pattern, doc, re.M | re.S)}
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sections) == set(sub.choices), "commands of docs/command-line.md differ from the CLI's"
    common = {"--help", "--config", "--log-level"}
    for name, command in sub.choices.items():
        options = {o for a in command._actions for o in a.option_strings if o.startswith("--")} - common
        for option in sorted(options):
            assert option in sections[name], f"dicom-node {name} {option}: not in docs/command-line.md"


# -- links, README, license ------------------------------------------------------------


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")) + ["../README.md"])
def test_links_between_pages_resolve(page):
    path = (DOCS / page).resolve()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
        assert (path.parent / target).exists(), f"{page} links to {target}, which does not exist"


def test_the_readme_points_into_docs_and_nothing_outside_the_repository():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "../shared" not in readme
    for page in ("interface.md", "configuration.md", "http-api.md", "dimse-conformance.md", "medialog.md"):
        assert f"docs/{page}" in readme, f"README does not point to docs/{page}"


def test_the_license_is_mit_as_pyproject_says():
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in license_text
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
