"""QIDO-RS and WADO-RS against a node filled by storescu, through dicomweb-client and httpx."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from tests import dicomweb_corpus
from tests.harness import RunningNode, dataset_bytes, node_config, split_multipart

TOKEN = "s3cret-token"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> tuple[RunningNode, dicomweb_corpus.Corpus]:
    """One node (with a bearer token) holding the test corpus, shared by this module's tests."""
    root: Path = tmp_path_factory.mktemp("dicomweb")
    corpus = dicomweb_corpus.build(root / "corpus")
    node = RunningNode(root / "node", node_config(root / "node", http={"token": TOKEN})).start()
    try:
        dicomweb_corpus.send(node, root / "corpus")
        assert node.count("instances") == len(corpus.files)
        yield node, corpus
    finally:
        node.stop()


@pytest.fixture
def client(filled) -> DICOMwebClient:
    node, _ = filled
    return DICOMwebClient(url=node.url + "/dicom-web", headers=node.auth_headers())


@pytest.fixture
def http(filled):
    node, _ = filled
    with httpx.Client(base_url=node.url + "/dicom-web", headers=node.auth_headers(), timeout=30) as c:
        yield c


def value(item: dict, tag: str):
    """The first value of *tag* in a DICOM JSON object (None when absent or empty)."""
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


# -- QIDO-RS ---------------------------------------------------------------------------


def test_search_for_studies_defaults_counts_and_filters(client, filled):
    _, c = filled
    studies = client.search_for_studies()
    assert {value(s, "0020000D") for s in studies} == {c.study_a, c.study_b, c.study_c}

    (a,) = client.search_for_studies(search_filters={"PatientID": "PID-A"})
    assert value(a, "0020000D") == c.study_a
    assert value(a, "00080050") == "ACC-A"
    assert value(a, "00100010") == {"Alphabetic": "DOE^JOHN"}
    assert value(a, "00201206") == 2  # NumberOfStudyRelatedSeries
    assert value(a, "00201208") == 5  # NumberOfStudyRelatedInstances
    assert a["00080061"]["Value"] == ["CT", "MR"]  # ModalitiesInStudy
    assert value(a, "00081190").endswith(f"/dicom-web/studies/{c.study_a}")

    by_tag = client.search_for_studies(search_filters={"00100020": "PID-B"})
    assert [value(s, "0020000D") for s in by_tag] == [c.study_b]
    wildcard = client.search_for_studies(search_filters={"AccessionNumber": "ACC-?"})
    assert len(wildcard) == 3
    in_range = client.search_for_studies(search_filters={"StudyDate": "20240101-20240331"})
    assert {value(s, "0020000D") for s in in_range} == {c.study_a, c.study_b}
    open_range = client.search_for_studies(search_filters={"StudyDate": "-20231231"})
    assert [value(s, "0020000D") for s in open_range] == [c.study_c]
    uid_list = client.search_for_studies(search_filters={"StudyInstanceUID": f"{c.study_a},{c.study_c}"})
    assert {value(s, "0020000D") for s in uid_list} == {c.study_a, c.study_c}
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []


def test_limit_offset_and_truncation_warning(client, http):
    every = [value(s, "0020000D") for s in client.search_for_studies()]
    assert len(every) == 3
    first = client.search_for_studies(limit=2)
    rest = client.search_for_studies(limit=2, offset=2)
    assert [value(s, "0020000D") for s in first + rest] == every

    r = http.get("/studies", params={"limit": 2})
    assert r.status_code == 200 and len(r.json()) == 2
    assert "more matches than the limit" in r.headers["warning"]
    r = http.get("/studies", params={"limit": 3})
    assert "warning" not in r.headers


def test_search_series_and_instances_at_every_path(client, filled):
    _, c = filled
    series = client.search_for_series(c.study_a)
    assert [value(s, "0020000E") for s in series] == [c.series_a1, c.series_a2]
    assert [value(s, "00201209") for s in series] == [3, 2]  # NumberOfSeriesRelatedInstances
    mr = client.search_for_series(search_filters={"Modality": "MR"})
    assert [value(s, "0020000E") for s in mr] == [c.series_a2]
    # Series across studies carry the study attributes too.
    assert value(mr[0], "0020000D") == c.study_a and value(mr[0], "00100020") == "PID-A"

    in_study = client.search_for_instances(c.study_a)
    assert len(in_study) == 5
    in_series = client.search_for_instances(c.study_a, c.series_a1)
    assert sorted(value(i, "00200013") for i in in_series) == [1, 2, 3]
    everywhere = client.search_for_instances(search_filters={"SOPInstanceUID": c.multiframe})
    assert len(everywhere) == 1 and value(everywhere[0], "00280008") == 3
    url = value(everywhere[0], "00081190")
    assert url.endswith(f"/studies/{c.study_b}/series/{c.series_b}/instances/{c.multiframe}")


def test_includefield_all_and_named(client, http, filled):
    _, c = filled
    (study,) = client.search_for_studies(search_filters={"PatientID": "PID-A"}, fields=["all"])
    assert value(study, "00081030") == "Synthetic study"  # StudyDescription
    assert "00080062" in study  # SOPClassesInStudy, not a default
    (series,) = client.search_for_series(c.study_a, search_filters={"SeriesNumber": "2"}, fields=["all"])
    assert value(series, "0008103E") == "Series 2"
    r = http.get("/studies", params=[("PatientID", "PID-A"), ("includefield", "SOPClassesInStudy,00080020")])
    assert r.status_code == 200 and "00080062" in r.json()[0]


def test_fuzzy_person_names_ascii_and_cyrillic(client, filled):
    _, c = filled
    assert client.search_for_studies(search_filters={"PatientName": "john"}) == []
    fuzzy = client.search_for_studies(search_filters={"PatientName": "john"}, fuzzymatching=True)
    assert [value(s, "0020000D") for s in fuzzy] == [c.study_a]
    # Case-insensitive on a Cyrillic given name, fuzzy on any component.
    (ivanov,) = client.search_for_studies(search_filters={"PatientName": "иван"}, fuzzymatching=True)
    assert value(ivanov, "00100010") == {"Alphabetic": "Иванов^Иван"}
    (exact,) = client.search_for_studies(search_filters={"PatientName": "ИВАНОВ*"})
    assert value(exact, "0020000D") == c.study_c


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"NoSuchAttribute": "x"}, "NoSuchAttribute"),
        ({"StudyDate": "2024-13"}, "StudyDate"),
        ({"limit": "-1"}, "limit"),
        ({"includefield": "Bogus"}, "Bogus"),
        ({"StudyInstanceUID": "1.2.x"}, "StudyInstanceUID"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
    ],
)
def test_bad_search_is_400_naming_the_problem(http, params, named):
    r = http.get("/studies", params=params)
    assert r.status_code == 400
    assert named in r.json()["error"]
    assert http.get("/studies").status_code == 200  # still serving


def test_token_is_required(filled):
    node, c = filled
    for path in ("/studies", f"/studies/{c.study_a}", f"/studies/{c.study_a}/metadata"):
        assert httpx.get(node.url + "/dicom-web" + path).status_code == 401


# -- WADO-RS ---------------------------------------------------------------------------


def test_retrieve_study_is_byte_identical(http, client, filled):
    _, c = filled
    r = http.get(f"/studies/{c.study_a}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    assert int(r.headers["content-length"]) == len(r.content)
    parts = split_multipart(r)
    sent = c.in_study(c.study_a)
    assert len(parts) == len(sent) == 5
    for headers, body in parts:
        assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        sop = dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID
        assert dataset_bytes_of(body) == dataset_bytes(sent[sop])

    # dicomweb-client parses the same instances.
    datasets = client.retrieve_study(c.study_a)
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(sent)
    series = client.retrieve_series(c.study_a, c.series_a2)
    assert len(series) == 2


def dataset_bytes_of(part10: bytes) -> bytes:
    """dataset_bytes() for bytes in memory."""
    import struct

    (meta_len,) = struct.unpack("<I", part10[140:144])
    return part10[144 + meta_len :]


def test_retrieve_instance_as_stored_including_jpeg(client, http, filled):
    _, c = filled
    ds = client.retrieve_instance(c.study_b, c.series_b, c.jpeg, media_types=(("application/dicom", "*"),))
    assert ds.SOPInstanceUID == c.jpeg
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    r = http.get(f"/studies/{c.study_b}/series/{c.series_b}/instances/{c.jpeg}")
    ((headers, body),) = split_multipart(r)
    assert headers["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.4.50")
    assert dataset_bytes_of(body) == dataset_bytes(c.files[c.jpeg])


def test_retrieve_study_metadata_with_bulk_data_uris(client, http, filled):
    _, c = filled
    metadata = client.retrieve_study_metadata(c.study_b)
    assert sorted(value(m, "00080018") for m in metadata) == sorted([c.multiframe, c.jpeg])
    multiframe = next(m for m in metadata if value(m, "00080018") == c.multiframe)
    assert value(multiframe, "00100020") == "PID-B"
    assert value(multiframe, "00280010") == 32  # Rows
    pixel = multiframe["7FE00010"]
    assert "Value" not in pixel and "InlineBinary" not in pixel
    uri = pixel["BulkDataURI"]
    assert uri.endswith(f"/instances/{c.multiframe}/bulkdata/7FE00010")
    # The URI resolves to the pixel data, frame by frame.
    assert client.retrieve_bulkdata(uri) == c.frames

    (cyrillic,) = client.retrieve_series_metadata(
        c.study_c, value(client.search_for_series(c.study_c)[0], "0020000E")
    )
    assert value(cyrillic, "00100010") == {"Alphabetic": "Иванов^Иван"}
    assert value(cyrillic, "00280010") == 32
    icc = cyrillic["00282000"]["BulkDataURI"]
    assert icc.endswith("/bulkdata/00282000")
    assert client.retrieve_bulkdata(icc) == [c.icc_profile]
    r = http.get(icc.split("/dicom-web", 1)[1][:-8] + "7FE00011")
    assert r.status_code == 404 and "no bulk data element" in r.json()["error"]


def test_frames_of_native_and_encapsulated_pixel_data(client, http, filled):
    _, c = filled
    frames = client.retrieve_instance_frames(c.study_b, c.series_b, c.multiframe, frame_numbers=[3, 1])
    assert frames == [c.frames[2], c.frames[0]]
    r = http.get(
        f"/studies/{c.study_b}/series/{c.series_b}/instances/{c.multiframe}/frames/2",
        headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    ((headers, body),) = split_multipart(r)
    assert headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert body == c.frames[1]

    r = http.get(
        f"/studies/{c.study_b}/series/{c.series_b}/instances/{c.jpeg}/frames/2,1",
        headers={"Accept": 'multipart/related; type="image/jpeg"'},
    )
    assert r.status_code == 200
    assert [body for _, body in split_multipart(r)] == [c.jpeg_frames[1], c.jpeg_frames[0]]

    r = http.get(f"/studies/{c.study_b}/series/{c.series_b}/instances/{c.multiframe}/frames/4")
    assert r.status_code == 404 and "3 frame(s)" in r.json()["error"]
    r = http.get(f"/studies/{c.study_b}/series/{c.series_b}/instances/{c.multiframe}/frames/0")
    assert r.status_code == 400


def test_zip_form_unpacks_to_the_same_instances(http, filled):
    _, c = filled
    r = http.get(f"/studies/{c.study_a}", headers={"Accept": "application/zip"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.testzip() is None
        members = {Path(n).stem: z.read(n) for n in z.namelist()}
    sent = c.in_study(c.study_a)
    assert set(members) == set(sent)
    for sop, data in members.items():
        assert dataset_bytes_of(data) == dataset_bytes(sent[sop])


def test_unknown_uids_are_404(http, filled):
    _, c = filled
    for path, named in [
        ("/studies/1.2.3.4", "study 1.2.3.4"),
        (f"/studies/{c.study_a}/series/{c.series_b}", f"series {c.series_b}"),  # a series of another study
        (f"/studies/{c.study_a}/series/{c.series_a1}/instances/1.2.3", "instance 1.2.3"),
        ("/studies/1.2.3.4/metadata", "study 1.2.3.4"),
        ("/studies/not-a-uid", "not-a-uid"),
    ]:
        r = http.get(path)
        assert r.status_code == 404, path
        assert named in r.json()["error"]


def test_unsatisfiable_accept_is_406(http, filled):
    _, c = filled
    for accept in (
        # MPEG-2: a syntax the node can neither store these in nor write.
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.100',
        "image/png",
        'multipart/related; type="application/dicom+xml"',
    ):
        r = http.get(f"/studies/{c.study_a}", headers={"Accept": accept})
        assert r.status_code == 406, accept
        assert "served as stored" in r.json()["error"]
    # JPEG baseline cannot hold the 16-bit multi-frame of study B: asked for exactly that, 406.
    r = http.get(
        f"/studies/{c.study_b}",
        headers={
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
        },
    )
    assert r.status_code == 406, r.text
    assert "JPEG baseline holds 8-bit samples" in r.json()["error"]
    r = http.get(f"/studies/{c.study_a}/metadata", headers={"Accept": "application/dicom+xml"})
    assert r.status_code == 406
