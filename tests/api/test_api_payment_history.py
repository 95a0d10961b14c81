"""`GET /v1/accounts/{acc}/payments` through a real server: an account that paid every way through the real flows,
plus one-off payments made through the API itself, as the Ledger Monitor publishes them; paging, filters, errors,
and the same rows the CLI shows."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from click.testing import CliRunner

from cmp_pipelines.cli import main
from tests.support.api import monitor, pay
from tests.support.history import ACCOUNT, every_kind_of_payment


def test_the_history_of_every_flow_and_the_apis_own_payments_pages_and_filters(api, platform, api_instance):
    every_kind_of_payment(platform)
    api.publish()
    today = datetime.now(UTC).date().isoformat()
    with api.client("AGENTVIEW") as http:
        paid = pay(http, ACCOUNT, amount="12.34", reference="phone")
        assert paid.status_code == 201 and paid.json()["status"] == "SUCCEEDED", paid.text
        hosted = http.post("/v1/payments", json={"account_number": ACCOUNT, "amount": "40.00", "method": "HOSTED_PAGE"},
                           headers={"Idempotency-Key": secrets.token_urlsafe(18)})
        assert hosted.status_code == 201, hosted.text
        monitor(api_instance)  # the Ledger Monitor posts the success and publishes the history

        everything = http.get(f"/v1/accounts/{ACCOUNT}/payments").json()
        assert (everything["total"], everything["next_offset"]) == (10, None)
        one_off = [(p["date"], p["method"], p["amount"], p["status"], p["reference"])
                   for p in everything["payments"] if p["source"] == "ONE_OFF"]
        assert sorted(one_off) == [(today, "CARD_ON_FILE", "12.34", "SUCCEEDED", "phone"),
                                   (today, "HOSTED_PAGE", "40.00", "AWAITING_CARD", None)]
        cli = json.loads(CliRunner().invoke(main, ["accounts", "payments", ACCOUNT, "--json"]).output)
        # the CLI reads the main store, which holds final one-off payments only (and not their free-text
        # reference): the same rows but the hosted one
        final = [p | {"reference": None} if p["source"] == "ONE_OFF" else p
                 for p in everything["payments"] if p["status"] != "AWAITING_CARD"]
        assert final == cli["payments"] and len(final) == 9
        [succeeded] = [p for p in cli["payments"] if p["source"] == "ONE_OFF"]
        assert succeeded["payment_ref"] == paid.json()["payment_id"] and succeeded["batch_id"].startswith("OOP")

        pages = [http.get(f"/v1/accounts/{ACCOUNT}/payments", params={"limit": 4, "offset": o}).json()
                 for o in (0, 4, 8)]
        assert [p["next_offset"] for p in pages] == [4, 8, None]
        assert [row for p in pages for row in p["payments"]] == everything["payments"]

        returns = http.get(f"/v1/accounts/{ACCOUNT}/payments", params={"method": "DIRECT_DEBIT", "kind": "RETURN"})
        assert [(p["amount"], p["status"], p["reason_code"], p["reason"]) for p in returns.json()["payments"]] == \
            [("120.00", "RETRY_SCHEDULED", "ARUDD0", "Refer to payer")]
        november = http.get(f"/v1/accounts/{ACCOUNT}/payments", params={"from": "2026-11-01", "to": "2026-11-30",
                                                                        "status": "HARD_DECLINE"}).json()
        assert [(p["date"], p["kind"], p["amount"]) for p in november["payments"]] == [("2026-11-26", "REVERSAL",
                                                                                       "80.00")]


def test_unknown_accounts_and_bad_filters_are_refused_naming_the_field(api, platform):
    every_kind_of_payment(platform)
    api.publish()
    with api.client("SELFCARE_APP") as http:
        missing = http.get("/v1/accounts/ACC09999999/payments")
        assert (missing.status_code, missing.json()["detail"]) == (404, "account ACC09999999 does not exist")
        method = http.get(f"/v1/accounts/{ACCOUNT}/payments", params={"method": "BITCOIN"})
        assert method.status_code == 422 and method.json()["field"] == "method"
        dates = http.get(f"/v1/accounts/{ACCOUNT}/payments", params={"from": "2026-12-02", "to": "2026-12-01"})
        assert (dates.status_code, dates.json()["detail"]) == (422, "from: 2026-12-02 is after to 2026-12-01")
        limit = http.get(f"/v1/accounts/{ACCOUNT}/payments", params={"limit": 501})
        assert limit.status_code == 422 and limit.json()["field"] == "limit"
