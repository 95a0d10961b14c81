"""A real uvicorn server on a free loopback port over the `platform` store, and httpx clients per channel."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import httpx
import pytest
import uvicorn

from cmp_pipelines.api.app import create_app
from cmp_pipelines.core.config_payments import hash_key, write_key_hash
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.one_off.flow import publish_accounts

KEYS = {"AGENTVIEW": "test-agent-key-0123456789abcdef", "SELFCARE_APP": "test-selfcare-key-0123456789abcdef",
        "IVR": "test-ivr-key-0123456789abcdef"}


def serve_api(env: dict, port: int, start_seconds: float) -> subprocess.Popen:
    """`cmp-pipelines api serve` in its own process, output captured, returned once /health answers."""
    server = subprocess.Popen([sys.executable, "-m", "cmp_pipelines.cli", "api", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + start_seconds
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() >= deadline:
                server.kill()
                raise AssertionError("api serve did not start") from None
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Api:
    base_url: str
    platform: object

    def client(self, client_id: str = "AGENTVIEW", key: str | None = None) -> httpx.Client:
        headers = {} if key == "" else {"X-API-Key": key or KEYS[client_id]}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10)

    def publish(self) -> None:
        with self.platform.connect() as con:
            publish_accounts(con, datetime.now(UTC))


@pytest.fixture
def api(platform, monkeypatch):
    monkeypatch.setenv("CMP_PROVIDER_SECRET", "test-provider-secret")
    for client_id, key in KEYS.items():
        write_key_hash(paths().keys_dir, client_id, hash_key(key))
    server_api = Api("", platform)
    server_api.publish()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(port=port), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    server_api.base_url = f"http://127.0.0.1:{port}"
    yield server_api
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def api_instance(tmp_path):
    """A Dagster instance for the Ledger Monitor's headless runs."""
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as test_instance:
        yield test_instance
