"""A real Redis server on loopback, the Celery broker of the run-worker tests: Debian's redis-server, started by the
test in a temporary folder with persistence off. Tests that need it are marked `postgres` too (their Dagster
instance is in PostgreSQL), so they run in `make test-pg`, which `.ci/run` calls after installing both servers.
`redis_server` is also the benchmarks' (benchmarks/servers.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

MISSING = "no redis-server on this machine: install Debian's redis-server package"


@contextmanager
def redis_server() -> Iterator[str]:
    """A fresh server on a free loopback port for the block; its URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(MISSING)
    folder = tempfile.mkdtemp(prefix="cmp-redis-")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", folder, "--protected-mode", "yes"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as con:
                con.sendall(b"PING\r\n")
                if con.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_url():
    if shutil.which("redis-server") is None:
        if os.environ.get("CMP_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"CMP_REQUIRE_POSTGRES=1 (the PostgreSQL side of the suite) but {MISSING}")
        pytest.skip(MISSING)
    with redis_server() as url:
        yield url
