"""Delivery receipts (issue 17, item 3): a partner's answer to documents we sent it marks them CONFIRMED.

The sales ledger accepts (or rejects) each posting file; the Bacs bureau reports on each submission (AUDDIS,
collections). Both answer with a receipt file (schema `delivery_receipt`), encrypted for us like every inbound
file, in `inbound/delivery_receipts/<PARTNER>/`. An ACCEPTED document becomes CONFIRMED; a REJECTED one FAILED
with the partner's reason and no automatic resend (the same bytes would be refused again): an operator corrects
and regenerates it. A receipt naming no document we sent is counted as unmatched, never an error.

On PostgreSQL (a `Mirror`, core/db/mirror.py) the rules run unchanged on the run's scratch DuckDB: the register
rows the receipt names are pulled locked (`FOR UPDATE`: a deliverer or another receipt changing one of them waits
for this load), confirmed or rejected in the scratch, and pushed back with the batch and the intake row in the
intake's one transaction (`Intake.push_loaded`: the same content or file id twice is refused there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import orjson

from cmp_pipelines.core import delivery
from cmp_pipelines.core.config import Partner
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.files.schemas import first_error
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import Intake, Received, sha256_hex

FEED = "delivery_receipts"
_RECEIPT_COLUMNS = ("status", "confirmed_at", "confirmation", "last_error", "attempts", "updated_at")


@dataclass
class ReceiptLoad:
    file_id: str
    partner: str
    status: str
    confirmed: int
    rejected: int
    unmatched: list[str]


class DeliveryReceipts:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 partners: dict[str, Partner], now: datetime, mirror: Mirror | None = None):
        self.con, self.now, self.mirror = con, now, mirror
        self.intake = Intake(con, files, keyring, partners, FEED, now, mirror=mirror)
        self.result: ReceiptLoad | None = None

    def load(self, file_id: str) -> ReceiptLoad:
        status = self.intake.load(file_id, self._load_new)
        if self.result is not None:
            return self.result
        batch_id, partner, _ = self.intake.loaded_batch(file_id)
        return ReceiptLoad(file_id, partner, status, 0, 0, [])

    def _load_new(self, received: Received) -> None:
        plaintext = self.intake.decrypt(received)
        try:
            document = orjson.loads(plaintext)
        except orjson.JSONDecodeError as exc:
            raise FileRejected("NOT_JSON", f"the receipt is not JSON: {exc}") from None
        problem = first_error("delivery_receipt", document)
        if problem:
            raise FileRejected("SCHEMA_VIOLATION", problem)
        header = document["header"]
        if header["sender"] != received.partner:
            raise FileRejected("WRONG_SENDER", f"header sender {header['sender']!r} is not the partner whose folder "
                                               f"it came in ({received.partner})")
        content_sha = sha256_hex(plaintext)
        self.intake.refuse_duplicate(received, content_sha, header["file_id"])
        batch_id = f"DRC-{content_sha[:16]}"
        note = f"{header['file_id']} ({header['created_at']})"
        confirmed = rejected = 0
        unmatched = []
        self._pull_named(received.partner, [r["document"] for r in document["receipts"]])
        with transaction(self.con):
            for receipt in document["receipts"]:
                name = receipt["document"]
                if receipt["status"] == "ACCEPTED":
                    count = delivery.confirm(self.con, received.partner, name, f"accepted in {note}", self.now)
                    confirmed += count
                else:
                    count = delivery.reject(self.con, received.partner, name,
                                            f"rejected by {received.partner} in {note}: "
                                            f"{receipt.get('reason') or 'no reason given'}", self.now)
                    rejected += count
                if not count:
                    unmatched.append(name)
            self.con.execute(
                "INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at, "
                "record_count, accepted_count, rejected_count, total_minor, completed_at) "
                "VALUES (?, 'DELIVERY_RECEIPTS', ?, ?, ?, 'LOADED', ?, ?, ?, ?, 0, ?)",
                [batch_id, FEED, received.partner, received.file_id, self.now, len(document["receipts"]),
                 confirmed, rejected, self.now],
            )
            self.intake.record_loaded(received, batch_id, content_sha, header["file_id"])
            if self.mirror is not None:
                self.mirror.push_update("delivery_register", ["delivery_id"], _RECEIPT_COLUMNS,
                                        "partner = $partner AND updated_at = $now",
                                        {"partner": received.partner, "now": self.now})
                self.intake.push_loaded(received, content_sha, header["file_id"], batch_id, {})
        self.result = ReceiptLoad(received.file_id, received.partner, "LOADED", confirmed, rejected, unmatched)

    def _pull_named(self, partner: str, names: list[str]) -> None:
        """On PostgreSQL: the partner's register rows the receipt names (by reference or file name), locked until
        the load commits; the names cross once, as a temp table PostgreSQL joins on."""
        if self.mirror is None or not names:
            return
        self.mirror.stage_keys("receipt_names", "SELECT unnest($names) AS k", {"names": names})
        self.mirror.pull("delivery_register",
                         "partner = $1 AND (reference IN (SELECT k FROM receipt_names) "
                         "OR remote_name IN (SELECT k FROM receipt_names)) ORDER BY delivery_id FOR UPDATE", [partner],
                         key=["delivery_id"])
