"""The provider's hosted card page and its signed callback; and the API answering while another process holds
`cmp.duckdb` open for writing (a pipeline run), with set-up queued and applied by the next api_sync_job."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from cmp_pipelines.core.payment_provider import SIGNATURE_HEADER
from tests.support.api import callback, hosted, monitor


def test_hosted_page_then_the_signed_callback_completes_the_payment(api, platform, api_instance):
    before = platform.balance("ACC00000002")
    with api.client("AGENTVIEW") as http:
        payment = hosted(http)
        page = http.get(payment["redirect_url"])
        assert page.status_code == 200 and "GBP 40.00" in page.text
        done = http.post(payment["redirect_url"], content=b"card_token=tok_customer_card",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert done.status_code == 200 and "SUCCEEDED" in done.text
        status = http.get(f"/v1/payments/{payment['payment_id']}").json()
        assert (status["status"], status["ledger"]["state"]) == ("SUCCEEDED", "DUE")
        assert status["provider_reference"].startswith("SBX-")
        monitor(api_instance)
    assert platform.balance("ACC00000002") == before - 4000


def test_a_declined_hosted_page_raises_the_event_and_a_pan_typed_there_is_refused(api, platform, api_instance):
    with api.client("SELFCARE_APP") as http:
        payment = hosted(http)
        typed = http.post(payment["redirect_url"], content=b"card_token=4111111111111111",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert typed.status_code == 422 and "4111111111111111" not in typed.text
        done = http.post(payment["redirect_url"], content=b"card_token=tok_decline_43",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert "DECLINED" in done.text
        status = http.get(f"/v1/payments/{payment['payment_id']}").json()
        assert (status["status"], status["reason_code"], status["reason"]) == ("DECLINED", "43", "Stolen card")
    monitor(api_instance)
    assert platform.payment_postings() == 0
    assert platform.query("SELECT source_ref, event_code FROM workflow_events") == \
        [(payment["payment_id"], "CARD_PAYMENT_FAILED")]


def test_bad_signatures_are_refused_and_change_nothing(api, platform):
    with api.client() as http:
        payment = hosted(http)
        session = payment["redirect_url"].rsplit("/", 1)[1]
        body = {"session_id": session, "status": "SUCCEEDED", "provider_reference": "SBX-FAKE"}
        refusals = [
            callback(http, body, secret=b"not-the-secret"),
            callback(http, body, raw=orjson.dumps({**body, "status": "DECLINED"})),  # body changed after signing
            callback(http, body, timestamp=int(time.time()) - 3600),  # replayed an hour later
            http.post("/v1/provider/callbacks", content=orjson.dumps(body)),  # unsigned
        ]
        for answer in refusals:
            assert answer.status_code == 401, answer.text
            assert answer.json()["field"] == SIGNATURE_HEADER
        assert "test-provider-secret" not in "".join(a.text for a in refusals)
        assert http.get(f"/v1/payments/{payment['payment_id']}").json()["status"] == "AWAITING_CARD"

        good = callback(http, body)
        assert good.status_code == 200 and good.json()["status"] == "SUCCEEDED"
        assert callback(http, body).status_code == 200  # the provider retrying the same callback is harmless
        conflict = callback(http, {**body, "status": "DECLINED", "reason_code": "05"})
        assert conflict.status_code == 409
        unknown = callback(http, {**body, "session_id": "hs_unknown"})
        assert unknown.status_code == 404
    assert platform.payment_postings() == 0  # nothing posted until the Ledger Monitor runs


HOLDER = """
import sys, time, duckdb

con = duckdb.connect(sys.argv[1])
con.execute("BEGIN TRANSACTION")
con.execute("UPDATE accounts SET name = name WHERE account_number = 'ACC00000001'")
print("holding", flush=True)
sys.stdin.readline()
con.execute("COMMIT")
con.close()
"""


@pytest.fixture
def store_held(platform):
    """Another process holds cmp.duckdb open read-write, as a pipeline run does, until the test lets go."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(platform.database)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    yield holder
    if holder.poll() is None:
        holder.communicate("\n", timeout=30)


def test_the_api_answers_while_a_pipeline_process_holds_the_store(api, platform, api_instance, store_held):
    with api.client("AGENTVIEW") as http:
        started = time.monotonic()
        queued = http.put("/v1/accounts/ACC00000008/card", json={"card_token": "tok_held_card", "last_four": "1881"})
        assert queued.status_code == 202, queued.text
        request = queued.json()
        assert request["status"] == "QUEUED" and queued.headers["Location"].endswith(request["request_id"])
        bad = http.put("/v1/accounts/ACC00000008/payment-type", json={"payment_type": "RECURRING_CARD",
                                                                      "card_token": "4111 1111 1111 1111"})
        assert bad.status_code == 422 and bad.json()["field"] == "card_token"  # refused now, never queued
        mandate = http.post("/v1/accounts/ACC00000009/mandates", json={
            "sort_code": "12-34-56", "bank_account": "12345678", "account_name": "A Customer"})
        assert mandate.status_code == 202
        hosted_payment = hosted(http, account="ACC00000008")
        assert http.get("/v1/accounts/ACC00000008/balance").status_code == 200
        assert http.get(f"/v1/payments/{hosted_payment['payment_id']}").status_code == 200
        assert http.get("/v1/accounts/ACC00000008/payments").json()["payments"][0]["status"] == "AWAITING_CARD"
        assert time.monotonic() - started < 5  # answered, not stuck behind the lock

        store_held.communicate("\n", timeout=30)  # the run ends
        monitor(api_instance)

        applied = http.get(queued.headers["Location"]).json()
        assert applied["status"] == "APPLIED" and applied["result"]["card"]["card_token"] == "tok_held_card"
        assert http.get(mandate.headers["Location"]).json()["result"]["status"] == "PENDING_SUBMISSION"
        paid = http.post("/v1/payments", json={"account_number": "ACC00000008", "amount": "3.00",
                                               "method": "CARD_ON_FILE"}, headers={"Idempotency-Key": "after"})
        assert paid.json()["status"] == "SUCCEEDED"
    assert platform.query("SELECT card_token, last_four FROM payment_cards WHERE account_number = 'ACC00000008'") \
        == [("tok_held_card", "1881")]
    assert platform.query("SELECT status FROM mandates WHERE account_number = 'ACC00000009'") == \
        [("PENDING_SUBMISSION",)]


def test_a_queued_request_refused_by_the_store_is_failed_with_its_field(api, platform, api_instance, store_held):
    with api.client() as http:
        queued = http.put("/v1/accounts/ACC00000010/payment-type", json={"payment_type": "RECURRING_CARD"})
        assert queued.status_code == 202
        store_held.communicate("\n", timeout=30)
        monitor(api_instance)
        failed = http.get(queued.headers["Location"]).json()
    assert failed["status"] == "FAILED"
    assert failed["problem"]["field"] == "card_token" and "card token" in failed["problem"]["detail"]
    assert platform.query("SELECT payment_type FROM accounts WHERE account_number = 'ACC00000010'") == [("MANUAL",)]


def test_set_up_applies_at_once_when_the_store_is_free(api, platform):
    with api.client("SELFCARE_APP") as http:
        answer = http.put("/v1/accounts/ACC00000011/payment-type", json={
            "payment_type": "RECURRING_CARD", "card_token": "tok_selfcare_11", "last_four": "1111",
            "expiry": "12/39"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["card"] == {"provider": "CARDPAY", "card_token": "tok_selfcare_11", "last_four": "1111",
                                         "expiry": "2039-12"}
        unknown = http.put("/v1/accounts/ACC09999999/card", json={"card_token": "tok_x_1234"})
        assert (unknown.status_code, unknown.json()["field"]) == (404, "account_number")
        expired = http.put("/v1/accounts/ACC00000011/card", json={"card_token": "tok_x_1234", "expiry": "01/20"})
        assert (expired.status_code, expired.json()["field"]) == (422, "expiry")
    assert platform.query("SELECT payment_type FROM accounts WHERE account_number = 'ACC00000011'") == \
        [("RECURRING_CARD",)]
    assert platform.query("SELECT cause FROM payment_type_changes WHERE account_number = 'ACC00000011'") == \
        [("api selfcare",)]

