"""Issue 18 item 10: the API's log never holds a key or a card number, whatever a client puts in the URL; and
`api keys init` shows a new key once, on its own output, and writes only its hash."""

from __future__ import annotations

import logging
import os
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from cmp_pipelines.api.redact import REDACTED, redact_target
from cmp_pipelines.core.config_payments import hash_key, write_key_hash
from cmp_pipelines.core.settings import paths
from tests.support.api import KEYS, free_port, serve_api

CARD = "4111111111111111"
CARD_FORMS = (CARD, "4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444", "5555_5555_5555_4444",
              "4111%201111%201111%201111")


@pytest.mark.parametrize(("target", "shown"), [
    ("/v1/accounts/ACC00000001/balance", "/v1/accounts/ACC00000001/balance"),
    ("/v1/accounts/ACC1/payments?status=PENDING&limit=5", "/v1/accounts/ACC1/payments?status=PENDING&limit=5"),
    ("/v1/accounts/ACC00000001/balance?api_key=cmp_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
     f"/v1/accounts/ACC00000001/balance?api_key={REDACTED}"),
    ("/v1/payments/cmp_abcdefghijklmnopqrstuvwxyz", f"/v1/payments/{REDACTED}"),
    ("/v1/payments/test-agent-key-0123456789abcdef", f"/v1/payments/{REDACTED}"),
    ("/v1/payments/PAY-20261201-0123456789AB", "/v1/payments/PAY-20261201-0123456789AB"),
    ("/sandbox-provider/pay/hs_0123456789abcdef01234567", "/sandbox-provider/pay/hs_0123456789abcdef01234567"),
    ("/v1/accounts/4111%201111%201111%201111/balance", "/v1/accounts/************1111/balance"),
    ("/v1/accounts/5555_5555_5555_4444/balance", "/v1/accounts/************4444/balance"),
    ("/v1/payments?card=4111111111111111&x=1", f"/v1/payments?card={REDACTED}&x={REDACTED}"),
    ("/v1/payments?status=4111111111111111", f"/v1/payments?status={REDACTED}"),
    ("/v1/payments?limit=" + "9" * 30, f"/v1/payments?limit={REDACTED}"),
    ("/v1/payments?cmp_abcdefghijklmnopqrstuvwxyz", f"/v1/payments?{REDACTED}"),
    ("/soap/payment-setup?wsdl", "/soap/payment-setup?wsdl"),
])
def test_request_targets_are_redacted_before_they_are_logged(target, shown):
    assert redact_target(target) == shown


def test_the_served_api_logs_no_key_or_card_number_sent_in_a_url(platform):
    """`cmp-pipelines api serve` in its own process, its access log captured whole."""
    write_key_hash(paths().keys_dir, "IVR", hash_key(KEYS["IVR"]))
    key = KEYS["IVR"]
    port = free_port()
    server = serve_api(dict(os.environ), port, 60)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            statuses = [
                http.get(f"/v1/accounts/ACC00000001/balance?api_key={key}").status_code,  # key in the query
                http.get(f"/v1/accounts/ACC00000001/balance?X-API-Key={quote(key)}&limit=3").status_code,
                http.get(f"/v1/payments/{key}", headers={"X-API-Key": key}).status_code,  # key as a path segment
                http.get(f"/{key}/v1/payments").status_code,
                http.get("/v1/accounts/4111%201111%201111%201111/balance", headers={"X-API-Key": key}).status_code,
                http.get(f"/v1/accounts/{CARD}/payments?status=PENDING", headers={"X-API-Key": key}).status_code,
                http.get("/v1/accounts/5555_5555_5555_4444/balance", headers={"X-API-Key": key}).status_code,
                http.post(f"/v1/payments?card={CARD}", json={}, headers={"X-API-Key": key}).status_code,
                http.get("/v1/accounts/ACC00000001/payments?status=PENDING&limit=5",
                         headers={"X-API-Key": key}).status_code,
            ]
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert statuses == [401, 401, 404, 404, 422, 422, 422, 422, 200]
    for secret in (key, quote(key), *CARD_FORMS):
        assert secret not in output, secret
    assert output.count(REDACTED) >= 5
    assert "/v1/accounts/************1111/balance" in output
    assert "/v1/accounts/ACC00000001/payments?status=PENDING&limit=5" in output  # what is harmless stays readable


def test_keys_init_shows_each_key_once_and_writes_only_its_hash(platform, caplog):
    from cmp_pipelines.cli import main

    caplog.set_level(logging.DEBUG)
    result = CliRunner().invoke(main, ["api", "keys", "init", "--client", "IVR", "--rotate"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith("IVR (IVR): cmp_")
    key = line.split(": ", 1)[1]
    assert result.output.count(key) == 1
    assert all(key not in record.getMessage() for record in caplog.records)
    written = [p for p in platform.root.rglob("*") if p.is_file()]
    assert all(key.encode() not in p.read_bytes() for p in written)
    assert hash_key(key).encode() in (paths().keys_dir / "api_clients.sha256").read_bytes()
