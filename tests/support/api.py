"""A real uvicorn server on a free loopback port over the `platform` store, and httpx clients per channel."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from cmp_pipelines.core.config_payments import hash_key, write_key_hash
from cmp_pipelines.core.settings import paths
from tests.support.dagster import flow_runs

# The API app (FastAPI, uvicorn) and the code location are imported where used, not here: the root conftest
# imports this module, and every test process (each xdist worker, the controller) would pay for them at collection.

KEYS = {"AGENTVIEW": "test-agent-key-0123456789abcdef", "SELFCARE_APP": "test-selfcare-key-0123456789abcdef",
        "IVR": "test-ivr-key-0123456789abcdef", "BACKOFFICE": "test-backoffice-key-0123456789abcdef"}


def serve_api(env: dict, port: int, start_seconds: float, *args: str) -> subprocess.Popen:
    """`cmp-pipelines api serve [args]` in its own process, output captured, returned once /health answers."""
    server = subprocess.Popen([sys.executable, "-m", "cmp_pipelines.cli", "api", "serve", "--port", str(port), *args],
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
        from cmp_pipelines.defs.one_off.flow import publish_accounts

        with self.platform.connect() as con:
            publish_accounts(con, datetime.now(UTC))


@contextmanager
def running_api(platform) -> Iterator[Api]:
    """The API app under uvicorn on a free loopback port, over the `platform` store with the test clients' keys and
    the read model published; the app reads its configuration and provider from the environment set before."""
    import uvicorn

    from cmp_pipelines.api.app import create_app

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
    try:
        yield server_api
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def api(platform, monkeypatch):
    monkeypatch.setenv("CMP_PROVIDER_SECRET", "test-provider-secret")
    with running_api(platform) as server_api:
        yield server_api


@pytest.fixture
def api_instance(instance):
    """A Dagster instance for the Ledger Monitor's headless runs."""
    return instance


# Shared by the API test modules (payments, hosted page, secrets, serve-and-publish).
ACCOUNT = "ACC00000003"


def monitor(instance) -> list:
    """What the daemon does: the Ledger Monitor sensor ticks and its api_sync_job runs."""
    from cmp_pipelines.definitions import defs
    from cmp_pipelines.lib.headless import run_pending_sensors

    runs = flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))
    assert all(r.success for r in runs), [r.error for r in runs]
    return runs


def pay(http, account: str = ACCOUNT, amount: str = "12.34", key: str | None = None, **extra):
    body = {"account_number": account, "amount": amount, "method": "CARD_ON_FILE", **extra}
    return http.post("/v1/payments", json=body, headers={"Idempotency-Key": key or secrets.token_urlsafe(18)})


def register(http, account: str, token: str):
    answer = http.put(f"/v1/accounts/{account}/card", json={"card_token": token, "last_four": "4242"})
    assert answer.status_code == 200, answer.text
    return answer.json()


SECRET = b"test-provider-secret"


def hosted(http, account: str = "ACC00000002", amount: str = "40.00") -> dict:
    answer = http.post("/v1/payments", json={"account_number": account, "amount": amount, "method": "HOSTED_PAGE"},
                       headers={"Idempotency-Key": secrets.token_urlsafe(18)})
    assert answer.status_code == 201, answer.text
    payment = answer.json()
    assert payment["status"] == "AWAITING_CARD" and payment["redirect_url"] == answer.headers["Location"]
    return payment


def callback(http, body: dict, secret: bytes = SECRET, timestamp: int | None = None, raw: bytes | None = None):
    """The provider's signed callback as the provider sends it."""
    import orjson

    from cmp_pipelines.core.payment_provider import SIGNATURE_HEADER, sign

    data = orjson.dumps(body)
    return http.post("/v1/provider/callbacks", content=raw or data,
                     headers={SIGNATURE_HEADER: sign(secret, data, timestamp), "Content-Type": "application/json"})


def provider_config_with(tmp_path, monkeypatch, **settings) -> None:
    """A copy of the project's configuration with `settings` changed in payment_provider.yaml, in force for the
    test (CMP_CONFIG_DIR)."""
    import shutil

    import yaml

    from cmp_pipelines.core.settings import PROJECT_ROOT

    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    document = yaml.safe_load((config / "payment_provider.yaml").read_text())
    document["payment_provider"].update(settings)
    (config / "payment_provider.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setenv("CMP_CONFIG_DIR", str(config))
