"""Read-through QIDO-RS latency: a study only Orthanc holds, asked of the node vs of Orthanc itself.

    python -m bench.read_through_query [--studies 50] [--queries 40]

Orthanc (Debian, DICOMweb plugin) holds ``--studies`` one-instance studies;
the node holds a few of its own and has Orthanc as its one
``read_through = true`` remote (``[cache].query = "on-miss"``).  Each round
asks, interleaved, by a different AccessionNumber over one keep-alive
HTTP connection per server:

- ``node miss``: ``GET /dicom-web/studies?AccessionNumber=`` of a study only
  Orthanc holds (local miss, one C-FIND association to Orthanc, merge);
- ``orthanc qido``: the same QIDO asked of Orthanc's own DICOMweb (the
  reference: asking the upstream directly);
- ``orthanc c-find``: one pynetdicom association to Orthanc with that C-FIND
  (what the node's miss path must do at least);
- ``node hit``: a study the node holds (no upstream asked).

Prints median and p95 in ms and the ratio of each to ``orthanc qido``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT

from bench.corpus import write_corpus
from tests import harness
from tests.harness import Orthanc, RunningNode, median, node_config, percentile


def _c_find(orthanc: Orthanc, accession: str) -> int:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(STUDY_ROOT)
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.ae_title)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.AccessionNumber = accession
    query.StudyInstanceUID = ""
    found = sum(
        1 for status, ds in assoc.send_c_find(query, STUDY_ROOT) if ds is not None and status.Status != 0
    )
    assoc.release()
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-read-through-"))
    upstream_files = write_corpus(
        root / "up", studies=args.studies, series=1, instances=1, accession_prefix="UP"
    )
    write_corpus(root / "local", studies=5, series=1, instances=1, accession_prefix="LO")
    orthanc = Orthanc(root / "orthanc").start()
    node = None
    try:
        harness.storescu(orthanc.ae_title, orthanc.dicom_port, *upstream_files)
        config = node_config(
            root / "node", cache={"query": "on-miss"}, remotes=[orthanc.remote(read_through=True)]
        )
        node = RunningNode(root / "node", config).start()
        harness.storescu(node.ae_title, node.dicom_port, root / "local")
        times: dict[str, list[float]] = {
            "node miss": [],
            "orthanc qido": [],
            "orthanc c-find": [],
            "node hit": [],
        }
        with httpx.Client(timeout=30) as to_node, httpx.Client(timeout=30) as to_orthanc:

            def qido(client: httpx.Client, base: str, accession: str) -> int:
                r = client.get(f"{base}/dicom-web/studies", params={"AccessionNumber": accession})
                r.raise_for_status()
                return len(r.json())

            calls = {
                "node miss": lambda a: qido(to_node, node.url, a),
                "orthanc qido": lambda a: qido(to_orthanc, orthanc.url, a),
                "orthanc c-find": lambda a: _c_find(orthanc, a),
                "node hit": lambda a: qido(to_node, node.url, f"LO{int(a[2:]) % 5:05d}"),
            }
            for i in range(args.queries + 3):  # three rounds of warm-up
                accession = f"UP{i % args.studies:05d}"
                for name, call in calls.items():
                    started = time.perf_counter()
                    found = call(accession)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert found == 1, (name, accession, found)
                    if i >= 3:
                        times[name].append(elapsed)
        reference = median(times["orthanc qido"])
        print(
            f"QIDO by AccessionNumber, {args.queries} queries each, interleaved; Orthanc holds {args.studies}"
        )
        for name, values in times.items():
            m = median(values)
            print(
                f"  {name:15s} median {m:7.2f} ms  p95 {percentile(values, 95):7.2f} ms  "
                f"x{m / reference:.2f} of orthanc qido"
            )
    finally:
        if node is not None:
            node.stop()
        orthanc.stop()


if __name__ == "__main__":
    main()
