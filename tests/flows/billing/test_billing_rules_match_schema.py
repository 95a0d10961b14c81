"""The set-based record rules of the billing run file must agree with its JSON Schema, record for record: a record
the schema refuses is rejected with a schema-family code, and one it allows is never rejected with one."""

from __future__ import annotations

from cmp_pipelines.core.files.schemas import first_error
from tests.support.billing import account, billing_document, invoice

SCHEMA_CODES = {"SCHEMA_VIOLATION", "AMOUNT_NEGATIVE", "AMOUNT_PRECISION"}
MISSING = object()
COMMON = {
    "record_id": [None, "", "a b", "x" * 65, 5],
    "record_type": [None, "account", "CREDIT", 1, MISSING],
}
ACCOUNT_VARIANTS = {
    **COMMON,
    "account_number": [None, "acc1", "A" * 21, 7, "ACC 1", MISSING],
    "name": [None, "", "x" * 100, "x" * 101, 3, MISSING],
    "email": [None, "a@b.co", "a@b", "a b@c.de", "x" * 65 + "@b.co", 1],
    "phone": [None, "+447700900123", "0770", "+44 7700", "123-456-7890", 5],
    "payment_term": [None, "D7", "d7", "D777", "IMM", 5, MISSING],
    "invoice_number": ["INV-1"], "amount": ["1.00"], "issue_date": ["2026-12-01"],
    "extra": ["x"],
}
INVOICE_VARIANTS = {
    **COMMON,
    "invoice_number": [None, "inv", "X" * 31, 3, MISSING],
    "amount": [None, "0.00", "-1.00", "1.0", "1.000", "01.00", "1e2", 1.5, "1234567890123.00", " 1.00",
               "999999999999.99", "12", MISSING],
    "issue_date": [None, "2026-12-01", "2026-12-01T00:00:00Z", "1/12/2026", 20261201, MISSING],
    "name": ["Someone"], "email": ["a@b.co"], "phone": ["+447700900123"], "payment_term": ["D7"],
}


def _variants(make, variants: dict) -> list[dict]:
    records = []
    for field, values in variants.items():
        for value in values:
            n = len(records)
            record = make(n)
            if value is MISSING:
                record.pop(field, None)
            else:
                record[field] = value
            records.append(record)
    return records


def test_every_single_field_variant_agrees_with_the_schema(billing):
    accounts = _variants(lambda n: account(f"a{n}", f"ACC9{n:07d}", "Someone"), ACCOUNT_VARIANTS)
    invoices = _variants(lambda n: invoice(f"i{n}", "ACC00000001", f"INV-V-{n}", "1.00"), INVOICE_VARIANTS)
    records = accounts + invoices
    load = billing.process(billing.drop("variants.json.enc", billing_document(records)))
    stored = billing.platform.query("SELECT position, outcome, reason_code, reason FROM billing_records "
                                    "WHERE batch_id = ? ORDER BY position", [load.batch_id])
    assert len(stored) == len(records)
    disagreements = []
    for (position, outcome, code, reason), record in zip(stored, records, strict=True):
        schema_error = first_error("billing_run", record, "record")
        if bool(schema_error) != (outcome == "REJECTED" and code in SCHEMA_CODES):
            disagreements.append((position, record, schema_error, code, reason))
    assert disagreements == []
    assert {code for _, _, code, _ in stored} >= SCHEMA_CODES
