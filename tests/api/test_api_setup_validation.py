"""Set-up over REST: every refusal is a problem naming the field, refused before anything is queued or written."""

from __future__ import annotations

import pytest

ACCOUNT = "ACC00000013"


@pytest.mark.parametrize(("path", "body", "status", "field", "words"), [
    ("payment-type", {"payment_type": "CHEQUE"}, 422, "payment_type", "'MANUAL', 'RECURRING_CARD' or 'DIRECT_DEBIT'"),
    ("payment-type", {"payment_type": "RECURRING_CARD"}, 422, "card_token", "needs the provider's card token"),
    ("payment-type", {"payment_type": "MANUAL", "last_four": "1234"}, 422, "card_token", "token is required"),
    ("card", {}, 422, "card_token", "is required"),
    ("card", {"card_token": "tok ws"}, 422, "card_token", "provider's token"),
    ("card", {"card_token": "5555555555554444"}, 422, "card_token", "looks like a card number"),
    ("card", {"card_token": "tok_valid_1", "last_four": "12a4"}, 422, "last_four", "exactly four digits"),
    ("card", {"card_token": "tok_valid_1", "expiry": "2019-01"}, 422, "expiry", "expired in 2019-01"),
    ("card", {"card_token": "tok_valid_1", "provider": "PAYPOINT"}, 422, "provider", "not a configured card provider"),
    ("card", {"card_token": "tok_valid_1", "colour": "red"}, 422, "colour", "not a field"),
    ("mandates", {"sort_code": "12-34", "bank_account": "12345678", "account_name": "A B"}, 422, "sort_code",
     "6 digits"),
    ("mandates", {"sort_code": "123456", "bank_account": "1234", "account_name": "A B"}, 422, "bank_account",
     "8 digits"),
    ("mandates", {"sort_code": "123456", "bank_account": "12345678", "account_name": " "}, 422, "account_name",
     "1-60 characters"),
    ("mandates", {"sort_code": "123456", "bank_account": "12345678", "account_name": "A B", "reference": "ab"}, 422,
     "reference", "6-18 characters"),
    ("mandates", {"sort_code": "123456", "bank_account": "12345678"}, 422, "account_name", "is required"),
])
def test_each_set_up_refusal_names_the_field(api, platform, path, body, status, field, words):
    with api.client() as http:
        method = http.post if path == "mandates" else http.put
        answer = method(f"/v1/accounts/{ACCOUNT}/{path}", json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == field and words in answer.json()["detail"], answer.json()
    assert "5555555555554444" not in answer.text
    assert platform.query("SELECT count(*) FROM payment_cards WHERE account_number = ?", [ACCOUNT]) == [(0,)]
    assert platform.query("SELECT count(*) FROM mandates WHERE account_number = ?", [ACCOUNT]) == [(0,)]


def test_a_second_live_mandate_is_a_conflict(api):
    body = {"sort_code": "12-34-56", "bank_account": "12345678", "account_name": "A Customer"}
    with api.client() as http:
        first = http.post(f"/v1/accounts/{ACCOUNT}/mandates", json=body)
        second = http.post(f"/v1/accounts/{ACCOUNT}/mandates", json=body)
    assert first.status_code == 201 and first.json()["status"] == "PENDING_SUBMISSION"
    assert second.status_code == 409 and second.json()["field"] == "account_number"
