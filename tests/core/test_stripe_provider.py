"""The Stripe adapter against a local server that answers as Stripe's API does (tests/support/stripe_stub.py):
every request checked against the parameters Stripe's library declares, every response built from Stripe's own
published objects. Off-session charges with idempotency keys, declines mapped to our rejection codes, SCA sent to
Checkout, timeouts and 5xx left for reconciliation, refunds, and webhooks verified by their Stripe-Signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from cmp_pipelines.core.config import load_rejection_codes
from cmp_pipelines.core.payment_provider import BadSignature, ProviderTimeout
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.core.stripe_provider import ActionRequired, StripeProvider, StripeSettings
from tests.support.stripe_openapi import check_object
from tests.support.stripe_stub import FIXTURES, running_stub, stripe_object

SECRET = "whsec_test_0123456789abcdef"
CUSTOMER = "cus_Q1w2e3r4t5"
REASONS = {code: c.description for code, c in load_rejection_codes(PROJECT_ROOT / "config").card_codes.items()}


@pytest.fixture
def stripe_api(tmp_path):
    with running_stub() as stub:
        yield provider_for(stub, tmp_path), stub


def provider_for(stub, tmp_path) -> StripeProvider:
    settings = StripeSettings(api_key="sk_test_stub", webhook_secret=SECRET,
                              decline_codes={"insufficient_funds": "51", "lost_card": "41", "stolen_card": "43",
                                             "expired_card": "54", "do_not_honor": "05"},
                              default_decline_code="05", success_url="https://example.test/paid",
                              cancel_url="https://example.test/cancelled", api_base=stub.url, timeout_seconds=1.0)
    return StripeProvider(settings, REASONS, tmp_path / "stripe_state.sqlite")


def charge(provider, reference: str, method: str, amount: int = 1234):
    return provider.charge(merchant_reference=reference, card_token=f"{CUSTOMER}-{method}", amount_minor=amount,
                           currency="GBP")


def test_a_saved_card_is_charged_off_session_once_per_reference(stripe_api):
    provider, stub = stripe_api
    first = charge(provider, "PAY-1", "pm_card_visa")
    again = charge(provider, "PAY-1", "pm_card_visa")
    assert (first.status, first.reason_code) == ("SUCCEEDED", None) and first.provider_reference.startswith("pi_")
    assert again == first and len(stub.intents) == 1  # the same idempotency key: Stripe answers the first result
    sent = stub.requests[0]
    assert (sent["method"], sent["path"], sent["headers"]["idempotency-key"]) == ("POST", "/v1/payment_intents",
                                                                                 "charge-PAY-1")
    assert sent["headers"]["authorization"] == "Bearer sk_test_stub"
    assert sent["params"] == {"amount": "1234", "currency": "gbp", "customer": CUSTOMER,
                              "payment_method": "pm_card_visa", "off_session": "true", "confirm": "true",
                              "metadata": {"merchant_reference": "PAY-1"}}


@pytest.mark.parametrize(("method", "code"), [
    ("pm_card_chargeDeclinedInsufficientFunds", "51"), ("pm_card_chargeDeclinedLostCard", "41"),
    ("pm_card_chargeDeclinedExpiredCard", "54"), ("pm_card_chargeDeclined", "05"),  # generic_decline: the default
])
def test_a_decline_code_maps_to_a_configured_rejection_code(stripe_api, method, code):
    provider, _ = stripe_api
    outcome = charge(provider, "PAY-2", method)
    assert (outcome.status, outcome.reason_code, outcome.reason) == ("DECLINED", code, REASONS[code])
    assert outcome.provider_reference.startswith("pi_")


@pytest.mark.parametrize("method", ["pm_card_authenticationRequired", "pm_card_threeDSecureRequired"])
def test_a_card_that_needs_its_holder_goes_to_checkout_for_the_same_amount(stripe_api, method):
    provider, stub = stripe_api
    with pytest.raises(ActionRequired) as caught:
        charge(provider, "PAY-3", method, amount=4000)
    session = caught.value.session
    assert session.redirect_url == f"https://checkout.stripe.com/c/pay/{session.session_id}"
    assert caught.value.provider_reference.startswith("pi_")
    checkout = stub.requests[-1]
    assert (checkout["path"], checkout["headers"]["idempotency-key"]) == ("/v1/checkout/sessions", "checkout-PAY-3")
    assert checkout["params"]["client_reference_id"] == "PAY-3"
    assert checkout["params"]["line_items"] == [{"quantity": "1", "price_data": {
        "currency": "gbp", "unit_amount": "4000", "product_data": {"name": "Account payment"}}}]


def test_a_timeout_or_a_5xx_leaves_the_outcome_to_reconciliation(stripe_api):
    provider, _ = stripe_api
    with pytest.raises(ProviderTimeout, match="APIConnectionError"):
        charge(provider, "PAY-4", "pm_timeout")
    with pytest.raises(ProviderTimeout, match="APIError"):
        charge(provider, "PAY-5", "pm_server_error")
    # the timed-out charge reached Stripe: reconciliation finds it; the 5xx one never existed there
    found = provider.lookup("PAY-4")
    assert found.status == "SUCCEEDED" and found.provider_reference.startswith("pi_")
    assert provider.lookup("PAY-5") is None
    assert provider.lookup("PAY-5' OR 'x") is None  # never put into a search query


def test_a_refund_of_a_payment_is_idempotent(stripe_api):
    provider, stub = stripe_api
    paid = charge(provider, "PAY-6", "pm_card_visa", amount=2500)
    first = provider.refund(provider_reference=paid.provider_reference, amount_minor=1000, refund_reference="RF-1")
    again = provider.refund(provider_reference=paid.provider_reference, amount_minor=1000, refund_reference="RF-1")
    assert first == again and first.startswith("re_")
    refunds = [r for r in stub.requests if r["path"] == "/v1/refunds"]
    assert [r["headers"]["idempotency-key"] for r in refunds] == ["refund-RF-1", "refund-RF-1"]
    assert refunds[0]["params"] == {"payment_intent": paid.provider_reference, "amount": "1000",
                                    "metadata": {"refund_reference": "RF-1"}}


def webhook(event_id: str, kind: str, session_id: str, payment_status: str = "paid") -> bytes:
    session = stripe_object("checkout.session", id=session_id, payment_status=payment_status, status="complete",
                            payment_intent="pi_stub000777")
    event = {**FIXTURES["event"], "id": event_id, "type": kind, "data": {"object": session}}
    check_object("event", event)  # what Stripe sends, by its specification
    return json.dumps(event).encode()


def signed(body: bytes, at: int | None = None, secret: str = SECRET) -> str:
    """Stripe's scheme, written from its documentation: t=<unix time>,v1=HMAC-SHA256(secret, "<t>.<body>")."""
    at = int(time.time()) if at is None else at
    return f"t={at},v1=" + hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def test_webhooks_are_verified_by_signature_age_and_taken_once(stripe_api):
    provider, _ = stripe_api
    body = webhook("evt_1", "checkout.session.completed", "cs_test_1")
    assert provider.verify_callback(body, signed(body), 300) == {
        "session_id": "cs_test_1", "status": "SUCCEEDED", "provider_reference": "pi_stub000777",
        "reason_code": None, "last_four": None}
    with pytest.raises(BadSignature, match="evt_1 was already received"):
        provider.verify_callback(body, signed(body), 300)
    expired = webhook("evt_2", "checkout.session.expired", "cs_test_2", payment_status="unpaid")
    assert provider.verify_callback(expired, signed(expired), 300)["status"] == "DECLINED"
    other = webhook("evt_3", "checkout.session.completed", "cs_test_3")
    with pytest.raises(BadSignature, match="No signatures found matching the expected signature"):
        provider.verify_callback(other, signed(other, secret="whsec_someone_else"), 300)
    with pytest.raises(BadSignature, match="Timestamp outside the tolerance zone"):
        provider.verify_callback(other, signed(other, at=int(time.time()) - 301), 300)
    with pytest.raises(BadSignature, match="header is missing"):
        provider.verify_callback(other, None, 300)
    assert provider.verify_callback(other, signed(other), 300)["session_id"] == "cs_test_3"  # refusals took nothing


def test_stripe_is_chosen_in_configuration_with_its_keys_from_the_environment(tmp_path, monkeypatch):
    import shutil

    import yaml

    from cmp_pipelines.core.config import ConfigError
    from cmp_pipelines.core.config_payments import load_provider_settings
    from cmp_pipelines.core.stripe_provider import stripe_from_config

    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CMP_STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("CMP_STRIPE_WEBHOOK_SECRET", raising=False)
    assert load_provider_settings(config).provider == "SANDBOX"  # the default
    with pytest.raises(ValueError, match=r"needs \$CMP_STRIPE_SECRET_KEY"):
        stripe_from_config(config, tmp_path / "keys")
    monkeypatch.setenv("CMP_STRIPE_SECRET_KEY", "sk_test_cfg")
    monkeypatch.setenv("CMP_STRIPE_WEBHOOK_SECRET", "whsec_cfg")
    assert stripe_from_config(config, tmp_path / "keys").settings.decline_codes["insufficient_funds"] == "51"
    document = yaml.safe_load((config / "payment_provider.yaml").read_text())
    document["payment_provider"]["stripe"]["decline_codes"]["lost_card"] = "99"
    (config / "payment_provider.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ValueError, match="stripe maps to 99, not card rejection codes"):
        stripe_from_config(config, tmp_path / "keys")
    document["payment_provider"]["provider"] = "STRIPE"
    del document["payment_provider"]["stripe"]
    (config / "payment_provider.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match="is required when the provider is STRIPE"):
        load_provider_settings(config)
