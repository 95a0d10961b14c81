from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from cmp_pipelines.core import payment_setup
from cmp_pipelines.core.config import load_partners, load_probes, load_rejection_codes
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.reference import sync_reference_data
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.card_payments.flow import RecurringCardPayments
from cmp_pipelines.defs.card_rejections.flow import CardRejections
from cmp_pipelines.defs.nrp.flow import (
    FileQuarantined,
    NonRecurringPayments,
    partition_key,
    sha256_hex,
)
from cmp_pipelines.defs.nrp.queries import outcomes
from cmp_pipelines.demo import data as demo
from cmp_pipelines.lib.resources.file_store import LocalFileStore

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
NOW = datetime.now(UTC).replace(microsecond=0)  # "today" probes compare with the real clock


def payment(record_id: str, account: str, amount: str, invoice: str | None = None, **extra) -> dict:
    record = {
        "record_id": record_id, "account_number": account, "invoice_number": invoice, "amount": amount,
        "payment_date": "2026-11-20T14:03:00Z", "payment_method": "CASH", "reference": None,
    }
    record.update(extra)
    return record


@dataclass
class Platform:
    root: Path
    files: LocalFileStore
    keyring: PartnerKeyring

    @property
    def database(self) -> Path:
        return self.root / "cmp.duckdb"

    def connect(self):
        return connect(self.database)

    def drop(self, name: str, document: dict | bytes, partner: str = "PAYPOINT", encrypt_for: str | None = None,
             raw: bool = False) -> str:
        """Encrypt (unless raw) and place a file in inbound/nrp/<partner>/; returns its partition key."""
        plaintext = document if isinstance(document, bytes) else orjson.dumps(document)
        data = plaintext if raw else self.keyring.encrypt(encrypt_for or partner, plaintext)
        path = self.files.write_bytes(f"inbound/nrp/{partner}/{name}", data)
        return partition_key(partner, name, sha256_hex(self.files.read_bytes(path)))

    def process(self, key: str):
        """Run the four flow steps for one file, as the job does."""
        with self.connect() as con:
            flow = NonRecurringPayments(con, self.files, self.keyring, load_partners(PROJECT_ROOT / "config"), NOW)
            load = flow.load(key)
            posted = flow.post(load)
            flow.write_posting_file(posted)
            flow.acknowledge(load)
            return load

    def quarantine(self, key: str) -> FileQuarantined:
        with pytest.raises(FileQuarantined) as caught:
            self.process(key)
        return caught.value

    def balance(self, account: str) -> int:
        with self.connect() as con:
            return con.execute(
                "SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE account_number = ?", [account]
            ).fetchone()[0]

    def payment_postings(self) -> int:
        with self.connect() as con:
            return con.execute("SELECT count(*) FROM ledger_postings WHERE kind = 'PAYMENT'").fetchone()[0]

    def invoice_amount(self, invoice: str) -> int:
        with self.connect() as con:
            return con.execute("SELECT amount_minor FROM invoices WHERE invoice_number = ?", [invoice]).fetchone()[0]

    def read_ack(self, partner: str, name: str) -> dict:
        path = f"outbound/acknowledgements/nrp/{partner}/{name}.ack.json.enc"
        return orjson.loads(self.keyring.decrypt(partner, self.files.read_bytes(path)))

    # ---- recurring card payments -------------------------------------------------------------------

    def card_day(self, day, now: datetime | None = None, notices: bool = True):
        """The CARD-mode job for one business day, as the daily partition runs it; returns the due batch. First
        (unless `notices` is False) the advance notices every invoice issued by then would have had."""
        from tests.support.notices import give_notices

        now = now or datetime(day.year, day.month, day.day, 2, 0, tzinfo=UTC)
        if notices:
            give_notices(self, "RECURRING_CARD", day)
        with self.connect() as con:
            flow = RecurringCardPayments(con, self.files, self.keyring, load_partners(PROJECT_ROOT / "config"), now)
            due = flow.select_due(day)
            flow.write_extracts(due)
            flow.write_posting_file(flow.post(due))
            return due

    def read_extract(self, day, provider: str = "CARDPAY", currency: str = "GBP") -> dict:
        path = f"outbound/card_payments/{provider}/RCX-{day:%Y%m%d}-{provider}-{currency}.json.enc"
        return orjson.loads(self.keyring.decrypt(provider, self.files.read_bytes(path)))

    def drop_rejections(self, name: str, document: dict | bytes, partner: str = "CARDPAY",
                        encrypt_for: str | None = None, raw: bool = False) -> str:
        plaintext = document if isinstance(document, bytes) else orjson.dumps(document)
        data = plaintext if raw else self.keyring.encrypt(encrypt_for or partner, plaintext)
        path = self.files.write_bytes(f"inbound/card_rejections/{partner}/{name}", data)
        return partition_key(partner, name, sha256_hex(self.files.read_bytes(path)))

    def process_rejections(self, key: str, now: datetime | None = None):
        """The four Rejections job steps for one file; returns (load, applied)."""
        config = PROJECT_ROOT / "config"
        with self.connect() as con:
            flow = CardRejections(con, self.files, self.keyring, load_partners(config), load_rejection_codes(config),
                                  now or NOW)
            load = flow.load(key)
            applied = flow.apply(load)
            flow.write_posting_file(applied)
            flow.write_reports(load)
            return load, applied

    def quarantine_rejections(self, key: str) -> FileQuarantined:
        with pytest.raises(FileQuarantined) as caught:
            self.process_rejections(key)
        return caught.value

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as con:
            return con.execute(sql, params or []).fetchall()

    def records(self, key: str) -> dict[str, tuple]:
        with self.connect() as con:
            rows = outcomes(con, key)
        return {row[1]: row[2:] for row in rows}


@pytest.fixture(scope="session")
def platform_template(tmp_path_factory) -> Path:
    """The migrated, seeded store and the partner keys, built once per test process: migrating and seeding a
    DuckDB file costs a second or more a test, copying the finished file a few milliseconds."""
    root = tmp_path_factory.mktemp("platform-template")
    keyring = PartnerKeyring(root / "keys")
    for partner in ("PAYPOINT", "LOCKBOX", "CARDPAY"):
        keyring.init_keys(partner)
    with connect(root / "cmp.duckdb") as con:
        config = PROJECT_ROOT / "config"
        sync_reference_data(con, load_partners(config), load_probes(config), load_rejection_codes(config))
        demo.seed_accounts(con, 20, 1, NOW)
    return root


@pytest.fixture
def platform(tmp_path, monkeypatch, platform_template) -> Platform:
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CMP_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("CMP_SMTP_HOST", raising=False)
    shutil.copytree(platform_template, tmp_path, dirs_exist_ok=True)
    return Platform(tmp_path, LocalFileStore(base_dir=str(tmp_path)), PartnerKeyring(tmp_path / "keys"))


# Five records covering an invoice match, a cheque without a date, a postal order with a reference, an unknown
# account (suspense) and a negative amount (rejected): the NRP end-to-end, object-store and PostgreSQL tests' file.
SAMPLE_RECORDS = [
    payment("1", "ACC00000001", "10.00", "INV000000011"),
    payment("2", "ACC00000002", "5.50", None, payment_date=None, payment_method="CHEQUE"),
    payment("3", "ACC00000003", "0.01", "INV000000031", payment_method="POSTAL_ORDER", reference="PP 5521"),
    payment("4", "ACC99999999", "20.00"),
    payment("5", "ACC00000002", "-1.00"),
]


def document(payments: list[dict], sender: str = "PAYPOINT", file_id: str = "PAYPOINT-20261121-001", **header):
    doc = demo.nrp_document(sender, file_id, payments, NOW)
    doc["header"].update(header)
    return doc


def rejection(record_id: str, transaction_id: str, account: str, amount: str, code: str,
              rejected_at: str = "2026-12-01T09:00:00Z", **extra) -> dict:
    record = {"record_id": record_id, "transaction_id": transaction_id, "account_number": account, "amount": amount,
              "reason_code": code, "reason_text": None, "rejected_at": rejected_at}
    record.update(extra)
    return record


def rejections_document(records: list, sender: str = "CARDPAY", file_id: str = "CARDPAY-REJ-001", **header):
    from decimal import Decimal

    total = sum((Decimal(r["amount"]) for r in records if isinstance(r, dict) and isinstance(r.get("amount"), str)
                 and demo.TWO_PLACES.match(r["amount"])), Decimal("0.00"))
    doc = {"header": {"file_id": file_id, "sender": sender, "created_at": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "currency": "GBP", "record_count": len(records), "total_amount": f"{total:.2f}"},
           "rejections": records}
    doc["header"].update(header)
    return doc


# ---- card customers (the card month and the workflow dispatch tests) --------------------------------------------

def add_customer(platform, number: int, invoices: list[tuple[str, int, date]], card: bool = True) -> str:
    """An account with invoices charged to its ledger and (unless `card` is False) a recurring card on file."""
    account = f"ACC{number:08d}"
    with platform.connect() as con:
        con.execute("INSERT INTO accounts (account_number, name, email) VALUES (?, ?, ?)",
                    [account, f"Customer {number}", f"customer{number}@example.com"])
        for invoice, amount, due in invoices:
            con.execute("INSERT INTO invoices VALUES (?, ?, ?, ?, ?, 'GBP')",
                        [invoice, account, due - timedelta(days=14), due, amount])
            con.execute(
                "INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, "
                "currency, batch_id, source_ref, effective_at) VALUES (?, ?, ?, 'INVOICE', ?, 'GBP', 'INV', ?, ?)",
                [f"invoice:{invoice}:CHARGE", account, invoice, amount, invoice, due - timedelta(days=14)],
            )
        if card:
            payment_setup.set_payment_type(
                con, account, "RECURRING_CARD", partners=load_partners(PROJECT_ROOT / "config"),
                now=datetime(2026, 11, 30, tzinfo=UTC), cause="customer set up recurring card",
                card_token=f"tok_{number}", last_four="4242", expiry="2029-01",
            )
    return account


def extract_ids(platform, day) -> list[str]:
    """The transaction ids of the day's CARD extract (none when no extract was written)."""
    try:
        return [t["transaction_id"] for t in platform.read_extract(day)["transactions"]]
    except FileNotFoundError:
        return []
