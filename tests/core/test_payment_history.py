"""The payment history of one account that paid every way, each through its real flow: every row with its
status, reason and amount to the penny, newest first; filters and paging; the published copy the API reads."""

from __future__ import annotations

from datetime import date

import pytest

from cmp_pipelines.core.payment_history import (
    HistoryFilter,
    HistoryFilterError,
    account_history,
    page,
    publish_history,
)
from tests.support.history import ACCOUNT, every_kind_of_payment


def rows(platform, **filters) -> list[tuple]:
    with platform.connect() as con:
        history = account_history(con, ACCOUNT, HistoryFilter(**filters))
    return [(r["date"], r["source"], r["method"], r["kind"], r["amount"], r["status"], r["reason_code"], r["reason"],
             r["invoice_number"], r["reference"]) for r in history.rows]


@pytest.fixture
def history(platform):
    ids = every_kind_of_payment(platform)
    return platform, ids


def test_every_flow_shows_in_one_history_newest_first_to_the_penny(history):
    platform, ids = history
    assert rows(platform) == [
        ("2027-01-05", "CARD", "RECURRING_CARD", "REFUND", "2.25", "APPROVED", None, "overcharge", None, None),
        ("2026-12-21", "DIRECT_DEBIT", "DIRECT_DEBIT", "RETURN", "120.00", "RETRY_SCHEDULED", "ARUDD0",
         "Refer to payer", None, "DD20261217-CMPHIST01"),
        ("2026-12-17", "DIRECT_DEBIT", "DIRECT_DEBIT", "PAYMENT", "120.00", "SOFT_DECLINED", "ARUDD0",
         "Refer to payer", "INVH0001 INVH0002", "CMPHIST01"),
        ("2026-11-26", "CARD", "RECURRING_CARD", "REVERSAL", "80.00", "HARD_DECLINE", "04", "Pick up card",
         "INVH0001", "PINVH0001-1"),
        ("2026-11-25", "CARD", "RECURRING_CARD", "REFUND", "7.50", "EXTRACTED", None, None, None, ids["refund_now"]),
        ("2026-11-25", "CARD", "RECURRING_CARD", "PAYMENT", "80.00", "HARD_DECLINED", "04", "Pick up card",
         "INVH0001", None),
        ("2026-11-20", "NRP", "CHEQUE", "PAYMENT", None, "REJECTED", "AMOUNT_PRECISION",
         "amount '5.001' has 3 decimal places; exactly 2 are required", None, None),
        ("2026-11-20", "NRP", "CASH", "PAYMENT", "20.00", "ACCEPTED", None, None, "INVH0001", "PP 1"),
    ]


def test_filters_by_method_status_kind_and_dates_and_pages_with_offsets(history):
    platform, _ = history
    assert [r[4] for r in rows(platform, method="RECURRING_CARD")] == ["2.25", "80.00", "7.50", "80.00"]
    assert [r[3] for r in rows(platform, kind="REFUND")] == ["REFUND", "REFUND"]
    assert [r[4] for r in rows(platform, status="ACCEPTED")] == ["20.00"]
    assert [r[0] for r in rows(platform, date_from=date(2026, 11, 25), date_to=date(2026, 12, 17))] == \
        ["2026-12-17", "2026-11-26", "2026-11-25", "2026-11-25"]
    with platform.connect() as con:
        first = account_history(con, ACCOUNT, HistoryFilter(limit=3))
        second = account_history(con, ACCOUNT, HistoryFilter(limit=3, offset=first.next_offset))
        last = account_history(con, ACCOUNT, HistoryFilter(limit=3, offset=second.next_offset))
        beyond = account_history(con, ACCOUNT, HistoryFilter(limit=3, offset=20))
        assert account_history(con, "NOSUCHACC", HistoryFilter()) is None
    assert (first.total, first.next_offset, second.next_offset, last.next_offset) == (8, 3, 6, None)
    everything = [r["payment_ref"] for r in first.rows + second.rows + last.rows]
    assert len(set(everything)) == 8 and [r["payment_ref"] for r in rows_of(platform)] == everything
    assert (beyond.rows, beyond.total, beyond.next_offset) == ([], 8, None)


def rows_of(platform):
    with platform.connect() as con:
        return account_history(con, ACCOUNT, HistoryFilter()).rows


@pytest.mark.parametrize(("filters", "field", "message"), [
    ({"method": "BITCOIN"}, "method", "'BITCOIN' is not a method; use one of CASH, CHEQUE, POSTAL_ORDER, "
     "BANK_TRANSFER, RECURRING_CARD, DIRECT_DEBIT, CARD_ON_FILE, HOSTED_PAGE"),
    ({"kind": "GIFT"}, "kind", "'GIFT' is not a kind; use one of PAYMENT, REFUND, REVERSAL, RETURN"),
    ({"date_from": date(2026, 12, 2), "date_to": date(2026, 12, 1)}, "from", "2026-12-02 is after to 2026-12-01"),
    ({"limit": 0}, "limit", "must be 1-500"),
    ({"offset": -1}, "offset", "must be 0 or more"),
])
def test_a_bad_filter_is_refused_naming_it(filters, field, message):
    with pytest.raises(HistoryFilterError) as caught:
        HistoryFilter(**filters).check()
    assert (caught.value.field, caught.value.message) == (field, message)


def test_the_published_copy_answers_as_the_store_does_without_one_off_payments(history, tmp_path):
    platform, _ = history
    target = tmp_path / "history.parquet"
    with platform.connect() as con:
        assert publish_history(con, target) == 8 + platform.query(
            "SELECT count(*) FROM nrp_records WHERE account_number <> ?", [ACCOUNT])[0][0]
        expected = account_history(con, ACCOUNT, HistoryFilter(limit=5, offset=2))
        published = page(con, "SELECT * FROM read_parquet($path)", ACCOUNT, HistoryFilter(limit=5, offset=2),
                         {"path": str(target)})
    assert published == expected
