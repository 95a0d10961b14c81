"""One-off payments through a real API server configured for Stripe (provider: STRIPE), Stripe being the local
server that answers as its API does: a saved card charged off-session, a decline with its mapped rejection code,
an SCA card sent to Checkout and completed by Stripe's signed webhook, a forged or replayed webhook refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import yaml

from cmp_pipelines.core.settings import PROJECT_ROOT
from tests.support.api import pay, register, running_api
from tests.support.stripe_openapi import check_object
from tests.support.stripe_stub import FIXTURES, running_stub, stripe_object

SECRET = "whsec_api_test_0123456789"
ACCOUNT = "ACC00000007"


@pytest.fixture
def stripe_api(platform, monkeypatch, tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    for f in (PROJECT_ROOT / "config").glob("*.yaml"):
        (config / f.name).write_text(f.read_text())
    provider = yaml.safe_load((config / "payment_provider.yaml").read_text())
    provider["payment_provider"]["provider"] = "STRIPE"
    (config / "payment_provider.yaml").write_text(yaml.safe_dump(provider))
    monkeypatch.setenv("CMP_CONFIG_DIR", str(config))
    monkeypatch.setenv("CMP_STRIPE_SECRET_KEY", "sk_test_api")
    monkeypatch.setenv("CMP_STRIPE_WEBHOOK_SECRET", SECRET)
    with running_stub() as stub:
        monkeypatch.setenv("CMP_STRIPE_API_BASE", stub.url)
        with running_api(platform) as api:
            yield api, stub


def webhook(event_id: str, session_id: str, intent: str) -> tuple[bytes, dict]:
    session = stripe_object("checkout.session", id=session_id, payment_status="paid", status="complete",
                            payment_intent=intent)
    event = {**FIXTURES["event"], "id": event_id, "type": "checkout.session.completed", "data": {"object": session}}
    check_object("event", event)  # what Stripe sends, by its specification
    body = json.dumps(event).encode()
    at = int(time.time())
    digest = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={at},v1={digest}", "Content-Type": "application/json"}


def test_card_on_file_decline_and_sca_through_checkout_and_the_webhook(stripe_api):
    api, stub = stripe_api
    with api.client("AGENTVIEW") as http:
        register(http, ACCOUNT, "cus_Api0007-pm_card_visa")
        paid = pay(http, ACCOUNT, amount="12.34")
        assert paid.status_code == 201, paid.text
        assert (paid.json()["status"], paid.json()["provider"]) == ("SUCCEEDED", "STRIPE")
        assert paid.json()["provider_reference"].startswith("pi_stub")
        sent = stub.requests[-1]
        assert (sent["params"]["amount"], sent["params"]["off_session"], sent["headers"]["idempotency-key"]) == \
            ("1234", "true", f"charge-{paid.json()['payment_id']}")

        register(http, ACCOUNT, "cus_Api0007-pm_card_chargeDeclinedInsufficientFunds")
        declined = pay(http, ACCOUNT, amount="5.00").json()
        assert (declined["status"], declined["reason_code"], declined["reason"]) == \
            ("DECLINED", "51", "Insufficient funds")

        register(http, ACCOUNT, "cus_Api0007-pm_card_authenticationRequired")
        sca = pay(http, ACCOUNT, amount="40.00")
        assert sca.status_code == 201
        payment = sca.json()
        assert payment["status"] == "AWAITING_CARD"
        assert payment["redirect_url"].startswith("https://checkout.stripe.com/c/pay/cs_test_stub")
        assert sca.headers["Location"] == payment["redirect_url"]
        session_id = payment["redirect_url"].rsplit("/", 1)[1]

    with api.client("AGENTVIEW", key="") as anyone:  # Stripe calls without an API key: the signature is the proof
        body, headers = webhook("evt_api_1", session_id, "pi_stub_sca")
        forged = anyone.post("/v1/provider/callbacks", content=body.replace(b"paid", b"paid "), headers=headers)
        assert forged.status_code == 401 and forged.json()["field"] == "Stripe-Signature"
        done = anyone.post("/v1/provider/callbacks", content=body, headers=headers)
        assert done.status_code == 200, done.text
        assert done.json() == {"payment_id": payment["payment_id"], "status": "SUCCEEDED"}
        replay = anyone.post("/v1/provider/callbacks", content=body, headers=headers)
        assert (replay.status_code, replay.json()["detail"]) == (
            401, "callback refused: event evt_api_1 was already received (replayed webhook)")
    with api.client("AGENTVIEW") as http:
        final = http.get(f"/v1/payments/{payment['payment_id']}").json()
    assert (final["status"], final["provider_reference"], final["amount"]) == ("SUCCEEDED", "pi_stub_sca", "40.00")
