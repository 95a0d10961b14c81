"""Delivery receipts: the sales ledger's acceptance of a posting file marks it CONFIRMED; a rejection FAILED with
the ledger's reason; a receipt naming nothing we sent is counted, not an error; the unconfirmed probe."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from cmp_pipelines.core import probe_queries
from cmp_pipelines.core.config import load_partners, load_probes
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.core.db.pg_duck import pg_duck
from cmp_pipelines.core.intake import FileQuarantined, partition_key, sha256_hex
from cmp_pipelines.core.probes import PROBES_BY_ID
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.core.transports import deliver_pending
from cmp_pipelines.defs.receipts.flow import DeliveryReceipts
from tests.support.pg_platform import PgPlatform
from tests.support.platform import NOW, document, payment

CONFIG = PROJECT_ROOT / "config"


def receipt(file_id: str, receipts: list[dict], sender: str = "SALES_LEDGER") -> dict:
    return {"header": {"file_id": file_id, "sender": sender, "created_at": "2026-12-02T07:00:00Z"},
            "receipts": receipts}


def service(platform):
    """The store as the service jobs open it: the DuckDB file, or PostgreSQL itself."""
    return pg_duck(platform.url) if isinstance(platform, PgPlatform) else platform.connect()


def load_receipt(platform, name: str, doc: dict, partner: str = "SALES_LEDGER"):
    data = platform.keyring.encrypt(partner, orjson.dumps(doc))
    path = platform.files.write_bytes(f"inbound/delivery_receipts/{partner}/{name}", data)
    key = partition_key(partner, name, sha256_hex(platform.files.read_bytes(path)))
    if isinstance(platform, PgPlatform):  # a run on PostgreSQL: the scratch DuckDB and its link
        with mirrored(platform.url) as mirror:
            return DeliveryReceipts(mirror.con, platform.files, platform.keyring, load_partners(CONFIG), NOW,
                                    mirror).load(key)
    with platform.connect() as con:
        return DeliveryReceipts(con, platform.files, platform.keyring, load_partners(CONFIG), NOW).load(key)


def sent_posting_file(platform) -> str:
    platform.process(platform.drop("PAYPOINT-20261121-001.json.enc", document([payment("1", "ACC00000001", "9.99")])))
    deliver_pending(lambda: service(platform), load_partners(CONFIG), platform.root, platform.root / "keys")
    [(name, status)] = platform.query("SELECT remote_name, status FROM delivery_register "
                                      "WHERE document_kind = 'LEDGER_POSTING'")
    assert status == "SENT" and (platform.root / "delivered/SALES_LEDGER" / name).exists()
    return name


@pytest.fixture
def ledger_keys(any_platform):
    """Every test on both stores (PostgreSQL: `make test-pg`)."""
    any_platform.keyring.init_keys("SALES_LEDGER")
    return any_platform


def test_the_ledgers_acceptance_confirms_the_posting_file(ledger_keys):
    platform = ledger_keys
    name = sent_posting_file(platform)
    batch_id = name.removesuffix(".json")
    load = load_receipt(platform, "LEDGER-ACK-001.json.enc", receipt("LEDGER-ACK-001", [
        {"document": batch_id, "status": "ACCEPTED"},
        {"document": "NRPP-0000000000000000", "status": "ACCEPTED"},  # nothing we sent
    ]))
    assert (load.status, load.confirmed, load.rejected, load.unmatched) == ("LOADED", 1, 0,
                                                                            ["NRPP-0000000000000000"])
    assert platform.query("SELECT status, confirmation FROM delivery_register WHERE remote_name = ?", [name]) == [
        ("CONFIRMED", "accepted in LEDGER-ACK-001 (2026-12-02T07:00:00Z)")]
    assert platform.files.exists(f"archive/delivery_receipts/SALES_LEDGER/{NOW:%Y-%m-%d}/LEDGER-ACK-001.json.enc")


def test_a_rejection_fails_the_document_with_the_reason_and_no_automatic_resend(ledger_keys):
    platform = ledger_keys
    name = sent_posting_file(platform)
    load = load_receipt(platform, "LEDGER-ACK-002.json.enc", receipt("LEDGER-ACK-002", [
        {"document": name, "status": "REJECTED", "reason": "period 2026-11 is closed"}]))
    assert (load.confirmed, load.rejected) == (0, 1)
    [(status, attempts, error)] = platform.query(
        "SELECT status, attempts, last_error FROM delivery_register WHERE remote_name = ?", [name])
    assert (status, attempts) == ("FAILED", 8)
    assert error == "rejected by SALES_LEDGER in LEDGER-ACK-002 (2026-12-02T07:00:00Z): period 2026-11 is closed"


def test_a_receipt_in_another_partners_name_is_quarantined(ledger_keys):
    platform = ledger_keys
    sent_posting_file(platform)
    with pytest.raises(FileQuarantined) as caught:
        load_receipt(platform, "forged.json.enc", receipt("X-1", [{"document": "a", "status": "ACCEPTED"}],
                                                          sender="BACSBUREAU"))
    assert caught.value.code == "WRONG_SENDER"
    assert {s for (s,) in platform.query("SELECT status FROM delivery_register")} == {"SENT"}


def test_the_unconfirmed_probe_counts_documents_sent_long_ago_without_a_receipt(ledger_keys):
    platform = ledger_keys
    sent_posting_file(platform)
    configs = load_probes(CONFIG)
    minutes = configs["deliveries_unconfirmed"].older_than_minutes
    probe = (PROBES_BY_ID["deliveries_unconfirmed"], PROBES_BY_ID["deliveries_undelivered"])
    with service(platform) as con:
        soon = probe_queries.evaluate(con, configs, NOW + timedelta(minutes=minutes - 1), probes=probe)
        late = probe_queries.evaluate(con, configs, NOW + timedelta(days=1), probes=probe)
    assert [(o.value, o.tripped) for o in soon] == [(0, False), (0, False)]
    assert [(o.value, o.tripped) for o in late] == [(1, True), (0, False)]  # the ack needs no receipt
