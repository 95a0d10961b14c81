"""The billing feed's steps on a real store: accounts created and changed, invoices issued with the due date of
their account's payment term, the ledger to the penny, the posting file, the acknowledgement, bad records and bad
files, and the same file twice."""

from __future__ import annotations

from datetime import date

import orjson
import pytest

from cmp_pipelines.core.cards import find_pan
from tests.support.billing import PARTNER, account, billing_document, invoice
from tests.support.platform import NOW


@pytest.fixture
def billing(any_billing):
    """Every test of this module on both stores (PostgreSQL: `make test-pg`)."""
    return any_billing

GOOD = [
    account("A1", "ACC00000901", "Ada Lovelace", email="ada@example.com", phone="+447700900123"),
    account("A2", "ACC00000902", "Charles Babbage", payment_term="D30"),
    account("A3", "ACC00000001", "Demo customer one, renamed", payment_term="IMM"),
    invoice("I1", "ACC00000901", "INV-BR-0001", "12.34", "2026-12-01"),
    invoice("I2", "ACC00000902", "INV-BR-0002", "100.00", "2026-12-01"),
    invoice("I3", "ACC00000001", "INV-BR-0003", "0.01", "2026-12-03"),
    invoice("I4", "ACC00000002", "INV-BR-0004", "7.50", "2026-11-30"),
]


def test_a_billing_run_creates_and_changes_accounts_and_issues_invoices_due_after_their_payment_term(billing):
    before = {a: billing.ledger(a) for a in ("ACC00000001", "ACC00000002")}
    key = billing.drop("BILLSYS-20261201-001.json.enc", billing_document(GOOD))

    load = billing.process(key)

    assert (load.record_count, load.accepted_count, load.rejected_count) == (7, 7, 0)
    assert (load.accounts_created, load.accounts_updated, load.invoices_issued) == (2, 1, 4)
    assert load.invoiced_minor == 1234 + 10000 + 1 + 750
    assert billing.platform.query(
        "SELECT account_number, name, currency, payment_type, payment_term, email, phone FROM accounts "
        "WHERE account_number IN ('ACC00000901', 'ACC00000902', 'ACC00000001') ORDER BY 1") == [
        ("ACC00000001", "Demo customer one, renamed", "GBP", "MANUAL", "IMM", "customer1@example.com", None),
        ("ACC00000901", "Ada Lovelace", "GBP", "MANUAL", "D14", "ada@example.com", "+447700900123"),
        ("ACC00000902", "Charles Babbage", "GBP", "MANUAL", "D30", None, None),
    ], "a new account without a term gets the MANUAL default (D14); a change keeps what the record leaves null"
    # due dates: D14, D30, IMM (0 days), and ACC00000002's term is none -> its payment type's default, D14
    assert billing.platform.query(
        "SELECT invoice_number, account_number, issued_on, due_on, amount_minor, currency FROM invoices "
        "WHERE invoice_number LIKE 'INV-BR-%' ORDER BY 1") == [
        ("INV-BR-0001", "ACC00000901", date(2026, 12, 1), date(2026, 12, 15), 1234, "GBP"),
        ("INV-BR-0002", "ACC00000902", date(2026, 12, 1), date(2026, 12, 31), 10000, "GBP"),
        ("INV-BR-0003", "ACC00000001", date(2026, 12, 3), date(2026, 12, 3), 1, "GBP"),
        ("INV-BR-0004", "ACC00000002", date(2026, 11, 30), date(2026, 12, 14), 750, "GBP"),
    ]
    assert billing.ledger("ACC00000901") == 1234 and billing.ledger("ACC00000902") == 10000
    assert billing.ledger("ACC00000001") == before["ACC00000001"] + 1
    assert billing.ledger("ACC00000002") == before["ACC00000002"] + 750
    postings = billing.platform.query(
        "SELECT idempotency_key, kind, amount_minor, batch_id FROM ledger_postings "
        "WHERE invoice_number LIKE 'INV-BR-%' ORDER BY posting_id")
    assert [p[:3] for p in postings] == [
        ("invoice:INV-BR-0001:CHARGE", "INVOICE", 1234), ("invoice:INV-BR-0002:CHARGE", "INVOICE", 10000),
        ("invoice:INV-BR-0003:CHARGE", "INVOICE", 1), ("invoice:INV-BR-0004:CHARGE", "INVOICE", 750)]
    posting_batch = postings[0][3]
    assert posting_batch == "BLP-" + load.batch_id.removeprefix("BLL-")

    posting_file = orjson.loads(billing.platform.files.read_bytes(f"outbound/ledger/{posting_batch}.json"))
    assert posting_file["header"]["record_count"] == 4 and posting_file["header"]["total_amount"] == "119.85"
    assert posting_file["header"]["source"] == "billing:Billing run job"

    ack = billing.read_ack("BILLSYS-20261201-001")
    assert ack["header"]["status"] == "PROCESSED" and ack["header"]["partner_file_id"] == "BILLSYS-20261201-001"
    assert (ack["header"]["accounts_created"], ack["header"]["accounts_updated"],
            ack["header"]["invoices_issued"], ack["header"]["invoiced_amount"]) == (2, 1, 4, "119.85")
    assert [(r["record_id"], r["outcome"], r["action"], r["due_date"], r["hardware_charges"])
            for r in ack["records"]] == [
        ("A1", "ACCEPTED", "CREATED", None, None), ("A2", "ACCEPTED", "CREATED", None, None),
        ("A3", "ACCEPTED", "UPDATED", None, None),
        ("I1", "ACCEPTED", "ISSUED", "2026-12-15", "0.00"), ("I2", "ACCEPTED", "ISSUED", "2026-12-31", "0.00"),
        ("I3", "ACCEPTED", "ISSUED", "2026-12-03", "0.00"), ("I4", "ACCEPTED", "ISSUED", "2026-12-14", "0.00"),
    ]
    assert not billing.platform.files.list_files("inbound/billing")
    assert billing.platform.files.exists(f"archive/billing/{PARTNER}/{NOW:%Y-%m-%d}/BILLSYS-20261201-001.json.enc")
    assert billing.platform.query("SELECT status FROM batches WHERE batch_id = ?", [load.batch_id]) == [
        ("ACKNOWLEDGED",)]


def test_the_same_run_twice_or_a_step_run_again_posts_once(billing):
    first = billing.drop("run.json.enc", billing_document(GOOD))
    load = billing.process(first)
    with billing.opened() as flow:  # every step of the partition again, as a re-executed run does
        again = flow.load(first)
        assert again.status == "ALREADY_LOADED"
        assert flow.post(again).posted.posted_now == 0
    second = billing.drop("run-again.json.enc", billing_document(GOOD))
    refused = billing.quarantine(second)
    assert refused.code == "DUPLICATE_FILE"
    assert refused.message == (f"the same content was already loaded from {first} as batch {load.batch_id}; "
                               "nothing posted")
    renamed = billing.drop("run-renamed.json.enc", billing_document(GOOD[:1]))
    assert billing.quarantine(renamed).message == (
        f"header file_id 'BILLSYS-20261201-001' was already loaded from {first} as batch {load.batch_id}; "
        "a corrected file needs a new file_id; nothing posted")
    assert billing.platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings "
                                  "WHERE invoice_number LIKE 'INV-BR-%'") == [(4, 11985)]


def test_an_invoice_is_issued_once_even_in_a_later_run(billing):
    billing.process(billing.drop("one.json.enc", billing_document(GOOD)))
    later = billing.process(billing.drop("two.json.enc", billing_document(
        [invoice("I9", "ACC00000901", "INV-BR-0001", "99.99")], file_id="BILLSYS-20261202-001")))
    assert billing.records(later) == {"I9": (
        "REJECTED", None, "INVOICE_EXISTS",
        "invoice_number 'INV-BR-0001' was already issued (to account ACC00000901); an invoice is issued once")}
    assert billing.ledger("ACC00000901") == 1234


BAD = [
    (account("B1", "ACC00000911", None), "SCHEMA_VIOLATION", "name is required on an ACCOUNT record"),
    (account("B2", "acc-1", "X"), "SCHEMA_VIOLATION", "account_number 'acc-1' must be 1-20 characters of A-Z 0-9"),
    (account("B3", "ACC00000912", "X", email="not-an-address"), "SCHEMA_VIOLATION",
     "email 'not-an-address' is not an e-mail address"),
    (account("B4", "ACC00000913", "X", phone="12"), "SCHEMA_VIOLATION",
     "phone '12' is not a phone number (7-15 digits, an optional leading +)"),
    (account("B5", "ACC00000914", "X", payment_term="D99"), "UNKNOWN_PAYMENT_TERM",
     "payment_term 'D99' is not a payment term of the Payments module (known: D14, D30, D7, IMM)"),
    (account("B6", "ACC00000915", "X", amount="1.00"), "SCHEMA_VIOLATION", "amount must be null on an ACCOUNT record"),
    (account("B7", "SUSPENSE", "X"), "RESERVED_ACCOUNT",
     "account 'SUSPENSE' is the suspense account; the billing system cannot change it"),
    (account("B8", "ACC00000916", "Card 4111 1111 1111 1111"), "CARD_NUMBER_DETECTED",
     "name contains a card number (************1111); card numbers are never accepted"),
    (invoice("C1", "ACC00000001", "INV-BAD-1", "-5.00"), "AMOUNT_NEGATIVE",
     "amount '-5.00' is negative; an invoice amount is 0.00 or more (credits are not invoices)"),
    (invoice("C2", "ACC00000001", "INV-BAD-2", "5.5"), "AMOUNT_PRECISION",
     "amount '5.5' has 1 decimal places; exactly 2 are required"),
    (invoice("C3", "ACC00000001", "INV-BAD-3", "1.00", "2026-02-30"), "INVALID_ISSUE_DATE",
     "issue_date '2026-02-30' is not a real calendar date"),
    (invoice("C4", "ACC00000001", "INV-BAD-4", "1.00", "01/12/2026"), "SCHEMA_VIOLATION",
     "issue_date '01/12/2026' is not an ISO 8601 date such as 2026-12-01"),
    (invoice("C5", "ACC00000001", None, "1.00"), "SCHEMA_VIOLATION", "invoice_number is required on an INVOICE record"),
    (invoice("C6", "ACC00000001", "INV000000011", "1.00"), "INVOICE_EXISTS",
     "invoice_number 'INV000000011' was already issued (to account ACC00000001); an invoice is issued once"),
    (invoice("C7", "ACC99999999", "INV-BAD-7", "1.00"), "UNKNOWN_ACCOUNT",
     "account 'ACC99999999' is unknown: it needs an ACCOUNT record in this or an earlier billing run"),
    (invoice("C8", "ACC00000001", "INV-BAD-8", "1.00", payment_term="D7"), "SCHEMA_VIOLATION",
     "payment_term must be null on an INVOICE record"),
    ({"record_id": "D1", "record_type": "CREDIT", "account_number": "ACC00000001", "name": None, "email": None,
      "phone": None, "payment_term": None, "invoice_number": None, "amount": None, "issue_date": None},
     "SCHEMA_VIOLATION", "record_type 'CREDIT' is not one of ACCOUNT, INVOICE"),
    ({"record_id": "D2", "record_type": "INVOICE", "account_number": "ACC00000001"}, "SCHEMA_VIOLATION",
     "missing field(s) name, email, phone, payment_term, invoice_number, amount, issue_date"),
]


def test_bad_records_are_rejected_one_by_one_naming_the_field_and_why(billing):
    good = invoice("G1", "ACC00000003", "INV-GOOD-1", "3.00")
    records = [good, *(record for record, _, _ in BAD)]
    load = billing.process(billing.drop("bad.json.enc", billing_document(records)))

    outcomes = billing.records(load)
    assert outcomes.pop("G1") == ("ACCEPTED", "ISSUED", None, None)
    for record, code, message in BAD:
        assert outcomes[record["record_id"]] == ("REJECTED", None, code, message), record["record_id"]
    assert (load.accepted_count, load.rejected_count) == (1, len(BAD))
    assert billing.platform.query("SELECT count(*) FROM invoices WHERE invoice_number LIKE 'INV-BAD-%'") == [(0,)]
    assert billing.platform.query("SELECT count(*) FROM accounts WHERE account_number LIKE 'ACC0000091%'") == [(0,)]
    ack = billing.read_ack("bad")
    assert {r["record_id"]: r["reason_code"] for r in ack["records"]} == {
        "G1": None, **{record["record_id"]: code for record, code, _ in BAD}}
    posting_file = billing.platform.files.read_bytes("outbound/ledger/" + billing.platform.query(
        "SELECT batch_id FROM batches WHERE parent_batch_id = ?", [load.batch_id])[0][0] + ".json")
    # the card number in any spacing (not a bare "4111": the batch id is a hash, and one had "4111" in it)
    assert b"4111 1111 1111 1111" not in posting_file and b"4111111111111111" not in posting_file
    assert find_pan(posting_file.decode()) is None
    stored = billing.platform.query("SELECT name FROM billing_records WHERE record_id = 'B8'")
    assert stored == [("Card ************1111",)], "a card number is masked before it is stored"


def test_repeated_ids_accounts_and_invoices_in_one_file_are_all_rejected(billing):
    load = billing.process(billing.drop("dupes.json.enc", billing_document([
        account("R1", "ACC00000921", "One"), account("R2", "ACC00000921", "Two"),
        invoice("R3", "ACC00000001", "INV-DUP-1", "1.00"), invoice("R4", "ACC00000002", "INV-DUP-1", "2.00"),
        invoice("R5", "ACC00000001", "INV-DUP-2", "1.00"), invoice("R5", "ACC00000001", "INV-DUP-3", "1.00"),
    ])))
    codes = {r: v[2] for r, v in billing.records(load).items()}
    assert codes == {"R1": "DUPLICATE_ACCOUNT", "R2": "DUPLICATE_ACCOUNT", "R3": "DUPLICATE_INVOICE",
                     "R4": "DUPLICATE_INVOICE", "R5": "DUPLICATE_RECORD_ID"}
    assert billing.records(load)["R1"][3] == ("account 'ACC00000921' has 2 ACCOUNT records in the file; send one per "
                                              "account")


def test_an_account_in_another_currency_is_not_changed_or_invoiced(billing):
    load = billing.process(billing.drop("eur.json.enc", billing_document([
        account("E1", "ACC00000001", "Euro name"), invoice("E2", "ACC00000002", "INV-EUR-1", "1.00"),
        account("E3", "ACC00000931", "New euro account"), invoice("E4", "ACC00000931", "INV-EUR-2", "4.00"),
    ], currency="EUR")))
    records = billing.records(load)
    assert records["E1"] == ("REJECTED", None, "CURRENCY_MISMATCH",
                             "the file currency EUR differs from the currency GBP of account ACC00000001")
    assert records["E2"] == ("REJECTED", None, "CURRENCY_MISMATCH",
                             "the file currency EUR differs from the currency GBP of account ACC00000002")
    assert records["E3"][:2] == ("ACCEPTED", "CREATED") and records["E4"][:2] == ("ACCEPTED", "ISSUED")
    assert billing.platform.query("SELECT currency FROM ledger_postings WHERE invoice_number = 'INV-EUR-2'") == [
        ("EUR",)]


@pytest.mark.parametrize(("header", "code", "message"), [
    ({"record_count": 3}, "CONTROL_TOTALS", "header record_count is 3 but the file holds 2 record records"),
    ({"total_amount": "12.35"}, "CONTROL_TOTALS",
     "header total_amount is 12.35 but the record amounts add up to 12.34"),
    ({"invoice_count": 2}, "CONTROL_TOTALS", "header invoice_count is 2 but the file holds 1 INVOICE records"),
    ({"account_count": 0}, "CONTROL_TOTALS", "header account_count is 0 but the file holds 1 ACCOUNT records"),
    ({"sender": "PAYPOINT"}, "SENDER_MISMATCH", "header sender 'PAYPOINT' does not match the partner folder 'BILLSYS'"),
    ({"run_date": "1 Dec"}, "SCHEMA_VIOLATION",
     "the file does not match the billing run schema: header.run_date: '1 Dec' does not match "
     "'^[0-9]{4}-[0-9]{2}-[0-9]{2}$'"),
])
def test_a_bad_file_is_quarantined_with_the_reason_and_the_billing_system_told(billing, header, code, message):
    records = [account("Q1", "ACC00000941", "Q"), invoice("Q2", "ACC00000941", "INV-Q-1", "12.34")]
    key = billing.drop("broken.json.enc", billing_document(records, **header))
    refused = billing.quarantine(key)
    assert (refused.code, refused.message) == (code, message)
    report = orjson.loads(billing.platform.files.read_bytes(f"quarantine/billing/{PARTNER}/broken.json.enc.error.json"))
    assert (report["error_code"], report["error"]) == (code, message)
    ack = billing.read_ack("broken", "rejected.ack")
    assert (ack["header"]["status"], ack["header"]["reason_code"], ack["header"]["reason"]) == ("REJECTED", code,
                                                                                                message)
    assert billing.platform.query("SELECT count(*) FROM accounts WHERE account_number = 'ACC00000941'") == [(0,)]
    assert billing.platform.query("SELECT count(*) FROM billing_records") == [(0,)]


def test_a_file_not_encrypted_for_the_billing_system_is_quarantined(billing):
    billing.platform.keyring.init_keys("PAYPOINT")
    key = billing.drop("wrongkey.json.enc", billing_document(GOOD), encrypt_for="PAYPOINT")
    refused = billing.quarantine(key)
    assert refused.code == "DECRYPT_FAILED"
    assert billing.platform.files.exists(f"quarantine/billing/{PARTNER}/wrongkey.json.enc")


@pytest.mark.postgres
def test_on_postgres_two_loads_of_one_file_at_once_load_it_once_and_keep_what_the_api_set(pg_platform):
    """Two runs of the same file at once (two workers): one loads it, the other is refused as a duplicate; an
    account's payment type set by the API survives the billing run's update of its name."""
    import threading

    from tests.support.billing import Billing

    pg_platform.keyring.init_keys(PARTNER)
    billing = Billing(pg_platform)
    pg_platform.execute("UPDATE accounts SET payment_type = 'RECURRING_CARD' WHERE account_number = 'ACC00000001'")
    key = billing.drop("BILLSYS-20261201-001.json.enc", billing_document(GOOD))
    resent = billing.drop("BILLSYS-20261201-001-resent.json.enc", billing_document(GOOD))
    start, outcomes = threading.Barrier(3), []

    def run(file_key: str) -> None:
        start.wait()
        try:
            with billing.opened() as flow:
                outcomes.append(flow.load(file_key).status)
        except Exception as exc:  # noqa: BLE001 - the losers' refusals, checked below
            outcomes.append(getattr(exc, "code", repr(exc)))

    # the same partition twice (two workers) and the same content under another name, all at once
    threads = [threading.Thread(target=run, args=(k,)) for k in (key, key, resent)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert outcomes.count("LOADED") == 1 and sorted(outcomes) in (
        ["ALREADY_LOADED", "DUPLICATE_FILE", "LOADED"], ["DUPLICATE_FILE", "DUPLICATE_FILE", "LOADED"]), outcomes
    assert pg_platform.query("SELECT count(*) FROM inbound_files WHERE status = 'LOADED' AND feed = 'billing'") == [
        (1,)]
    assert pg_platform.query("SELECT count(*) FROM billing_records") == [(len(GOOD),)]
    assert pg_platform.query("SELECT count(*) FROM invoices WHERE invoice_number LIKE 'INV-BR-%'") == [(4,)]
    assert pg_platform.query("SELECT name, payment_term, payment_type FROM accounts "
                             "WHERE account_number = 'ACC00000001'") == [
        ("Demo customer one, renamed", "IMM", "RECURRING_CARD")]
    [(loaded,)] = pg_platform.query("SELECT file_id FROM inbound_files WHERE status = 'LOADED' AND feed = 'billing'")
    with billing.opened() as flow:
        assert flow.post(flow.loaded(loaded)).posted.posted_now == 4
    with billing.opened() as flow:
        assert flow.post(flow.loaded(loaded)).posted.posted_now == 0  # a new process, the same step again
    assert pg_platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings "
                             "WHERE invoice_number LIKE 'INV-BR-%'") == [(4, 11985)]


@pytest.mark.postgres
@pytest.mark.e2e
@pytest.mark.slow
def test_on_postgres_a_billing_file_through_the_sensor_and_its_run(pg_platform, instance):
    from cmp_pipelines.definitions import defs
    from cmp_pipelines.lib.headless import run_pending_sensors
    from tests.support.billing import Billing
    from tests.support.dagster import flow_runs, materialization

    pg_platform.keyring.init_keys(PARTNER)
    billing = Billing(pg_platform)
    billing.drop("BILLSYS-20261201-001.json.enc", billing_document(GOOD))

    [run] = flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))

    assert run.success, run.error
    load = materialization(instance, run.run_id, "billing_run_batch")
    assert (load["accounts_created"], load["accounts_updated"], load["invoices_issued"]) == (2, 1, 4)
    posted = materialization(instance, run.run_id, "billing_posting_batch")
    assert (posted["posting_count"], posted["posted_now"], posted["total_amount"]) == (4, 4, "119.85 GBP")
    assert pg_platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings "
                             "WHERE invoice_number LIKE 'INV-BR-%'") == [(4, 11985)]
    assert billing.read_ack("BILLSYS-20261201-001")["header"]["invoices_issued"] == 4
    assert pg_platform.query("SELECT document_kind FROM delivery_register ORDER BY 1") == [
        ("BILLING_ACKNOWLEDGEMENT",), ("LEDGER_POSTING",)]
    assert pg_platform.query("SELECT kind, status FROM batches WHERE feed = 'billing' ORDER BY kind") == [
        ("BILLING_LOAD", "ACKNOWLEDGED"), ("BILLING_POSTING", "POSTED")]
