"""A month of recurring card payments simulated day by day: due dates, soft declines retried then paid, a soft
decline running out of retries, a hard decline, and a refund declined once then paid. Every balance is asserted
to the penny, with payment types, suspensions, events and communications."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime

import pytest

from cmp_pipelines.core import payment_setup
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.platform import (
    Platform,
    add_customer,
    document,
    extract_ids,
    payment,
    rejection,
    rejections_document,
)

# A month of the card flows, day by day (one module-wide scenario): in `make test`, left out of `make test-fast`.
# One worker takes the whole module (`--dist loadgroup`), so the month is simulated once, not once per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("card_month")]

DEC = [date(2026, 12, d) for d in range(1, 32)]


@pytest.fixture(scope="module")
def month_template(tmp_path_factory, platform_template):
    """The month simulated once per module (a minute of runs), its data folder copied per test: every test reads
    the same month, and the one that re-runs a day does so on its own copy."""
    root = tmp_path_factory.mktemp("card-month")
    shutil.copytree(platform_template, root, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CMP_DATA_DIR", str(root))
        env.setenv("CMP_KEYS_DIR", str(root / "keys"))
        env.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        env.delenv("CMP_SMTP_HOST", raising=False)
        facts = simulate_month(Platform(root, LocalFileStore(base_dir=str(root)), PartnerKeyring(root / "keys")))
    return root, facts


@pytest.fixture
def month(platform, month_template):
    root, facts = month_template
    shutil.copytree(root, platform.root, dirs_exist_ok=True)
    return facts


def simulate_month(platform) -> dict:
    a = add_customer(platform, 101, [("INVA1", 10000, DEC[2])])
    b = add_customer(platform, 102, [("INVB1", 5000, DEC[4]), ("INVB2", 2000, DEC[7])])
    c = add_customer(platform, 103, [("INVC1", 3000, DEC[1])])
    d = add_customer(platform, 104, [("INVD1", 8000, DEC[3]), ("INVD2", 4000, DEC[19])])
    e = add_customer(platform, 105, [("INVE1", 1000, DEC[0])])
    # E overpays 15.00 at a PayPoint; the credit is refunded to the card on the 15th
    platform.process(platform.drop("e-credit.json.enc", document([payment("1", e, "15.00")])))
    with platform.connect() as con:
        refund_id = payment_setup.approve_card_refund(con, e, "15.00", now=datetime(2026, 12, 10, tzinfo=UTC),
                                                      due_on=DEC[14], reason="overpayment")
    # what the provider declines, by the day its rejection file arrives
    declines = {
        DEC[5]: [("PINVB1-1", b, "50.00", "51")],    # insufficient funds: 3 retries, 5 days
        DEC[2]: [("PINVC1-1", c, "30.00", "05")],    # do not honour: 2 retries, 3 days
        DEC[6]: [("PINVC1-2", c, "30.00", "05")],
        DEC[10]: [("PINVC1-3", c, "30.00", "05")],   # third attempt: out of retries
        DEC[4]: [("PINVD1-1", d, "80.00", "54")],    # expired card: hard
        DEC[15]: [(f"R{refund_id}-1", e, "15.00", "91")],  # issuer unavailable: 3 retries, 1 day
    }
    extracts = {}
    for day in DEC:
        platform.card_day(day)
        extracts[day] = extract_ids(platform, day)
        if day in declines:
            records = [rejection(str(i), *item, rejected_at=f"{day}T09:00:00Z") for i, item in enumerate(declines[day])]
            key = platform.drop_rejections(f"rej-{day}.json.enc", rejections_document(records, file_id=f"REJ-{day}"))
            platform.process_rejections(key, now=datetime(day.year, day.month, day.day, 10, tzinfo=UTC))
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "refund": refund_id, "extracts": extracts}


def test_each_day_extracts_exactly_what_is_due(month):
    x, refund = month["extracts"], month["refund"]
    assert x[DEC[0]] == ["PINVE1-1"]
    assert x[DEC[1]] == ["PINVC1-1"]
    assert x[DEC[2]] == ["PINVA1-1"]
    assert x[DEC[3]] == ["PINVD1-1"]
    assert x[DEC[4]] == ["PINVB1-1"]
    assert x[DEC[5]] == ["PINVC1-2"]          # C's retry after 3 days' suspension
    assert x[DEC[7]] == []                      # B's second invoice is due, but B is suspended until the 11th
    assert x[DEC[9]] == ["PINVC1-3"]
    assert x[DEC[10]] == ["PINVB1-2", "PINVB2-1"]  # B's retry and the invoice held back by the suspension
    assert x[DEC[14]] == [f"R{refund}-1"]
    assert x[DEC[16]] == [f"R{refund}-2"]       # the refund's retry, one day after the soft decline on the 16th
    assert x[DEC[19]] == []                     # D's second invoice: D pays manually since the hard decline
    every = [t for day in DEC for t in x[day]]
    assert len(every) == len(set(every)), "no transaction is ever extracted twice"


def test_ledger_balances_to_the_penny(month, platform):
    assert platform.balance(month["a"]) == 0
    assert platform.balance(month["b"]) == 0
    assert platform.balance(month["c"]) == 3000
    assert platform.balance(month["d"]) == 12000
    assert platform.balance(month["e"]) == 0
    reversals = dict(platform.query(
        "SELECT source_ref, amount_minor FROM ledger_postings WHERE kind = 'CARD_REVERSAL' ORDER BY 1"))
    assert reversals == {"PINVB1-1": 5000, "PINVC1-1": 3000, "PINVC1-2": 3000, "PINVC1-3": 3000, "PINVD1-1": 8000,
                         f"R{month['refund']}-1": -1500}


def test_payment_types_and_suspensions(month, platform):
    state = dict((a, (t, str(s) if s else None)) for a, t, s in platform.query(
        "SELECT account_number, payment_type, suspended_until FROM accounts WHERE account_number LIKE 'ACC000001%'"))
    assert state[month["a"]] == ("RECURRING_CARD", None)
    assert state[month["b"]] == ("RECURRING_CARD", "2026-12-11")
    assert state[month["c"]][0] == "MANUAL"
    assert state[month["d"]][0] == "MANUAL"
    assert state[month["e"]] == ("RECURRING_CARD", "2026-12-17")
    changes = platform.query("SELECT account_number, new_type, cause FROM payment_type_changes "
                             "WHERE new_type = 'MANUAL' ORDER BY 1")
    assert changes == [(month["c"], "MANUAL", "card decline 05 on PINVC1-3"),
                       (month["d"], "MANUAL", "card decline 54 on PINVD1-1")]


def test_workflow_events_and_customer_communications(month, platform):
    events = platform.query("SELECT account_number, event_code, source_ref FROM workflow_events "
                            "WHERE event_type <> 'ADVANCE_NOTICE' ORDER BY event_id")
    assert events == [
        (month["c"], "CARD_SOFT_DECLINE", "PINVC1-1"),
        (month["d"], "CARD_HARD_DECLINE_REFUND", "PINVD1-1"),
        (month["b"], "CARD_SOFT_DECLINE", "PINVB1-1"),
        (month["c"], "CARD_SOFT_DECLINE", "PINVC1-2"),
        (month["c"], "CARD_PAYMENT_CANCELLED", "PINVC1-3"),
        (month["e"], "CARD_SOFT_DECLINE", f"R{month['refund']}-1"),
    ]
    letters = dict(((a, t), body) for a, t, body in platform.query(
        "SELECT account_number, source_ref, body FROM customer_communications"))
    assert letters[(month["b"], "PINVB1-1")] == (
        "Your card payment of 50.00 GBP for invoice INVB1 was declined (Insufficient funds). "
        "We will try again on 2026-12-11.")
    assert letters[(month["c"], "PINVC1-3")].endswith(
        "was declined (Do not honour) after 3 attempts. Your recurring card payment is cancelled and your account "
        "now pays by manual payment: please pay the invoice another way.")
    assert "could not refund 15.00 GBP to your card ending 4242" in letters[(month["e"], f"R{month['refund']}-1")]


def test_rerunning_a_day_gives_the_same_extract_and_posts_nothing(month, platform):
    before = platform.read_extract(DEC[10])
    postings = platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings")
    again = platform.card_day(DEC[10], now=datetime(2026, 12, 28, 8, tzinfo=UTC))
    assert again.status == "ALREADY_SELECTED"
    assert platform.read_extract(DEC[10]) == before
    assert platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings") == postings
    header = before["header"]
    assert (header["record_count"], header["total_amount"], header["payment_count"]) == (2, "70.00", 2)
    assert header["file_id"] == "RCX-20261211-CARDPAY-GBP" and header["business_date"] == "2026-12-11"
