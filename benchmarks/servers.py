"""The servers the benchmarks start for themselves, on loopback, stopped when the block ends: PostgreSQL (the tests'
own `tests/support/postgres.PostgresServer`: initdb + pg_ctl in a temporary folder), Redis (Debian's redis-server,
`tests/support/redis.redis_server`) and an S3 endpoint (moto's ThreadedMotoServer, as tests/support/s3.py).
One place for pg_nrp.py, pg_copy.py and distributed.py, which each had their own copy of the PostgreSQL start."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))


class MissingServer(RuntimeError):
    """A server binary this machine lacks; the message says which package brings it."""


@contextmanager
def postgres(url: str | None = None) -> Iterator[str]:
    """An admin URL (database `postgres`): `url` when given, else a server of our own started for the block."""
    if url:
        yield url
        return
    from tests.support.postgres import PostgresServer, _free_port, _server_user, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise MissingServer("no PostgreSQL binaries here: pass --url or install Debian's postgresql package")
    root = Path(tempfile.mkdtemp(prefix="cmp-pg-bench-"))
    root.chmod(0o755)
    server = PostgresServer(bindir, root, _free_port(), _server_user())
    try:
        server.start()
        yield server.url("postgres")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def redis() -> Iterator[str]:
    from tests.support.redis import redis_server

    try:
        with redis_server() as url:
            yield url
    except FileNotFoundError as exc:
        raise MissingServer(str(exc)) from None


@contextmanager
def s3() -> Iterator[str]:
    """The endpoint URL of an S3 server (moto, threads of this process)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line a request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
