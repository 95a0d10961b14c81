"""Advance notice of card and direct-debit collections (issue 17 item 6), through the real flows, the real
dispatcher and a real SMTP server on loopback: a month of daily jobs sends every notice and communication exactly
once and collects nothing before its notice has gone; duplicate dispatcher runs send nothing twice; an invoice
issued too late for its due date is collected on the first day the notice period allows, not earlier, not lost."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cmp_pipelines.core import outbox
from cmp_pipelines.core.config import load_card_payments
from cmp_pipelines.core.dispatcher import run_dispatcher
from cmp_pipelines.core.payment_setup import set_payment_type
from cmp_pipelines.defs.card_payments.flow import RecurringCardPayments
from cmp_pipelines.defs.direct_debit.calendar import add_working_days, cycle
from cmp_pipelines.defs.direct_debit.collections import DirectDebitCollections
from tests.support.direct_debit import (
    BUREAU,
    CONFIG_DIR,
    DD_CONFIG,
    PARTNERS,
    SUN,
    active_dd_accounts,
    add_invoice,
    at,
)
from tests.support.smtp import text_of

CARD_NOTICE = load_card_payments(CONFIG_DIR).advance_notice_days
DEC = [date(2026, 12, d) for d in range(1, 32)]


def accounts(platform, card: list[str], dd: dict[str, str], no_email: tuple[str, ...] = ()) -> None:
    """Card accounts (a card on file) and direct-debit accounts (mandates lodged on 11-16, active on 11-26)."""
    with platform.connect() as con:
        for account in [*card, *dd]:
            email = None if account in no_email else f"{account.lower()}@example.com"
            con.execute("INSERT INTO accounts (account_number, name, email) VALUES (?, ?, ?)",
                        [account, f"Customer {account}", email])
        for account in card:
            set_payment_type(con, account, "RECURRING_CARD", partners=PARTNERS, now=at(date(2026, 11, 16)),
                             cause="customer set up recurring card", card_token=f"tok_{account}",
                             last_four="4242", expiry="2030-01")
    active_dd_accounts(platform, dd, date(2026, 11, 16))


def jobs(platform, day: date) -> None:
    """The card and DD daily jobs as their schedules run them: notices first, then the day's collections."""
    with platform.connect() as con:
        card = RecurringCardPayments(con, platform.files, platform.keyring, PARTNERS, at(day, 2))
        card.raise_notices(day)
        due = card.select_due(day)
        card.write_extracts(due)
        card.write_posting_file(card.post(due))
        dd = DirectDebitCollections(con, platform.files, platform.keyring, DD_CONFIG, at(day, 2))
        dd.raise_notices(day)
        batch = dd.select(day)
        dd.write_file(batch)
        dd.write_posting_file(dd.post(batch))


def dispatcher(platform, day: date, hour: int = 4) -> dict:
    with platform.connect() as con:
        return run_dispatcher(con, CONFIG_DIR, outbox.SmtpSettings.from_env(), at(day, hour))


def collected(platform) -> dict[str, tuple]:
    """invoice -> (payment type, business date of the run that took it, amount)."""
    card = platform.query("SELECT invoice_number, 'RECURRING_CARD', business_date, amount_minor FROM card_transactions "
                          "WHERE kind = 'PAYMENT' AND attempt = 1")
    dd = platform.query("SELECT i.invoice_number, 'DIRECT_DEBIT', c.business_date, i.amount_minor "
                        "FROM dd_collection_items i JOIN dd_collections c USING (collection_id) WHERE c.attempt = 1")
    return {invoice: tuple(rest) for invoice, *rest in card + dd}


def notice_rows(platform) -> dict[str, tuple]:
    """invoice -> (payment type, status, sent on, collection date, amount)."""
    rows = platform.query("SELECT invoice_number, payment_type, status, sent_at, collection_on, amount_minor "
                          "FROM collection_notices")
    return {i: (t, s, sent.date() if sent else None, on, amount) for i, t, s, sent, on, amount in rows}


def assert_never_early(platform) -> None:
    """Every collection: a notice of its type SENT, the notice period before the day the money moves, and not
    before the notice's date."""
    notices = notice_rows(platform)
    for invoice, (payment_type, business_date, _) in collected(platform).items():
        kind, status, sent_on, collection_on, _ = notices[invoice]
        assert (kind, status) == (payment_type, "SENT"), invoice
        if payment_type == "RECURRING_CARD":
            assert sent_on + timedelta(days=CARD_NOTICE) <= business_date and collection_on <= business_date
        else:
            entry = cycle(business_date).entry_day
            assert add_working_days(sent_on, DD_CONFIG.advance_notice_days) <= entry and collection_on <= entry


@pytest.mark.slow
def test_a_month_of_card_and_direct_debit_sends_every_notice_and_communication_once(platform, smtp_server):
    platform.keyring.init_keys(BUREAU)
    accounts(platform, ["ACCNT0001", "ACCNT0002"],
             {"ACCNT0003": "CMPNT0003", "ACCNT0004": "CMPNT0004", "ACCNT0005": "CMPNT0005"},
             no_email=("ACCNT0005",))
    # invoice: (account, amount, issued, due); each appears in the store on the day it is issued
    invoices = {
        "INVK1": ("ACCNT0001", 5000, DEC[0], DEC[4]),    # card, due before its notice runs: the 8th
        "INVK2": ("ACCNT0002", 2500, DEC[2], DEC[19]),   # card, notice well ahead: its due date
        "INVK3": ("ACCNT0002", 1234, DEC[23], DEC[23]),  # card, issued on Christmas Eve due the same day: the 31st
        "INVM1": ("ACCNT0003", 4567, DEC[0], DEC[6]),    # DD: 10 working days after Tue 1st is Tue 15th
        "INVM2": ("ACCNT0004", 1000, DEC[9], DEC[10]),   # DD, late: 10 working days after Thu 10th is Thu 24th
        "INVM3": ("ACCNT0005", 700, DEC[1], DEC[9]),     # DD, no e-mail address: the notice cannot go
    }
    for day in DEC:
        for invoice, (account, amount, issued, due) in invoices.items():
            if issued == day:
                add_invoice(platform, account, invoice, amount, issued, due)
        jobs(platform, day)
        dispatcher(platform, day)
        dispatcher(platform, day, hour=5)  # a second dispatcher pass the same day sends nothing more

    notices = notice_rows(platform)
    assert notices == {
        "INVK1": ("RECURRING_CARD", "SENT", DEC[0], DEC[7], 5000),
        "INVK2": ("RECURRING_CARD", "SENT", DEC[2], DEC[19], 2500),
        "INVK3": ("RECURRING_CARD", "SENT", DEC[23], DEC[30], 1234),
        "INVM1": ("DIRECT_DEBIT", "SENT", DEC[0], DEC[14], 4567),
        "INVM2": ("DIRECT_DEBIT", "SENT", DEC[9], DEC[23], 1000),
        "INVM3": ("DIRECT_DEBIT", "RAISED", None, DEC[15], 700),
    }
    # collected on the notice's date exactly (card: the run's day; DD: the run's entry day), to the penny
    taken = collected(platform)
    assert {i: (t, d if t == "RECURRING_CARD" else cycle(d).entry_day, a) for i, (t, d, a) in taken.items()} == {
        "INVK1": ("RECURRING_CARD", DEC[7], 5000),
        "INVK2": ("RECURRING_CARD", DEC[19], 2500),
        "INVK3": ("RECURRING_CARD", DEC[30], 1234),
        "INVM1": ("DIRECT_DEBIT", DEC[14], 4567),
        "INVM2": ("DIRECT_DEBIT", DEC[23], 1000),
    }
    assert_never_early(platform)
    for account in ("ACCNT0001", "ACCNT0002", "ACCNT0003", "ACCNT0004"):
        assert platform.balance(account) == 0, account
    assert platform.balance("ACCNT0005") == 700  # waiting for a notice that could not go: owed, not lost
    with platform.connect() as con:
        waiting = DirectDebitCollections(con, platform.files, platform.keyring, DD_CONFIG).waiting(DEC[30])
    assert (waiting.count, waiting.total_minor, waiting.not_sent) == (1, 700, 1)

    # the customer's inbox: every notice and every communication once, each its own Message-ID
    subjects = smtp_server.subjects()
    assert subjects == sorted([
        "Card payment advance notice: 12.34 GBP on 2026-12-31",
        "Card payment advance notice: 25.00 GBP on 2026-12-20",
        "Card payment advance notice: 50.00 GBP on 2026-12-08",
        "Confirmation of your Direct Debit Instruction",
        "Confirmation of your Direct Debit Instruction",
        "Direct Debit advance notice: 10.00 GBP on 2026-12-24",
        "Direct Debit advance notice: 45.67 GBP on 2026-12-15",
    ])
    ids = [m["Message-ID"] for _, m in smtp_server.messages]
    assert len(ids) == len(set(ids)) == 7
    recipients, message = smtp_server.by_subject("45.67 GBP")
    assert recipients == ["accnt0003@example.com"]
    body = text_of(message)
    assert "We will collect 45.67 GBP by Direct Debit from your bank account on or after 2026-12-15 for invoice " \
           "INVM1." in body
    assert f"Direct Debit reference: CMPNT0003\nService user number: {SUN}\n" in body
    assert "This notice is given under the Direct Debit Guarantee" in body
    _, card_message = smtp_server.by_subject("50.00 GBP")
    assert "We will charge 50.00 GBP to the card you registered for recurring payments on or after 2026-12-08 " \
           "for invoice INVK1." in text_of(card_message)
    assert platform.query("SELECT count(*), count(DISTINCT message_id) FROM email_outbox WHERE status = 'SENT'") == [
        (7, 7)]
    # the account without an address: its notice's action is done (recorded as not sent), nothing is collected
    assert platform.query(
        "SELECT d.result FROM workflow_dispatch d JOIN collection_notices n USING (event_id) "
        "WHERE n.invoice_number = 'INVM3'") == [("not sent: the account has no e-mail address",)]


def test_duplicate_dispatcher_runs_send_each_notice_once(platform, smtp_server):
    accounts(platform, ["ACCNT0001"], {})
    add_invoice(platform, "ACCNT0001", "INVK1", 5000, DEC[0], DEC[4])
    with platform.connect() as con:
        card = RecurringCardPayments(con, platform.files, platform.keyring, PARTNERS, at(DEC[0], 2))
        assert card.raise_notices(DEC[0]).count == 1
        assert card.raise_notices(DEC[0]).count == 0  # a re-run of the day's notice step raises nothing
        assert RecurringCardPayments(con, platform.files, platform.keyring, PARTNERS, at(DEC[1], 2)
                                     ).raise_notices(DEC[1]).count == 0  # nor does the next day's
    first = dispatcher(platform, DEC[0], hour=3)
    assert (first["messages_sent"], first["advance_notices_sent"]) == (1, 1)
    sent_at = platform.query("SELECT sent_at FROM collection_notices")
    for hour in (3, 4, 9):  # the same instant again, and later the same day
        again = dispatcher(platform, DEC[0], hour=hour)
        assert (again["events_registered"], again["messages_sent"], again["advance_notices_sent"]) == (0, 0, 0)
    assert platform.query("SELECT sent_at FROM collection_notices") == sent_at, "SENT once, its time kept"
    assert smtp_server.subjects() == ["Card payment advance notice: 50.00 GBP on 2026-12-08"]


@pytest.mark.slow  # weeks simulated day by day: every daily job and dispatcher run
def test_an_invoice_issued_too_late_for_its_due_date_is_collected_on_the_first_day_allowed(platform, smtp_server):
    platform.keyring.init_keys(BUREAU)
    accounts(platform, ["ACCNT0001"], {"ACCNT0003": "CMPNT0003"})
    issued = date(2026, 12, 10)  # a Thursday; both due the day they are issued
    add_invoice(platform, "ACCNT0001", "INVK1", 3333, issued, issued)
    add_invoice(platform, "ACCNT0003", "INVM1", 4444, issued, issued)
    first_card = issued + timedelta(days=CARD_NOTICE)                    # Thu 17th
    first_entry = add_working_days(issued, DD_CONFIG.advance_notice_days)  # Thu 24th
    day = issued
    while day <= date(2026, 12, 31):
        jobs(platform, day)
        dispatcher(platform, day)
        taken = collected(platform)
        card_on = taken.get("INVK1", (None, None))[1]
        dd_on = taken.get("INVM1", (None, None))[1]
        assert card_on is None or card_on == first_card, f"card collected on {card_on}, allowed from {first_card}"
        assert dd_on is None or cycle(dd_on).entry_day == first_entry, f"DD run {dd_on} enters before {first_entry}"
        if day < first_card:
            with platform.connect() as con:
                waiting = RecurringCardPayments(con, platform.files, platform.keyring, PARTNERS).waiting(day)
            assert (waiting.count, waiting.total_minor, waiting.too_recent) == (1, 3333, 1), day
        day += timedelta(days=1)
    taken = collected(platform)
    assert taken["INVK1"] == ("RECURRING_CARD", first_card, 3333)
    assert taken["INVM1"][0::2] == ("DIRECT_DEBIT", 4444) and cycle(taken["INVM1"][1]).entry_day == first_entry
    assert platform.balance("ACCNT0001") == 0 and platform.balance("ACCNT0003") == 0
    assert_never_early(platform)


def unsent_probe(platform, day: date) -> tuple[int, bool]:
    """The 'Advance Notices Not Sent' alert probe as configured in config/probes.yaml, evaluated at 23:00 on `day`."""
    from datetime import UTC, datetime, time

    from cmp_pipelines.core import probe_queries
    from cmp_pipelines.core.config import load_probes
    from cmp_pipelines.core.probes import PROBES_BY_ID

    with platform.connect() as con:
        [outcome] = probe_queries.evaluate(con, load_probes(CONFIG_DIR), datetime.combine(day, time(23), UTC),
                                           probes=(PROBES_BY_ID["card_advance_notices_unsent"],))
    return outcome.value, outcome.tripped


@pytest.mark.slow  # weeks simulated day by day: every daily job and dispatcher run
def test_without_a_sent_notice_nothing_is_collected_and_the_wait_is_counted(platform):
    """The notice raised, the dispatcher never run: weeks later the card invoice still waits, reported."""
    accounts(platform, ["ACCNT0001"], {})
    add_invoice(platform, "ACCNT0001", "INVK1", 5000, DEC[0], DEC[4])
    for day in DEC[:20]:
        jobs(platform, day)
    assert collected(platform) == {}
    with platform.connect() as con:
        waiting = RecurringCardPayments(con, platform.files, platform.keyring, PARTNERS).waiting(DEC[19])
    assert (waiting.count, waiting.total_minor, waiting.no_notice, waiting.not_sent) == (1, 5000, 0, 1)
    assert platform.balance("ACCNT0001") == 5000
    assert unsent_probe(platform, DEC[19]) == (1, True), "the alert probe names the notice that did not go"
    dispatcher(platform, DEC[20])  # sent on the 21st: collectable 7 days later, on the 28th
    assert unsent_probe(platform, DEC[20]) == (0, False)
    for day in DEC[20:]:
        jobs(platform, day)
    assert collected(platform) == {"INVK1": ("RECURRING_CARD", DEC[27], 5000)}
    assert platform.balance("ACCNT0001") == 0
