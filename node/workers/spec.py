"""What the supervisor hands a worker process (pickled on its stdin)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Settings

FORWARD_TOPIC = "forward:"  # a doorbell topic: rows queued for the forward job of the remote named after it


@dataclass(frozen=True)
class WorkerSpec:
    """One worker: its number, the node's settings, the inherited listening sockets, the run folder."""

    index: int  # 1..workers, for the log
    workers: int
    settings: Settings
    dimse_fd: int
    http_fd: int
    run_dir: Path
    supervisor_pid: int
    log_level: str = "info"

    @property
    def wake_dir(self) -> Path:
        return self.run_dir / "wake"

    @property
    def slots_dir(self) -> Path:
        return self.run_dir / "slots"

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / "metrics"
