"""A real PostgreSQL server for the tests, started by the test session itself: `initdb` into a temporary folder,
`pg_ctl start` on a free loopback port with its unix socket in that folder too, stopped and removed at the end.

Each test gets a database of its own: `pg_url` an empty one, `pg_store` a copy (CREATE DATABASE ... TEMPLATE) of
one the session migrated once, which takes milliseconds where migrating would take a second.

Tests that need it are marked `postgres`. With no server binary on this machine they skip, saying why; under
`CMP_REQUIRE_POSTGRES=1` (`make test-pg`, and `.ci/run` around `make test`) they fail instead, so CI can
never pass by skipping them.
PostgreSQL refuses to run as root: as root the server runs as the `postgres` user (Debian's package creates it)
or `nobody`, in a folder made for it under the system temp folder.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "cmp"
TEMPLATE = "cmp_migrated_template"


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: $CMP_PG_BINDIR alone when set (an explicit choice is not second-guessed), else
    `pg_config --bindir`, Debian's /usr/lib/postgresql/<newest>/bin, /usr/local, then PATH."""
    if os.environ.get("CMP_PG_BINDIR"):
        folder = Path(os.environ["CMP_PG_BINDIR"])
        return folder if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file() else None
    candidates = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                             check=True).stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]),
                         reverse=True)
    candidates += ["/usr/local/bin", "/usr/local/pgsql/bin"]
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    run_as: str | None  # the user the server runs as when the tests run as root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                              check=check, cwd=self.root, **kwargs)

    def start(self) -> None:
        self.socket_dir.mkdir()
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        done = self._run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                         "--locale=C", "--no-sync", check=False)
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off -c max_connections=100")
        done = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                         "-o", options, "start", check=False)
        if done.returncode:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {log}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False)

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as con:
            con.execute(sql)


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


@pytest.fixture(scope="session")
def postgres_server():
    bindir = find_bindir()
    if bindir is None:
        reason = ("no PostgreSQL server binaries (initdb, pg_ctl) on this machine: install Debian's postgresql "
                  "package (apt-get install postgresql) or set CMP_PG_BINDIR")
        if os.environ.get("CMP_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"CMP_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="cmp-pg-"))
    root.chmod(0o755)
    server = None
    try:
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            server = PostgresServer(bindir, root / f"s{attempt}", _free_port(), _server_user())
            server.root.mkdir()
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


_names = itertools.count(1)


def _new_database(server: PostgresServer, template: str | None = None) -> str:
    name = f"t{os.getpid()}_{next(_names)}"
    server.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return name


@pytest.fixture
def pg_url(postgres_server) -> str:
    """An empty database of this test's own."""
    return postgres_server.url(_new_database(postgres_server))


@pytest.fixture(scope="session")
def pg_template(postgres_server) -> str:
    """A database migrated once for the session: every `pg_store` is a copy of it."""
    from cmp_pipelines.core.db.migrate import migrate

    postgres_server.execute(f"CREATE DATABASE {TEMPLATE}")
    migrate(postgres_server.url(TEMPLATE))
    return TEMPLATE


@pytest.fixture
def pg_store(postgres_server, pg_template) -> str:
    """The URL of a migrated store of this test's own."""
    return postgres_server.url(_new_database(postgres_server, pg_template))
