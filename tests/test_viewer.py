"""The OHIF viewer at /viewer/: install (npm pack @ohif/app), rebasing, serving, and drawing a study.

The real viewer is fetched from the npm registry once for the module; where
that cannot be done the tests that need it skip with the reason.  The
install logic itself is also tested on a small hand-made tarball.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageStat
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from node import viewer
from tests.harness import REPO, RunningNode, chromium, chromium_available, node_config, storescu

TOKEN = "viewer-token"


def fake_tarball(path: Path, *, index: str, bundle: str = '__webpack_require__.p = "/";') -> Path:
    """A minimal npm tarball shaped like @ohif/app's."""
    files = {
        "package/package.json": json.dumps({"name": "@ohif/app", "version": "9.9.9"}),
        "package/dist/index.html": index,
        "package/dist/app.bundle.abc.js": bundle,
        "package/dist/app.bundle.css": "@font-face{src:url(/f.woff2)}",
        "package/dist/app.bundle.abc.js.map": "{}",
        "package/dist/init-service-worker.js": "importScripts('https://cdn.example/x.js')",
        "package/README.md": "not part of dist",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


OHIF_INDEX = (
    '<html><head><link rel="icon" href="/assets/favicon.ico"><script>window.PUBLIC_URL="/"</script>'
    '<script src="/app-config.js"></script><script defer src="/app.bundle.abc.js"></script>'
    '<link href="/app.bundle.css" rel="stylesheet"><a href="//cdn.example/x">x</a></head></html>'
)


def test_install_rebases_a_root_build_under_viewer(tmp_path):
    target = tmp_path / "viewer"
    (target / "old").mkdir(parents=True)  # a previous install is replaced whole
    marker = viewer.install(target, tarball=fake_tarball(tmp_path / "app.tgz", index=OHIF_INDEX))
    assert marker["version"] == "9.9.9" and viewer.installed(target)["version"] == "9.9.9"
    index = (target / "index.html").read_text()
    assert 'window.PUBLIC_URL="/viewer/"' in index
    assert 'src="/viewer/app.bundle.abc.js"' in index and 'href="/viewer/assets/favicon.ico"' in index
    assert 'href="//cdn.example/x"' in index  # protocol-relative links are not paths
    assert (target / "app.bundle.abc.js").read_text() == '__webpack_require__.p = "/viewer/";'
    assert "url(/viewer/f.woff2)" in (target / "app.bundle.css").read_text()
    assert "cdn.example" not in (target / "init-service-worker.js").read_text()
    assert "window.location.origin + '/dicom-web'" in (target / "app-config.js").read_text()
    assert not (target / "app.bundle.abc.js.map").exists() and not (target / "old").exists()
    assert not list(tmp_path.glob(".viewer-*"))  # the staging folder is gone


def test_install_refuses_a_build_it_cannot_rebase(tmp_path):
    target = tmp_path / "viewer"
    with pytest.raises(viewer.ViewerError, match="PUBLIC_URL"):
        viewer.install(target, tarball=fake_tarball(tmp_path / "a.tgz", index="<html></html>"))
    with pytest.raises(viewer.ViewerError, match="app bundle"):
        viewer.install(target, tarball=fake_tarball(tmp_path / "b.tgz", index=OHIF_INDEX, bundle="x"))
    not_npm = tmp_path / "c.tgz"
    not_npm.write_bytes(b"garbage")
    with pytest.raises(viewer.ViewerError, match="not an npm tarball"):
        viewer.install(target, tarball=not_npm)
    assert viewer.installed(target) is None


def test_without_a_viewer_the_page_says_how_to_install_it(node):
    for path in ("/viewer/", "/viewer/viewer?StudyInstanceUIDs=1.2.3"):
        r = httpx.get(node.url + path)
        assert r.status_code == 404 and "text/html" in r.headers["content-type"]
        assert "dicom-node viewer install" in r.text and "make viewer" in r.text
    assert httpx.get(node.url + "/viewer", follow_redirects=False).status_code in (307, 308)
    assert node.cli("viewer", "status").returncode == 1


def test_templates_ship_in_the_wheel(tmp_path):
    """``pip install .`` outside the checkout finds the templates and static files (package data)."""
    # Built from a copy: setuptools leaves a build/ folder in the tree it builds.
    source = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for package in ("node", "migrations"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dicom_node-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("templates/base.html", "templates/study.html", "static/console.css", "static/upload.js"):
        assert f"node/web/console/{name}" in names


# -- the real OHIF app ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ohif_tarball(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ohif")
    try:
        return viewer.npm_pack(viewer.DEFAULT_VERSION, folder)
    except viewer.ViewerError as exc:
        pytest.skip(f"the npm registry cannot be used here: {exc}")


@pytest.fixture(scope="module")
def with_viewer(tmp_path_factory, ohif_tarball):
    root = tmp_path_factory.mktemp("viewer")
    # With a token, as in production: the viewer reads DICOMweb with the console's session cookie.
    node = RunningNode(root / "node", node_config(root / "node", http={"token": TOKEN})).start()
    study, series = generate_uid(), generate_uid()
    for i in range(3):
        ds = make_dataset(study_uid=study, series_uid=series, instance_number=i + 1, size="ct")
        write(ds, root / f"{i}.dcm")
    storescu(node.ae_title, node.dicom_port, *sorted(root.glob("*.dcm")))
    installed = node.cli("viewer", "install", "--tarball", str(ohif_tarball), timeout=300)
    assert installed.returncode == 0, installed.stderr
    yield node, study
    node.stop()


def test_the_installed_viewer_is_served_same_origin(with_viewer):
    node, study = with_viewer
    assert httpx.get(node.url + "/viewer/").status_code == 303  # to the login page
    assert httpx.get(node.url + f"/viewer/viewer?StudyInstanceUIDs={study}").status_code == 303
    assert httpx.get(node.url + "/viewer/manifest.json").status_code == 200  # fetched without cookies
    assert httpx.get(node.url + f"/dicom-web/studies/{study}/metadata").status_code == 401
    auth = node.auth_headers()
    index = httpx.get(node.url + "/viewer/", headers=auth)
    assert index.status_code == 200 and 'window.PUBLIC_URL="/viewer/"' in index.text
    assert index.headers["cross-origin-opener-policy"] == "same-origin"
    assert index.headers["cross-origin-embedder-policy"] == "require-corp"
    route = httpx.get(node.url + f"/viewer/viewer?StudyInstanceUIDs={study}", headers=auth)  # the app's route
    assert route.status_code == 200 and route.text == index.text
    assert httpx.get(node.url + "/viewer/no-such-chunk.js", headers=auth).status_code == 404
    assert httpx.get(node.url + "/viewer/%2e%2e/config.toml", headers=auth).status_code == 404
    config = httpx.get(node.url + "/viewer/app-config.js", headers=auth)
    assert "routerBasename: '/viewer'" in config.text and "/dicom-web" in config.text
    assert node.cli("viewer", "status").returncode == 0


@pytest.mark.skipif(chromium_available() is not None, reason=chromium_available() or "")
def test_ohif_opens_a_stored_study_and_draws_it(with_viewer, tmp_path):
    node, study = with_viewer
    driver = chromium(tmp_path / "profile", width=1280, height=800)
    try:
        driver.get(node.url + f"/viewer/viewer?StudyInstanceUIDs={study}")
        driver.find_element("css selector", "input[name=token]").send_keys(TOKEN)
        driver.find_element("css selector", "button[type=submit]").click()  # back to the viewer after it
        deadline = time.monotonic() + 90
        spread = 0.0
        while time.monotonic() < deadline:
            rect = driver.execute_script(
                "const c = [...document.querySelectorAll('canvas')].sort((a, b) => b.width * b.height"
                " - a.width * a.height)[0]; if (!c) return null; const r = c.getBoundingClientRect();"
                " return [r.left, r.top, r.width, r.height, window.devicePixelRatio];"
            )
            if rect and rect[2] > 100 and rect[3] > 100:
                left, top, width, height, ratio = rect
                shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L")
                box = [int(v * ratio) for v in (left, top, left + width, top + height)]
                spread = ImageStat.Stat(shot.crop(box)).stddev[0]
                if spread > 20:  # the synthetic CT's stripes, not a blank (uniform) viewport
                    break
            time.sleep(1)
        driver.save_screenshot(str(tmp_path / "ohif.png"))
        assert spread > 20, f"the viewport stayed blank (pixel spread {spread:.1f}); see {tmp_path}/ohif.png"
        log = driver.get_log("browser")
        errors = [e["message"] for e in log if e["level"] == "SEVERE" and "/viewer/" in e["message"]]
        assert errors == []  # every file the viewer asked for was there
    finally:
        driver.quit()
