"""Where the platform keeps its files; every path honours the environment so tests and CI stay isolated."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    keys_dir: Path
    config_dir: Path
    expectations_dir: Path

    @property
    def database(self) -> Path:
        return self.data_dir / "cmp.duckdb"

    @property
    def inbound(self) -> Path:
        return self.data_dir / "inbound"

    @property
    def outbound(self) -> Path:
        return self.data_dir / "outbound"

    @property
    def archive(self) -> Path:
        return self.data_dir / "archive"

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.data_dir / "dagster_home")

    def skeleton(self) -> list[Path]:
        return [self.inbound, self.outbound, self.archive, self.quarantine, self.keys_dir]


def paths() -> Paths:
    """Resolve paths at call time (never at import) so `$CMP_DATA_DIR` set by a test or the CLI applies."""
    data_dir = Path(os.environ.get("CMP_DATA_DIR") or PROJECT_ROOT / "data").resolve()
    keys_dir = Path(os.environ.get("CMP_KEYS_DIR") or data_dir / "keys").resolve()
    config_dir = Path(os.environ.get("CMP_CONFIG_DIR") or PROJECT_ROOT / "config").resolve()
    expectations_dir = Path(os.environ.get("CMP_EXPECTATIONS_DIR") or PROJECT_ROOT / "expectations").resolve()
    return Paths(data_dir, keys_dir, config_dir, expectations_dir)


SCRATCH_MIN_FREE = 4 << 30  # a million-record file and its outputs fit several times over


def scratch_dir() -> str | None:
    """Where big intermediate files go (a file's records for DuckDB, a document on its way to encryption):
    memory-backed /dev/shm when it is writable with room to spare, else the system temp folder (None). A
    container's default /dev/shm is 64 MB, which a large partner file would fill."""
    folder = "/dev/shm"
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    roomy = stats.f_bavail * stats.f_frsize >= SCRATCH_MIN_FREE
    return folder if roomy and os.access(folder, os.W_OK) else None
