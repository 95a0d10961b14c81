"""Card days and provider rejection files with PostgreSQL as the system of record (issue 19, phase 3a): the same
test body on both stores (extracts, ledger to the penny, retries, suspensions, payment types, events,
communications, outcome reports, nothing twice), and the rejections job under Dagster on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest

from cmp_pipelines.core import payment_setup
from cmp_pipelines.core.intake import FileQuarantined
from tests.support.pg_card import STORES, card_day, on_store, process_rejections
from tests.support.platform import add_customer, document, extract_ids, payment, rejection, rejections_document

DEC = [date(2026, 12, d) for d in range(1, 32)]


def _customers(platform) -> dict:
    """The card month's customers (tests/flows/card_payments/test_card_month.py) on its first eleven days."""
    facts = {
        "a": add_customer(platform, 101, [("INVA1", 10000, DEC[2])]),
        "b": add_customer(platform, 102, [("INVB1", 5000, DEC[4]), ("INVB2", 2000, DEC[7])]),
        "c": add_customer(platform, 103, [("INVC1", 3000, DEC[1])]),
        "d": add_customer(platform, 104, [("INVD1", 8000, DEC[3])]),
        "e": add_customer(platform, 105, [("INVE1", 1000, DEC[0])]),
    }
    platform.process(platform.drop("e-credit.json.enc", document([payment("1", facts["e"], "15.00")])))
    with platform.connect() as con:
        facts["refund"] = payment_setup.approve_card_refund(con, facts["e"], "15.00", reason="overpayment",
                                                            now=datetime(2026, 11, 30, tzinfo=UTC), due_on=DEC[3])
    return facts


@pytest.fixture(params=STORES)
def month(request, platform, monkeypatch):
    facts = _customers(platform)
    return on_store(request, platform, monkeypatch), facts


def _rejection_file(platform, day: date, items: list[tuple], name: str = "") -> str:
    records = [rejection(str(i), *item, rejected_at=f"{day}T09:00:00Z") for i, item in enumerate(items)]
    return platform.drop_rejections(name or f"rej-{day}.json.enc", rejections_document(records, file_id=f"REJ-{day}"))


@pytest.mark.slow
def test_card_days_and_rejection_files_to_the_penny_on_either_store(month):
    platform, f = month
    refund = f["refund"]
    declines = {
        DEC[2]: [("PINVC1-1", f["c"], "30.00", "05")],       # do not honour: 2 retries, 3 days
        DEC[3]: [(f"R{refund}-1", f["e"], "15.00", "91")],   # issuer unavailable: 3 retries, 1 day
        DEC[4]: [("PINVD1-1", f["d"], "80.00", "54")],       # expired card: hard
        DEC[5]: [("PINVB1-1", f["b"], "50.00", "51")],       # insufficient funds: 3 retries, 5 days
        DEC[6]: [("PINVC1-2", f["c"], "30.00", "05")],
        DEC[10]: [("PINVC1-3", f["c"], "30.00", "05")],      # third attempt: out of retries
    }
    extracts, keys = {}, {}
    for day in DEC[:11]:
        card_day(platform, day)
        extracts[day] = extract_ids(platform, day)
        if day in declines:
            keys[day] = _rejection_file(platform, day, declines[day])
            load, applied = process_rejections(platform, keys[day], datetime(day.year, day.month, day.day, 10,
                                                                               tzinfo=UTC))
            assert (load.status, applied.applied_now, applied.posting_count) == ("LOADED", True, 1)

    assert {d: x for d, x in extracts.items() if x} == {
        DEC[0]: ["PINVE1-1"], DEC[1]: ["PINVC1-1"], DEC[2]: ["PINVA1-1"], DEC[3]: ["PINVD1-1", f"R{refund}-1"],
        DEC[4]: ["PINVB1-1", f"R{refund}-2"], DEC[5]: ["PINVC1-2"], DEC[9]: ["PINVC1-3"],
        DEC[10]: ["PINVB1-2", "PINVB2-1"]}
    balances = dict(platform.query("SELECT account_number, sum(amount_minor) FROM ledger_postings "
                                   "WHERE account_number IN (?, ?, ?, ?, ?) GROUP BY 1",
                                   [f[k] for k in "abcde"]))
    assert balances == {f["a"]: 0, f["b"]: 0, f["c"]: 3000, f["d"]: 8000, f["e"]: 0}
    assert dict(platform.query("SELECT source_ref, amount_minor FROM ledger_postings WHERE kind = 'CARD_REVERSAL'"
                               )) == {"PINVB1-1": 5000, "PINVC1-1": 3000, "PINVC1-2": 3000, "PINVC1-3": 3000,
                                      "PINVD1-1": 8000, f"R{refund}-1": -1500}
    assert platform.query("SELECT count(*), count(DISTINCT idempotency_key), count(DISTINCT posting_id) "
                          "FROM ledger_postings WHERE account_number IN (?, ?, ?, ?, ?)",
                          [f[k] for k in "abcde"]) == [(24, 24, 24)]
    state = {a: (t, str(s) if s else None) for a, t, s in platform.query(
        "SELECT account_number, payment_type, suspended_until FROM accounts WHERE account_number IN (?, ?, ?, ?, ?)",
        [f[k] for k in "abcde"])}
    assert state == {f["a"]: ("RECURRING_CARD", None), f["b"]: ("RECURRING_CARD", "2026-12-11"),
                     f["c"]: ("MANUAL", "2026-12-10"), f["d"]: ("MANUAL", None),
                     f["e"]: ("RECURRING_CARD", "2026-12-05")}
    assert platform.query("SELECT account_number, new_type, cause FROM payment_type_changes "
                          "WHERE new_type = 'MANUAL' ORDER BY 1") == [
        (f["c"], "MANUAL", "card decline 05 on PINVC1-3"), (f["d"], "MANUAL", "card decline 54 on PINVD1-1")]
    assert platform.query("SELECT transaction_id, status, retry_due_on::VARCHAR FROM card_transactions "
                          "WHERE status <> 'EXTRACTED' ORDER BY 1") == [
        ("PINVB1-1", "SOFT_DECLINED", "2026-12-11"), ("PINVC1-1", "SOFT_DECLINED", "2026-12-06"),
        ("PINVC1-2", "SOFT_DECLINED", "2026-12-10"), ("PINVC1-3", "CANCELLED", None),
        ("PINVD1-1", "HARD_DECLINED", None), (f"R{refund}-1", "SOFT_DECLINED", "2026-12-05")]
    assert platform.query("SELECT account_number, event_code, source_ref, reason_code, new_payment_type "
                          "FROM workflow_events WHERE event_type <> 'ADVANCE_NOTICE' ORDER BY event_id") == [
        (f["c"], "CARD_SOFT_DECLINE", "PINVC1-1", "DO_NOT_HONOUR", None),
        (f["e"], "CARD_SOFT_DECLINE", f"R{refund}-1", "ISSUER_UNAVAILABLE", None),
        (f["d"], "CARD_HARD_DECLINE_REFUND", "PINVD1-1", "EXPIRED_CARD", "MANUAL"),
        (f["b"], "CARD_SOFT_DECLINE", "PINVB1-1", "INSUFFICIENT_FUNDS", None),
        (f["c"], "CARD_SOFT_DECLINE", "PINVC1-2", "DO_NOT_HONOUR", None),
        (f["c"], "CARD_PAYMENT_CANCELLED", "PINVC1-3", "DO_NOT_HONOUR", "MANUAL")]
    assert platform.query("SELECT count(*), count(DISTINCT event_id) FROM workflow_events") == [(12, 12)]
    letters = {(a, t): body for a, t, body in platform.query(
        "SELECT account_number, source_ref, body FROM customer_communications")}
    assert len(letters) == 6
    assert letters[(f["b"], "PINVB1-1")] == (
        "Your card payment of 50.00 GBP for invoice INVB1 was declined (Insufficient funds). "
        "We will try again on 2026-12-11.")
    assert letters[(f["c"], "PINVC1-3")].endswith(
        "was declined (Do not honour) after 3 attempts. Your recurring card payment is cancelled and your account "
        "now pays by manual payment: please pay the invoice another way.")
    report = orjson.loads(platform.files.read_bytes(f"outbound/reports/card_rejections/CARDPAY/rej-{DEC[4]}."
                                                    "outcomes.json"))
    assert report["header"]["reversed_amount"] == "80.00" and report["header"]["outcomes"] == {"HARD_DECLINE": 1}
    assert [(r["transaction_id"], r["outcome"], r["reason_type"], r["new_payment_type"]) for r in
            report["records"]] == [("PINVD1-1", "HARD_DECLINE", "CARD_DECLINE", "MANUAL")]
    reversal = orjson.loads(platform.files.read_bytes(f"outbound/ledger/{report['header']['reversal_batch_id']}.json"))
    assert [(p["idempotency_key"], p["amount"]) for p in reversal["postings"]] == [("card:PINVD1-1:REVERSAL", "80.00")]
    assert platform.query("SELECT kind, status, count(*) FROM batches WHERE kind IN ('CARD_REJECTIONS', "
                          "'CARD_REVERSAL') GROUP BY 1, 2 ORDER BY 1") == [
        ("CARD_REJECTIONS", "APPLIED", 6), ("CARD_REVERSAL", "POSTED", 6)]

    # a rejection file run again and the same content dropped again: nothing twice
    ledger = platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings")
    load, applied = process_rejections(platform, keys[DEC[5]], datetime(2026, 12, 20, tzinfo=UTC))
    assert (load.status, applied.applied_now) == ("ALREADY_LOADED", False)
    again = _rejection_file(platform, DEC[5], declines[DEC[5]], name="rej-again.json.enc")
    with pytest.raises(FileQuarantined) as caught:
        process_rejections(platform, again, datetime(2026, 12, 21, tzinfo=UTC))
    assert caught.value.code == "DUPLICATE_FILE"
    assert platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings") == ledger
    assert platform.query("SELECT count(*) FROM workflow_events") == [(12,)]
    assert platform.query("SELECT count(*) FROM customer_communications") == [(6,)]


@pytest.mark.e2e
@pytest.mark.postgres
def test_the_rejections_job_under_dagster_keeps_postgres_as_the_system_of_record(platform, pg_url, monkeypatch,
                                                                                  instance):
    from cmp_pipelines.definitions import build_definitions
    from cmp_pipelines.lib.headless import run_pending_sensors
    from tests.support.dagster import check_results, flow_runs, materialization
    from tests.support.pg_platform import moved_to_postgres

    f = _customers(platform)
    platform = moved_to_postgres(platform, pg_url, monkeypatch)
    card_day(platform, DEC[3])
    _rejection_file(platform, DEC[3], [("PINVD1-1", f["d"], "80.00", "54"), ("PINVA1-1", f["a"], "100.00", "51")])
    definitions = build_definitions()

    [run] = flow_runs(run_pending_sensors(definitions, instance, echo=lambda _: None))

    assert run.success, run.error
    assert dict(platform.query("SELECT account_number, sum(amount_minor) FROM ledger_postings "
                               "WHERE account_number IN (?, ?) GROUP BY 1", [f["a"], f["d"]])) == {
        f["a"]: 10000, f["d"]: 8000}
    assert platform.query("SELECT account_number, payment_type, suspended_until IS NOT NULL FROM accounts "
                          "WHERE account_number IN (?, ?) ORDER BY 1", [f["a"], f["d"]]) == [
        (f["a"], "RECURRING_CARD", True), (f["d"], "MANUAL", False)]
    applied = materialization(instance, run.run_id, "card_reversal_batch")
    assert (applied["posting_count"], applied["accounts_reverted_to_default"], applied["workflow_events"]) == (2, 1, 2)
    assert platform.query("SELECT kind, status FROM batches WHERE kind IN ('CARD_REJECTIONS', 'CARD_REVERSAL') "
                          "ORDER BY 1") == [("CARD_REJECTIONS", "APPLIED"), ("CARD_REVERSAL", "POSTED")]
    assert platform.files.exists(f"outbound/ledger/{applied['batch_id']}.json")
    assert check_results(instance, run.run_id)["card_rejections_completed_sla_within_threshold"].passed
    assert not platform.files.list_files("inbound/card_rejections")
    assert flow_runs(run_pending_sensors(definitions, instance, echo=lambda _: None)) == []
