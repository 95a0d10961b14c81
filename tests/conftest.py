from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from cmp_pipelines.configuration import load_partners, load_probes
from cmp_pipelines.formats.encryption import PartnerKeyring
from cmp_pipelines.resources.file_store import LocalFileStore
from cmp_pipelines.services import demo
from cmp_pipelines.services.non_recurring import (
    FileQuarantined,
    NonRecurringPayments,
    partition_key,
    sha256_hex,
)
from cmp_pipelines.services.reference import sync_reference_data
from cmp_pipelines.settings import PROJECT_ROOT
from cmp_pipelines.store.connection import connect
from cmp_pipelines.store.nrp_records import outcomes

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

    def records(self, key: str) -> dict[str, tuple]:
        with self.connect() as con:
            rows = outcomes(con, key)
        return {row[1]: row[2:] for row in rows}


@pytest.fixture
def platform(tmp_path, monkeypatch) -> Platform:
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CMP_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("CMP_SMTP_HOST", raising=False)
    keyring = PartnerKeyring(tmp_path / "keys")
    keyring.init_keys("PAYPOINT")
    keyring.init_keys("LOCKBOX")
    with connect(tmp_path / "cmp.duckdb") as con:
        sync_reference_data(con, load_partners(PROJECT_ROOT / "config"), load_probes(PROJECT_ROOT / "config"))
        demo.seed_accounts(con, 20, 1, NOW)
    return Platform(tmp_path, LocalFileStore(base_dir=str(tmp_path)), keyring)


def document(payments: list[dict], sender: str = "PAYPOINT", file_id: str = "PAYPOINT-20261121-001", **header):
    doc = demo.nrp_document(sender, file_id, payments, NOW)
    doc["header"].update(header)
    return doc
