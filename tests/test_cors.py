"""CORS and OPTIONS with httpx: preflights for every route, headers on every answer, Allow as served."""

from __future__ import annotations

import httpx
import pytest
from pydicom.uid import generate_uid

from bench.corpus import make_dataset, write
from node.config import ConfigError, parse
from tests.harness import RunningNode, node_config, storescu

ORIGIN = "https://viewer.example.org"
TOKEN = "cors-token"


@pytest.fixture(scope="module")
def cors_node(tmp_path_factory):
    root = tmp_path_factory.mktemp("cors")
    config = node_config(root / "node", http={"token": TOKEN, "cors_origins": [ORIGIN]})
    node = RunningNode(root / "node", config).start()
    study, series = generate_uid(), generate_uid()
    for i in range(2):
        ds = make_dataset(study_uid=study, series_uid=series, instance_number=i + 1)
        write(ds, root / "in" / f"{i}.dcm")
    storescu(node.ae_title, node.dicom_port, root / "in")
    yield node, study
    node.stop()


def preflight(node, path: str, method: str = "GET", headers: str = "authorization") -> httpx.Response:
    return httpx.options(
        node.url + path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/dicom-web/studies", "GET"),
        ("/dicom-web/studies", "POST"),
        ("/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/1", "GET"),
        ("/accessions/A1/zip", "POST"),
        ("/metrics", "GET"),
        ("/remotes", "GET"),
    ],
)
def test_preflight_answered_without_the_token(cors_node, path, method):
    node, _ = cors_node
    r = preflight(node, path, method, "authorization, content-type")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert method in r.headers["access-control-allow-methods"]


def test_preflight_from_another_origin_is_refused(cors_node):
    node, _ = cors_node
    r = httpx.options(
        node.url + "/dicom-web/studies",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers


def test_answers_carry_the_headers_streamed_and_errors_too(cors_node):
    node, study = cors_node
    auth = {"Authorization": f"Bearer {TOKEN}", "Origin": ORIGIN}
    qido = httpx.get(node.url + "/dicom-web/studies", headers=auth)  # a streamed answer
    assert qido.status_code == 200 and qido.headers["access-control-allow-origin"] == ORIGIN
    wado = httpx.get(node.url + f"/dicom-web/studies/{study}", headers=auth)  # multipart, streamed
    assert wado.status_code == 200 and wado.headers["access-control-allow-origin"] == ORIGIN
    assert "warning" in wado.headers["access-control-expose-headers"].lower()
    unknown = httpx.get(node.url + "/dicom-web/studies/1.2.3/metadata", headers=auth)
    assert unknown.status_code == 404 and unknown.headers["access-control-allow-origin"] == ORIGIN
    no_token = httpx.get(node.url + "/dicom-web/studies", headers={"Origin": ORIGIN})
    assert no_token.status_code == 401 and no_token.headers["access-control-allow-origin"] == ORIGIN
    metrics = httpx.get(node.url + "/metrics", headers=auth)
    assert metrics.status_code == 200 and metrics.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(node.url + "/dicom-web/studies", headers={**auth, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_a_crash_still_answers_json_with_the_headers(cors_node):
    """An instance whose file went missing from the store: reading its frames fails inside the endpoint."""
    node, study = cors_node
    auth = {"Authorization": f"Bearer {TOKEN}", "Origin": ORIGIN}
    item = httpx.get(node.url + f"/dicom-web/studies/{study}/instances", headers=auth).json()[0]
    series, sop = item["0020000E"]["Value"][0], item["00080018"]["Value"][0]
    (path,) = node.storage.rglob(f"{sop}.dcm")
    path.unlink()
    frames = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1"
    r = httpx.get(node.url + frames, headers=auth)
    assert r.status_code == 500
    assert r.json()["error"].startswith("internal error")
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert httpx.get(node.url + "/health").status_code == 200  # and the node keeps serving


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/dicom-web/studies", "GET, HEAD, OPTIONS, POST"),
        ("DELETE", "/dicom-web/studies", "GET, HEAD, OPTIONS, POST"),
        ("PUT", "/accessions/A1/zip", "GET, HEAD, OPTIONS, POST"),
        ("POST", "/dicom-web/studies/1.2.3/metadata", "GET, HEAD, OPTIONS"),
        ("OPTIONS", "/viewer/", "GET, HEAD, OPTIONS"),
    ],
)
def test_allow_lists_the_methods_served(cors_node, method, path, allow):
    node, _ = cors_node
    # OPTIONS needs no token (browsers send none with a preflight); other methods are checked first.
    auth = {} if method == "OPTIONS" else {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.request(method, node.url + path, headers=auth)
    assert r.status_code == (204 if method == "OPTIONS" else 405)
    assert r.headers["allow"] == allow


def test_no_cors_headers_by_default(node):
    r = httpx.get(node.url + "/dicom-web/studies", headers={"Origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    asked = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    r = httpx.options(node.url + "/dicom-web/studies", headers=asked)
    assert r.status_code == 204 and "access-control-allow-origin" not in r.headers
    assert r.headers["allow"] == "GET, HEAD, OPTIONS, POST"


def test_any_origin(node_factory):
    node = node_factory(http={"cors_origins": ["*"]}).start()
    r = httpx.get(node.url + "/health", headers={"Origin": "http://localhost:3000"})
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (["viewer.example.org"], "[http].cors_origins[0]"),
        (["https://viewer.example.org/path"], "[http].cors_origins[0]"),
        (["*", "https://a.example"], "[http].cors_origins"),
        ("*", "[http].cors_origins"),
    ],
)
def test_bad_origins_are_config_errors_naming_the_key(tmp_path, value, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse({"http": {"cors_origins": value}}, tmp_path)
