"""The billing feed's test platform: the `platform` fixture plus the billing system's keys, and helpers that build a
billing run file and run its steps as the job does."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal

import orjson
import pytest

from cmp_pipelines.core.config import load_partners, load_payment_terms
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.core.intake import FileQuarantined, partition_key, sha256_hex
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.billing.flow import BillingRun, LoadResult
from tests.support.platform import NOW, Platform

CONFIG = PROJECT_ROOT / "config"
PARTNER = "BILLSYS"


def account(record_id: str, number: str, name: str = "New Customer", *, email: str | None = None,
            phone: str | None = None, payment_term: str | None = None, **extra) -> dict:
    record = {"record_id": record_id, "record_type": "ACCOUNT", "account_number": number, "name": name,
              "email": email, "phone": phone, "payment_term": payment_term, "invoice_number": None, "amount": None,
              "issue_date": None}
    record.update(extra)
    return record


def invoice(record_id: str, number: str, invoice_number: str, amount: str, issue_date: str = "2026-12-01",
            **extra) -> dict:
    record = {"record_id": record_id, "record_type": "INVOICE", "account_number": number, "name": None,
              "email": None, "phone": None, "payment_term": None, "invoice_number": invoice_number,
              "amount": amount, "issue_date": issue_date}
    record.update(extra)
    return record


def billing_document(records: list, file_id: str = "BILLSYS-20261201-001", sender: str = PARTNER,
                     **header) -> dict:
    """A billing run file whose control totals match its records (unless `header` overrides them)."""
    dicts = [r for r in records if isinstance(r, dict)]
    total = sum((Decimal(r["amount"]) for r in dicts
                 if isinstance(r.get("amount"), str) and _two_places(r["amount"])), Decimal("0.00"))
    doc = {"header": {"file_id": file_id, "sender": sender, "created_at": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "run_date": "2026-12-01", "currency": "GBP", "record_count": len(records),
                      "account_count": sum(r.get("record_type") == "ACCOUNT" for r in dicts),
                      "invoice_count": sum(r.get("record_type") == "INVOICE" for r in dicts),
                      "total_amount": f"{total:.2f}"},
           "records": records}
    doc["header"].update(header)
    return doc


def _two_places(value: str) -> bool:
    import re

    return re.fullmatch(r"-?[0-9]{1,18}\.[0-9]{2}", value) is not None


class Billing:
    def __init__(self, platform: Platform):
        self.platform = platform

    def drop(self, name: str, document: dict | bytes, partner: str = PARTNER, encrypt_for: str | None = None) -> str:
        plaintext = document if isinstance(document, bytes) else orjson.dumps(document)
        data = self.platform.keyring.encrypt(encrypt_for or partner, plaintext)
        path = self.platform.files.write_bytes(f"inbound/billing/{partner}/{name}", data)
        return partition_key(partner, name, sha256_hex(self.platform.files.read_bytes(path)))

    def flow(self, con, now: datetime = NOW, mirror=None) -> BillingRun:
        return BillingRun(con, self.platform.files, self.platform.keyring, load_partners(CONFIG),
                          load_payment_terms(CONFIG), now, mirror)

    @contextmanager
    def opened(self, now: datetime = NOW):
        """The flow on the platform's store: the DuckDB file, or (PostgreSQL) a scratch linked to it."""
        url = getattr(self.platform, "url", "")
        if url:
            with mirrored(url) as mirror:
                yield self.flow(mirror.con, now, mirror)
            return
        with self.platform.connect() as con:
            yield self.flow(con, now)

    def process(self, key: str, now: datetime = NOW) -> LoadResult:
        """The four steps of the billing run job for one file."""
        with self.opened(now) as flow:
            load = flow.load(key)
            flow.write_posting_file(flow.post(load))
            flow.acknowledge(load)
            return load

    def quarantine(self, key: str) -> FileQuarantined:
        with pytest.raises(FileQuarantined) as caught:
            self.process(key)
        return caught.value

    def read_ack(self, name: str, kind: str = "ack") -> dict:
        path = f"outbound/acknowledgements/billing/{PARTNER}/{name}.{kind}.json.enc"
        return orjson.loads(self.platform.keyring.decrypt(PARTNER, self.platform.files.read_bytes(path)))

    def records(self, load: LoadResult) -> dict[str, tuple]:
        """record_id -> (outcome, action, reason_code, reason)."""
        return {r[0]: r[1:] for r in self.platform.query(
            "SELECT record_id, outcome, action, reason_code, reason FROM billing_records WHERE batch_id = ? "
            "ORDER BY position", [load.batch_id])}

    def ledger(self, account: str, kind: str | None = None) -> int:
        sql = "SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE account_number = ?"
        if kind:
            return self.platform.query(sql + " AND kind = ?", [account, kind])[0][0]
        return self.platform.query(sql, [account])[0][0]


@pytest.fixture
def billing(platform) -> Billing:
    platform.keyring.init_keys(PARTNER)
    return Billing(platform)


@pytest.fixture
def any_billing(any_platform) -> Billing:
    """`billing` on either store (PostgreSQL: `make test-pg`)."""
    any_platform.keyring.init_keys(PARTNER)
    return Billing(any_platform)
