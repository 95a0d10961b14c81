"""The Stripe stub cannot drift from Stripe's API: requests and answers are held to Stripe's published OpenAPI
specification (tests/fixtures/stripe_openapi_subset.json), and a wrong one is caught."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import httpx
import pytest

from tests.support.stripe_openapi import SOURCE, SPEC, SpecViolation, check_object, check_request, check_response
from tests.support.stripe_stub import FIXTURES, serve_stub, stripe_object

GOOD_CHARGE = {"amount": "1234", "currency": "gbp", "customer": "cus_A1", "payment_method": "pm_card_visa",
               "off_session": "true", "confirm": "true", "metadata": {"merchant_reference": "PAY-1"}}


def test_the_pinned_specification_is_stripes_with_every_schema_it_refers_to():
    assert (SOURCE["repository"], SOURCE["path"], len(SOURCE["commit"]), len(SOURCE["git_blob"])) == (
        "stripe/openapi", "openapi/spec3.yaml", 40, 40)
    assert set(SOURCE["operations"]) == {"POST /v1/payment_intents", "GET /v1/payment_intents",
                                         "GET /v1/payment_intents/search",
                                         "POST /v1/checkout/sessions", "POST /v1/refunds"}
    spec = importlib.util.spec_from_file_location(
        "trim", Path(__file__).parents[1] / "fixtures" / "trim_stripe_openapi.py")
    trim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trim)
    again = trim.trim(copy.deepcopy(SPEC))  # trimming the subset keeps all of it: no $ref points outside
    assert again["paths"] == SPEC["paths"] and again["components"] == SPEC["components"]


def test_what_our_adapter_sends_and_the_stub_answers_match_the_specification():
    check_request("POST", "/v1/payment_intents", GOOD_CHARGE)
    check_request("GET", "/v1/payment_intents/search", {"query": "metadata['merchant_reference']:'P'", "limit": "1"})
    check_request("POST", "/v1/refunds", {"payment_intent": "pi_1", "amount": "100", "metadata": {"r": "RF-1"}})
    for kind, path in (("payment_intent", "/v1/payment_intents"), ("checkout.session", "/v1/checkout/sessions"),
                       ("refund", "/v1/refunds")):
        check_response("POST", path, 200, FIXTURES[kind])
    check_object("event", {**FIXTURES["event"], "data": {"object": FIXTURES["checkout.session"]}})


@pytest.mark.parametrize(("params", "message"), [
    ({**GOOD_CHARGE, "off_sesion": "true"}, "'off_sesion' was unexpected"),
    ({**GOOD_CHARGE, "amount": "12.34"}, "amount: '12.34' is not of type 'integer'"),
    ({k: v for k, v in GOOD_CHARGE.items() if k != "currency"}, "'currency' is a required property"),
    ({**GOOD_CHARGE, "capture_method": "sometimes"}, "capture_method: 'sometimes' is not one of"),
    ({**GOOD_CHARGE, "confirm": "yes"}, "confirm: 'yes' is not of type 'boolean'"),
])
def test_a_request_stripe_would_refuse_is_caught(params, message):
    with pytest.raises(SpecViolation, match=message.replace("(", r"\(").replace("[", r"\[")):
        check_request("POST", "/v1/payment_intents", params)


def test_a_nested_parameter_and_a_query_parameter_are_checked_too():
    session = {"mode": "payment", "success_url": "https://x.test/ok", "cancel_url": "https://x.test/no",
               "line_items": [{"quantity": "1", "price_data": {"currency": "gbp", "unit_amount": "100",
                                                               "product_data": {"name": "x"}, "colour": "red"}}]}
    with pytest.raises(SpecViolation, match="line_items.0.price_data: Additional properties"):
        check_request("POST", "/v1/checkout/sessions", session)
    with pytest.raises(SpecViolation, match="query: required; limit"):
        check_request("GET", "/v1/payment_intents/search", {"limit": "ten"})
    with pytest.raises(SpecViolation, match="is not an operation"):
        check_request("POST", "/v1/charges", {"amount": "100"})


@pytest.mark.parametrize(("change", "message"), [
    ({"status": "paid"}, "status: 'paid' is not one of"),
    ({"amount": "12.34"}, "amount: '12.34' is not of type 'integer'"),
    ({"id": None}, "id: None is not of type 'string'"),
])
def test_an_answer_stripe_would_not_give_is_caught(change, message):
    with pytest.raises(SpecViolation, match=message):
        check_response("POST", "/v1/payment_intents", 200, stripe_object("payment_intent", **change))
    with pytest.raises(SpecViolation, match="'error' is a required property"):
        check_response("POST", "/v1/payment_intents", 402, {"message": "declined"})


def test_the_running_stub_refuses_a_drifted_request_and_flags_a_drifted_answer():
    stub, server = serve_stub()
    try:
        wrong = httpx.post(f"{stub.url}/v1/payment_intents", data={**GOOD_CHARGE, "metadata": None, "surcharge": "1"},
                           headers={"Idempotency-Key": "k1"})
        assert wrong.status_code == 400 and "'surcharge' was unexpected" in wrong.json()["error"]["message"]
        route = stub._route
        stub._route = lambda *a: (lambda s, b, d: (s, {**b, "status": "done"}, d))(*route(*a))
        answer = httpx.post(f"{stub.url}/v1/payment_intents",
                            content="amount=100&currency=gbp&customer=cus_A1&payment_method=pm_card_visa"
                                    "&confirm=true&off_session=true",
                            headers={"Idempotency-Key": "k2", "Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 400 and "status: 'done' is not one of" in answer.json()["error"]["message"]
        assert [("invalid" in r) for r in stub.requests] == [True, True]
    finally:
        server.shutdown()
