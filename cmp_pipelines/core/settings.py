"""Where the platform keeps its files; every path honours the environment so tests and CI stay isolated."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
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


def _scratch_base() -> str:
    """Memory-backed /dev/shm when it is writable with room to spare, else the system temp folder. A
    container's default /dev/shm is 64 MB, which a large partner file would fill."""
    folder = "/dev/shm"
    try:
        stats = os.statvfs(folder)
    except OSError:
        return tempfile.gettempdir()
    roomy = stats.f_bavail * stats.f_frsize >= SCRATCH_MIN_FREE
    return folder if roomy and os.access(folder, os.W_OK) else tempfile.gettempdir()


SCRATCH_PREFIX = "cmp-scratch-"


def scratch_dir() -> str:
    """This process's own folder for big intermediate files (a file's decrypted records for DuckDB, a document
    on its way to encryption). It is named after the process, so when a run is killed mid-step the next run
    start (`sweep_scratch`) knows its owner is gone and removes the decrypted partner data it left. The folder
    must be ours (the temp folders are shared): a folder or link someone else put under that name is refused."""
    from cmp_pipelines.core.processes import token

    folder = os.path.join(_scratch_base(), f"{SCRATCH_PREFIX}{token()}")
    if folder not in _MADE:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        status = os.lstat(folder)
        if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or stat.S_IMODE(status.st_mode) != 0o700:
            raise PermissionError(f"scratch folder {folder} is not this user's private folder; refusing to use it")
        _MADE.add(folder)
        atexit.register(shutil.rmtree, folder, True)
    return folder


_MADE: set[str] = set()


def sweep_scratch() -> list[str]:
    """Remove the scratch folders of processes that are gone (both possible places, whichever is in use now);
    returns what was removed."""
    from cmp_pipelines.core.processes import alive

    removed = []
    for base in {"/dev/shm", tempfile.gettempdir()}:
        try:
            entries = os.listdir(base)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(base, name)
            if (name.startswith(SCRATCH_PREFIX) and not alive(name[len(SCRATCH_PREFIX):])
                    and os.path.isdir(path) and not os.path.islink(path)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


# ---- which store holds what persists -------------------------------------------------------------------------

DATABASE_URL_SETTING = "CMP_DATABASE_URL"
POSTGRES_SCHEMES = ("postgresql", "postgres")


class StoreSettingError(ValueError):
    pass


def redact_url(url: str) -> str:
    """The URL with its password replaced, so a setting can be named in a message or a log line."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Store:
    """Where the system of record lives: the embedded DuckDB file (unset `CMP_DATABASE_URL`) or PostgreSQL."""

    backend: str  # "duckdb" or "postgres"
    path: Path | None = None
    url: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.backend == "duckdb" else redact_url(self.url or "")


def store() -> Store:
    """Read at call time, like `paths()`. A set but malformed setting is refused here, naming the setting and
    never echoing a password."""
    url = (os.environ.get(DATABASE_URL_SETTING) or "").strip()
    if not url:
        return Store("duckdb", path=paths().database)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in POSTGRES_SCHEMES:
        raise StoreSettingError(
            f"{DATABASE_URL_SETTING} must be a postgresql:// URL (or unset for the embedded DuckDB file); "
            f"got {redact_url(url) if sep else 'a value without a scheme'}"
        )
    return Store("postgres", url=url)


API_POOL_SETTING = "CMP_API_DB_POOL_SIZE"


def api_pool_size() -> int:
    """Connections each API process keeps to the PostgreSQL store (default 10): a request holds one for a statement
    or a set-up transaction, so this bounds the requests that touch the store at once, not those served."""
    raw = (os.environ.get(API_POOL_SETTING) or "10").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise StoreSettingError(f"{API_POOL_SETTING} must be a whole number of connections from 1 to 1000; got {raw!r}")
    return int(raw)


POOL_LIMIT_SETTING = "CMP_DB_POOL_LIMIT"
DEFAULT_POSTGRES_POOL_LIMIT = 4


def store_pool_limit() -> int:
    """Slots of the `cmp_db` pool: 1 on the embedded store (DuckDB admits one writing process), on PostgreSQL
    `CMP_DB_POOL_LIMIT` (default 4: runs in parallel, each one PostgreSQL transaction per step)."""
    raw = (os.environ.get(POOL_LIMIT_SETTING) or "").strip()
    on_postgres = store().backend == "postgres"
    if not raw:
        return DEFAULT_POSTGRES_POOL_LIMIT if on_postgres else 1
    if not raw.isdigit() or int(raw) < 1:
        raise StoreSettingError(f"{POOL_LIMIT_SETTING} must be a whole number of runs, 1 or more; got {raw!r}")
    if not on_postgres and int(raw) != 1:
        raise StoreSettingError(
            f"{POOL_LIMIT_SETTING}={raw} needs {DATABASE_URL_SETTING}: the embedded DuckDB store admits one writing "
            "process, so its pool stays 1")
    return int(raw)


RUN_NICE_SETTING = "CMP_RUN_NICE"
DEFAULT_POSTGRES_RUN_NICE = 10


def run_nice() -> int:
    """The nice value a run's own process takes at its start (0-19; `CMP_RUN_NICE`). On PostgreSQL 10 by default:
    the API answers from the same store while runs post, and on a machine both share, a batch should wait for an
    interactive request rather than the other way round (benchmarks/README: the API's p99 while a 1M file posts).
    On the embedded store 0: a run there holds the one-writer file and the API's set-up requests wait for it, so
    slowing it helps no one. PostgreSQL's own backends are never reniced: one holding a lock or a WAL buffer while
    it waits for the CPU stalls everyone behind it (measured: the API's p99 rose, not fell)."""
    raw = (os.environ.get(RUN_NICE_SETTING) or "").strip()
    if not raw:
        return DEFAULT_POSTGRES_RUN_NICE if store().backend == "postgres" else 0
    if not raw.isdigit() or int(raw) > 19:
        raise StoreSettingError(f"{RUN_NICE_SETTING} must be a whole number from 0 to 19 (the nice value of a run's "
                                f"process; 0 leaves it as launched); got {raw!r}")
    return int(raw)
