"""Where the node's time goes: py-spy on a node while it serves one workload.

    python -m bench.profile tiny|associate|associate120 [--fast-path off] [--count N] [--fsync off]

``py-spy`` must be on PATH or in the venv (``pip install py-spy``).  The
node is sampled with ``--gil`` (only the thread holding the GIL, i.e. where
its Python CPU goes); the summary prints the share of the wall time the
GIL was held, then the functions with the largest inclusive and own share
of those samples.  Workloads: ``tiny`` is DCMTK storescu sending N 32x32
instances over one association; ``associate`` / ``associate120`` are N
associations from a raw-socket peer proposing 1 / 120 contexts (associate,
C-ECHO, release).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.association import one_association, proposals
from bench.corpus import write_corpus
from tests.harness import NODE_AE, RunningNode, node_config, nodelay_env

_LINE = re.compile(r" \((?:.*/)?([^/:]+):\d+\)")


def summarize(raw: Path, wall_s: float, rate: int, top: int = 30) -> None:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_LINE.sub(r" (\1)", f) for f in stack.split(";")]
        n = int(count)
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        print("no samples")
        return
    print(f"GIL held {total / rate / wall_s:.0%} of {wall_s:.1f} s ({total} samples at {rate} Hz)")
    print("-- inclusive share of GIL samples")
    for frame, n in inclusive.most_common(top):
        print(f"{n / total:6.1%}  {frame[:120]}")
    print("-- own share")
    for frame, n in own.most_common(top // 2):
        print(f"{n / total:6.1%}  {frame[:120]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=("tiny", "associate", "associate120"))
    ap.add_argument("--fast-path", choices=("on", "off"), default="on")
    ap.add_argument("--fsync", choices=("on", "off"), default="on")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--rate", type=int, default=1000)
    a = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    dicom, storage = {"fast_path": a.fast_path == "on"}, {"fsync": a.fsync == "on"}
    config = node_config(tmp / "node", dicom=dicom, storage=storage)
    node = RunningNode(tmp / "node", config).start()
    raw = tmp / "profile.txt"
    try:
        files = []
        if a.workload == "tiny":
            files = write_corpus(tmp / "tiny", studies=1, series=1, instances=a.count, size="tiny")
            for f in files:
                f.read_bytes()
        recorder = subprocess.Popen(
            [spy, "record", "--gil", "-r", str(a.rate), "-f", "raw", "-o", str(raw)]
            + ["-p", str(node.proc.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        started = time.perf_counter()
        if a.workload == "tiny":
            subprocess.run(
                ["storescu", "-aec", NODE_AE, "127.0.0.1", str(node.dicom_port), *map(str, files)],
                check=True,
                capture_output=True,
                env=nodelay_env(),
            )
        else:
            contexts = proposals()["1 context" if a.workload == "associate" else "120 contexts"]
            for _ in range(a.count):
                one_association(node.dicom_port, NODE_AE, contexts)
        wall = time.perf_counter() - started
        recorder.send_signal(2)
        recorder.wait(30)
        print(f"{a.workload}: {a.count} in {wall:.2f} s ({a.count / wall:.0f}/s), fast path {a.fast_path}")
        summarize(raw, wall, a.rate)
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
