"""The API's main scenarios on both backends, the same test body for each: the embedded store (api.sqlite, the read
model, cmp.duckdb) and PostgreSQL (`CMP_DATABASE_URL`: everything in the store, tests/support/postgres.py's real
server, the platform's seeded store moved there with `db copy`). A real uvicorn server, httpx clients, and the
Ledger Monitor's sensor and api_sync_job run headless; ledger figures are read from the backend's own store.

Then PostgreSQL only: set-up recorded APPLIED in one transaction (a refused one leaves nothing); 50 concurrent
clients with twin keys racing in the same round (zero 5xx, one payment per key, the ledger exact after the
monitor); two Ledger Monitors at once and one killed before COMMIT (each payment posted once); the history of every
flow equal to the embedded query's; `api serve --workers 2` while another process holds cmp.duckdb."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from cmp_pipelines.core.db.api_postgres import pg_sql
from cmp_pipelines.core.db.api_store import ApiStore
from cmp_pipelines.core.db.copy_store import copy_to_postgres
from tests.support.api import ACCOUNT, Api, callback, hosted, monitor, pay, provider_config_with, register, running_api


@dataclass
class Backend:
    name: str
    platform: object
    url: str | None
    api: Api

    def query(self, sql: str, params=()) -> list[tuple]:
        """The main store: cmp.duckdb, or PostgreSQL."""
        if self.url is None:
            return self.platform.query(sql, list(params))
        with psycopg.connect(self.url) as con:
            return con.execute(pg_sql(sql), list(params) or None).fetchall()

    def payments(self, sql: str, params=()) -> list[tuple]:
        """The API's payment records; `{payments}` names their table."""
        if self.url is None:
            return [tuple(r) for r in ApiStore().query(sql.format(payments="payments"), params)]
        return self.query(sql.format(payments="api_payments"), params)

    def balance(self, account: str) -> int:
        return self.query("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE account_number = ?",
                          [account])[0][0]


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request, platform, monkeypatch, api_instance):
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_store")
        assert copy_to_postgres(platform.database, url, replace=True).committed
        monkeypatch.setenv("CMP_DATABASE_URL", url)
    monkeypatch.setenv("CMP_PROVIDER_SECRET", "test-provider-secret")
    with running_api(platform) as server_api:
        yield Backend(request.param, platform, url, server_api)


def test_create_replay_conflict_balance_history_and_the_monitor_posting_once(backend, api_instance):
    with backend.api.client("IVR") as http:
        register(http, ACCOUNT, "tok_ivr_success_3")
        before = backend.balance(ACCOUNT)
        key = secrets.token_urlsafe(18)
        first = pay(http, amount="12.34", key=key, reference="phone payment")
        assert first.status_code == 201, first.text
        payment = first.json()
        assert (payment["status"], payment["channel"], payment["amount"], payment["ledger"]) == \
            ("SUCCEEDED", "IVR", "12.34", {"state": "DUE", "batch_id": None})

        replay = pay(http, amount="12.34", key=key, reference="phone payment")
        assert (replay.status_code, replay.headers.get("Idempotent-Replayed")) == (200, "true")
        assert replay.json()["payment_id"] == payment["payment_id"]
        conflict = pay(http, amount="12.35", key=key, reference="phone payment")
        assert conflict.status_code == 409
        assert conflict.json()["detail"] == (f"Idempotency-Key was already used by payment {payment['payment_id']} "
                                             "with a different body; use a new key for a new payment")
        assert backend.payments("SELECT count(*) FROM {payments}") == [(1,)]

        balance = http.get(f"/v1/accounts/{ACCOUNT}/balance").json()
        assert (balance["awaiting_ledger"], balance["currency"]) == ("12.34", "GBP")
        history = http.get(f"/v1/accounts/{ACCOUNT}/payments", params={"method": "CARD_ON_FILE"}).json()
        assert [(p["payment_ref"], p["amount"], p["status"]) for p in history["payments"]] == \
            [(payment["payment_id"], "12.34", "SUCCEEDED")]

        monitor(api_instance)
        assert backend.balance(ACCOUNT) == before - 1234
        status = http.get(f"/v1/payments/{payment['payment_id']}").json()
        assert status["ledger"]["state"] == "RECORDED" and status["ledger"]["batch_id"]
        assert backend.query("SELECT channel, status, batch_id FROM one_off_payments") == \
            [("IVR", "SUCCEEDED", status["ledger"]["batch_id"])]
        assert backend.query("SELECT idempotency_key, amount_minor, source_ref FROM ledger_postings "
                             "WHERE batch_id = ?", [status["ledger"]["batch_id"]]) == \
            [(f"one_off:{payment['payment_id']}:PAYMENT", -1234, payment["payment_id"])]
        assert backend.query("SELECT kind, record_count, total_minor FROM batches WHERE batch_id = ?",
                             [status["ledger"]["batch_id"]]) == [("ONE_OFF_POSTING", 1, -1234)]
        assert http.get(f"/v1/accounts/{ACCOUNT}/balance").json()["awaiting_ledger"] == "0.00"

        monitor(api_instance)  # nothing new: posts nothing twice
        assert backend.balance(ACCOUNT) == before - 1234
        assert backend.query("SELECT count(*) FROM ledger_postings WHERE source_ref = ?",
                             [payment["payment_id"]]) == [(1,)]


def test_a_hosted_payment_finished_by_the_signed_callback_is_posted_exactly_once(backend, api_instance):
    before = backend.balance("ACC00000002")
    with backend.api.client("AGENTVIEW") as http:
        payment = hosted(http, amount="40.00")
        session = payment["redirect_url"].rsplit("/", 1)[1]
        body = {"session_id": session, "status": "SUCCEEDED", "provider_reference": "SBX-CB-1", "last_four": "4242"}
        answer = callback(http, body)
        assert answer.json() == {"payment_id": payment["payment_id"], "status": "SUCCEEDED"}
        assert callback(http, body).json()["status"] == "SUCCEEDED"  # the provider's retry changes nothing
        declined = callback(http, {**body, "status": "DECLINED", "reason_code": "05"})
        assert declined.status_code == 409
        monitor(api_instance)
        monitor(api_instance)
    assert backend.balance("ACC00000002") == before - 4000
    assert backend.query("SELECT count(*), sum(amount_minor) FROM ledger_postings WHERE source_ref = ?",
                         [payment["payment_id"]]) == [(1, -4000)]
    assert backend.payments("SELECT status, ledger_state, last_four FROM {payments}") == \
        [("SUCCEEDED", "RECORDED", "4242")]


def test_a_declined_payment_raises_the_event_and_posts_nothing(backend, api_instance):
    with backend.api.client("SELFCARE_APP") as http:
        register(http, ACCOUNT, "tok_decline_43")
        answer = pay(http, amount="9.99")
        assert (answer.status_code, answer.json()["status"], answer.json()["reason_code"]) == (201, "DECLINED", "43")
    monitor(api_instance)
    assert backend.query("SELECT count(*) FROM ledger_postings WHERE kind = 'PAYMENT'") == [(0,)]
    assert backend.query("SELECT source_ref, event_code, detail FROM workflow_events") == \
        [(answer.json()["payment_id"], "CARD_PAYMENT_FAILED",
          "one-off payment DECLINED: reason 43 (Stolen card), amount 9.99, channel SELFCARE; nothing posted")]
    with backend.api.client("AGENTVIEW") as http:
        events = http.get(f"/v1/accounts/{ACCOUNT}/events").json()["events"]
        # NEW, or DONE when the daemon's dispatcher (its sensor ticks in the same pass, and on PostgreSQL it sees
        # the store's events) has e-mailed the customer already: once, either way
        assert [(e["event_code"], e["source_ref"]) for e in events] == \
            [("CARD_PAYMENT_FAILED", answer.json()["payment_id"])]
        assert events[0]["status"] in ("NEW", "DONE"), events


def test_set_up_requests_are_applied_at_once(backend):
    with backend.api.client("AGENTVIEW") as http:
        card = http.put(f"/v1/accounts/{ACCOUNT}/card", json={"card_token": "tok_abc123", "last_four": "1111"})
        assert card.status_code == 200, card.text
        typed = http.put(f"/v1/accounts/{ACCOUNT}/payment-type", json={"payment_type": "RECURRING_CARD"})
        assert (typed.status_code, typed.json()["payment_type"]) == (200, "RECURRING_CARD")
        mandate = http.post("/v1/accounts/ACC00000004/mandates",
                            json={"sort_code": "12-34-56", "bank_account": "12345678", "account_name": "A Customer"})
        assert (mandate.status_code, mandate.json()["status"]) == (201, "PENDING_SUBMISSION"), mandate.text
        again = http.post("/v1/accounts/ACC00000004/mandates",
                          json={"sort_code": "12-34-56", "bank_account": "12345678", "account_name": "A Customer"})
        assert again.status_code == 409 and "already has mandate" in again.json()["detail"]
    with backend.api.client("BACKOFFICE") as office:
        refund = office.post(f"/v1/accounts/{ACCOUNT}/card-refunds",
                             json={"amount": "12.50", "due_on": "2026-12-03", "reason": "double charge"})
        assert refund.status_code == 201, refund.text
        assert refund.json() == {"refund_id": f"RF{ACCOUNT}-001", "account_number": ACCOUNT, "amount": "12.50",
                                 "currency": "GBP", "due_on": "2026-12-03", "reason": "double charge",
                                 "approved_by": "API client BACKOFFICE"}
    assert backend.query("SELECT refund_id, amount_minor, reason FROM card_refunds") == \
        [(f"RF{ACCOUNT}-001", 1250, "double charge")]
    assert backend.query("SELECT payment_type FROM accounts WHERE account_number = ?", [ACCOUNT]) == \
        [("RECURRING_CARD",)]
    assert backend.query("SELECT card_token, last_four FROM payment_cards WHERE account_number = ?", [ACCOUNT]) == \
        [("tok_abc123", "1111")]
    assert backend.query("SELECT status FROM mandates WHERE account_number = 'ACC00000004'") == \
        [("PENDING_SUBMISSION",)]


@pytest.fixture
def pg_backend(platform, monkeypatch, api_instance, pg_store):
    assert copy_to_postgres(platform.database, pg_store, replace=True).committed
    monkeypatch.setenv("CMP_DATABASE_URL", pg_store)
    monkeypatch.setenv("CMP_PROVIDER_SECRET", "test-provider-secret")
    with running_api(platform) as server_api:
        yield Backend("postgres", platform, pg_store, server_api)


@pytest.mark.postgres
def test_postgres_set_up_is_one_transaction_recorded_as_applied(pg_backend):
    (old_type,), = pg_backend.query("SELECT payment_type FROM accounts WHERE account_number = 'ACC00000005'")
    with pg_backend.api.client("AGENTVIEW") as http:
        # a card with RECURRING_CARD is applied together; a refused request (direct debit without a mandate)
        # leaves the account as it was and records nothing
        refused = http.put("/v1/accounts/ACC00000005/payment-type", json={"payment_type": "DIRECT_DEBIT"})
        assert (refused.status_code, refused.json()["detail"]) == \
            (422, "payment_type: direct debit needs a live mandate: create one for the account first")
        applied = http.put("/v1/accounts/ACC00000005/payment-type",
                           json={"payment_type": "RECURRING_CARD", "card_token": "tok_pg_card", "last_four": "4242"})
        assert applied.status_code == 200, applied.text
        assert applied.json()["card"]["card_token"] == "tok_pg_card"
        assert http.get("/health").json()["read_model_published_at"]
    assert pg_backend.query("SELECT kind, status, client_id, account_number FROM api_setup_requests") == \
        [("PAYMENT_TYPE", "APPLIED", "AGENTVIEW", "ACC00000005")]
    assert pg_backend.query("SELECT old_type, new_type, cause FROM payment_type_changes WHERE account_number = ?",
                            ["ACC00000005"]) == [(old_type, "RECURRING_CARD", "api agent")]
    assert not (pg_backend.platform.root / "api.sqlite").exists()  # no SQLite store on PostgreSQL


@pytest.mark.postgres
def test_fifty_concurrent_clients_with_duplicate_keys_on_postgres(pg_backend, api_instance):
    """50 threads with their own httpx client send 4 payments each in 4 rounds, every round started together (a
    barrier); in rounds 2 and 4 threads 2k and 2k+1 send the same key and body at the same moment: zero 5xx, one
    payment per key, both twins answered with it, and after the Ledger Monitor the ledger holds exactly the
    unique payments' sum."""
    accounts = [f"ACC{n:08d}" for n in range(1, 21)]
    with pg_backend.api.client("IVR") as http:
        for account in accounts:
            register(http, account, "tok_ivr_success_3")
    before = {a: pg_backend.balance(a) for a in accounts}
    run = secrets.token_hex(4)
    plan = [[(f"own-{run}-{t}-{j}", accounts[(t + j) % 20], f"{1 + t}.{j:02d}") if j % 2 == 0 else
             (f"twin-{run}-{t // 2}-{j}", accounts[(t // 2 + j) % 20], f"{100 + t // 2}.{j:02d}") for j in range(4)]
            for t in range(50)]
    rounds = threading.Barrier(50)
    answers: list[list[tuple]] = [[] for _ in range(50)]

    def client(t: int) -> None:
        with httpx.Client(base_url=pg_backend.api.base_url, headers={"X-API-Key": "test-ivr-key-0123456789abcdef"},
                          timeout=60) as c:
            for key, account, amount in plan[t]:
                rounds.wait()
                r = pay(c, account=account, amount=amount, key=key)
                answers[t].append((key, r.status_code, r.json().get("payment_id"), account, amount))

    threads = [threading.Thread(target=client, args=(t,)) for t in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    flat = [a for per in answers for a in per]
    assert len(flat) == 200
    assert all(code < 500 for _, code, _, _, _ in flat), Counter(code for _, code, _, _, _ in flat)
    by_key: dict[str, set] = {}
    for key, _, payment_id, _, _ in flat:
        by_key.setdefault(key, set()).add(payment_id)
    assert len(by_key) == 150 and all(len(ids) == 1 for ids in by_key.values())
    assert Counter(code for _, code, _, _, _ in flat) == Counter({201: 150, 200: 50})
    rows = pg_backend.query("SELECT idempotency_key, count(*) FROM api_payments GROUP BY 1")
    assert len(rows) == 150 and {n for _, n in rows} == {1}

    monitor(api_instance)
    expected: dict[str, int] = Counter()
    for account, amount in {key: (account, amount) for key, _, _, account, amount in flat}.values():
        expected[account] += int(amount.replace(".", ""))
    assert {a: before[a] - pg_backend.balance(a) for a in accounts} == {a: expected.get(a, 0) for a in accounts}
    assert pg_backend.query("SELECT count(*), count(DISTINCT idempotency_key) FROM ledger_postings "
                            "WHERE kind = 'PAYMENT'") == [(150, 150)]
    assert pg_backend.query("SELECT count(*) FROM api_payments WHERE ledger_state <> 'RECORDED'") == [(0,)]


def test_the_billing_system_creates_and_changes_an_account(backend):
    with backend.api.client("BACKOFFICE") as office:
        created = office.put("/v1/accounts/ACC00000961", json={"name": "Ada Lovelace", "email": "ada@example.com",
                                                               "payment_term": "D7"})
        assert created.status_code == 201, created.text
        changed = office.put("/v1/accounts/ACC00000961", json={"name": "Ada King"})
        assert (changed.status_code, changed.json()["name"], changed.json()["payment_term"]) == (200, "Ada King", "D7")
    assert backend.query("SELECT name, payment_term, email FROM accounts WHERE account_number = 'ACC00000961'") == \
        [("Ada King", "D7", "ada@example.com")]


def _execute(backend: Backend, sql: str, params=()) -> None:
    if backend.url is None:
        with backend.platform.connect() as con:
            con.execute(sql, list(params))
        return
    with psycopg.connect(backend.url) as con:
        con.execute(pg_sql(sql), list(params))


def _invoice(http, number: str, key: str, amount: str = "45.00", account: str = "ACC00000005"):
    return http.post(f"/v1/accounts/{account}/invoices", headers={"Idempotency-Key": key},
                     json={"invoice_number": number, "amount": amount, "issue_date": "2026-12-01"})


def test_an_invoice_through_the_api_posts_once_with_its_pending_hardware_charge_on_either_store(backend):
    from datetime import UTC, datetime

    _execute(backend, "INSERT INTO hw_pending_charges (order_id, account_number, amount_minor, currency, description, "
             "dispatch_batch_id, created_at) VALUES ('ORD-1', 'ACC00000005', 1999, 'GBP', 'licence', 'SOD-1', ?)",
             [datetime(2026, 11, 30, tzinfo=UTC)])
    before = backend.balance("ACC00000005")
    with backend.api.client("BACKOFFICE") as office:
        assert office.put("/v1/accounts/ACC00000005", json={"name": "Five", "payment_term": "D30"}).status_code == 200
        issued = _invoice(office, "INV-API-1", "key-1")
        assert issued.status_code == 201, issued.text
        assert (issued.json()["due_date"], issued.json()["hardware_charges"], issued.json()["total_due"]) == (
            "2026-12-31", [{"order_id": "ORD-1", "amount": "19.99"}], "64.99")
        again = _invoice(office, "INV-API-1", "key-1")
        assert (again.status_code, again.headers.get("Idempotent-Replayed"), again.json()) == (200, "true",
                                                                                             issued.json())
        other_body = _invoice(office, "INV-API-1", "key-1", amount="46.00")
        assert other_body.status_code == 409
        reissued = _invoice(office, "INV-API-1", "key-2")
        assert reissued.status_code == 409 and "was already issued" in reissued.json()["detail"]
        second = _invoice(office, "INV-API-2", "key-3", amount="5.00")
        assert second.status_code == 201 and second.json()["hardware_charges"] == []  # the charge went once
    assert backend.balance("ACC00000005") == before + 4500 + 1999 + 500
    assert backend.query("SELECT idempotency_key, amount_minor FROM ledger_postings "
                         "WHERE batch_id LIKE 'INVOICES-API-%' ORDER BY posting_id") == [
        ("invoice:INV-API-1:CHARGE", 4500), ("hw:ORD-1:CHARGE", 1999), ("invoice:INV-API-2:CHARGE", 500)]
    assert backend.query("SELECT record_count, total_minor FROM batches WHERE batch_id LIKE 'INVOICES-API-%'") == [
        (3, 6999)]
    assert backend.query("SELECT invoice_number FROM hw_pending_charges WHERE order_id = 'ORD-1'") == [("INV-API-1",)]


@pytest.mark.postgres
def test_invoice_calls_at_once_on_postgres_issue_each_once_and_count_the_days_batch_exactly(pg_backend):
    """Eight calls at once: four invoices, each sent twice under its key: four 201s, four replays or waits, no
    error; every invoice posted once; the day's batch counts all four."""
    results: list = []
    start = threading.Barrier(8)

    def call(n: int) -> None:
        with pg_backend.api.client("BACKOFFICE") as office:
            office.timeout = httpx.Timeout(120)  # the eight run one after the other (a busy 2-core machine)
            start.wait()
            try:
                results.append(_invoice(office, f"INV-RACE-{n % 4}", f"race-{n % 4}", amount=f"{n % 4 + 1}.00",
                                        account=f"ACC0000000{n % 2 + 1}"))
            except httpx.HTTPError as exc:
                results.append(exc)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(getattr(r, "status_code", 0) for r in results) == [200] * 4 + [201] * 4, results
    assert pg_backend.query("SELECT count(*), count(DISTINCT idempotency_key), sum(amount_minor) FROM ledger_postings "
                            "WHERE invoice_number LIKE 'INV-RACE-%'") == [(4, 4, 1000)]
    assert pg_backend.query("SELECT record_count, total_minor FROM batches "
                            "WHERE batch_id LIKE 'INVOICES-API-%'") == [(4, 1000)]


def _due_payments(url: str, succeeded: int, declined: int) -> int:
    """Final payments straight into the PostgreSQL store's api_payments, as the API leaves them; their sum."""
    from datetime import UTC, datetime

    from cmp_pipelines.api.payments import INSERTED
    from cmp_pipelines.core.db.api_postgres import PostgresApiStore

    store = PostgresApiStore(url, pool_size=2)
    now = datetime.now(UTC).isoformat()
    total = 0
    try:
        for n in range(succeeded + declined):
            amount = 100 + n
            row = {"payment_id": f"PAY-T-{n:04d}", "client_id": "IVR", "channel": "IVR", "idempotency_key": f"k{n}",
                   "request_hash": "h", "account_number": f"ACC{n % 20 + 1:08d}", "amount_minor": amount,
                   "currency": "GBP", "method": "CARD_ON_FILE", "reference": None, "status": "PENDING",
                   "provider": "SANDBOX", "created_at": now, "updated_at": now}
            assert store.insert_payment(row, INSERTED)
            ok = n < succeeded
            assert store.finish(row["payment_id"], ("PENDING",), "SUCCEEDED" if ok else "DECLINED", now,
                                reason_code=None if ok else "05", reason=None, provider_reference=f"SBX-{n}",
                                last_four="4242")
            total += amount if ok else 0
    finally:
        store.close()
    return total


@pytest.mark.postgres
def test_two_ledger_monitors_at_once_post_every_payment_exactly_once(platform, pg_store):
    from datetime import UTC, datetime, timedelta

    from cmp_pipelines.core.config_payments import load_provider_settings
    from cmp_pipelines.core.settings import PROJECT_ROOT
    from cmp_pipelines.defs.one_off.flow import post_to_ledger_postgres

    assert copy_to_postgres(platform.database, pg_store, replace=True).committed
    total = _due_payments(pg_store, succeeded=40, declined=6)
    settings = load_provider_settings(PROJECT_ROOT / "config")
    start, results = threading.Barrier(2), [None, None]
    now = datetime.now(UTC)

    def monitor_run(i: int) -> None:
        start.wait()
        results[i] = post_to_ledger_postgres(pg_store, settings, now + timedelta(microseconds=i))

    threads = [threading.Thread(target=monitor_run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(r.posted_now for r in results) == [0, 40]  # one took them all; the other waited, found none
    assert sorted(r.events_now for r in results) == [0, 6]
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT count(*), count(DISTINCT idempotency_key), sum(amount_minor) FROM ledger_postings "
                           "WHERE kind = 'PAYMENT'").fetchone() == (40, 40, -total)
        assert con.execute("SELECT count(*), sum(record_count), sum(total_minor) FROM batches "
                           "WHERE kind = 'ONE_OFF_POSTING'").fetchone() == (1, 40, -total)
        assert con.execute("SELECT count(*) FROM workflow_events WHERE event_code = 'CARD_PAYMENT_FAILED'"
                           ).fetchone() == (6,)
        assert con.execute("SELECT ledger_state, count(*) FROM api_payments GROUP BY 1").fetchall() == \
            [("RECORDED", 46)]
        assert con.execute("SELECT count(*) FROM one_off_payments").fetchone() == (46,)


@pytest.mark.postgres
def test_on_postgres_the_monitor_writes_the_posting_file_once_and_registers_its_delivery(platform, pg_store):
    from datetime import UTC, datetime

    import orjson

    from cmp_pipelines.core.config_payments import load_provider_settings
    from cmp_pipelines.core.settings import PROJECT_ROOT
    from cmp_pipelines.defs.one_off.flow import post_to_ledger_postgres, write_posting_files_postgres

    assert copy_to_postgres(platform.database, pg_store, replace=True).committed
    total = _due_payments(pg_store, succeeded=5, declined=1)
    now = datetime.now(UTC)
    result = post_to_ledger_postgres(pg_store, load_provider_settings(PROJECT_ROOT / "config"), now)
    start, written = threading.Barrier(2), []

    def writer() -> None:
        start.wait()
        written.append(write_posting_files_postgres(pg_store, platform.files, now))

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    path = f"outbound/ledger/{result.batch_id}.json"
    assert sorted(written, key=len) == [{}, {result.batch_id: path}]  # two writers at once: one file, once
    posting = orjson.loads(platform.files.read_bytes(path))
    assert (posting["header"]["batch_id"], posting["header"]["record_count"], posting["header"]["total_amount"]) \
        == (result.batch_id, 5, f"-{total // 100}.{total % 100:02d}")
    assert sorted(p["idempotency_key"] for p in posting["postings"]) == sorted(
        f"one_off:PAY-T-{n:04d}:PAYMENT" for n in range(5))
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT output_path FROM batches WHERE batch_id = %s", [result.batch_id]).fetchall() == [
            (path,)]
        assert con.execute("SELECT document_kind, partner, remote_name, reference, status FROM delivery_register"
                           ).fetchall() == [("LEDGER_POSTING", "SALES_LEDGER", f"{result.batch_id}.json",
                                             result.batch_id, "PENDING")]
    assert write_posting_files_postgres(pg_store, platform.files, now) == {}  # nothing left to write


@pytest.mark.postgres
def test_a_ledger_monitor_killed_before_commit_leaves_nothing_and_the_next_posts_it_all(platform, pg_store):
    import os
    import subprocess
    import sys

    assert copy_to_postgres(platform.database, pg_store, replace=True).committed
    total = _due_payments(pg_store, succeeded=5, declined=1)
    script = ("from datetime import UTC, datetime; from cmp_pipelines.core.config_payments import "
              "load_provider_settings; from cmp_pipelines.core.settings import PROJECT_ROOT; "
              "from cmp_pipelines.defs.one_off.flow import post_to_ledger_postgres; import sys; "
              "r = post_to_ledger_postgres(sys.argv[1], load_provider_settings(PROJECT_ROOT / 'config'), "
              "datetime.now(UTC)); print(r.posted_now, r.events_now)")
    counted = ("ledger_postings", "one_off_payments", "batches", "workflow_events", "job_runs")

    def counts() -> dict:
        with psycopg.connect(pg_store) as con:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in counted} | \
                {"due": con.execute("SELECT count(*) FROM api_payments WHERE ledger_state = 'DUE'").fetchone()[0]}

    before = counts()
    assert before["due"] == 6
    killed = subprocess.run([sys.executable, "-c", script, pg_store], capture_output=True, text=True,
                            env={**os.environ, "CMP_CRASHPOINT": "1"})  # the first point: just before COMMIT
    assert killed.returncode == -9, killed.stderr
    assert counts() == before  # nothing of the killed transaction; and its row locks went with it:
    done = subprocess.run([sys.executable, "-c", script, pg_store], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "CMP_CRASHPOINT"})
    assert (done.returncode, done.stdout.split()) == (0, ["5", "1"]), done.stderr
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT count(*), sum(amount_minor) FROM ledger_postings WHERE kind = 'PAYMENT'"
                           ).fetchone() == (5, -total)


@pytest.mark.postgres
def test_on_postgres_the_history_of_every_flow_is_the_main_stores_own(platform, monkeypatch, api_instance, pg_store):
    """An account that paid every way through the real flows (on the embedded store), moved to PostgreSQL with
    `db copy`: the API there answers its history exactly as the history query answers on the embedded store."""
    from cmp_pipelines.core.payment_history import HistoryFilter, account_history
    from tests.support.history import ACCOUNT as HIST
    from tests.support.history import every_kind_of_payment

    every_kind_of_payment(platform)
    with platform.connect() as con:
        expected = account_history(con, HIST, HistoryFilter(limit=500)).as_dict()
    assert expected["total"] >= 7
    assert copy_to_postgres(platform.database, pg_store, replace=True).committed
    monkeypatch.setenv("CMP_DATABASE_URL", pg_store)
    monkeypatch.setenv("CMP_PROVIDER_SECRET", "test-provider-secret")
    with running_api(platform) as server_api, server_api.client("AGENTVIEW") as http:
        answer = http.get(f"/v1/accounts/{HIST}/payments", params={"limit": 500})
        assert answer.status_code == 200, answer.text
        assert answer.json() == expected
        declined = http.get(f"/v1/accounts/{HIST}/payments", params={"status": "REJECTED", "limit": 500}).json()
        assert declined["payments"] == [p for p in expected["payments"] if p["status"] == "REJECTED"] != []


@pytest.mark.slow  # a real `api serve` with two worker processes: ~11 s under load
@pytest.mark.postgres
def test_api_serve_on_postgres_keeps_no_file_of_its_own_and_ignores_a_held_duckdb(platform, pg_store, tmp_path):
    """`cmp-pipelines api serve --workers 2` with CMP_DATABASE_URL: while another process holds cmp.duckdb for
    writing (what made the embedded API queue set-up with 202), set-up is applied at once (200) and payments are
    taken; the data folder gets no api.sqlite and no read model."""
    import os
    import subprocess
    import sys

    from cmp_pipelines.core.config_payments import hash_key, write_key_hash
    from cmp_pipelines.core.settings import paths
    from tests.support.api import KEYS, free_port, serve_api

    assert copy_to_postgres(platform.database, pg_store, replace=True).committed
    write_key_hash(paths().keys_dir, "AGENTVIEW", hash_key(KEYS["AGENTVIEW"]))
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); sys.stdin.read()", str(platform.database)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    port = free_port()
    env = {**os.environ, "CMP_DATABASE_URL": pg_store, "CMP_PROVIDER_SECRET": "test-provider-secret"}
    server = serve_api(env, port, 60, "--workers", "2")
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"X-API-Key": KEYS["AGENTVIEW"]}, timeout=30) as http:
            card = http.put(f"/v1/accounts/{ACCOUNT}/card", json={"card_token": "tok_served_1", "last_four": "4242"})
            assert card.status_code == 200, card.text
            paid = pay(http, amount="3.21")
            assert (paid.status_code, paid.json()["status"]) == (201, "SUCCEEDED"), paid.text
            assert http.get(f"/v1/payments/{paid.json()['payment_id']}").json()["amount"] == "3.21"
    finally:
        server.terminate()
        server.wait(timeout=30)
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not [p.name for p in platform.root.glob("api*.sqlite*")]
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT card_token FROM payment_cards WHERE account_number = %s", [ACCOUNT]).fetchone() == \
            ("tok_served_1",)
        assert con.execute("SELECT amount_minor, status, ledger_state FROM api_payments").fetchall() == \
            [(321, "SUCCEEDED", "DUE")]


def test_reconciliation_settles_timed_out_payments_and_the_monitor_posts_the_success(backend, api_instance,
                                                                                     tmp_path, monkeypatch):
    outcomes = {}
    with backend.api.client() as http:
        for account, token in (("ACC00000005", "tok_timeout"), ("ACC00000006", "tok_timeout_decline_51"),
                               ("ACC00000007", "tok_timeout_lost")):
            register(http, account, token)
            answer = pay(http, account=account, amount="20.00")
            assert (answer.status_code, answer.json()["status"]) == (201, "PENDING")
            outcomes[account] = answer.json()["payment_id"]
        before = backend.balance("ACC00000005")
        provider_config_with(tmp_path, monkeypatch, reconcile_after_seconds=0)
        monitor(api_instance)
        status = {a: http.get(f"/v1/payments/{p}").json() for a, p in outcomes.items()}
    assert {a: (s["status"], s["reason_code"], s["ledger"]["state"]) for a, s in status.items()} == {
        "ACC00000005": ("SUCCEEDED", None, "RECORDED"), "ACC00000006": ("DECLINED", "51", "RECORDED"),
        "ACC00000007": ("FAILED", "NOT_RECEIVED", "RECORDED")}
    assert backend.balance("ACC00000005") == before - 2000
    assert sorted(r[0] for r in backend.query("SELECT source_ref FROM workflow_events")) == \
        sorted([outcomes["ACC00000006"], outcomes["ACC00000007"]])


@pytest.mark.postgres
def test_a_pool_with_every_connection_in_use_says_so_and_the_api_answers_503(pg_store, monkeypatch):
    from cmp_pipelines.api.problems import busy_handler
    from cmp_pipelines.core.db.api_postgres import PostgresApiStore
    from cmp_pipelines.core.db.connection import StoreBusyError
    from cmp_pipelines.core.settings import StoreSettingError, api_pool_size

    store = PostgresApiStore(pg_store, pool_size=1, timeout=0.2)
    try:
        with store._connection(), pytest.raises(StoreBusyError) as busy:  # the only connection, held
            store.payment("PAY-1")
        assert str(busy.value) == ("all 1 connections to the PostgreSQL store are in use (CMP_API_DB_POOL_SIZE); "
                                   "retry shortly")
        assert store.payment("PAY-1") is None  # released: served again
    finally:
        store.close()
    import asyncio

    from starlette.requests import Request

    answer = asyncio.run(busy_handler(Request({"type": "http", "method": "GET", "path": "/v1/payments/PAY-1",
                                               "headers": []}), busy.value))
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "1")
    monkeypatch.setenv("CMP_API_DB_POOL_SIZE", "0")
    with pytest.raises(StoreSettingError, match="CMP_API_DB_POOL_SIZE must be a whole number of connections "
                                                "from 1 to 1000; got '0'"):
        api_pool_size()


def test_a_refused_payment_stores_nothing_and_its_key_stays_free_on_either_store(backend, api_instance):
    """On PostgreSQL the happy path checks the account and inserts in one statement (`insert_if_valid`); each
    refusal must still name its reason, store nothing, and leave the key usable once the cause is fixed. (A closed
    account is checked on PostgreSQL only: the embedded read model learns of it when the monitor next publishes.)"""
    suspense = backend.query("SELECT account_number FROM accounts WHERE is_suspense ORDER BY 1 LIMIT 1")[0][0]
    with backend.api.client("IVR") as http:
        register(http, "ACC00000002", "tok_valid_card")
        _execute(backend, "UPDATE accounts SET status = 'CLOSED' WHERE account_number = 'ACC00000002'")
        refusals = [(pay(http, account="ACC00000002", key="k-currency", currency="EUR"), 422, "billed in GBP"),
                    (pay(http, account="ACC99999999", key="k-missing"), 404, "ACC99999999 does not exist"),
                    (pay(http, account=suspense, key="k-suspense"), 404, f"{suspense} does not exist"),
                    (pay(http, account=ACCOUNT, key="k-card"), 422, f"{ACCOUNT} has no card on file")]
        if backend.url:
            refusals.append((pay(http, account="ACC00000002", key="k-closed"), 422, "ACC00000002 is CLOSED"))
        assert [(r.status_code, words in r.json()["detail"]) for r, _, words in refusals] == [
            (status, True) for _, status, _ in refusals], [r.json()["detail"] for r, _, _ in refusals]
        assert backend.payments("SELECT count(*) FROM {payments}") == [(0,)]
        register(http, ACCOUNT, "tok_valid_card")
        again = pay(http, key="k-card", amount="7.01")
        assert again.status_code == 201, again.text
        assert (again.json()["status"], again.json()["amount"]) == ("SUCCEEDED", "7.01")
        replay = pay(http, key="k-card", amount="7.01")
        assert (replay.status_code, replay.json()["payment_id"]) == (200, again.json()["payment_id"])
    assert backend.payments("SELECT idempotency_key, amount_minor, status, last_four FROM {payments}") == [
        ("k-card", 701, "SUCCEEDED", "4242")]
