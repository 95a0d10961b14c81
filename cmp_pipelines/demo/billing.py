"""A sample billing run file from the billing system (BILLSYS): new and changed accounts, the day's invoices, and
a few bad records, so `make run` shows a billing run with its rejections and the next-invoice hardware charge."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.files.store import FileStoreLike

PARTNER = "BILLSYS"
_TWO_PLACES = re.compile(r"-?[0-9]{1,18}\.[0-9]{2}")


def account_record(record_id: str, number: str, name: str, *, email: str | None = None, phone: str | None = None,
                   payment_term: str | None = None) -> dict:
    return {"record_id": record_id, "record_type": "ACCOUNT", "account_number": number, "name": name,
            "email": email, "phone": phone, "payment_term": payment_term, "invoice_number": None, "amount": None,
            "issue_date": None}


def invoice_record(record_id: str, number: str, invoice_number: str, amount: str, issue_date: str) -> dict:
    return {"record_id": record_id, "record_type": "INVOICE", "account_number": number, "name": None,
            "email": None, "phone": None, "payment_term": None, "invoice_number": invoice_number, "amount": amount,
            "issue_date": issue_date}


def billing_run_document(file_id: str, records: list[dict], now: datetime, currency: str = "GBP") -> dict:
    """The header's control totals computed from the records, as the billing system would."""
    total = sum((Decimal(r["amount"]) for r in records
                 if isinstance(r.get("amount"), str) and _TWO_PLACES.fullmatch(r["amount"])), Decimal("0.00"))
    return {
        "header": {"file_id": file_id, "sender": PARTNER, "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "run_date": now.strftime("%Y-%m-%d"), "currency": currency, "record_count": len(records),
                   "account_count": sum(r.get("record_type") == "ACCOUNT" for r in records),
                   "invoice_count": sum(r.get("record_type") == "INVOICE" for r in records),
                   "total_amount": f"{total:.2f}"},
        "records": records,
    }


def demo_billing_run(files: FileStoreLike, keyring: PartnerKeyring, now: datetime | None = None) -> str:
    """Writes inbound/billing/BILLSYS/BILLSYS-<day>-001.json.enc; returns its path."""
    now = now or datetime.now(UTC)
    day, today = now.strftime("%Y%m%d"), now.strftime("%Y-%m-%d")
    records = [
        account_record("1", "ACC90000001", "Northwind Traders", email="accounts@northwind.example",
                       payment_term="D30"),
        account_record("2", "ACC00000002", "Acme Ltd", email="billing@acme.example", payment_term="D7"),
        invoice_record("3", "ACC90000001", f"BIL-{day}-0001", "120.00", today),
        invoice_record("4", "ACC00000002", f"BIL-{day}-0002", "45.00", today),  # takes its next-invoice order
        invoice_record("5", "ACC00000003", f"BIL-{day}-0003", "19.99", today),
        invoice_record("6", "ACC99999999", f"BIL-{day}-0004", "10.00", today),  # unknown account
        invoice_record("7", "ACC00000004", f"BIL-{day}-0005", "12.345", today),  # three decimals
        account_record("8", "ACC90000002", "Contoso", payment_term="X99"),  # not a payment term
    ]
    keyring.init_keys(PARTNER)
    document = billing_run_document(f"{PARTNER}-{day}-001", records, now)
    path = f"inbound/billing/{PARTNER}/{PARTNER}-{day}-001.json.enc"
    return files.write_bytes(path, keyring.encrypt(PARTNER, orjson.dumps(document)))
