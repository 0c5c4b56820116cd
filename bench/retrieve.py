"""C-GET and C-MOVE benchmark: the node beside Orthanc holding the same study, same run.

    python -m bench.retrieve [--instances 100] [--rounds 5] [--size ct]

One synthetic CT study (512x512x16 bit, ~513 KB an instance) is imported
into the node and stored into Orthanc.  Each round times, for each server:
DCMTK ``getscu`` retrieving the study with C-GET into a folder, and DCMTK
``movescu`` asking for a C-MOVE of the study to DCMTK ``storescp``.  Prints
the median instances/s and MB/s and the ratio node/Orthanc.  DCMTK and
Orthanc run with TCP_NODELAY=1; stored files are read before each round so
the page cache, not the disk, feeds the senders.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.corpus import write_corpus
from tests.harness import NODE_AE, Orthanc, RunningNode, StoreSCP, median, node_config, nodelay_env


def warm(folder: Path) -> None:
    """Read every file under *folder* (the server's store) into the page cache."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.read_bytes()


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=nodelay_env())
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:1])} failed: {(result.stdout + result.stderr)[-800:]}")
    return elapsed


def get_cmd(aec: str, port: int, study_uid: str, out: Path) -> list[str]:
    return [
        "getscu", "-aet", "BENCH", "-aec", aec, "-S", "-k", "0008,0052=STUDY",
        "-k", f"StudyInstanceUID={study_uid}", "-od", str(out), "127.0.0.1", str(port),
    ]  # fmt: skip


def move_cmd(aec: str, port: int, study_uid: str, dest: str) -> list[str]:
    return [
        "movescu", "-aet", "BENCH", "-aec", aec, "-aem", dest, "-S", "-k", "0008,0052=STUDY",
        "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--size", choices=("ct", "tiny"), default="ct")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-retrieve-"))
    servers: list = []
    try:
        paths = write_corpus(tmp / "corpus", studies=1, series=1, instances=a.instances, size=a.size)
        from pydicom import dcmread

        study_uid = dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
        mb = sum(p.stat().st_size for p in paths) / 1e6

        storescp = StoreSCP(tmp / "storescp").start()
        servers.append(storescp)
        node = RunningNode(tmp / "node", node_config(tmp / "node", remotes=[storescp.remote()]))
        result = node.cli("import", "-q", str(tmp / "corpus"))
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        node.start()
        servers.append(node)
        orthanc = Orthanc(tmp / "orthanc", modalities={"storescp": (storescp.ae_title, storescp.port)})
        orthanc.start()
        servers.append(orthanc)
        subprocess.run(
            ["storescu", "-aec", orthanc.ae_title, "127.0.0.1", str(orthanc.dicom_port), *map(str, paths)],
            check=True,
            capture_output=True,
            env=nodelay_env(),
        )
        targets = {
            "node": (NODE_AE, node.dicom_port, node.storage),
            "orthanc": (orthanc.ae_title, orthanc.dicom_port, orthanc.root / "db"),
        }
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(a.rounds):
            for name, (aec, port, store) in targets.items():
                out = tmp / "got"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                warm(store)
                times.setdefault(("C-GET", name), []).append(timed(get_cmd(aec, port, study_uid, out)))
                got = len(list(out.iterdir()))
                if got != a.instances:
                    raise RuntimeError(f"C-GET from {name} brought {got} of {a.instances} instances")
                shutil.rmtree(storescp.folder, ignore_errors=True)
                storescp.folder.mkdir()
                warm(store)
                times.setdefault(("C-MOVE", name), []).append(
                    timed(move_cmd(aec, port, study_uid, storescp.ae_title))
                )
                got = len(storescp.files())
                if got != a.instances:
                    raise RuntimeError(f"C-MOVE from {name} delivered {got} of {a.instances} instances")
        print(f"{a.instances} instances, {mb:.1f} MB, median of {a.rounds} rounds")
        print(f"{'op':7} {'server':8} {'inst/s':>8} {'MB/s':>7}")
        for op in ("C-GET", "C-MOVE"):
            rates = {}
            for name in targets:
                t = median(times[(op, name)])
                rates[name] = a.instances / t
                print(f"{op:7} {name:8} {a.instances / t:8.1f} {mb / t:7.1f}")
            print(f"{op:7} ratio node/orthanc {rates['node'] / rates['orthanc']:.2f}")
    except Exception:
        for server in servers:
            if isinstance(server, RunningNode):
                print(server.log()[-3000:])
        raise
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
