"""The notice step's exact output (core/notices.raise_notices through each flow): which invoices get a notice on a
day, for how much, dated when, with which event, and that a second call adds nothing. Pinned because the step's SQL
finds the unnoticed invoices first and sums the ledger only for them (issue 16): the window's edge (issued on the
day, issued the day after), a history notice already SENT without an event, part- and fully-paid invoices, and an
account that does not pay by the type."""

from __future__ import annotations

from datetime import date, timedelta

from cmp_pipelines.core.payment_setup import set_payment_type
from cmp_pipelines.defs.card_payments.flow import RecurringCardPayments
from cmp_pipelines.defs.direct_debit.calendar import add_working_days, cycle
from cmp_pipelines.defs.direct_debit.collections import DirectDebitCollections
from cmp_pipelines.demo.data import seed_sent_notices
from tests.support.direct_debit import BUREAU, DD_CONFIG, PARTNERS, active_dd_accounts, add_invoice, at

DAY = date(2026, 12, 10)  # a Thursday, a Bacs working day


def pay(platform, account: str, invoice: str, amount_minor: int) -> None:
    """A payment posted against the invoice (negative: it reduces what is owed)."""
    with platform.connect() as con:
        con.execute(
            "INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, "
            "currency, batch_id, source_ref, effective_at) VALUES (?, ?, ?, 'PAYMENT', ?, 'GBP', 'NRP-T', ?, ?)",
            [f"nrp:{invoice}:PAYMENT", account, invoice, -amount_minor, invoice, at(DAY - timedelta(days=1))])


def account(platform, number: str) -> None:
    with platform.connect() as con:
        con.execute("INSERT INTO accounts (account_number, name, email) VALUES (?, ?, ?)",
                    [number, f"Customer {number}", f"{number.lower()}@example.com"])


def invoices(platform, account: str) -> None:
    """The same five invoices on `account`: A issued on the day, B the day after, C noticed long ago (history: SENT,
    no event), D part-paid, E fully paid."""
    add_invoice(platform, account, f"{account}-A", 4000, DAY, DAY + timedelta(days=20))
    add_invoice(platform, account, f"{account}-B", 4100, DAY + timedelta(days=1), DAY + timedelta(days=21))
    add_invoice(platform, account, f"{account}-C", 4200, DAY - timedelta(days=30), DAY - timedelta(days=2))
    add_invoice(platform, account, f"{account}-D", 5000, DAY - timedelta(days=5), DAY + timedelta(days=1))
    add_invoice(platform, account, f"{account}-E", 3000, DAY - timedelta(days=5), DAY + timedelta(days=1))
    pay(platform, account, f"{account}-D", 1800)
    pay(platform, account, f"{account}-E", 3000)


def notices_and_events(platform, payment_type: str) -> tuple[list[tuple], list[tuple]]:
    notices = platform.query(
        "SELECT n.notice_id, n.invoice_number, n.amount_minor, n.collection_on, n.raised_on, n.status, "
        "e.event_code, e.detail, e.raised_at FROM collection_notices n LEFT JOIN workflow_events e USING (event_id) "
        "WHERE n.payment_type = ? ORDER BY n.notice_id", [payment_type])
    events = platform.query("SELECT event_id, source_ref FROM workflow_events WHERE event_type = 'ADVANCE_NOTICE' "
                            "ORDER BY event_id")
    return notices, events


def raise_twice(platform, flow_of) -> list:
    """The step on DAY at 02:00, then again at 05:00 (a re-run): the second raises nothing."""
    results = []
    for hour in (2, 5):
        with platform.connect() as con:
            raised = flow_of(con, hour).raise_notices(DAY)
            results.append((raised.count, raised.total_minor))
    return results


def test_card_notices_on_a_day_are_exactly_the_unnoticed_open_invoices_issued_by_it(platform):
    account(platform, "ACCCARD01")
    with platform.connect() as con:
        set_payment_type(con, "ACCCARD01", "RECURRING_CARD", partners=PARTNERS, now=at(DAY - timedelta(days=40)),
                         cause="customer set up recurring card", card_token="tok_c1", last_four="4242",
                         expiry="2030-01")
    invoices(platform, "ACCCARD01")
    invoices(platform, "ACCMANUAL")  # pays manually: never noticed
    with platform.connect() as con:
        assert seed_sent_notices(con, "RECURRING_CARD", "invoice_number = 'ACCCARD01-C'") == 1
    events_before = platform.query("SELECT count(*) FROM workflow_events")[0][0]

    def card(con, hour):
        return RecurringCardPayments(con, platform.files, platform.keyring, PARTNERS, at(DAY, hour))

    assert raise_twice(platform, card) == [(2, 4000 + 3200), (0, 0)]
    notices, events = notices_and_events(platform, "RECURRING_CARD")
    week = DAY + timedelta(days=7)  # advance_notice_days: the earliest date a notice raised on DAY may give
    assert notices == [
        ("AN-CARD-ACCCARD01-A", "ACCCARD01-A", 4000, DAY + timedelta(days=20), DAY, "RAISED", "CARD_COLLECTION",
         f"collect 40.00 GBP on {DAY + timedelta(days=20)} for invoice ACCCARD01-A", at(DAY, 2)),
        ("AN-CARD-ACCCARD01-C", "ACCCARD01-C", 4200, DAY - timedelta(days=2), DAY - timedelta(days=30), "SENT",
         None, None, None),
        ("AN-CARD-ACCCARD01-D", "ACCCARD01-D", 3200, week, DAY, "RAISED", "CARD_COLLECTION",
         f"collect 32.00 GBP on {week} for invoice ACCCARD01-D", at(DAY, 2)),
    ]
    # one event per notice raised, ids in notice order; the history notice gets none (its message has left)
    assert [ref for _, ref in events] == ["AN-CARD-ACCCARD01-A", "AN-CARD-ACCCARD01-D"]
    assert platform.query("SELECT count(*) FROM workflow_events")[0][0] == events_before + 2
    assert platform.query("SELECT count(*) FROM collection_notices WHERE event_id IS NOT NULL AND event_id NOT IN "
                          "(SELECT event_id FROM workflow_events)")[0][0] == 0
    with platform.connect() as con:
        waiting = card(con, 6).waiting(DAY)
    # due by DAY, still owed, not collectable: only C (SENT, but sent long ago and dated DAY-2: collectable) is
    # due, so nothing waits; the day after D's due date D waits for its notice (RAISED, not sent)
    assert (waiting.count, waiting.total_minor) == (0, 0)
    with platform.connect() as con:
        later = card(con, 6).waiting(DAY + timedelta(days=1))
    assert (later.count, later.total_minor, later.no_notice, later.not_sent, later.too_recent) == (1, 3200, 0, 1, 0)


def test_direct_debit_notices_on_a_day_are_exactly_the_unnoticed_open_invoices_issued_by_it(platform):
    platform.keyring.init_keys(BUREAU)
    account(platform, "ACCDD0001")
    active_dd_accounts(platform, {"ACCDD0001": "CMPDD0001"}, DAY - timedelta(days=40))
    invoices(platform, "ACCDD0001")
    invoices(platform, "ACCMANUAL")
    with platform.connect() as con:
        assert seed_sent_notices(con, "DIRECT_DEBIT", "invoice_number = 'ACCDD0001-C'") == 1
        mandate = con.execute("SELECT mandate_id FROM mandates WHERE account_number = 'ACCDD0001'").fetchone()[0]
    earliest = max(add_working_days(DAY, DD_CONFIG.advance_notice_days), cycle(DAY).entry_day)
    events_before = platform.query("SELECT count(*) FROM workflow_events")[0][0]

    def dd(con, hour):
        return DirectDebitCollections(con, platform.files, platform.keyring, DD_CONFIG, at(DAY, hour))

    assert raise_twice(platform, dd) == [(2, 4000 + 3200), (0, 0)]
    notices, events = notices_and_events(platform, "DIRECT_DEBIT")
    a_on = max(DAY + timedelta(days=20), earliest)  # a Wednesday: a working day, not moved
    assert notices == [
        ("AN-DD-ACCDD0001-A", "ACCDD0001-A", 4000, a_on, DAY, "RAISED", "DD_COLLECTION",
         f"collect 40.00 GBP on {a_on} for invoice ACCDD0001-A", at(DAY, 2)),
        ("AN-DD-ACCDD0001-C", "ACCDD0001-C", 4200, DAY - timedelta(days=2), DAY - timedelta(days=30), "SENT",
         None, None, None),
        ("AN-DD-ACCDD0001-D", "ACCDD0001-D", 3200, earliest, DAY, "RAISED", "DD_COLLECTION",
         f"collect 32.00 GBP on {earliest} for invoice ACCDD0001-D", at(DAY, 2)),
    ]
    assert [ref for _, ref in events] == ["AN-DD-ACCDD0001-A", "AN-DD-ACCDD0001-D"]
    assert platform.query("SELECT count(*) FROM workflow_events")[0][0] == events_before + 2
    assert platform.query("SELECT DISTINCT mandate_id FROM collection_notices WHERE payment_type = 'DIRECT_DEBIT'"
                          ) == [(mandate,)]
