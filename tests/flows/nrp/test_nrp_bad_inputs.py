"""The catalogue of bad inputs: each gets its specific outcome, nothing is lost, nothing posts twice."""

from __future__ import annotations

import orjson
import pytest

from cmp_pipelines.defs.nrp.flow import partition_key, sha256_hex
from tests.support.pg_platform import moved_to_postgres
from tests.support.platform import NOW, document, payment


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def platform(request, platform, monkeypatch):
    """Every bad input on both stores: the same outcome whether DuckDB or PostgreSQL is the system of record."""
    if request.param == "duckdb":
        return platform
    return moved_to_postgres(platform, request.getfixturevalue("pg_url"), monkeypatch)


GOOD = [payment("1", "ACC00000001", "10.00", "INV000000011"), payment("2", "ACC00000002", "5.50")]


def assert_quarantined(platform, key, code, *fragments):
    before = platform.payment_postings()
    caught = platform.quarantine(key)
    assert caught.code == code
    for fragment in fragments:
        assert fragment in caught.message
    partner, name = key.split("@")[0].split("/")
    assert not platform.files.exists(f"inbound/nrp/{partner}/{name}"), "the bad file must leave the inbound folder"
    assert platform.files.exists(caught.quarantined_path), "the bad file must be kept in quarantine"
    report = orjson.loads(platform.files.read_bytes(f"{caught.quarantined_path}.error.json"))
    assert report["error_code"] == code and report["file"] == name
    if platform.keyring.has_keys(partner) and code not in {"BAD_KEYS"}:
        stem = name.removesuffix(".enc").removesuffix(".json")
        ack = platform.read_ack(partner, f"{stem}.rejected")
        assert ack["header"]["status"] == "REJECTED" and ack["header"]["reason_code"] == code
        assert ack["header"]["reason"] == caught.message and ack["records"] == []
    assert platform.payment_postings() == before, "a quarantined file posts nothing"
    return caught, report


def test_wrong_key(platform):
    key = platform.drop("wrong-key.json.enc", document(GOOD), encrypt_for="LOCKBOX")
    assert_quarantined(platform, key, "DECRYPT_FAILED", "PAYPOINT's keys", "wrong key")


def test_truncated_ciphertext(platform):
    token = platform.keyring.encrypt("PAYPOINT", orjson.dumps(document(GOOD)))
    key = platform.drop("truncated.json.enc", token[: len(token) // 2], raw=True)
    assert_quarantined(platform, key, "DECRYPT_FAILED", "truncated or tampered")


def test_tampered_ciphertext(platform):
    token = bytearray(platform.keyring.encrypt("PAYPOINT", orjson.dumps(document(GOOD))))
    token[80] = ord("A") if token[80] != ord("A") else ord("B")
    key = platform.drop("tampered.json.enc", bytes(token), raw=True)
    assert_quarantined(platform, key, "DECRYPT_FAILED")


def test_plaintext_file_not_encrypted(platform):
    key = platform.drop("plain.json", document(GOOD), raw=True)
    assert_quarantined(platform, key, "NOT_ENCRYPTED", "not a Fernet token")


def test_zero_byte_file(platform):
    key = platform.drop("empty.json.enc", b"", raw=True)
    assert_quarantined(platform, key, "EMPTY_FILE", "0 bytes")


def test_encrypted_empty_content(platform):
    key = platform.drop("empty-content.json.enc", b"   ")
    assert_quarantined(platform, key, "EMPTY_FILE", "decrypted file is empty")


def test_not_json(platform):
    key = platform.drop("garbage.json.enc", b"record_id,amount\n1,10.00\n")
    assert_quarantined(platform, key, "NOT_JSON", "not valid JSON")


def test_header_missing_field(platform):
    doc = document(GOOD)
    del doc["header"]["total_amount"]
    key = platform.drop("no-total.json.enc", doc)
    assert_quarantined(platform, key, "SCHEMA_VIOLATION", "header", "'total_amount' is a required property")


def test_header_bad_total_format(platform):
    key = platform.drop("bad-total.json.enc", document(GOOD, total_amount="15.5"))
    assert_quarantined(platform, key, "SCHEMA_VIOLATION", "header.total_amount")


def test_payments_not_a_list(platform):
    doc = document(GOOD)
    doc["payments"] = {"1": GOOD[0]}
    key = platform.drop("payments-object.json.enc", doc)
    assert_quarantined(platform, key, "SCHEMA_VIOLATION", "payments", "not of type 'array'")


def test_record_count_mismatch(platform):
    key = platform.drop("count.json.enc", document(GOOD, record_count=3))
    assert_quarantined(platform, key, "CONTROL_TOTALS", "record_count is 3", "holds 2 payment records")


def test_total_amount_mismatch(platform):
    key = platform.drop("total.json.enc", document(GOOD, total_amount="15.49"))
    assert_quarantined(platform, key, "CONTROL_TOTALS", "total_amount is 15.49", "add up to 15.50")


def test_sender_not_matching_folder(platform):
    key = platform.drop("sender.json.enc", document(GOOD, sender="LOCKBOX"))
    assert_quarantined(platform, key, "SENDER_MISMATCH", "'LOCKBOX'", "'PAYPOINT'")


def test_unknown_partner_folder_is_a_configuration_error(platform):
    platform.keyring.init_keys("ACME")
    key = platform.drop("acme.json.enc", document(GOOD, sender="ACME"), partner="ACME")
    _, report = assert_quarantined(platform, key, "UNKNOWN_PARTNER", "config/partners.yaml")
    assert report["configuration_error"] is True
    errors = platform.query("SELECT job, category, source_ref FROM job_errors")
    assert errors == [("nrp", "CONFIGURATION", key)]


def test_partner_without_keys_is_a_configuration_error(platform):
    key = platform.drop("lockbox.json.enc", document(GOOD, sender="LOCKBOX"), partner="LOCKBOX")
    platform.keyring.key_file("LOCKBOX").unlink()
    platform.keyring._cache.clear()
    assert_quarantined(platform, key, "MISSING_KEYS", "no key file for partner LOCKBOX")


def test_duplicate_content_under_another_name(platform):
    doc = document(GOOD)
    first = platform.drop("first.json.enc", doc)
    platform.process(first)
    postings = platform.payment_postings()
    second = platform.drop("second.json.enc", doc)  # same plaintext, fresh ciphertext
    assert_quarantined(platform, second, "DUPLICATE_FILE", "already loaded from", first)
    assert platform.payment_postings() == postings == 2


def test_same_file_dropped_again(platform):
    doc = document(GOOD)
    token = platform.keyring.encrypt("PAYPOINT", orjson.dumps(doc))
    key = platform.drop("again.json.enc", token, raw=True)
    platform.process(key)
    balance = platform.balance("ACC00000001")
    again = platform.drop("again.json.enc", token, raw=True)
    assert again == key
    assert_quarantined(platform, again, "DUPLICATE_FILE", "already loaded")
    assert platform.balance("ACC00000001") == balance
    assert platform.files.exists(f"archive/nrp/PAYPOINT/{NOW:%Y-%m-%d}/again.json.enc")


def test_quarantine_never_overwrites(platform):
    for _ in range(2):
        key = platform.drop("same-name.json.enc", b"not encrypted", raw=True)
        platform.quarantine(key)
    assert platform.files.exists("quarantine/nrp/PAYPOINT/same-name.json.enc")
    assert platform.files.exists("quarantine/nrp/PAYPOINT/same-name.json.enc.1")


RECORD_CASES = [
    ("negative amount", {"amount": "-5.00"}, "AMOUNT_NEGATIVE", "amount '-5.00' is negative"),
    ("three decimals", {"amount": "12.345"}, "AMOUNT_PRECISION", "has 3 decimal places"),
    ("one decimal", {"amount": "12.5"}, "AMOUNT_PRECISION", "has 1 decimal places"),
    ("zero amount", {"amount": "0.00"}, "AMOUNT_ZERO", "greater than zero"),
    ("amount as a number", {"amount": 12.5}, "SCHEMA_VIOLATION", "field 'amount' must be a string"),
    ("amount not a number", {"amount": "ten"}, "SCHEMA_VIOLATION", "'ten' is not a decimal string"),
    ("bad method", {"payment_method": "CARD"}, "SCHEMA_VIOLATION", "'CARD' is not one of CASH"),
    ("bad date", {"payment_date": "20/11/2026"}, "SCHEMA_VIOLATION", "not an ISO 8601 date-time"),
    ("impossible date", {"payment_date": "2026-02-30T10:00:00Z"}, "INVALID_PAYMENT_DATE", "not a real calendar"),
    ("bad account format", {"account_number": "acc-1"}, "SCHEMA_VIOLATION", "account_number 'acc-1'"),
    ("unknown field", {"colour": "red"}, "SCHEMA_VIOLATION", "unknown field(s) colour"),
    ("long reference", {"reference": "x" * 65}, "SCHEMA_VIOLATION", "longer than 64"),
]


@pytest.mark.parametrize("label,change,code,message", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_bad_record_is_rejected_and_reported(platform, label, change, code, message):
    bad = {**payment("2", "ACC00000002", "7.00"), **change}
    records = [payment("1", "ACC00000001", "10.00"), bad]
    doc = document(records)
    key = platform.drop("records.json.enc", doc)
    before = platform.balance("ACC00000002")
    load = platform.process(key)
    assert (load.accepted_count, load.rejected_count) == (1, 1)
    outcome, allocation, reason_code, reason, _ = platform.records(key)["2"]
    assert (outcome, allocation, reason_code) == ("REJECTED", None, code)
    assert message in reason
    assert platform.balance("ACC00000002") == before
    ack = platform.read_ack("PAYPOINT", "records")
    assert ack["records"][1] == {
        "position": 2, "record_id": "2", "outcome": "REJECTED", "allocation": None,
        "amount": ack["records"][1]["amount"], "reason_code": code, "reason": reason,
    }
    assert ack["header"]["rejected_count"] == 1 and ack["header"]["accepted_amount"] == "10.00"


def test_missing_field_and_non_object_records(platform):
    missing = payment("2", "ACC00000002", "7.00")
    del missing["reference"]
    doc = document([payment("1", "ACC00000001", "10.00"), missing, "not a record"])
    doc["header"]["record_count"] = 3
    key = platform.drop("shapes.json.enc", doc)
    platform.process(key)
    records = platform.records(key)
    assert records["2"][2:4] == ("SCHEMA_VIOLATION", "missing field(s) reference")
    assert records[None][2:4] == ("SCHEMA_VIOLATION", "record 3 is a JSON string, not an object")
    assert records["1"][0] == "ACCEPTED"


def test_duplicate_record_ids_are_all_rejected(platform):
    records = [payment("1", "ACC00000001", "10.00"), payment("1", "ACC00000002", "3.00"),
               payment("2", "ACC00000003", "4.00")]
    key = platform.drop("dups.json.enc", document(records))
    load = platform.process(key)
    assert (load.accepted_count, load.rejected_count, load.accepted_minor) == (1, 2, 400)
    ack = platform.read_ack("PAYPOINT", "dups")
    assert [r["reason_code"] for r in ack["records"]] == ["DUPLICATE_RECORD_ID", "DUPLICATE_RECORD_ID", None]
    assert "record_id '1' appears 2 times" in ack["records"][0]["reason"]


def test_card_number_in_reference_is_rejected_and_never_written(platform):
    pan = "4111111111111111"
    records = [payment("1", "ACC00000001", "10.00", reference=f"paid with {pan[:4]} {pan[4:8]} {pan[8:12]} {pan[12:]}"),
               payment("2", "ACC00000002", "3.00", reference="PP 5521")]
    key = platform.drop("pan.json.enc", document(records))
    platform.process(key)
    outcome, _, code, reason, _ = platform.records(key)["1"]
    assert (outcome, code) == ("REJECTED", "CARD_NUMBER_DETECTED")
    assert "************1111" in reason
    [(stored,)] = platform.query("SELECT reference FROM nrp_records WHERE record_id = '1'")
    assert stored == "paid with ************1111"
    ack_text = orjson.dumps(platform.read_ack("PAYPOINT", "pan")).decode()
    assert pan not in ack_text and "4111 1111" not in ack_text
    for path in platform.root.rglob("*"):
        if path.is_file() and "archive" not in path.parts and path.suffix not in {".duckdb", ".wal"}:
            assert pan.encode() not in path.read_bytes(), path


def test_unknown_account_goes_to_suspense(platform):
    key = platform.drop("suspense.json.enc", document([payment("1", "ACC99999999", "12.34")]))
    load = platform.process(key)
    assert load.allocations == {"SUSPENSE": 1}
    assert platform.records(key)["1"] == (
        "ACCEPTED", "SUSPENSE", "UNKNOWN_ACCOUNT", "account 'ACC99999999' is unknown; held in suspense", "SUSPENSE",
    )
    assert platform.balance("SUSPENSE") == -1234


def test_invoice_of_another_account_is_allocated_to_the_account(platform):
    other = "INV000000031"  # belongs to ACC00000003
    key = platform.drop("other.json.enc", document([payment("1", "ACC00000001", "8.00", other)]))
    platform.process(key)
    outcome, allocation, code, reason, ledger = platform.records(key)["1"]
    assert (outcome, allocation, code, ledger) == ("ACCEPTED", "ACCOUNT", "INVOICE_OF_ANOTHER_ACCOUNT", "ACC00000001")
    [(invoice,)] = platform.query("SELECT invoice_number FROM ledger_postings WHERE kind = 'PAYMENT'")
    assert invoice is None, "the payment must not be allocated to another account's invoice"


def test_currency_mismatch(platform):
    key = platform.drop("eur.json.enc", document([payment("1", "ACC00000001", "8.00")], currency="EUR"))
    platform.process(key)
    assert platform.records(key)["1"][2] == "CURRENCY_MISMATCH"


def test_unknown_partition_key_is_refused(platform):
    with pytest.raises(ValueError, match="PARTNER/name@sha12"):
        platform.process("not-a-key")
    with pytest.raises(FileNotFoundError, match="never loaded"):
        platform.process(partition_key("PAYPOINT", "ghost.json.enc", sha256_hex(b"x")))


def test_card_number_in_header_is_masked_in_the_quarantine_report(platform):
    doc = document(GOOD, file_id="5500 0000 0000 0004 x" * 4)
    key = platform.drop("pan-header.json.enc", doc)
    caught, report = assert_quarantined(platform, key, "SCHEMA_VIOLATION", "header.file_id")
    assert "5500 0000 0000 0004" not in caught.message and "************0004" in caught.message
    assert b"5500 0000 0000 0004" not in platform.files.read_bytes(f"{caught.quarantined_path}.error.json")


def test_card_number_as_record_id_is_rejected_and_masked(platform):
    records = [payment("4111111111111111", "ACC00000001", "10.00"), payment("2", "ACC00000002", "3.00")]
    key = platform.drop("pan-id.json.enc", document(records))
    load = platform.process(key)
    assert (load.accepted_count, load.rejected_count) == (1, 1)
    ack = platform.read_ack("PAYPOINT", "pan-id")
    assert ack["records"][0]["record_id"] == "************1111"
    assert ack["records"][0]["reason_code"] == "CARD_NUMBER_DETECTED"


@pytest.mark.parametrize(
    "change",
    [{"payment_method": "4111111111111111"}, {"amount": "4111111111111111"},
     {"payment_date": "4111111111111111"}, {"4111111111111111": "x"},
     {"reference": "4111  1111 1111 1111"}, {"reference": "4111.1111.1111.1111"}],
    ids=["method", "amount", "date", "field-name", "double-space", "dots"],
)
def test_card_number_in_any_field_never_reaches_store_or_ack(platform, change):
    pan = "4111111111111111"
    records = [{**payment("1", "ACC00000001", "10.00"), **change}, payment("2", "ACC00000002", "3.00")]
    key = platform.drop("pan-any.json.enc", document(records))
    platform.process(key)
    outcome, _, code, reason, _ = platform.records(key)["1"]
    assert outcome == "REJECTED" and "************1111" in reason
    dump = str(platform.query("SELECT * FROM nrp_records"))
    assert pan not in dump and "4111  1111" not in dump and "4111.1111" not in dump
    ack = orjson.dumps(platform.read_ack("PAYPOINT", "pan-any")).decode()
    assert pan not in ack


def test_resent_file_with_the_same_file_id_posts_nothing(platform):
    first = platform.drop("orig.json.enc", document(GOOD))
    platform.process(first)
    resent = document(GOOD)
    resent["header"]["created_at"] = "2026-11-21T07:00:00Z"  # regenerated: other bytes, same payments
    key = platform.drop("orig-resent.json.enc", resent)
    assert_quarantined(platform, key, "DUPLICATE_FILE", "header file_id 'PAYPOINT-20261121-001'", first)
    assert platform.payment_postings() == 2


def test_header_value_with_trailing_newline_is_refused(platform):
    key = platform.drop("newline.json.enc", document(GOOD, currency="GBP\n"))
    assert_quarantined(platform, key, "SCHEMA_VIOLATION", "header.currency")


def test_foreign_currency_for_an_unknown_account_does_not_reach_suspense(platform):
    key = platform.drop("usd.json.enc", document([payment("1", "ACC99999999", "5.00")], currency="USD"))
    platform.process(key)
    outcome, _, code, reason, _ = platform.records(key)["1"]
    assert (outcome, code) == ("REJECTED", "CURRENCY_MISMATCH")
    assert "of the suspense account" in reason
    assert platform.balance("SUSPENSE") == 0


def test_sensor_leaves_badly_named_files_in_place_and_says_why(platform):
    from cmp_pipelines.core.inbound import scan

    platform.files.write_bytes("inbound/nrp/PAYPOINT/bad\nname.enc", b"x")
    platform.files.write_bytes("inbound/nrp/PAYPOINT/4111111111111111.enc", b"x")
    platform.files.write_bytes("inbound/nrp/stray.enc", b"x")
    pending, skipped, cursor = scan(platform.files, "nrp", None)
    assert pending == []
    reasons = sorted(s.why.split(";")[0] for s in skipped)
    assert reasons == ["not in a partner folder (inbound/nrp/<PARTNER>/<file>)",
                       "the file name contains a card number", "the file name contains control characters"]
    assert all("4111111111111111" not in s.path for s in skipped)
    assert platform.files.exists("inbound/nrp/PAYPOINT/bad\nname.enc"), "nothing is lost"


def test_a_load_batch_that_already_holds_records_is_refused_and_nothing_is_posted(platform):
    """nrp_records has no primary key (migration v10): the load checks in its transaction that its batch is new."""
    plaintext = orjson.dumps(document([payment("1", "ACC00000001", "10.00")]))
    batch_id = f"NRPL-{sha256_hex(plaintext)[:16]}"
    stray = "INSERT INTO nrp_records (batch_id, position, outcome) VALUES (?, 1, 'ACCEPTED')"
    if hasattr(platform, "execute"):  # the PostgreSQL store
        platform.execute(stray, [batch_id])
    else:
        with platform.connect() as con:
            con.execute(stray, [batch_id])
    balance = platform.balance("ACC00000001")
    key = platform.drop("stray.json.enc", plaintext)
    with pytest.raises(AssertionError, match=f"load batch {batch_id} already holds records"):
        platform.process(key)
    assert platform.balance("ACC00000001") == balance
    assert platform.query("SELECT count(*) FROM nrp_records WHERE batch_id = ?", [batch_id]) == [(1,)]
    assert platform.files.exists("inbound/nrp/PAYPOINT/stray.json.enc"), "the file waits, unharmed, for a re-run"
