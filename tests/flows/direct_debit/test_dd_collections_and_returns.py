"""Direct debit collections (Standard 18, 01/17/18/19 with the 99 contra) and ARUDD returns through the
Rejections job: advance notice, re-presentation with 18 after a soft return, hard returns, totals to the penny."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cmp_pipelines.core.mandates import cancel_mandate, mandate_view
from cmp_pipelines.defs.direct_debit.collections import DirectDebitCollections
from tests.support.direct_debit import (
    BUREAU,
    DD_CONFIG,
    active_dd_accounts,
    add_invoice,
    arudd,
    at,
    collection_day,
    drop_report,
    process_arudd,
    returned,
)

D0 = date(2026, 12, 1)
ACTIVE_ON = D0 + timedelta(days=DD_CONFIG.activation_days)  # 2026-12-11


@pytest.fixture
def dd(platform):
    platform.keyring.init_keys(BUREAU)
    add_invoice(platform, "ACCDD0001", "INVDD0001", 4567, date(2026, 12, 5), date(2026, 12, 19))
    active_dd_accounts(platform, {"ACCDD0001": "CMPDD0001"}, D0)
    return platform


def debits(parsed) -> list[tuple]:
    return [(r.transaction_code, r.reference, r.amount_pence, r.destination_sort_code, r.destination_account)
            for r in parsed.records]


def test_first_collection_waits_for_due_date_and_advance_notice_then_posts_to_the_penny(dd):
    # its advance notice leaves on the 15th: 10 Bacs working days later is Thu 31 (Christmas, Boxing Day's Monday
    # substitute and the weekend do not count)
    add_invoice(dd, "ACCDD0001", "INVDD0002", 1000, date(2026, 12, 15), date(2026, 12, 16))
    # Wed 16: processed Thu 17, the money leaves on Fri 18, before the invoice is due (19th): nothing yet
    early, parsed_early, _ = collection_day(dd, date(2026, 12, 16))
    assert early.collection_count == 0 and parsed_early is None  # nothing due: no file for Bacs
    assert not dd.files.exists(f"outbound/dd_collections/{BUREAU}/DDX-20261216.std18.enc")
    # Thu 17: processed Fri 18, entry Mon 21 (the weekend skipped), on or after the due date: collected
    batch, parsed, posted = collection_day(dd, date(2026, 12, 17))
    assert batch.by_code == {"01": 1} and batch.total_minor == 4567
    assert debits(parsed) == [("01", "CMPDD0001", 4567, "201575", "87654321"),
                              ("99", "CONTRA", 4567, "400000", "12345678")]
    assert (parsed.debit_total, parsed.debit_count, parsed.credit_total, parsed.credit_count) == (4567, 1, 4567, 1)
    assert parsed.submission.processing_date == date(2026, 12, 18) and parsed.submission.work_code == "1 DAILY"
    assert (posted.posting_count, posted.total_minor) == (1, -4567)
    assert dd.balance("ACCDD0001") == 1000
    # Wed 23: processed Thu 24, entry Tue 29 (Christmas and the Boxing Day substitute skipped): 8 working days
    # after the notice, too soon: the invoice waits, counted, not lost
    held, parsed_held, _ = collection_day(dd, date(2026, 12, 23))
    assert held.collection_count == 0 and parsed_held is None
    with dd.connect() as con:
        flow = DirectDebitCollections(con, dd.files, dd.keyring, DD_CONFIG)
        waiting = flow.waiting(date(2026, 12, 23))
    assert (waiting.count, waiting.total_minor, waiting.too_recent) == (1, 1000, 1)
    # Tue 29: processed Wed 30, entry Thu 31, the notice's date: collected
    later, parsed_later, _ = collection_day(dd, date(2026, 12, 29))
    assert parsed_later.submission.processing_date == date(2026, 12, 30)
    assert debits(parsed_later)[0] == ("17", "CMPDD0001", 1000, "201575", "87654321")
    assert dd.balance("ACCDD0001") == 0
    # every submission and posting file is registered for delivery, once, to the bureau and the sales ledger
    assert dd.query("SELECT document_kind, partner, remote_name, status FROM delivery_register "
                    "WHERE document_kind IN ('DD_COLLECTION', 'LEDGER_POSTING') ORDER BY delivery_id") == [
        ("LEDGER_POSTING", "SALES_LEDGER", "DDP-20261216.json", "PENDING"),  # no debit that day: an empty batch
        ("DD_COLLECTION", BUREAU, "DDX-20261217.std18.enc", "PENDING"),
        ("LEDGER_POSTING", "SALES_LEDGER", "DDP-20261217.json", "PENDING"),
        ("LEDGER_POSTING", "SALES_LEDGER", "DDP-20261223.json", "PENDING"),
        ("DD_COLLECTION", BUREAU, "DDX-20261229.std18.enc", "PENDING"),
        ("LEDGER_POSTING", "SALES_LEDGER", "DDP-20261229.json", "PENDING"),
    ]
    assert {k for (k,) in dd.query("SELECT DISTINCT document_kind FROM delivery_register")} >= {"AUDDIS"}


def test_rerunning_a_collection_day_writes_the_same_file_and_posts_nothing(dd):
    first, parsed, posted = collection_day(dd, date(2026, 12, 17))
    add_invoice(dd, "ACCDD0001", "INVDD0003", 500, date(2026, 12, 1), date(2026, 12, 2))  # arrives after selection
    again, parsed_again, posted_again = collection_day(dd, date(2026, 12, 17))
    assert again.status == "ALREADY_SELECTED" and parsed_again.records == parsed.records
    assert (posted_again.posted_now, posted_again.total_minor) == (0, -4567)
    assert dd.balance("ACCDD0001") == 500


def test_soft_return_is_represented_once_with_18_then_reverts_to_manual(dd):
    collection_day(dd, date(2026, 12, 17))  # processed on the 18th, which the ARUDD reports
    key = drop_report(dd, "arudd", "ARUDD-001.xml", arudd([returned("CMPDD0001", "0128", date(2026, 12, 18),
                                                                     "45.67", trans="01")]))
    load, posted, report = process_arudd(dd, key, date(2026, 12, 21))
    assert load.outcomes == {"RETRY_SCHEDULED": 1}
    assert (posted.posting_count, posted.total_minor) == (1, 4567)
    assert dd.balance("ACCDD0001") == 4567
    [row] = report["returns"]
    assert (row["outcome"], row["reason_code"], row["represent_on"]) == ("RETRY_SCHEDULED", "ARUDD0", "2026-12-26")
    assert dd.query("SELECT suspended_until::VARCHAR FROM accounts WHERE account_number = 'ACCDD0001'") == [
        ("2026-12-26",)]
    suspended, _, _ = collection_day(dd, date(2026, 12, 21))  # entry Wed 23, before the 26th
    assert suspended.collection_count == 0
    represented, parsed, _ = collection_day(dd, date(2026, 12, 26))  # a Saturday: input Tue 29, processed Wed 30
    assert debits(parsed)[0] == ("18", "CMPDD0001", 4567, "201575", "87654321")
    assert parsed.submission.processing_date == date(2026, 12, 30)
    assert dd.balance("ACCDD0001") == 0

    again = drop_report(dd, "arudd", "ARUDD-002.xml", arudd([returned("CMPDD0001", "0128", date(2026, 12, 30),
                                                                       "45.67", trans="18")], number="000002"))
    load, _, _ = process_arudd(dd, again, date(2027, 1, 4))
    assert load.outcomes == {"RETRIES_EXHAUSTED": 1}
    assert dd.balance("ACCDD0001") == 4567
    assert dd.query("SELECT payment_type FROM accounts WHERE account_number = 'ACCDD0001'") == [("MANUAL",)]
    events = dd.query("SELECT event_code FROM workflow_events WHERE account_number = 'ACCDD0001' "
                      "AND event_type <> 'ADVANCE_NOTICE' ORDER BY raised_at")
    assert events == [("MANDATE_SETUP_CONFIRMED",), ("DD_REPRESENTATION",), ("DD_PAYMENT_CANCELLED",)]
    assert collection_day(dd, date(2027, 1, 5))[0].collection_count == 0


def test_hard_return_reverses_every_invoice_of_the_debit_and_reverts_to_manual(dd):
    add_invoice(dd, "ACCDD0001", "INVDD0004", 1234, date(2026, 12, 2), date(2026, 12, 12))
    batch, parsed, _ = collection_day(dd, date(2026, 12, 17))
    assert debits(parsed)[0][2] == 5801  # one debit per mandate for both invoices
    key = drop_report(dd, "arudd", "ARUDD-003.xml", arudd([returned("CMPDD0001", "1012", date(2026, 12, 18),
                                                                     "58.01", trans="01",
                                                                     returnDescription="INSTRUCTION CANCELLED")]))
    load, posted, _ = process_arudd(dd, key, date(2026, 12, 21))
    assert load.outcomes == {"HARD_DECLINE": 1}
    assert (posted.posting_count, posted.total_minor) == (2, 5801)
    assert dd.query("SELECT invoice_number, amount_minor FROM ledger_postings WHERE kind = 'DD_REVERSAL' "
                    "ORDER BY 1") == [("INVDD0001", 4567), ("INVDD0004", 1234)]
    assert dd.balance("ACCDD0001") == 5801
    assert dd.query("SELECT payment_type FROM accounts WHERE account_number = 'ACCDD0001'") == [("MANUAL",)]
    assert dd.query("SELECT event_code, source_ref FROM workflow_events WHERE event_type = 'RECURRING_PAYMENT'") == [
        ("DD_HARD_RETURN", "DD20261217-CMPDD0001")]
    [(template, body)] = dd.query("SELECT template, body FROM customer_communications")
    assert template == "DD_PAYMENT_RETURNED" and "58.01 GBP collected on 2026-12-17" in body
    assert "Instruction cancelled" in body
    # instruction cancelled: the mandate is cancelled and nothing is collected under it again
    assert dd.query("SELECT status, cancelled_on::VARCHAR FROM mandates") == [("CANCELLED", "2026-12-21")]
    add_invoice(dd, "ACCDD0001", "INVDD0005", 700, date(2026, 12, 1), date(2026, 12, 22))
    with dd.connect() as con:  # even were the account put back on direct debit
        con.execute("UPDATE accounts SET payment_type = 'DIRECT_DEBIT' WHERE account_number = 'ACCDD0001'")
    assert collection_day(dd, date(2026, 12, 22))[0].collection_count == 0


def test_returns_that_match_nothing_are_rejected_and_nothing_posts_twice(dd):
    collection_day(dd, date(2026, 12, 17))
    first = date(2026, 12, 18)  # the processing day
    items = [
        returned("CMPDD0001", "0128", first, "45.00", trans="01"),   # amount differs
        returned("NOSUCHREF", "0128", first, "45.67", trans="01"),   # unknown reference
        returned("CMPDD0001", "0099", first, "45.67", trans="01"),   # unmapped return code: reversed, not retried
        returned("CMPDD0001", "0128", first, "45.67", trans="01"),   # the same debit again
        returned("CMPDD0001", "12", first, "45.67", trans="01"),     # not four digits
        returned("CMPDD0001", "0128", first, "45.67", trans="17"),   # no regular debit that day
    ]
    key = drop_report(dd, "arudd", "ARUDD-004.xml", arudd(items))
    load, posted, report = process_arudd(dd, key, date(2026, 12, 21))
    rows = {r["position"]: (r["outcome"], r["problem_code"]) for r in report["returns"]}
    assert rows == {1: ("REJECTED", "AMOUNT_MISMATCH"), 2: ("REJECTED", "UNKNOWN_REFERENCE"),
                    3: ("UNCONFIGURED_CODE", "UNKNOWN_RETURN_CODE"), 4: ("REJECTED", "DUPLICATE_RETURN"),
                    5: ("REJECTED", "INVALID_RECORD"), 6: ("REJECTED", "UNKNOWN_REFERENCE")}
    assert report["returns"][5]["problem"] == "no 17 debit with reference 'CMPDD0001' was collected on 2026-12-18"
    assert report["returns"][2]["problem"].startswith("returnCode '0099' (RETURNED) is not mapped in config/")
    assert (posted.posting_count, posted.total_minor) == (1, 4567)
    assert dd.query("SELECT category, count(*) FROM job_errors WHERE job = 'arudd' GROUP BY 1 ORDER BY 1") == [
        ("CONFIGURATION", 1), ("DATA", 2)]
    resent = drop_report(dd, "arudd", "ARUDD-004-again.xml", arudd(items[:1], number="000009"))
    load_again, posted_again, report_again = process_arudd(dd, resent, date(2026, 12, 22))
    assert report_again["returns"][0]["problem_code"] in ("AMOUNT_MISMATCH", "ALREADY_RETURNED")
    assert posted_again.posting_count == 0 and dd.balance("ACCDD0001") == 4567


def test_final_collection_is_19_then_the_mandate_is_cancelled_with_0c(dd):
    mandate_id = "DDI-123456-CMPDD0001"
    with dd.connect() as con:
        view = cancel_mandate(con, mandate_id, now=at(date(2026, 12, 18)), cause="customer leaving",
                              after_final_collection=True)
    assert (view["status"], view["final_collection_requested"]) == ("ACTIVE", True)
    batch, parsed, _ = collection_day(dd, date(2026, 12, 17))
    assert debits(parsed)[0][0] == "19" and batch.mandates_cancelled == 1
    with dd.connect() as con:
        assert mandate_view(con, mandate_id)["pending_instruction"] == "CANCEL"
        assert mandate_view(con, mandate_id)["status"] == "CANCELLED"
