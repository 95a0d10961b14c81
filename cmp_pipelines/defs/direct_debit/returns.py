"""Recurring Payments Rejections job (direct debit): the bank's ARUDD report of returned debits.

The same job as for card declines, run by the same engine (core/rejections.py), over Bacs XML:
1. `load`: decrypt, parse (ISO-8859-1), check the Totals and the service user, classify every returned item
   (batch ARJ-<hash16>); unknown debits and unmapped return codes are reported as job errors.
2. `apply`: in ONE transaction, the reversal batch (ARV-<hash16>) with one posting per invoice of each returned
   debit, the debits' new status and re-presentation date, suspensions, payment-type reversions, workflow
   events and customer communications. A re-run finds the batch APPLIED and does nothing.
3. `write_posting_file`, `write_reports`.

On PostgreSQL (`mirror`, defs/direct_debit/pg.py) the load pulls the debits the report names and pushes its batch
through the intake (locks on the content and the report id); `apply` takes the mandates lock, pulls the batch, its
debits, their postings, accounts and mandates, runs the same engine in the scratch and pushes everything it wrote
(the reversal postings through `core.ledger.push_batch_to_postgres`) in one transaction.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from cmp_pipelines.core import rejections as engine
from cmp_pipelines.core.batch_outcomes import outcome_counts
from cmp_pipelines.core.config import DirectDebitConfig, Partner, RejectionConfig
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.db.mirror import Mirror, pull_postings
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import Intake, Received, file_stem, sha256_hex
from cmp_pipelines.core.ledger import (
    PostResult,
    batch_id_of,
    lit,
    push_batch_to_postgres,
    write_communications,
    write_posting_file,
    write_records_file,
)
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.reference import sync_rejection_codes, sync_rejection_codes_postgres
from cmp_pipelines.core.rejections import REVERSED_SQL, RejectionTables
from cmp_pipelines.defs.direct_debit import bacs_xml, pg
from cmp_pipelines.defs.direct_debit.addacs import check_service_user
from cmp_pipelines.defs.direct_debit.arudd_rules import (
    CLASSIFY_SQL,
    COMMUNICATION_SQL,
    MANDATE_ACTION_SQL,
    UNCONFIGURED_EVENT,
)

FEED = "arudd"
JOB = "Recurring Payments Rejections job (DD)"
TABLES = RejectionTables(
    feed=FEED, load_kind="DD_RETURNS", reversal_kind="DD_REVERSAL", reversal_asset="dd_reversal_batch",
    rejections="dd_returns", payments="dd_collections", payment="collection_id", payment_type="DIRECT_DEBIT",
    revert_cause="direct debit returned", unconfigured_status="RETURNED_UNCONFIGURED",
    unconfigured_event=UNCONFIGURED_EVENT,
    event_detail=("', ' || r.transaction_code || ' debit of ' || minor_to_decimal(r.amount_minor) "
                  "|| ' returned with ' || r.return_code "
                  "|| coalesce(', re-presented on or after ' || r.retry_due_on, '')"),
    already_handled=("ALREADY_RETURNED",
                     "'debit ' || p.collection_id || ' was handled (' || p.status || ' by batch ' "
                     "|| coalesce(p.rejection_batch_id, '?') || ') after this report was loaded; nothing twice'"),
    ledger_source="dd",
    # one reversal per invoice of each returned debit, as it was posted
    reversal_sql=f"""
        SELECT c.collection_id, i.invoice_number, $now AS effective_at, c.collection_id AS payment, c.business_date
        FROM dd_returns r JOIN dd_collections c USING (collection_id) JOIN dd_collection_items i USING (collection_id)
        WHERE r.batch_id = $batch_id AND r.outcome IN ({REVERSED_SQL})
    """,
    ledger_refs=("collection_id", "invoice_number"), ledger_event=lit("COLLECTION"),
    unposted_message=("debit {payment} is not posted to the ledger yet: materialise dd_collection_posting_batch for "
                      "{day} first, then re-run this report"),
    communication_sql=COMMUNICATION_SQL,
)


@dataclass
class ReturnsLoad:
    file_id: str
    batch_id: str
    status: str  # LOADED now or ALREADY_LOADED
    partner: str
    item_count: int
    outcomes: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)
    reversed_count: int = 0
    reversed_minor: int = 0


class DirectDebitReturns:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 partners: dict[str, Partner], codes: RejectionConfig, config: DirectDebitConfig,
                 now: datetime | None = None, mirror: Mirror | None = None):
        self.con, self.files, self.codes, self.config = con, files, codes, config
        self.now = now or datetime.now(UTC)
        self.mirror = mirror
        self.intake = Intake(con, files, keyring, partners, FEED, self.now, mirror=mirror)
        if mirror is not None:  # PostgreSQL's configuration tables synced from the YAML and copied into the scratch
            sync_rejection_codes_postgres(mirror, codes)

    def _pushed(self):
        """The PostgreSQL transaction of a step's writes (nothing on the embedded store)."""
        return self.mirror.transaction() if self.mirror is not None else nullcontext()

    def load(self, file_id: str) -> ReturnsLoad:
        return self._result(file_id, self.intake.load(file_id, self._load_new))

    def loaded(self, file_id: str) -> ReturnsLoad:
        return self._result(file_id, "ALREADY_LOADED")

    def _load_new(self, received: Received) -> None:
        data = self.intake.decrypt(received)
        report = bacs_xml.read_arudd(data)
        check_service_user(report, self.config, "ARUDD")
        content_sha = sha256_hex(data)
        self.intake.refuse_duplicate(received, content_sha, report.report_id)
        batch_id = batch_id_of("DD_RETURNS", content_sha[:16])
        with transaction(self.con):
            if self.mirror is None:  # on PostgreSQL the constructor synced them
                sync_rejection_codes(self.con, self.codes)
            self.con.register("raw", report.records)
            try:
                if self.mirror is not None:  # the debits the report names, as PostgreSQL holds them
                    pg.pull_collections_named(self.mirror, "SELECT reference AS k FROM raw")
                self.con.execute(CLASSIFY_SQL, {"batch_id": batch_id, "day": self.now.date()})
            finally:
                self.con.unregister("raw")
            engine.record_loaded(self.con, TABLES, batch_id, received.partner, received.file_id, self.now)
            self.intake.record_problems(received, "dd_returns", batch_id, configuration="UNKNOWN_RETURN_CODE",
                                        data="UNKNOWN_REFERENCE", masked=report.masked)
            self.intake.record_loaded(received, batch_id, content_sha, report.report_id)
            if self.mirror is not None:
                self.mirror.push("job_errors", "job = $feed AND raised_at = $now", {"feed": FEED, "now": self.now})
                self.intake.push_loaded(received, content_sha, report.report_id, batch_id,
                                        {"dd_returns": "batch_id = $batch_id"})

    def _result(self, file_id: str, status: str) -> ReturnsLoad:
        batch_id, partner, _ = self.intake.loaded_batch(file_id)
        if self.mirror is not None and status == "ALREADY_LOADED":
            pg.pull_batch(self.mirror, batch_id)
            self.mirror.pull("dd_returns", "batch_id = $1", [batch_id], key=["batch_id", "position"])
        outcomes, problems = outcome_counts(self.con, "dd_returns", batch_id)
        count, reversed_count, reversed_minor = self.con.execute(
            "SELECT record_count, accepted_count, total_minor FROM batches WHERE batch_id = ?", [batch_id]
        ).fetchone()
        return ReturnsLoad(file_id, batch_id, status, partner, count, outcomes, problems, reversed_count,
                           reversed_minor)

    def apply(self, load: ReturnsLoad) -> PostResult:
        with transaction(self.con), self._pushed():
            if self.mirror is not None:
                self.mirror.lock(pg.mandates_lock(self.config.service_user_number))
                pg.pull_returns_state(self.mirror, load.batch_id)
            posted = engine.apply(self.con, TABLES, load_batch=load.batch_id, partner=load.partner,
                                  file_id=load.file_id, now=self.now, day=self.now.date(),
                                  default_type=self.codes.default_payment_type, after=MANDATE_ACTION_SQL)
            if self.mirror is not None and posted is not None:
                push_batch_to_postgres(self.con, self.mirror.pg, posted.batch_id)
                pg.push_returns_applied(self.mirror, load.batch_id, posted.batch_id, self.now)
        return posted or self.reversal(load)

    def reversal(self, load: ReturnsLoad) -> PostResult:
        """The reversal batch an earlier `apply` recorded."""
        if self.mirror is not None:
            pg.pull_batch(self.mirror, engine.reversal_batch_id(self.con, TABLES, load.batch_id))
        return engine.reversal(self.con, TABLES, load.batch_id)

    def write_posting_file(self, posted: PostResult) -> str:
        pull_postings(self.mirror, posted.batch_id)
        path = write_posting_file(self.con, self.files, posted.batch_id, f"{FEED}:{JOB}", self.now)[0]
        if self.mirror is not None:
            self.mirror.push_published(posted.batch_id, self.now)
        return path

    def write_reports(self, load: ReturnsLoad) -> tuple[str, str]:
        if self.mirror is not None:  # what the reports list, as PostgreSQL holds it
            self.mirror.pull("dd_returns", "batch_id = $1", [load.batch_id], key=["batch_id", "position"])
            self.mirror.pull("customer_communications", "batch_id = $1", [load.batch_id],
                             key=["template", "source_ref"])
            self.mirror.pull("batches", "parent_batch_id = $1", [load.batch_id], key=["batch_id"])
        file_name = self.con.execute("SELECT file_name FROM inbound_files WHERE file_id = ?",
                                     [load.file_id]).fetchone()[0]
        header = {
            "file_id": load.file_id, "source_file_name": file_name, "bureau": load.partner,
            "batch_id": load.batch_id, "reversal_batch_id": engine.reversal_batch_id(self.con, TABLES, load.batch_id),
            "processed_at": self.now.isoformat(), "item_count": load.item_count,
            "reversed_count": load.reversed_count, "reversed_amount": format_minor(load.reversed_minor),
            "rejected_count": load.outcomes.get("REJECTED", 0), "outcomes": load.outcomes,
        }
        report = write_records_file(
            self.con, self.files, f"outbound/reports/{FEED}/{load.partner}/{file_stem(file_name)}.outcomes.json",
            header, "returns",
            f"""
            SELECT r.position, r.reference, r.transaction_code, r.return_code, r.return_description, r.collection_id,
                   r.account_number, minor_to_decimal(r.amount_minor) AS amount, r.reason_code, k.reason_type,
                   k.reason_code AS reason, r.outcome, r.decline, r.attempt, r.retry_due_on::VARCHAR AS represent_on,
                   r.new_payment_type, r.payment_type_note, r.problem_code, r.problem
            FROM dd_returns r LEFT JOIN config_rejection_codes k ON k.code = r.reason_code
            WHERE r.batch_id = {sql_literal(load.batch_id)} ORDER BY r.position
            """,
        )
        communications = write_communications(self.con, self.files, load.batch_id, self.now, "collection_id")
        with self._pushed():
            self.con.execute("UPDATE batches SET output_path = ? WHERE batch_id = ?", [report, load.batch_id])
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": load.batch_id})
        return report, communications
