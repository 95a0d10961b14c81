"""The non-recurring payments flow, step by step, free of Dagster so the CLI, benchmark and assets share it.

Each step is idempotent: a step that already completed for a file returns what it recorded, so a
re-run partition, a re-dropped file or a resumed run never posts twice.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import orjson
import pyarrow as pa

from cmp_pipelines.configuration import Partner
from cmp_pipelines.domain.money import format_minor
from cmp_pipelines.domain.nrp_rules import CLASSIFY_AND_MATCH_SQL
from cmp_pipelines.formats import nrp_file
from cmp_pipelines.formats.encryption import PartnerKeyring
from cmp_pipelines.formats.errors import FileRejected
from cmp_pipelines.formats.record_file import check_sender, first_schema_violation, with_shape_and_card_numbers
from cmp_pipelines.formats.record_scan import read_record_file
from cmp_pipelines.services.files import FileStoreLike
from cmp_pipelines.services.intake import (  # noqa: F401  (re-exported: the file identity every feed shares)
    FileQuarantined,
    Intake,
    Received,
    file_stem,
    partition_key,
    sha256_hex,
)
from cmp_pipelines.services.ledger_file import (
    PostResult,
    json_document,
    posted_batch,
    posting_count,
    record_posting_batch,
    write_posting_file,
)
from cmp_pipelines.store.connection import sql_literal, transaction

FEED = "nrp"
JOB = "Non Recurring Payment job"
PAN_SCANNED_FIELDS = nrp_file.PAYMENT_FIELDS  # a card number in any field is rejected, and masked everywhere
GUARD_SAMPLE = 200


def ack_path(partner: str, file_name: str, kind: str) -> str:
    """Where the partner finds our answer to `file_name`: its stem, then `.<kind>.json.enc`."""
    return f"outbound/acknowledgements/{FEED}/{partner}/{file_stem(file_name)}.{kind}.json.enc"


@dataclass
class LoadResult:
    file_id: str
    batch_id: str
    status: str  # LOADED now, or ALREADY_LOADED by an earlier run
    partner: str
    currency: str
    record_count: int
    accepted_count: int
    rejected_count: int
    accepted_minor: int
    rejected_minor: int
    allocations: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    archived_path: str | None = None


class NonRecurringPayments:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        files: FileStoreLike,
        keyring: PartnerKeyring,
        partners: dict[str, Partner],
        now: datetime | None = None,
    ):
        self.con, self.files, self.keyring, self.partners = con, files, keyring, partners
        self.now = now or datetime.now(UTC)
        self.intake = Intake(con, files, keyring, partners, FEED, self.now, self._acknowledge_rejection)

    # ---- load ("Load Non Recurring Payments From Generic Format") -------------------------------

    def load(self, file_id: str) -> LoadResult:
        status = self.intake.load(file_id, self._load_new)
        return self._load_result(file_id, status)

    def _load_new(self, received: Received) -> None:
        partner = received.partner
        plaintext = self.intake.decrypt(received)
        with ThreadPoolExecutor(max_workers=1) as pool:
            content_digest = pool.submit(sha256_hex, plaintext)  # hashlib releases the GIL: overlaps the read
            read = read_record_file(nrp_file.NRP_FILE, plaintext, self.con)
            content_sha = content_digest.result()
        del plaintext
        header = read.header
        check_sender(header, partner)
        nrp_file.check_control_totals(header, read.record_count, read.table.column("amount").combine_chunks())
        self.intake.refuse_duplicate(received, content_sha, header["file_id"])
        table = with_shape_and_card_numbers(read.table, read.shape_errors, PAN_SCANNED_FIELDS)
        batch_id = f"NRPL-{content_sha[:16]}"
        with transaction(self.con):
            if self.con.execute("SELECT count(*) FROM nrp_records WHERE batch_id = ?", [batch_id]).fetchall()[0][0]:
                raise AssertionError(f"load batch {batch_id} already holds records; a batch is written once")
            self.con.register("raw", table)
            try:
                self.con.execute(
                    CLASSIFY_AND_MATCH_SQL, {"batch_id": batch_id, "currency": header["currency"]}
                )
            finally:
                self.con.unregister("raw")
            self._guard_schema_agreement(batch_id, table)
            self.con.execute(
                """
                INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at,
                                     record_count, total_minor, accepted_count, rejected_count)
                SELECT ?, 'NRP_LOAD', ?, ?, ?, 'LOADED', ?, count(*),
                       coalesce(sum(amount_minor) FILTER (outcome = 'ACCEPTED'), 0),
                       count(*) FILTER (outcome = 'ACCEPTED'), count(*) FILTER (outcome = 'REJECTED')
                FROM nrp_records WHERE batch_id = ?
                """,
                [batch_id, FEED, partner, received.file_id, self.now, batch_id],
            )
            self.intake.record_loaded(received, batch_id, content_sha, header["file_id"])

    def _guard_schema_agreement(self, batch_id: str, table: pa.Table) -> None:
        """The set-based rules must never accept what the JSON Schema rejects: spot-check accepted records."""
        positions = [p for (p,) in self.con.execute(
            "SELECT position FROM nrp_records WHERE batch_id = ? AND outcome = 'ACCEPTED' "
            "AND reason_code IS DISTINCT FROM 'CARD_NUMBER_DETECTED' ORDER BY position LIMIT ?",
            [batch_id, GUARD_SAMPLE],
        ).fetchall()]
        violation = first_schema_violation(nrp_file.NRP_FILE, table, positions)
        if violation:
            raise AssertionError(f"record {violation[0]} was accepted but violates the schema: {violation[1]}")

    def loaded(self, file_id: str) -> LoadResult:
        """The load batch an earlier step recorded for this file."""
        return self._load_result(file_id, "ALREADY_LOADED")

    def _load_result(self, file_id: str, status: str) -> LoadResult:
        batch_id, partner, archived = self.intake.loaded_batch(file_id)
        totals = self.con.execute(
            """
            SELECT any_value(currency), count(*),
                   count(*) FILTER (outcome = 'ACCEPTED'), count(*) FILTER (outcome = 'REJECTED'),
                   coalesce(sum(amount_minor) FILTER (outcome = 'ACCEPTED'), 0),
                   coalesce(sum(amount_minor) FILTER (outcome = 'REJECTED'), 0)
            FROM nrp_records WHERE batch_id = ?
            """,
            [batch_id],
        ).fetchone()
        allocations = dict(self.con.execute(
            "SELECT allocation, count(*) FROM nrp_records WHERE batch_id = ? AND allocation IS NOT NULL GROUP BY 1",
            [batch_id],
        ).fetchall())
        rejections = dict(self.con.execute(
            "SELECT reason_code, count(*) FROM nrp_records WHERE batch_id = ? AND outcome = 'REJECTED' GROUP BY 1",
            [batch_id],
        ).fetchall())
        return LoadResult(
            file_id, batch_id, status, partner, totals[0] or "GBP", totals[1], totals[2], totals[3], totals[4],
            totals[5], allocations, rejections, archived,
        )

    # ---- Non Recurring Payment job: posting batch and ledger postings ------------------------------

    def post(self, load: LoadResult) -> PostResult:
        posting_batch = load.batch_id.replace("NRPL-", "NRPP-")
        key_prefix = f"nrp:{load.batch_id[5:]}:"
        with transaction(self.con):
            before = posting_count(self.con, posting_batch)
            self.con.execute(
                """
                INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor,
                                             currency, batch_id, source_ref, effective_at, posted_at)
                SELECT $prefix || record_id || ':PAYMENT', ledger_account,
                       CASE WHEN allocation = 'INVOICE' THEN invoice_number END, 'PAYMENT', -amount_minor,
                       currency, $posting_batch, $partner || '/' || record_id, coalesce(payment_date, $now), $now
                FROM nrp_records
                WHERE batch_id = $load_batch AND outcome = 'ACCEPTED'
                ON CONFLICT DO NOTHING
                """,
                {"prefix": key_prefix, "posting_batch": posting_batch, "partner": load.partner,
                 "now": self.now, "load_batch": load.batch_id},
            )
            posted = record_posting_batch(
                self.con, batch_id=posting_batch, kind="NRP_POSTING", feed=FEED, now=self.now, posted_before=before,
                partner=load.partner, source_file_id=load.file_id, parent_batch_id=load.batch_id,
            )
            self.con.execute(
                "UPDATE batches SET status = 'POSTED' WHERE batch_id = ? AND status = 'LOADED'", [load.batch_id]
            )
        return posted

    def posted(self, load: LoadResult) -> PostResult:
        return posted_batch(self.con, load.batch_id.replace("NRPL-", "NRPP-"), "nrp_posting_batch")

    # ---- posting file for the external sales ledger ----------------------------------------------

    def write_posting_file(self, posted: PostResult) -> str:
        return write_posting_file(self.con, self.files, posted.batch_id, f"{FEED}:{JOB}", self.now)[0]

    # ---- "Acknowledge Non Recurring Payments Receipt Of" -----------------------------------------

    def acknowledge(self, load: LoadResult) -> str:
        file_name = self.con.execute(
            "SELECT file_name FROM inbound_files WHERE file_id = ?", [load.file_id]
        ).fetchone()[0]
        header = {
            "file_id": load.file_id,
            "source_file_name": file_name,
            "recipient": load.partner,
            "status": "PROCESSED",
            "reason_code": None,
            "reason": None,
            "processed_at": self.now.isoformat(),
            "record_count": load.record_count,
            "accepted_count": load.accepted_count,
            "rejected_count": load.rejected_count,
            "accepted_amount": format_minor(load.accepted_minor),
            "rejected_amount": format_minor(load.rejected_minor),
            "currency": load.currency,
        }
        with json_document(
            self.con, header, "records",
            f"""
            SELECT position, record_id, outcome, allocation, minor_to_decimal(amount_minor) AS amount,
                   reason_code, reason
            FROM nrp_records WHERE batch_id = {sql_literal(load.batch_id)} ORDER BY position
            """,
        ) as document:
            token = self.keyring.encrypt_parts(load.partner, [document])
            path = self.files.write_parts(ack_path(load.partner, file_name, "ack"), token)
        with transaction(self.con):
            self.con.execute(
                "UPDATE batches SET status = 'ACKNOWLEDGED', output_path = ?, completed_at = ? WHERE batch_id = ?",
                [path, self.now, load.batch_id],
            )
        return path

    def _acknowledge_rejection(self, partner: str, file_name: str, file_id: str, rejected: FileRejected) -> None:
        """Tell the partner the whole file was refused, when we hold a key to tell them with."""
        if not self.keyring.has_keys(partner):
            return
        header = {
            "file_id": file_id, "source_file_name": file_name, "recipient": partner, "status": "REJECTED",
            "reason_code": rejected.code, "reason": rejected.message, "processed_at": self.now.isoformat(),
            "record_count": 0, "accepted_count": 0, "rejected_count": 0, "accepted_amount": "0.00",
            "rejected_amount": "0.00", "currency": None,
        }
        try:
            token = self.keyring.encrypt(partner, orjson.dumps({"header": header, "records": []}))
        except FileRejected:
            return  # the partner's key file is unusable: the quarantine report says why
        self.files.write_bytes(ack_path(partner, file_name, "rejected.ack"), token)
