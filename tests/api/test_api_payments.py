"""One-off payments through a real uvicorn server and httpx: auth, idempotency, validation, and every outcome
carried to the sales ledger by the Ledger Monitor (the sensor and api_sync_job, run headless)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from cmp_pipelines.core.config import load_rejection_codes
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import build_definitions
from cmp_pipelines.lib.headless import run_pending_sensors
from tests.support.api import ACCOUNT, monitor, pay, provider_config_with, register
from tests.support.dagster import flow_runs

CODES = load_rejection_codes(PROJECT_ROOT / "config").card_codes




def nothing_but_publishing(instance) -> bool:
    """Another pass finds no payment, outcome or set-up to move. (A test's own read-write connection to the
    main store can still ask for a read-model publish: the sensor sees the file change, not what changed.)"""
    runs = monitor(instance)
    keys = [instance.get_run_by_id(r.run_id).tags.get("dagster/run_key", "") for r in runs]
    return all(key.startswith("ledger-monitor:publish:") for key in keys)






def test_every_route_refuses_a_request_without_a_valid_key(api):
    routes = [("POST", "/v1/payments"), ("GET", "/v1/payments/PAY-1"), ("GET", f"/v1/accounts/{ACCOUNT}/payments"),
              ("GET", f"/v1/accounts/{ACCOUNT}/balance"), ("PUT", f"/v1/accounts/{ACCOUNT}/payment-type"),
              ("PUT", f"/v1/accounts/{ACCOUNT}/card"), ("POST", f"/v1/accounts/{ACCOUNT}/mandates"),
              ("GET", "/v1/setup-requests/SR-1")]
    for key, why in (("", "an API key is required in the X-API-Key header"), ("wrong", "the API key is not valid")):
        with api.client(key=key) as http:
            for method, path in routes:
                answer = http.request(method, path, json={})
                assert answer.status_code == 401, (method, path)
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["detail"] == why
                assert "wrong" not in answer.text


def test_a_card_payment_is_recorded_with_its_channel_and_posted_by_the_ledger_monitor(api, platform, api_instance):
    with api.client("IVR") as http:
        register(http, ACCOUNT, "tok_ivr_success_3")
        before = platform.balance(ACCOUNT)
        answer = pay(http, amount="12.34", reference="phone payment")
        assert answer.status_code == 201, answer.text
        payment = answer.json()
        assert (payment["status"], payment["channel"], payment["client_id"], payment["amount"]) == \
            ("SUCCEEDED", "IVR", "IVR", "12.34")
        assert payment["ledger"] == {"state": "DUE", "batch_id": None}
        assert http.get(f"/v1/accounts/{ACCOUNT}/balance").json()["awaiting_ledger"] == "12.34"

        run = monitor(api_instance)[0]
        records = api_instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        metadata = {r.event_log_entry.dagster_event.asset_key.path[-1]:
                    {k: v.value for k, v in r.event_log_entry.asset_materialization.metadata.items()}
                    for r in records.records}
        assert (metadata["one_off_ledger_postings"]["posted_now"], metadata["one_off_ledger_postings"]["posted_amount"],
                metadata["one_off_ledger_postings"]["workflow_events"]) == (1, "12.34", 0)
        assert metadata["api_read_model"]["accounts"] == 20

        assert platform.balance(ACCOUNT) == before - 1234
        status = http.get(f"/v1/payments/{payment['payment_id']}").json()
        assert (status["ledger"]["state"], status["workflow_event"]) == ("RECORDED", None)
        assert platform.query("SELECT channel, status, batch_id FROM one_off_payments") == \
            [("IVR", "SUCCEEDED", status["ledger"]["batch_id"])]
        assert platform.query("SELECT kind, amount_minor, source_ref FROM ledger_postings WHERE batch_id = ?",
                              [status["ledger"]["batch_id"]]) == [("PAYMENT", -1234, payment["payment_id"])]
        assert platform.files.exists(f"outbound/ledger/{status['ledger']['batch_id']}.json")
        balance = http.get(f"/v1/accounts/{ACCOUNT}/balance").json()
        assert balance["awaiting_ledger"] == "0.00"
        assert balance["balance"] == format_minor(before - 1234)
        assert nothing_but_publishing(api_instance)  # nothing new: nothing posted twice
        assert platform.payment_postings() == 1


def test_each_configured_decline_raises_the_workflow_event_and_posts_nothing(api, platform, api_instance):
    accounts = {code: f"ACC{index + 1:08d}" for index, code in enumerate(sorted(CODES))}
    before = {a: platform.balance(a) for a in accounts.values()}
    payments = {}
    with api.client("SELFCARE_APP") as http:
        for code, account in accounts.items():
            register(http, account, f"tok_decline_{code}")
            answer = pay(http, account=account, amount="5.00")
            assert answer.status_code == 201
            payments[answer.json()["payment_id"]] = code
            assert (answer.json()["status"], answer.json()["reason_code"], answer.json()["reason"]) == \
                ("DECLINED", code, CODES[code].description)

    monitor(api_instance)

    with api.client("SELFCARE_APP") as http:
        for payment_id in payments:
            seen = http.get(f"/v1/payments/{payment_id}").json()
            assert (seen["ledger"]["state"], seen["workflow_event"]) == \
                ("RECORDED", {"type": "ONE_OFF_PAYMENT", "code": "CARD_PAYMENT_FAILED"})
    assert {a: platform.balance(a) for a in accounts.values()} == before
    assert platform.payment_postings() == 0
    events = platform.query("SELECT source_ref, event_type, event_code, detail FROM workflow_events")
    assert {e[0]: e[1:3] for e in events} == {p: ("ONE_OFF_PAYMENT", "CARD_PAYMENT_FAILED") for p in payments}
    assert all(f"reason {payments[e[0]]} ({CODES[payments[e[0]]].description})" in e[3] for e in events)
    assert nothing_but_publishing(api_instance)
    assert len(platform.query("SELECT * FROM workflow_events")) == len(CODES)


def test_idempotency_key_replays_the_same_payment_and_refuses_another_body(api, platform, api_instance):
    with api.client() as http:
        register(http, ACCOUNT, "tok_agent_success")
        first = pay(http, key="order-1")
        again = pay(http, key="order-1")
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["payment_id"] == first.json()["payment_id"]
        other = pay(http, key="order-1", amount="99.99")
        assert other.status_code == 409
        assert other.json()["field"] == "Idempotency-Key"
        assert first.json()["payment_id"] in other.json()["detail"]
        missing = http.post("/v1/payments", json={"account_number": ACCOUNT, "amount": "1.00",
                                                  "method": "CARD_ON_FILE"})
        assert (missing.status_code, missing.json()["field"]) == (422, "Idempotency-Key")
    with api.client("IVR") as http:  # a key belongs to its client: another client's same key is a new payment
        ivr = pay(http, key="order-1")
        assert (ivr.status_code, ivr.json()["channel"]) == (201, "IVR")
        assert ivr.json()["payment_id"] != first.json()["payment_id"]
    before = platform.balance(ACCOUNT)
    monitor(api_instance)
    assert platform.payment_postings() == 2
    assert platform.balance(ACCOUNT) == before - 2 * 1234


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"amount": "12.3"}, "amount", "exactly two decimal places"),
    ({"amount": "-1.00"}, "amount", "exactly two decimal places"),
    ({"amount": "1e3"}, "amount", "exactly two decimal places"),
    ({"amount": 12.34}, "amount", "valid string"),
    ({"amount": "0.00"}, "amount", "more than 0.00"),
    ({"currency": "gbp"}, "currency", "ISO 4217"),
    ({"currency": "EUR"}, "currency", "billed in GBP"),
    ({"account_number": "acc 1"}, "account_number", "upper-case letters or digits"),
    ({"account_number": "4111 1111 1111 1111"}, "account_number", "looks like a card number"),
    ({"account_number": "ACC99999999"}, "account_number", "does not exist"),
    ({"method": "CASH"}, "method", "'CARD_ON_FILE' or 'HOSTED_PAGE'"),
    ({"account_number": "ACC00000004"}, "method", "no card on file"),
    ({"reference": "card 4111111111111111"}, "reference", "looks like a card number"),
    ({"reference": "x" * 41}, "reference", "at most 40 characters"),
    ({"tip": "1.00"}, "tip", "not a field"),
    ({"amount": None}, "amount", "valid string"),
])
def test_each_validation_error_is_a_problem_naming_the_field(api, change, field, words):
    with api.client() as http:
        register(http, ACCOUNT, "tok_valid_card")
        body = {"account_number": ACCOUNT, "amount": "12.34", "method": "CARD_ON_FILE", **change}
        answer = http.post("/v1/payments", json=body, headers={"Idempotency-Key": secrets.token_urlsafe(18)})
    assert answer.status_code in (404, 422), answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["field"] == field, problem
    assert words in problem["detail"], problem
    assert "4111111111111111" not in answer.text and "4111 1111 1111 1111" not in answer.text


def test_missing_fields_and_bad_json_are_problems_too(api):
    with api.client() as http:
        answer = http.post("/v1/payments", json={}, headers={"Idempotency-Key": "k1"})
        assert answer.status_code == 422
        assert {e["field"] for e in answer.json()["errors"]} == {"account_number", "amount", "method"}
        answer = http.post("/v1/payments", content=b"{not json", headers={"Idempotency-Key": "k2",
                                                                          "Content-Type": "application/json"})
        assert answer.status_code == 422 and answer.json()["field"] == "body"


def test_a_timeout_stays_pending_until_reconciliation_asks_the_provider(api, platform, api_instance, tmp_path,
                                                                         monkeypatch):
    outcomes = {}
    with api.client() as http:
        for account, token in (("ACC00000005", "tok_timeout"), ("ACC00000006", "tok_timeout_decline_51"),
                               ("ACC00000007", "tok_timeout_lost")):
            register(http, account, token)
            answer = pay(http, account=account, amount="20.00")
            assert (answer.status_code, answer.json()["status"]) == (201, "PENDING")
            outcomes[account] = answer.json()["payment_id"]
        before = platform.balance("ACC00000005")
        assert nothing_but_publishing(api_instance)  # not overdue yet (reconcile_after_seconds: 30)

        provider_config_with(tmp_path, monkeypatch, reconcile_after_seconds=0)
        monitor(api_instance)

        status = {a: http.get(f"/v1/payments/{p}").json() for a, p in outcomes.items()}
    assert {a: (s["status"], s["reason_code"]) for a, s in status.items()} == {
        "ACC00000005": ("SUCCEEDED", None), "ACC00000006": ("DECLINED", "51"),
        "ACC00000007": ("FAILED", "NOT_RECEIVED")}
    assert platform.balance("ACC00000005") == before - 2000
    assert platform.payment_postings() == 1
    assert sorted(r[0] for r in platform.query("SELECT source_ref FROM workflow_events")) == \
        sorted([outcomes["ACC00000006"], outcomes["ACC00000007"]])
    assert nothing_but_publishing(api_instance)
    assert platform.payment_postings() == 1


class _SensorClock(datetime):
    """The Ledger Monitor's clock, held still from the test's start: its run key changes every 5 minutes, and a
    slow machine must not cross that boundary in the middle of the test."""

    at = datetime.now(UTC)
    shift = timedelta(0)

    @classmethod
    def now(cls, tz=None):
        return (_SensorClock.at + cls.shift).astimezone(tz)


class _FiveMinutesLater(_SensorClock):
    shift = timedelta(minutes=5)


def test_a_crash_after_posting_resumes_without_posting_twice(api, platform, api_instance, monkeypatch):
    from cmp_pipelines.defs.one_off import flow as one_off
    from cmp_pipelines.defs.one_off import sensors

    with api.client() as http:
        register(http, ACCOUNT, "tok_crash_card")
        paid = pay(http, amount="8.08").json()
    before = platform.balance(ACCOUNT)
    monkeypatch.setattr(_SensorClock, "at", datetime.now(UTC))
    monkeypatch.setattr(sensors, "datetime", _SensorClock)
    real = one_off.write_posting_file
    monkeypatch.setattr(one_off, "write_posting_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    [crashed] = flow_runs(run_pending_sensors(build_definitions(), api_instance, max_ticks=3, echo=lambda _: None))
    assert not crashed.success and "disk gone" in crashed.error
    assert platform.balance(ACCOUNT) == before - 808  # the run's ledger transaction had committed, once

    monkeypatch.setattr(one_off, "write_posting_file", real)
    assert monitor(api_instance) == []  # as under the daemon: the failed run's key is spent...
    monkeypatch.setattr(sensors, "datetime", _FiveMinutesLater)
    [retried] = monitor(api_instance)  # ...and the same work gets a new key in the next 5-minute bucket
    assert retried.run_id != crashed.run_id

    assert platform.balance(ACCOUNT) == before - 808
    [(batch, output)] = platform.query("SELECT batch_id, output_path FROM batches WHERE feed = 'one_off'")
    assert output == f"outbound/ledger/{batch}.json" and platform.files.exists(output)
    with api.client() as http:
        assert http.get(f"/v1/payments/{paid['payment_id']}").json()["ledger"] == {"state": "RECORDED",
                                                                                   "batch_id": batch}


def test_twin_requests_racing_with_one_key_make_one_payment(api, platform, api_instance):
    from concurrent.futures import ThreadPoolExecutor

    with api.client() as http:
        register(http, ACCOUNT, "tok_twins")
    before = platform.balance(ACCOUNT)

    def send(_):
        with api.client() as http:
            return pay(http, key="twin-key", amount="2.50")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(16)))
    assert {a.status_code for a in answers} <= {200, 201} and [a.status_code for a in answers].count(201) == 1
    assert len({a.json()["payment_id"] for a in answers}) == 1
    monitor(api_instance)
    assert platform.balance(ACCOUNT) == before - 250


def test_no_payment_id_reads_as_a_card_number_in_a_message():
    """A payment id is echoed in messages that are scanned for card numbers (409 on a reused key). With the date's
    digits next to random hex digits, about 1 id in 100 formed a Luhn-valid run and came back masked."""
    from datetime import UTC, datetime

    from cmp_pipelines.api.payments import payment_id
    from cmp_pipelines.core.cards import mask_pans_in

    ids = {payment_id(datetime(2026, 12, 2, tzinfo=UTC)) for _ in range(20_000)}
    assert len(ids) == 20_000 and all(i.startswith("PAY-20261202-P") and len(i) == 26 for i in ids)
    assert [i for i in ids if mask_pans_in(f"used by payment {i} with") != f"used by payment {i} with"] == []
