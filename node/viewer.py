"""The OHIF viewer: installed from the npm registry into ``[http].viewer_path``, served at ``/viewer/``.

``dicom-node viewer install`` (``make viewer``) runs ``npm pack @ohif/app``
(the prebuilt app: its ``dist/`` folder), unpacks ``dist/`` (without source
maps), makes it work under ``/viewer/`` and writes an ``app-config.js``
pointing at this node's own ``/dicom-web``.  The new copy is assembled next
to the old one and swapped in by renames, so a running node serves either
the old viewer or the new one, never half of one.

The published build is made for the site root (``/``): its HTML, its webpack
public path and its web manifest name ``/...``.  Serving it under another
path is, per OHIF's docs, a rebuild with ``PUBLIC_URL``; the same effect on
the built files is a handful of exact replacements, each checked, so that a
release whose output looks different fails the install with a message
instead of serving a blank page.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

log = logging.getLogger("node.viewer")

PACKAGE = "@ohif/app"
# The release the install was tested with (its output is what the patching expects).
DEFAULT_VERSION = "3.13.2"
MOUNT = "/viewer/"
MARKER = "dicom-node-viewer.json"
NPM_TIMEOUT_S = 900

_DIST = "package/dist/"
_PUBLIC_PATH = '__webpack_require__.p = "/";'
_HTML_PUBLIC_URL = 'window.PUBLIC_URL="/"'
_HTML_ROOT_ATTR = re.compile(r'((?:href|src)=")/(?!/)')
_CSS_ROOT_URL = re.compile(r"(url\(['\"]?)/(?!/)")


class ViewerError(RuntimeError):
    """The viewer could not be installed; the message says why and what to do."""


def installed(path: Path) -> dict | None:
    """What is installed at *path* (package, version, time), or None when no viewer is there."""
    if not (path / "index.html").is_file():
        return None
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return {"package": PACKAGE, "version": "unknown"}


def app_config() -> str:
    """The OHIF configuration: one DICOMweb source, this node's ``/dicom-web`` on the page's own origin."""
    return """\
/* Written by `dicom-node viewer install`: this node's DICOMweb, on the origin the viewer came from. */
(function () {
  var root = window.location.origin + '/dicom-web';
  window.config = {
    name: 'dicom-node',
    routerBasename: '/viewer',
    showStudyList: true,
    extensions: [],
    modes: [],
    customizationService: {},
    maxNumberOfWebWorkers: 3,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    investigationalUseDialog: { option: 'never' },
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
    defaultDataSourceName: 'dicomweb',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'dicomweb',
        configuration: {
          friendlyName: 'dicom-node',
          name: 'dicom-node',
          wadoUriRoot: root,
          qidoRoot: root,
          wadoRoot: root,
          qidoSupportsIncludeField: true,
          supportsReject: false,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: true,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video,pdf',
          bulkDataURI: { enabled: true, relativeResolution: 'studies' },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
  };
})();
"""


def npm_pack(version: str, folder: Path, npm: str = "npm") -> Path:
    """Download the ``@ohif/app`` tarball of *version* into *folder* with npm; return its path."""
    if shutil.which(npm) is None:
        raise ViewerError(
            f"{npm!r} not found: install Node.js and npm (Debian: apt-get install npm), "
            "or pass --tarball with an @ohif/app tarball made by `npm pack @ohif/app`"
        )
    spec = f"{PACKAGE}@{version}"
    log.info("fetching %s with npm pack", spec)
    try:
        result = subprocess.run(
            [npm, "pack", spec, "--pack-destination", str(folder), "--silent"],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ViewerError(f"npm pack {spec} did not finish in {NPM_TIMEOUT_S}s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ViewerError(f"npm pack {spec} failed: {detail[-1] if detail else f'exit {result.returncode}'}")
    names = [line.strip() for line in result.stdout.splitlines() if line.strip().endswith(".tgz")]
    tarball = folder / names[-1] if names else None
    if tarball is None or not tarball.is_file():
        raise ViewerError(f"npm pack {spec} made no tarball (output: {result.stdout.strip()[:200]!r})")
    return tarball


def unpack_dist(tarball: Path, target: Path) -> int:
    """Extract the tarball's ``package/dist/`` into *target* (source maps left out); return the files."""
    try:
        archive = tarfile.open(tarball, "r:gz")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise ViewerError(f"{tarball}: not an npm tarball ({exc})") from None
    with archive:
        members = []
        for member in archive.getmembers():
            if not member.name.startswith(_DIST) or member.name.endswith(".map"):
                continue
            if not (member.isfile() or member.isdir()):
                continue  # no links or devices from a download
            member.name = member.name[len(_DIST) :]
            if member.name:
                members.append(member)
        if not any(m.name == "index.html" for m in members):
            raise ViewerError(f"{tarball}: no dist/index.html: not a prebuilt {PACKAGE} package")
        archive.extractall(target, members=members, filter="data")
    return sum(1 for m in members if m.isfile())


def _replace(path: Path, old: str | re.Pattern, new: str) -> int:
    text = path.read_text(encoding="utf-8")
    if isinstance(old, re.Pattern):
        text, n = old.subn(new, text)
    else:
        n = text.count(old)
        text = text.replace(old, new)
    if n:
        path.write_text(text, encoding="utf-8")
    return n


def rebase(folder: Path, mount: str = MOUNT) -> None:
    """Make a root-built OHIF ``dist/`` in *folder* work under *mount* (e.g. ``/viewer/``)."""
    index = folder / "index.html"
    if not _replace(index, _HTML_PUBLIC_URL, f'window.PUBLIC_URL="{mount}"'):
        raise ViewerError(f"index.html does not set {_HTML_PUBLIC_URL}: not an OHIF build this can rebase")
    _replace(index, _HTML_ROOT_ATTR, rf"\1{mount}")
    public_path = f'__webpack_require__.p = "{mount}";'
    bundles = [p for p in folder.glob("*.js") if _replace(p, _PUBLIC_PATH, public_path)]
    if not any(p.name.startswith("app.bundle.") for p in bundles):
        raise ViewerError(f"no app bundle sets {_PUBLIC_PATH!r}: an OHIF build this install does not know")
    # Style sheets name their fonts and images from the root: url(/a34f….woff2).
    for sheet in folder.glob("*.css"):
        _replace(sheet, _CSS_ROOT_URL, rf"\1{mount}")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        _replace(manifest, re.compile(r'("(?:src|start_url|scope)":\s*")/(?!/)'), rf"\1{mount}")
    # The published service-worker loader would fetch Workbox from a CDN; the node serves no service worker.
    (folder / "init-service-worker.js").write_text(
        "navigator.serviceWorker && navigator.serviceWorker.getRegistrations()"
        ".then(function (rs) { rs.forEach(function (r) { r.unregister(); }); });\n"
    )


def install(target: Path, *, version: str = DEFAULT_VERSION, tarball: Path | None = None) -> dict:
    """Install the viewer into *target* (replacing what is there); returns the marker written."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".viewer-", dir=target.parent) as tmp:
        work = Path(tmp)
        if tarball is None:
            tarball = npm_pack(version, work)
        staging = work / "viewer"
        files = unpack_dist(tarball, staging)
        rebase(staging)
        (staging / "app-config.js").write_text(app_config(), encoding="utf-8")
        package = json.loads(_member_text(tarball, "package/package.json") or "{}")
        marker = {
            "package": package.get("name", PACKAGE),
            "version": package.get("version", version),
            "files": files,
            "installed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        old = work / "previous"
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
    log.info("installed %s %s (%d files) into %s", marker["package"], marker["version"], files, target)
    return marker


def _member_text(tarball: Path, name: str) -> str | None:
    with tarfile.open(tarball, "r:gz") as archive:
        try:
            member = archive.extractfile(name)
        except KeyError:
            return None
        return member.read().decode("utf-8") if member else None
