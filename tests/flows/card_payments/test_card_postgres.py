"""The CARD-mode Recurring Payments job with PostgreSQL as the system of record (issue 19, phase 3a): the same test
bodies on both stores (extract files, ledger to the penny, statuses, a re-run producing nothing twice), and the job
under Dagster on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import duckdb
import pytest

from cmp_pipelines.core import payment_setup
from tests.support.pg_card import STORES, card_day, on_store
from tests.support.pg_platform import moved_to_postgres
from tests.support.platform import add_customer, extract_ids

DEC = [date(2026, 12, d) for d in range(1, 32)]


def _customers(platform) -> str:
    """Three card customers, one paying manually and a card refund; returns the refund's id."""
    add_customer(platform, 101, [("INVA1", 10000, DEC[2])])
    add_customer(platform, 102, [("INVB1", 5000, DEC[3]), ("INVB2", 2000, DEC[5])])
    add_customer(platform, 103, [("INVC1", 3000, DEC[1])])
    add_customer(platform, 104, [("INVD1", 1234, DEC[2])], card=False)  # pays manually: never extracted
    with platform.connect() as con:
        refund = payment_setup.approve_card_refund(con, "ACC00000101", "15.00", now=datetime(2026, 11, 30, tzinfo=UTC),
                                                   due_on=DEC[3], reason="overpayment")
    return refund


@pytest.fixture(params=STORES)
def card_store(request, platform, monkeypatch):
    """The customers set up on the embedded store, then moved when the store is PostgreSQL."""
    refund = _customers(platform)
    store = on_store(request, platform, monkeypatch)
    store.refund = refund
    return store


@pytest.fixture
def pg_card_store(platform, pg_url, monkeypatch):
    refund = _customers(platform)
    store = moved_to_postgres(platform, pg_url, monkeypatch)
    store.refund = refund
    return store


def test_card_days_extract_post_and_rerun_to_the_penny(card_store):
    platform = card_store
    extracts = {}
    for day in DEC[:6]:
        card_day(platform, day)
        extracts[day] = extract_ids(platform, day)

    assert extracts == {DEC[0]: [], DEC[1]: ["PINVC1-1"], DEC[2]: ["PINVA1-1"],
                        DEC[3]: ["PINVB1-1", f"R{card_store.refund}-1"], DEC[4]: [], DEC[5]: ["PINVB2-1"]}
    extract = platform.read_extract(DEC[3])
    assert extract["header"] | {"created_at": None} == {
        "file_id": "RCX-20261204-CARDPAY-GBP", "sender": "CMP", "recipient": "CARDPAY", "business_date": "2026-12-04",
        "created_at": None, "currency": "GBP", "record_count": 2, "total_amount": "65.00", "payment_count": 1,
        "payment_amount": "50.00", "refund_count": 1, "refund_amount": "15.00"}
    assert [(t["type"], t["account_number"], t["amount"], t["attempt"], t["due_date"]) for t in
            extract["transactions"]] == [("PAYMENT", "ACC00000102", "50.00", 1, "2026-12-04"),
                                         ("REFUND", "ACC00000101", "15.00", 1, "2026-12-04")]
    balances = dict(platform.query("SELECT account_number, sum(amount_minor) FROM ledger_postings "
                                   "WHERE account_number IN ('ACC00000101', 'ACC00000102', 'ACC00000103', "
                                   "'ACC00000104') GROUP BY 1"))
    assert balances == {"ACC00000101": 1500, "ACC00000102": 0, "ACC00000103": 0, "ACC00000104": 1234}
    assert platform.query("SELECT kind, count(*), sum(amount_minor) FROM ledger_postings "
                          "WHERE left(kind, 5) = 'CARD_' GROUP BY 1 ORDER BY 1") == [
        ("CARD_PAYMENT", 4, -20000), ("CARD_REFUND", 1, 1500)]
    assert platform.query("SELECT batch_id, status, record_count, total_minor FROM batches "
                          "WHERE kind IN ('CARD_EXTRACT', 'CARD_POSTING') AND record_count > 0 ORDER BY 1") == [
        ("RCP-20261202", "POSTED", 1, -3000), ("RCP-20261203", "POSTED", 1, -10000),
        ("RCP-20261204", "POSTED", 2, -3500), ("RCP-20261206", "POSTED", 1, -2000),
        ("RCX-20261202", "EXTRACTED", 1, 3000), ("RCX-20261203", "EXTRACTED", 1, 10000),
        ("RCX-20261204", "EXTRACTED", 2, 6500), ("RCX-20261206", "EXTRACTED", 1, 2000)]
    assert platform.query("SELECT count(*) FROM batches WHERE kind = 'CARD_EXTRACT'") == [(6,)]
    # notices: one per card invoice, each with its own event, whose ids the store's sequence drew
    assert platform.query("SELECT n.invoice_number, n.status, e.event_code FROM collection_notices n "
                          "JOIN workflow_events e ON e.event_id = n.event_id AND e.source_ref = n.notice_id "
                          "ORDER BY 1") == [("INVA1", "SENT", "CARD_COLLECTION"), ("INVB1", "SENT", "CARD_COLLECTION"),
                                            ("INVB2", "SENT", "CARD_COLLECTION"), ("INVC1", "SENT", "CARD_COLLECTION")]
    assert platform.query("SELECT count(*), count(DISTINCT event_id) FROM workflow_events") == [(4, 4)]
    assert sorted(platform.query("SELECT document_kind, reference, status FROM delivery_register "
                                 "WHERE document_kind = 'CARD_EXTRACT'")) == [
        ("CARD_EXTRACT", f"RCX-2026120{d}-CARDPAY-GBP", "PENDING") for d in (2, 3, 4, 6)]
    assert len(platform.query("SELECT 1 FROM delivery_register WHERE document_kind = 'LEDGER_POSTING'")) == 6

    # the day again, later: the same extract, nothing selected, posted or noticed twice
    ledger = platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings")
    again = card_day(platform, DEC[3], now=datetime(2026, 12, 28, 8, tzinfo=UTC))
    assert again.status == "ALREADY_SELECTED"
    assert platform.read_extract(DEC[3]) == extract
    assert platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings") == ledger
    assert platform.query("SELECT count(*) FROM card_transactions") == [(5,)]
    assert platform.query("SELECT count(*) FROM workflow_events") == [(4,)]


@pytest.mark.e2e
@pytest.mark.postgres
def test_the_card_job_under_dagster_keeps_postgres_as_the_system_of_record(pg_card_store, instance):
    from cmp_pipelines.definitions import build_definitions
    from cmp_pipelines.lib.headless import run_partition
    from tests.support.dagster import check_results, materialization
    from tests.support.pg_card import send_notices

    platform = pg_card_store
    day = DEC[1]  # a partition that exists whenever the test runs (the schedule's partitions end tomorrow)
    send_notices(platform, day)
    outcome = run_partition("recurring_payments_card_job", day.isoformat(), build_definitions(), instance)

    assert outcome.success, outcome.error
    assert extract_ids(platform, day) == ["PINVC1-1"]
    assert dict(platform.query("SELECT account_number, sum(amount_minor) FROM ledger_postings "
                               "WHERE left(account_number, 9) = 'ACC000001' GROUP BY 1")) == {
        "ACC00000101": 10000, "ACC00000102": 7000, "ACC00000103": 0, "ACC00000104": 1234}
    assert platform.query("SELECT batch_id, status, record_count FROM batches ORDER BY 1") == [
        ("RCP-20261202", "POSTED", 1), ("RCX-20261202", "EXTRACTED", 1)]
    due = materialization(instance, outcome.run_id, "card_payments_due")
    assert (due["record_count"], due["payment_amount"], due["refund_amount"]) == (1, "30.00", "0.00")
    checks = check_results(instance, outcome.run_id)
    assert checks["card_extract_totals_mismatch_within_threshold"].passed
    embedded = platform.root / "cmp.duckdb"  # other code of the location may open it: it stays empty
    if embedded.exists():
        with duckdb.connect(str(embedded), read_only=True) as con:
            assert con.execute("SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM ledger_postings)"
                               ).fetchall() == [(0, 0)]


def test_a_notice_whose_email_left_is_found_sent_and_its_invoice_collected(card_store):
    """The selection reads the dispatcher's rows (dispatch DONE, e-mail SENT) from the store of record, marks the
    notice SENT there, and collects the invoice; a notice without them keeps its invoice waiting."""
    from tests.support.pg_card import card_flow, execute, flow_store

    platform = card_store
    issued = date(2026, 11, 18)  # INVC1, due 2 December
    with flow_store(platform) as (con, mirror):
        raised = card_flow(platform, con, mirror, datetime(2026, 11, 18, 1, tzinfo=UTC)).raise_notices(issued)
    assert (raised.count, raised.total_minor) == (1, 3000)
    [(event_id,)] = platform.query("SELECT event_id FROM collection_notices WHERE invoice_number = 'INVC1'")
    execute(platform, "INSERT INTO workflow_dispatch (event_id, action, target, status, attempts, next_attempt_at, "
                      "created_at, updated_at) VALUES (?, 'COMMUNICATION', 'advance_notice', 'DONE', 1, ?, ?, ?)",
            [event_id, *[datetime(2026, 11, 18, 1, tzinfo=UTC)] * 3])
    execute(platform, "INSERT INTO email_outbox (message_id, kind, source_ref, account_number, recipients, subject, "
                      "body_text, status, next_attempt_at, created_at, sent_at) VALUES (?, 'COMMUNICATION', ?, "
                      "'ACC00000103', string_to_array('customer103@example.com', ','), 'notice', 'notice', 'SENT', "
                      "?, ?, ?)", [f"event-{event_id}", str(event_id), *[datetime(2026, 11, 18, 1, 5, tzinfo=UTC)] * 3])

    with flow_store(platform) as (con, mirror):
        flow = card_flow(platform, con, mirror, datetime(2026, 12, 2, 2, tzinfo=UTC))
        due = flow.select_due(DEC[1])
        waiting = flow.waiting(DEC[1])

    assert (due.status, due.payment_count, due.payment_minor) == ("SELECTED", 1, 3000)
    assert (waiting.count, waiting.no_notice) == (0, 0)
    assert platform.query("SELECT invoice_number, status, sent_at IS NOT NULL FROM collection_notices") == [
        ("INVC1", "SENT", True)]
    assert platform.query("SELECT transaction_id, status FROM card_transactions") == [("PINVC1-1", "EXTRACTED")]
