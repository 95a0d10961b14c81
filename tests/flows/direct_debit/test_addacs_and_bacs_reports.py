"""ADDACS advices applied by mandate revision code (3 amend without 0C to the old bank, 1 cancel, R reinstate),
and the bureau's reports refused whole when malformed, mis-encoded, for another service user or resent."""

from __future__ import annotations

from datetime import date, timedelta

import orjson
import pytest

from cmp_pipelines.core.intake import FileQuarantined
from cmp_pipelines.core.mandates import mandate_view
from tests.support.direct_debit import (
    BUREAU,
    DD_CONFIG,
    active_dd_accounts,
    add_invoice,
    addacs,
    arudd,
    auddis_day,
    collection_day,
    drop_report,
    process_addacs,
    process_arudd,
    returned,
)

D0 = date(2026, 12, 1)
ADVICE_DAY = date(2026, 12, 14)


@pytest.fixture
def dd(platform):
    platform.keyring.init_keys(BUREAU)
    for n in range(1, 5):
        add_invoice(platform, f"ACCDD000{n}", f"INVDD000{n}", 1000 * n, date(2026, 12, 1), date(2026, 12, 20))
    active_dd_accounts(platform, {f"ACCDD000{n}": f"CMPDD000{n}" for n in range(1, 5)}, D0)
    return platform


def status(platform, reference: str) -> tuple:
    with platform.connect() as con:
        view = mandate_view(con, f"DDI-123456-{reference}")
        payment_type = con.execute("SELECT payment_type FROM accounts WHERE account_number = ?",
                                   [view["account_number"]]).fetchone()[0]
    return view["status"], view["pending_instruction"], view["sort_code"], view["bank_account"], payment_type


def advice(reference: str, code: str, **extra) -> dict:
    return {"reference": reference, "payer-name": "Zoë Renée Müller", "payer-sort-code": "201575",
            "payer-account-number": "87654321", "reason-code": code, "effective-date": "2026-12-13", **extra}


def test_one_report_amends_cancels_and_reinstates_by_revision_code(dd):
    report = addacs([
        advice("CMPDD0001", "3", **{"payer-new-sort-code": "309634", "payer-new-account-number": "11112222"}),
        advice("CMPDD0002", "1"),
        advice("CMPDD0003", "B"),
    ])
    assert b"encoding='ISO-8859-1'" in report and "Zoë".encode("latin-1") in report
    load = process_addacs(dd, drop_report(dd, "addacs", "ADDACS-001.xml", report), ADVICE_DAY)
    assert load.outcomes == {"MANDATE_AMENDED": 1, "MANDATE_CANCELLED": 2}
    assert status(dd, "CMPDD0001") == ("AMENDMENT_PENDING", "NEW", "309634", "11112222", "DIRECT_DEBIT")
    assert status(dd, "CMPDD0002") == ("CANCELLED", None, "201575", "87654321", "MANUAL")

    _, parsed = auddis_day(dd, ADVICE_DAY + timedelta(days=1))
    # code 3: only a 0N to the new bank; never a 0C to the old one. Bank cancellations need no 0C either.
    assert [(r.transaction_code, r.reference, r.destination_sort_code, r.destination_account)
            for r in parsed.records] == [("0N", "CMPDD0001", "309634", "11112222")]
    assert status(dd, "CMPDD0001")[0] == "SUBMITTED"
    auddis_day(dd, ADVICE_DAY + timedelta(days=1 + DD_CONFIG.activation_days))
    assert status(dd, "CMPDD0001")[0] == "ACTIVE"

    reinstated = process_addacs(dd, drop_report(dd, "addacs", "ADDACS-002.xml",
                                                addacs([advice("CMPDD0002", "R")], number="000002")),
                                ADVICE_DAY + timedelta(days=2))
    assert reinstated.outcomes == {"MANDATE_REINSTATED": 1}
    assert status(dd, "CMPDD0002") == ("AMENDMENT_PENDING", "NEW", "201575", "87654321", "DIRECT_DEBIT")
    _, parsed = auddis_day(dd, ADVICE_DAY + timedelta(days=3))
    assert [(r.transaction_code, r.reference) for r in parsed.records] == [("0N", "CMPDD0002")]

    events = dd.query("SELECT event_code, source_ref FROM workflow_events "
                      "WHERE event_code <> 'MANDATE_SETUP_CONFIRMED' ORDER BY raised_at, source_ref")
    assert events == [("MANDATE_AMENDED", "DDI-123456-CMPDD0001"), ("MANDATE_CANCELLED", "DDI-123456-CMPDD0002"),
                      ("MANDATE_CANCELLED", "DDI-123456-CMPDD0003"), ("MANDATE_REINSTATED", "DDI-123456-CMPDD0002")]
    changes = dd.query("SELECT account_number, old_type, new_type FROM payment_type_changes "
                       "WHERE cause LIKE 'ADDACS%' ORDER BY changed_at, account_number")
    assert changes == [("ACCDD0002", "DIRECT_DEBIT", "MANUAL"), ("ACCDD0003", "DIRECT_DEBIT", "MANUAL"),
                       ("ACCDD0002", "MANUAL", "DIRECT_DEBIT")]
    history = dd.query("SELECT new_status, cause FROM mandate_history WHERE mandate_id = 'DDI-123456-CMPDD0001' "
                       "AND cause LIKE 'ADDACS%'")
    assert history == [("AMENDMENT_PENDING", "ADDACS 3 (Account transferred to a new bank)")]


def test_an_amended_mandate_is_not_collected_until_active_again(dd):
    process_addacs(dd, drop_report(dd, "addacs", "ADDACS-003.xml", addacs([advice(
        "CMPDD0004", "C", **{"payer-new-sort-code": "309999", "payer-new-account-number": "44445555"})])),
        ADVICE_DAY)
    batch, parsed, _ = collection_day(dd, date(2026, 12, 20))
    assert "CMPDD0004" not in [r.reference for r in parsed.records] and batch.collection_count == 3


def test_cancellation_of_a_mandate_never_activated_marks_it_failed(dd, platform):
    from cmp_pipelines.core.mandates import create_mandate
    from tests.support.direct_debit import at

    add_invoice(dd, "ACCDD0009", "INVDD0009", 100, D0, D0)
    with dd.connect() as con:
        create_mandate(con, "ACCDD0009", sort_code="201575", bank_account="12121212", account_name="New Payer",
                       config=DD_CONFIG, now=at(ADVICE_DAY), reference="CMPDD0009")
    auddis_day(dd, ADVICE_DAY)
    load = process_addacs(dd, drop_report(dd, "addacs", "ADDACS-004.xml", addacs([advice("CMPDD0009", "0")])),
                          ADVICE_DAY + timedelta(days=2))
    assert load.outcomes == {"MANDATE_FAILED": 1}
    assert status(dd, "CMPDD0009")[:2] == ("FAILED", None)


def test_bad_advices_are_rejected_and_reported_and_change_nothing(dd):
    report = addacs([
        advice("NOSUCHREF1", "1"),
        advice("CMPDD0001", "Z"),
        advice("CMPDD0002", "3", **{"payer-new-sort-code": "30-96-34", "payer-new-account-number": "11112222"}),
        advice("CMPDD0003", "3", **{"payer-new-sort-code": "309634"}),
        advice("CMPDD0004", "1", **{"effective-date": "13/12/2026"}),
        advice("CMPDD0004", "1"),
    ])
    key = drop_report(dd, "addacs", "ADDACS-005.xml", report)
    load = process_addacs(dd, key, ADVICE_DAY)
    assert load.outcomes == {"REJECTED": 6}
    written = orjson.loads(dd.files.read_bytes(f"outbound/reports/addacs/{BUREAU}/ADDACS-005.xml.outcomes.json"))
    problems = [(a["position"], a["problem_code"], a["problem"]) for a in written["advices"]]
    assert problems == [
        (1, "UNKNOWN_REFERENCE", "no mandate has reference 'NOSUCHREF1' under service user 123456"),
        (2, "UNKNOWN_CODE", "reason-code 'Z' is not configured in config/mandate_revision_codes.yaml"),
        (3, "INVALID_RECORD", "payer-new-sort-code '30-96-34' must be 6 digits"),
        (4, "INVALID_RECORD", "an amendment gives both payer-new-sort-code and payer-new-account-number, or neither"),
        (5, "INVALID_RECORD", "effective-date '13/12/2026' must be a date YYYY-MM-DD"),
        (6, "DUPLICATE_REFERENCE", "reference 'CMPDD0004' has an earlier advice in this report (position 5); "
                                   "one advice per mandate per report"),
    ]
    assert {status(dd, f"CMPDD000{n}")[0] for n in range(1, 5)} == {"ACTIVE"}
    assert dd.query("SELECT category, count(*) FROM job_errors WHERE job = 'addacs' GROUP BY 1 ORDER BY 1") == [
        ("CONFIGURATION", 1), ("DATA", 1)]


def _quarantined(platform, feed: str, name: str, data: bytes, process, encrypt: bool = True) -> dict:
    key = drop_report(platform, feed, name, data, encrypt=encrypt)
    with pytest.raises(FileQuarantined):
        process(platform, key, ADVICE_DAY)
    assert not platform.files.exists(f"inbound/{feed}/{BUREAU}/{name}")
    assert platform.files.exists(f"quarantine/{feed}/{BUREAU}/{name}")
    return orjson.loads(platform.files.read_bytes(f"quarantine/{feed}/{BUREAU}/{name}.error.json"))


def test_bad_reports_are_quarantined_with_the_reason_and_nothing_changes(dd):
    collection_day(dd, date(2026, 12, 20))  # a Sunday: input Mon 21, processed Tue 22
    good = arudd([returned("CMPDD0001", "0128", date(2026, 12, 22), "10.00", trans="01")])
    balance = dd.balance("ACCDD0001")

    latin1_as_utf8 = addacs([advice("CMPDD0001", "1")]).replace(b"ISO-8859-1", b"UTF-8")
    error = _quarantined(dd, "addacs", "wrong-encoding.xml", latin1_as_utf8, process_addacs)
    assert error["error_code"] == "WRONG_ENCODING"
    assert "not in its declared encoding UTF-8 (line 2" in error["error"] and "ISO-8859-1" in error["error"]

    error = _quarantined(dd, "addacs", "truncated.xml", addacs([advice("CMPDD0001", "1")])[:-40], process_addacs)
    assert error["error_code"] == "MALFORMED_XML" and "not well-formed XML at line 2" in error["error"]

    error = _quarantined(dd, "arudd", "totals.xml", arudd(
        [returned("CMPDD0001", "0128", date(2026, 12, 22), "10.00", trans="01")], totals=(1, "10.01")), process_arudd)
    assert error["error"] == ("OriginatingAccountRecord 1: Totals valueOf says 10.01 but its items add up to 10.00")

    error = _quarantined(dd, "arudd", "addacs-in-arudd.xml", addacs([advice("CMPDD0001", "1")]), process_arudd)
    assert error["error_code"] == "NOT_AN_ARUDD_REPORT"

    other_user = good.replace(b'userNumber="123456"', b'userNumber="654321"')
    error = _quarantined(dd, "arudd", "other-user.xml", other_user, process_arudd)
    assert error["error"] == "the ARUDD report is for service user 654321, ours is 123456"

    error = _quarantined(dd, "arudd", "plain.xml", good, process_arudd, encrypt=False)
    assert error["error_code"] == "NOT_ENCRYPTED"

    bomb = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<BACSDocument><Data>&b;</Data></BACSDocument>")
    assert _quarantined(dd, "arudd", "bomb.xml", bomb, process_arudd)["error_code"] == "UNSAFE_XML"

    assert status(dd, "CMPDD0001")[0] == "ACTIVE" and dd.balance("ACCDD0001") == balance
    process_arudd(dd, drop_report(dd, "arudd", "good.xml", good), ADVICE_DAY)
    resent = _quarantined(dd, "arudd", "good-again.xml", good + b"\n", process_arudd)
    assert resent["error_code"] == "DUPLICATE_FILE" and "000001/2026-12-21" in resent["error"]
    assert dd.balance("ACCDD0001") == balance + 1000
