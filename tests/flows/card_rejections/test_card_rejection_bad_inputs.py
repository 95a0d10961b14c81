"""Bad card rejection files and records: each has its specific outcome; nothing is lost or done twice."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest

from cmp_pipelines.core import payment_setup
from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.settings import PROJECT_ROOT
from tests.support.notices import give_notices
from tests.support.platform import NOW, rejection, rejections_document

DAY = date(2026, 12, 15)
REJECTION_EVENTS = "SELECT {} FROM workflow_events WHERE event_type <> 'ADVANCE_NOTICE'"  # notices come before


@pytest.fixture
def extracted(platform):
    """ACC00000001..3 pay by card; every open invoice is due by DAY, so all are extracted and posted."""
    with platform.connect() as con:
        for n in (1, 2, 3):
            payment_setup.set_payment_type(
                con, f"ACC0000000{n}", "RECURRING_CARD", partners=load_partners(PROJECT_ROOT / "config"), now=NOW,
                cause="test", card_token=f"tok_card_{n}", last_four="1111", expiry="2099-12",
            )
    due = platform.card_day(DAY)
    return {t: (a, m) for t, a, m in platform.query(
        "SELECT transaction_id, account_number, minor_to_decimal(amount_minor) FROM card_transactions "
        "WHERE batch_id = ? ORDER BY 1", [due.batch_id])}


def first(extracted) -> tuple[str, str, str]:
    transaction, (account, amount) = next(iter(extracted.items()))
    return transaction, account, amount


def reversals(platform) -> int:
    return platform.query("SELECT count(*) FROM ledger_postings WHERE kind = 'CARD_REVERSAL'")[0][0]


def assert_quarantined(platform, key, code, *fragments):
    before = reversals(platform)
    caught = platform.quarantine_rejections(key)
    assert caught.code == code, caught.message
    for fragment in fragments:
        assert fragment in caught.message
    partner, name = key.split("@")[0].split("/")
    assert not platform.files.exists(f"inbound/card_rejections/{partner}/{name}")
    assert platform.files.exists(caught.quarantined_path)
    report = orjson.loads(platform.files.read_bytes(f"{caught.quarantined_path}.error.json"))
    assert report["error_code"] == code and report["feed"] == "card_rejections"
    assert reversals(platform) == before, "a quarantined file reverses nothing"
    return caught


def test_wrong_key(platform, extracted):
    t, a, m = first(extracted)
    key = platform.drop_rejections("wrong.json.enc", rejections_document([rejection("1", t, a, m, "51")]),
                                   encrypt_for="PAYPOINT")
    assert_quarantined(platform, key, "DECRYPT_FAILED", "CARDPAY's keys")


def test_not_encrypted(platform, extracted):
    t, a, m = first(extracted)
    key = platform.drop_rejections("plain.json", rejections_document([rejection("1", t, a, m, "51")]), raw=True)
    assert_quarantined(platform, key, "NOT_ENCRYPTED")


def test_schema_violation_in_header(platform, extracted):
    t, a, m = first(extracted)
    doc = rejections_document([rejection("1", t, a, m, "51")])
    del doc["header"]["currency"]
    assert_quarantined(platform, platform.drop_rejections("h.json.enc", doc), "SCHEMA_VIOLATION",
                       "card rejections schema", "'currency' is a required property")


def test_rejections_not_a_list(platform, extracted):
    doc = rejections_document([])
    doc["rejections"] = {"oops": 1}
    assert_quarantined(platform, platform.drop_rejections("l.json.enc", doc), "SCHEMA_VIOLATION", "rejections")


def test_control_totals(platform, extracted):
    t, a, m = first(extracted)
    doc = rejections_document([rejection("1", t, a, m, "51")], total_amount="999.99")
    assert_quarantined(platform, platform.drop_rejections("t.json.enc", doc), "CONTROL_TOTALS",
                       "total_amount is 999.99", f"rejection amounts add up to {m}")


def test_sender_must_match_the_provider_folder(platform, extracted):
    t, a, m = first(extracted)
    doc = rejections_document([rejection("1", t, a, m, "51")], sender="OTHERPAY")
    assert_quarantined(platform, platform.drop_rejections("s.json.enc", doc), "SENDER_MISMATCH", "'OTHERPAY'")


def test_a_partner_not_configured_for_card_rejections(platform, extracted):
    t, a, m = first(extracted)
    doc = rejections_document([rejection("1", t, a, m, "51")], sender="PAYPOINT")
    key = platform.drop_rejections("p.json.enc", doc, partner="PAYPOINT")
    assert_quarantined(platform, key, "UNKNOWN_PARTNER", "not configured for feed 'card_rejections'")
    assert platform.query("SELECT category FROM job_errors WHERE job = 'card_rejections'") == [("CONFIGURATION",)]


def test_duplicate_file_reverses_nothing_twice(platform, extracted):
    t, a, m = first(extracted)
    doc = rejections_document([rejection("1", t, a, m, "51")])
    platform.process_rejections(platform.drop_rejections("one.json.enc", doc))
    balance = platform.balance(a)
    assert_quarantined(platform, platform.drop_rejections("two.json.enc", doc), "DUPLICATE_FILE", "already loaded")
    resent = rejections_document([rejection("9", t, a, m, "51")])  # same file_id, other bytes
    assert_quarantined(platform, platform.drop_rejections("three.json.enc", resent), "DUPLICATE_FILE",
                       "header file_id 'CARDPAY-REJ-001'")
    assert platform.balance(a) == balance
    assert platform.query(REJECTION_EVENTS.format("count(*)"))[0][0] == 1


def test_rerunning_the_partition_does_nothing_twice(platform, extracted):
    t, a, m = first(extracted)
    key = platform.drop_rejections("r.json.enc", rejections_document([rejection("1", t, a, m, "04")]))
    platform.process_rejections(key)
    load, applied = platform.process_rejections(key)
    assert load.status == "ALREADY_LOADED" and not applied.applied_now
    assert reversals(platform) == 1
    assert platform.query(REJECTION_EVENTS.format("count(*)"))[0][0] == 1
    assert platform.query("SELECT count(*) FROM payment_type_changes WHERE new_type = 'MANUAL'")[0][0] == 1


def outcomes(platform, load) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in platform.query(
        "SELECT record_id, outcome, problem_code, problem FROM card_rejections WHERE batch_id = ?", [load.batch_id])}


def test_record_level_problems_are_reported_one_by_one(platform, extracted):
    (t1, (a1, m1)), (t2, (a2, m2)), (t3, (a3, m3)) = list(extracted.items())[:3]
    records = [
        rejection("ok", t1, a1, m1, "51"),
        rejection("unknown-txn", "PINV999-1", a1, "1.00", "51"),
        rejection("wrong-account", t2, a1, m2, "51"),
        rejection("wrong-amount", t3, a3, "0.01", "51"),
        rejection("again", t1, a1, m1, "05"),
        rejection("bad-amount", t2, a2, "1.5", "51"),
        rejection("bad-date", t2, a2, m2, "51", rejected_at="yesterday"),
        rejection("card", t2, a2, m2, "51", reason_text="card 4111 1111 1111 1111 refused"),
        {"record_id": "shape", "transaction_id": t2},
        rejection("dup", t2, a2, m2, "51"),
        rejection("dup", t2, a2, m2, "51"),
    ]
    key = platform.drop_rejections("records.json.enc", rejections_document(records))
    load, applied = platform.process_rejections(key)
    got = outcomes(platform, load)
    assert got["ok"][:2] == ("RETRY_SCHEDULED", None)
    assert got["unknown-txn"][:2] == ("REJECTED", "UNKNOWN_TRANSACTION")
    assert "'PINV999-1' was never extracted for CARDPAY" in got["unknown-txn"][2]
    assert got["wrong-account"][:2] == ("REJECTED", "ACCOUNT_MISMATCH")
    assert got["wrong-amount"][:2] == ("REJECTED", "AMOUNT_MISMATCH")
    assert f"was extracted for {m3}, the rejection says 0.01" in got["wrong-amount"][2]
    assert got["again"][:2] == ("REJECTED", "DUPLICATE_REJECTION")
    assert got["bad-amount"][:2] == ("REJECTED", "INVALID_RECORD") and "amount '1.5'" in got["bad-amount"][2]
    assert got["bad-date"][:2] == ("REJECTED", "INVALID_RECORD") and "rejected_at 'yesterday'" in got["bad-date"][2]
    assert got["card"][:2] == ("REJECTED", "CARD_NUMBER_DETECTED")
    assert "************1111" in got["card"][2] and "4111 1111" not in got["card"][2]
    assert got["shape"][:2] == ("REJECTED", "INVALID_RECORD") and "missing field(s)" in got["shape"][2]
    assert got["dup"][:2] == ("REJECTED", "DUPLICATE_RECORD_ID")
    assert (load.record_count, load.reversed_count) == (11, 1)
    assert applied.posting_count == 1 and reversals(platform) == 1
    assert platform.query("SELECT category, count(*) FROM job_errors WHERE job = 'card_rejections' GROUP BY 1") \
        == [("DATA", 1)]
    report = orjson.loads(platform.files.read_bytes("outbound/reports/card_rejections/CARDPAY/records.outcomes.json"))
    assert report["header"]["record_count"] == 11 and report["header"]["rejected_count"] == 10
    assert [r["problem_code"] for r in report["records"]][:2] == [None, "UNKNOWN_TRANSACTION"]
    assert "4111 1111" not in orjson.dumps(report).decode()


def test_a_transaction_rejected_in_an_earlier_file_is_not_handled_again(platform, extracted):
    t, a, m = first(extracted)
    platform.process_rejections(platform.drop_rejections("1.json.enc", rejections_document(
        [rejection("1", t, a, m, "51")], file_id="F1")))
    load, _ = platform.process_rejections(platform.drop_rejections("2.json.enc", rejections_document(
        [rejection("1", t, a, m, "04")], file_id="F2")))
    [(outcome, code, problem)] = outcomes(platform, load).values()
    assert (outcome, code) == ("REJECTED", "ALREADY_REJECTED")
    assert "SOFT_DECLINED by batch RCRJ-" in problem
    assert reversals(platform) == 1
    assert platform.query("SELECT payment_type FROM accounts WHERE account_number = ?", [a]) == [("RECURRING_CARD",)]


def test_unknown_reason_code_is_reversed_reported_and_counts_toward_the_sla(platform, extracted):
    t, a, m = first(extracted)
    balance = platform.balance(a)
    load, _ = platform.process_rejections(platform.drop_rejections("u.json.enc", rejections_document(
        [rejection("1", t, a, m, "X9")])))
    [(outcome, code, problem)] = outcomes(platform, load).values()
    assert (outcome, code) == ("UNCONFIGURED_CODE", "UNKNOWN_REASON_CODE")
    assert "reason code 'X9' is not configured in config/rejection_codes.yaml" in problem
    from cmp_pipelines.core.money import parse_amount
    assert platform.balance(a) == balance + parse_amount(m), "the money was not taken: the payment is reversed"
    assert platform.query("SELECT status, retry_due_on FROM card_transactions WHERE transaction_id = ?", [t]) \
        == [("DECLINED_UNCONFIGURED", None)]
    assert platform.query(REJECTION_EVENTS.format("event_code")) == [("CARD_REJECTION_CODE_UNKNOWN",)]
    assert platform.query("SELECT category FROM job_errors WHERE job = 'card_rejections'") == [("CONFIGURATION",)]
    from cmp_pipelines.core import probe_queries as probe_service
    from cmp_pipelines.core.config import load_probes
    from cmp_pipelines.core.probes import CARD_PROBES
    with platform.connect() as con:
        values = {o.probe.probe_id: (o.value, o.tripped) for o in probe_service.evaluate(
            con, load_probes(PROJECT_ROOT / "config"), datetime.now(UTC), probes=CARD_PROBES)}
    assert values["card_rejections_completed_sla"] == (1, True)
    assert values["card_rejection_rate"][0] == 100 // len(extracted)


def _flow(platform, con):
    from cmp_pipelines.core.config import load_rejection_codes
    from cmp_pipelines.defs.card_rejections.flow import CardRejections

    config = PROJECT_ROOT / "config"
    return CardRejections(con, platform.files, platform.keyring, load_partners(config), load_rejection_codes(config),
                          NOW)


def test_two_files_loaded_before_either_is_applied_handle_a_transaction_once(platform, extracted):
    t, a, m = first(extracted)
    k1 = platform.drop_rejections("f1.json.enc", rejections_document([rejection("1", t, a, m, "51")], file_id="F1"))
    k2 = platform.drop_rejections("f2.json.enc", rejections_document([rejection("1", t, a, m, "04")], file_id="F2"))
    with platform.connect() as con:
        flow = _flow(platform, con)
        l1, l2 = flow.load(k1), flow.load(k2)
        flow.apply(l1)
        second = flow.apply(l2)
    assert second.posting_count == 0 and reversals(platform) == 1
    assert platform.query(REJECTION_EVENTS.format("event_code")) == [("CARD_SOFT_DECLINE",)]
    assert platform.query("SELECT payment_type FROM accounts WHERE account_number = ?", [a]) == [("RECURRING_CARD",)]
    [(outcome, code, problem)] = outcomes(platform, l2).values()
    assert (outcome, code) == ("REJECTED", "ALREADY_REJECTED") and "after this file was loaded" in problem
    assert platform.query("SELECT accepted_count FROM batches WHERE batch_id = ?", [l2.batch_id]) == [(0,)]


def test_a_rejection_before_its_payment_is_posted_waits_for_the_posting(platform):
    from cmp_pipelines.defs.card_payments.flow import RecurringCardPayments

    with platform.connect() as con:
        payment_setup.set_payment_type(con, "ACC00000001", "RECURRING_CARD", partners=load_partners(
            PROJECT_ROOT / "config"), now=NOW, cause="t", card_token="tok_early")
    give_notices(platform, "RECURRING_CARD", DAY)
    with platform.connect() as con:
        flow = RecurringCardPayments(con, platform.files, platform.keyring, load_partners(PROJECT_ROOT / "config"),
                                     NOW)
        due = flow.select_due(DAY)
        flow.write_extracts(due)  # the posting step has not run
        [(t, a, m)] = con.execute("SELECT transaction_id, account_number, minor_to_decimal(amount_minor) "
                                  "FROM card_transactions ORDER BY 1 LIMIT 1").fetchall()
    key = platform.drop_rejections("early.json.enc", rejections_document([rejection("1", t, a, m, "51")]))
    with pytest.raises(LookupError, match=f"transaction {t} is not posted to the ledger yet"):
        platform.process_rejections(key)
    assert reversals(platform) == 0
    with platform.connect() as con:
        RecurringCardPayments(con, platform.files, platform.keyring, load_partners(PROJECT_ROOT / "config"),
                              NOW).post(due)
    _, applied = platform.process_rejections(key)
    assert applied.posting_count == 1


def test_our_own_ids_that_look_like_card_numbers_are_still_matched(platform, extracted):
    with platform.connect() as con:  # P + a 12-digit invoice + '-1' passes the card-number test
        con.execute("UPDATE card_transactions SET transaction_id = 'P202612010007-1' "
                    "WHERE transaction_id = (SELECT min(transaction_id) FROM card_transactions)")
        con.execute("INSERT INTO ledger_postings (idempotency_key, account_number, kind, amount_minor, currency, "
                    "batch_id) SELECT 'card:P202612010007-1:PAYMENT', account_number, 'CARD_PAYMENT', -amount_minor, "
                    "'GBP', 'RCP-X' FROM card_transactions WHERE transaction_id = 'P202612010007-1'")
        [(a, m)] = con.execute("SELECT account_number, minor_to_decimal(amount_minor) FROM card_transactions "
                               "WHERE transaction_id = 'P202612010007-1'").fetchall()
    load, _ = platform.process_rejections(platform.drop_rejections("ids.json.enc", rejections_document(
        [rejection("1", "P202612010007-1", a, m, "54"), rejection("2", "4111111111111111", a, "1.00", "54")])))
    got = outcomes(platform, load)
    assert got["1"][:2] == ("HARD_DECLINE", None)
    assert got["2"][:2] == ("REJECTED", "CARD_NUMBER_DETECTED")
    stored = platform.query("SELECT transaction_id FROM card_rejections WHERE record_id = '2'")
    assert stored == [("************1111",)]


def test_a_bad_record_does_not_hide_a_good_one_for_the_same_transaction(platform, extracted):
    t, a, m = first(extracted)
    load, _ = platform.process_rejections(platform.drop_rejections("bg.json.enc", rejections_document(
        [rejection("1", t, a, m, "51", rejected_at="bad"), rejection("2", t, a, m, "51")])))
    got = outcomes(platform, load)
    assert got["1"][:2] == ("REJECTED", "INVALID_RECORD") and got["2"][:2] == ("RETRY_SCHEDULED", None)


def test_a_soft_decline_on_an_account_this_file_reverts_is_not_promised_a_retry(platform, extracted):
    same_account = [(t, m) for t, (a, m) in extracted.items() if a == "ACC00000002"]
    assert len(same_account) == 2, "ACC00000002 has two invoices in the demo seed"
    (t1, m1), (t2, m2) = same_account
    load, _ = platform.process_rejections(platform.drop_rejections("mix.json.enc", rejections_document(
        [rejection("1", t1, "ACC00000002", m1, "51"), rejection("2", t2, "ACC00000002", m2, "43")])))
    got = outcomes(platform, load)
    assert got["1"][0] == "RETRY_CANCELLED" and got["2"][0] == "HARD_DECLINE"
    letters = dict(platform.query("SELECT source_ref, body FROM customer_communications"))
    assert "will not be retried" in letters[t1] and "try again" not in letters[t1]
    assert platform.query("SELECT status FROM card_transactions WHERE transaction_id = ?", [t1]) == [("CANCELLED",)]


def test_no_refund_goes_to_a_hard_declined_card(platform, extracted):
    t, a, m = first(extracted)
    platform.process_rejections(platform.drop_rejections("stolen.json.enc", rejections_document(
        [rejection("1", t, a, m, "43")])))
    with platform.connect() as con:
        approve = payment_setup.approve_card_refund(con, a, "3.00", now=NOW, due_on=DAY)
    platform.card_day(date(2026, 12, 16))
    assert platform.query("SELECT count(*) FROM card_transactions WHERE refund_id = ?", [approve]) == [(0,)]
