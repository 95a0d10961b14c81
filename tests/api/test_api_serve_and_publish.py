"""`cmp-pipelines api serve` as the real command in its own process; and the read model following the
ledger after another flow posts (the Ledger Monitor sensor notices the main store changed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from cmp_pipelines.core.config_payments import hash_key, write_key_hash
from cmp_pipelines.core.money import format_minor, parse_amount
from cmp_pipelines.core.settings import paths
from tests.support.api import KEYS, free_port, monitor
from tests.support.platform import document, payment


def test_the_serve_command_answers_on_loopback_with_openapi_and_wsdl(platform):
    write_key_hash(paths().keys_dir, "IVR", hash_key(KEYS["IVR"]))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cmp_pipelines.cli", "api", "serve", "--port", str(port)],
                              env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "api serve did not start"
                time.sleep(0.1)
        assert health.json()["read_model_published_at"]  # published from the free store at start-up
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEYS["IVR"]}) as http:
            assert "/v1/payments" in http.get("/openapi.json").json()["paths"]
            assert "SetPaymentType" in http.get("/soap/payment-setup?wsdl").text
            balance = http.get("/v1/accounts/ACC00000001/balance")
            assert balance.status_code == 200
            assert balance.json()["balance"] == format_minor(platform.balance("ACC00000001"))
            assert http.get("/v1/accounts/4111111111111111/balance").status_code == 422
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "4111111111111111" not in output and KEYS["IVR"] not in output  # access log masks, never logs keys
    assert "************1111" in output


def test_balances_follow_an_nrp_posting_through_the_ledger_monitor(api, platform, api_instance):
    with api.client() as http:
        before = http.get("/v1/accounts/ACC00000001/balance").json()
        platform.drop("PAYPOINT-20261121-001.json.enc", document([payment("1", "ACC00000001", "7.50")]))
        monitor(api_instance)
        monitor(api_instance)  # the sensor may tick before the NRP run in one pass: a second pass republishes
        after = http.get("/v1/accounts/ACC00000001/balance").json()
    assert after["as_of"] > before["as_of"]
    assert after["balance"] == format_minor(platform.balance("ACC00000001"))
    assert parse_amount(before["balance"]) - parse_amount(after["balance"]) == 750


def test_the_monitor_republishes_once_the_queue_has_drained_not_after_every_run(api, platform, api_instance):
    """A backlog of partner files ends with one republish (issue 16): while another run is queued or under way the
    sensor asks for nothing; once it ends, one run key names the store's latest change."""
    import dagster as dg

    from cmp_pipelines.defs.one_off.sensors import work_key

    with api.client() as http:
        assert http.get("/v1/accounts/ACC00000001/balance").status_code == 200  # the read model is published
    stale = time.time() + 60
    os.utime(paths().database, (stale, stale))  # another run changed the store after the publish
    running = api_instance.add_run(dg.DagsterRun(job_name="non_recurring_payment_job", run_id="started-1",
                                                status=dg.DagsterRunStatus.STARTED))
    now = datetime.now(UTC)
    assert work_key(now, api_instance) is None
    api_instance.report_run_failed(running)  # the run under way has ended
    assert work_key(now, api_instance) == f"ledger-monitor:publish:{stale:.0f}"


def _api_threads() -> set[str]:
    import threading

    return {t.name for t in threading.enumerate() if t.name.startswith(("checkpoint ", "cmp-api"))}


@pytest.mark.parametrize("store", ["embedded", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_stopped_server_leaves_no_store_thread_behind(platform, monkeypatch, request, store):
    """The app closes what it built when the server stops: the API store's and the sandbox provider's checkpoint
    threads, PostgreSQL's pool workers (a thread left inside SQLite is what hung a forked crash-test child in CI)."""
    from tests.support.api import running_api

    monkeypatch.setenv("CMP_PROVIDER_SECRET", "test-provider-secret")
    if store == "postgres":
        from cmp_pipelines.core.db.copy_store import copy_to_postgres

        url = request.getfixturevalue("pg_store")
        assert copy_to_postgres(platform.database, url, replace=True).committed
        monkeypatch.setenv("CMP_DATABASE_URL", url)
    before = _api_threads()
    with running_api(platform) as server_api, server_api.client("IVR") as http:
        assert http.get("/v1/accounts/ACC00000001/balance").status_code == 200
        started = _api_threads() - before
        assert "checkpoint sandbox_provider.sqlite" in started
        assert ("checkpoint api.sqlite" in started) == (store == "embedded")
        assert any(name.startswith("cmp-api") for name in started) == (store == "postgres"), started
    deadline = time.monotonic() + 5
    while _api_threads() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _api_threads() - before == set()
