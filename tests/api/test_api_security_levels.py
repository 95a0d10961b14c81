"""API clients carry the security level config/api_clients.yaml gives them: a card refund is approved only by a
client whose level may APPROVE_REFUND (403 naming the rule otherwise, before anything about the account is
looked up), and the approved refund is paid by the next CARD-mode run and shows in the payment history."""

from __future__ import annotations

from datetime import date

from tests.support.api import register

ACCOUNT = "ACC00000006"
RULE = ("API client AGENTVIEW (security level AGENT) may not APPROVE_REFUND: config/security.yaml allows "
        "SUPERVISOR, ADMIN")


def test_only_a_client_whose_level_allows_it_approves_a_card_refund(api, platform):
    with api.client("SELFCARE_APP") as selfcare:
        register(selfcare, ACCOUNT, "tok_refund_0006")  # CUSTOMER may register a card
    body = {"amount": "12.50", "due_on": "2026-12-03", "reason": "double charge"}
    with api.client("AGENTVIEW") as agent:
        refused = agent.post(f"/v1/accounts/{ACCOUNT}/card-refunds", json=body)
        unknown = agent.post("/v1/accounts/ACC09999999/card-refunds", json=body)
    assert (refused.status_code, refused.headers["content-type"]) == (403, "application/problem+json")
    assert (refused.json()["detail"], refused.json()["field"]) == (RULE, "X-API-Key")
    assert (unknown.status_code, unknown.json()["detail"]) == (403, RULE)  # nothing learnt about the account
    assert platform.query("SELECT count(*) FROM card_refunds") == [(0,)]

    with api.client("BACKOFFICE") as backoffice:
        approved = backoffice.post(f"/v1/accounts/{ACCOUNT}/card-refunds", json=body)
        bad = backoffice.post(f"/v1/accounts/{ACCOUNT}/card-refunds", json={"amount": "12.5"})
    assert approved.status_code == 201, approved.text
    assert approved.json() == {"refund_id": "RFACC00000006-001", "account_number": ACCOUNT, "amount": "12.50",
                               "currency": "GBP", "due_on": "2026-12-03", "reason": "double charge",
                               "approved_by": "API client BACKOFFICE"}
    assert (bad.status_code, bad.json()["field"]) == (422, "amount")
    assert platform.query("SELECT refund_id, amount_minor, due_on, reason FROM card_refunds") == [
        ("RFACC00000006-001", 1250, date(2026, 12, 3), "double charge")]

    platform.card_day(date(2026, 12, 3))
    extract = platform.read_extract(date(2026, 12, 3))
    [refund] = [r for r in extract["transactions"] if r.get("refund_id") == "RFACC00000006-001"]
    assert (refund["amount"], refund["type"], refund["card_token"]) == ("12.50", "REFUND", "tok_refund_0006")
    api.publish()
    with api.client("BACKOFFICE") as backoffice:
        history = backoffice.get(f"/v1/accounts/{ACCOUNT}/payments", params={"kind": "REFUND"}).json()
    assert [(p["payment_ref"], p["amount"], p["status"], p["reference"]) for p in history["payments"]] == [
        ("RRFACC00000006-001-1", "12.50", "EXTRACTED", "RFACC00000006-001")]
