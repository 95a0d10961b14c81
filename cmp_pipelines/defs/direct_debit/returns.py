"""Recurring Payments Rejections job (direct debit): the bank's ARUDD report of returned debits.

The same job as for card declines, with the same rules (domain/rejection_outcomes.py), over Bacs XML:
1. `load`: decrypt, parse (ISO-8859-1), check the Totals and the service user, classify every returned item
   (batch ARJ-<hash16>); unknown debits and unmapped return codes are reported as job errors.
2. `apply`: in ONE transaction, the reversal batch (ARV-<hash16>) with one posting per invoice of each returned
   debit, the debits' new status and re-presentation date, suspensions, payment-type reversions, workflow
   events and customer communications. A re-run finds the batch APPLIED and does nothing.
3. `write_posting_file`, `write_reports`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from cmp_pipelines.core.batch_outcomes import outcome_counts
from cmp_pipelines.core.config import DirectDebitConfig, Partner, RejectionConfig
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import Intake, Received, file_stem, sha256_hex
from cmp_pipelines.core.ledger import (
    PostResult,
    posted_batch,
    record_posting_batch,
    write_communications,
    write_posting_file,
    write_records_file,
)
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.reference import sync_rejection_codes
from cmp_pipelines.core.rejections import (
    REVERSED_SQL,
    cancel_retries_sql,
    events_sql,
    revert_payment_type_sql,
    status_after_sql,
    suspend_accounts_sql,
)
from cmp_pipelines.defs.direct_debit import bacs_xml
from cmp_pipelines.defs.direct_debit.addacs import check_service_user
from cmp_pipelines.defs.direct_debit.arudd_rules import (
    CLASSIFY_SQL,
    COMMUNICATION_SQL,
    MANDATE_ACTION_SQL,
    UNCONFIGURED_EVENT,
)

FEED = "arudd"
JOB = "Recurring Payments Rejections job (DD)"


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


def reversal_batch_id(load_batch_id: str) -> str:
    return load_batch_id.replace("ARJ-", "ARV-")


class DirectDebitReturns:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 partners: dict[str, Partner], codes: RejectionConfig, config: DirectDebitConfig,
                 now: datetime | None = None):
        self.con, self.files, self.codes, self.config = con, files, codes, config
        self.now = now or datetime.now(UTC)
        self.intake = Intake(con, files, keyring, partners, FEED, self.now)

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
        batch_id = f"ARJ-{content_sha[:16]}"
        with transaction(self.con):
            sync_rejection_codes(self.con, self.codes)
            self.con.register("raw", report.records)
            try:
                self.con.execute(CLASSIFY_SQL, {"batch_id": batch_id, "day": self.now.date()})
            finally:
                self.con.unregister("raw")
            self.con.execute(
                f"""
                INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at,
                                     record_count, total_minor, accepted_count, rejected_count)
                SELECT ?, 'DD_RETURNS', ?, ?, ?, 'LOADED', ?, count(*),
                       coalesce(sum(amount_minor) FILTER (outcome IN ({REVERSED_SQL})), 0),
                       count(*) FILTER (outcome IN ({REVERSED_SQL})), count(*) FILTER (outcome = 'REJECTED')
                FROM dd_returns WHERE batch_id = ?
                """,
                [batch_id, FEED, received.partner, received.file_id, self.now, batch_id],
            )
            self.con.execute(
                """
                INSERT INTO job_errors (job, category, source_ref, detail, raised_at)
                SELECT $feed, CASE problem_code WHEN 'UNKNOWN_RETURN_CODE' THEN 'CONFIGURATION' ELSE 'DATA' END,
                       $file_id || '#' || position, problem_code || ': ' || problem, $now
                FROM dd_returns
                WHERE batch_id = $batch_id AND problem_code IN ('UNKNOWN_REFERENCE', 'UNKNOWN_RETURN_CODE')
                """,
                {"feed": FEED, "file_id": received.file_id, "now": self.now, "batch_id": batch_id},
            )
            if report.masked:  # a card number in the bank's free text: stored masked, and said so
                self.con.executemany(
                    "INSERT INTO job_errors (job, category, source_ref, detail, raised_at) VALUES (?, 'DATA', ?, ?, ?)",
                    [[FEED, received.file_id, f"CARD_NUMBER_MASKED: {where} carried a card number; stored masked",
                      self.now] for where in report.masked])
            self.intake.record_loaded(received, batch_id, content_sha, report.report_id)

    def _result(self, file_id: str, status: str) -> ReturnsLoad:
        batch_id, partner, _ = self.intake.loaded_batch(file_id)
        outcomes, problems = outcome_counts(self.con, "dd_returns", batch_id)
        count, reversed_count, reversed_minor = self.con.execute(
            "SELECT record_count, accepted_count, total_minor FROM batches WHERE batch_id = ?", [batch_id]
        ).fetchone()
        return ReturnsLoad(file_id, batch_id, status, partner, count, outcomes, problems, reversed_count,
                           reversed_minor)

    def apply(self, load: ReturnsLoad) -> PostResult:
        reversal = reversal_batch_id(load.batch_id)
        with transaction(self.con):
            status = self.con.execute("SELECT status FROM batches WHERE batch_id = ?", [load.batch_id]).fetchone()[0]
            if status == "APPLIED":
                return self.reversal(load)
            self._recheck(load.batch_id)
            self._require_original_postings(load.batch_id)
            self._apply_statements({"batch_id": load.batch_id, "reversal": reversal, "now": self.now,
                                    "default_type": self.codes.default_payment_type, "day": self.now.date()})
            posted = record_posting_batch(self.con, batch_id=reversal, kind="DD_REVERSAL", feed=FEED, now=self.now,
                                          posted_before=0, partner=load.partner, source_file_id=load.file_id,
                                          parent_batch_id=load.batch_id)
            self.con.execute("UPDATE batches SET status = 'APPLIED', completed_at = ? WHERE batch_id = ?",
                             [self.now, load.batch_id])
        return posted

    def reversal(self, load: ReturnsLoad) -> PostResult:
        """The reversal batch an earlier `apply` recorded."""
        return posted_batch(self.con, reversal_batch_id(load.batch_id), "dd_reversal_batch")

    def _recheck(self, batch_id: str) -> None:
        """Another report may have handled a debit since this one was loaded: that one wins, nothing twice."""
        self.con.execute(
            f"""
            UPDATE dd_returns r SET outcome = 'REJECTED', decline = NULL, retry_due_on = NULL,
                problem_code = 'ALREADY_RETURNED',
                problem = 'debit ' || c.collection_id || ' was handled (' || c.status || ' by batch '
                          || coalesce(c.rejection_batch_id, '?') || ') after this report was loaded; nothing twice'
            FROM dd_collections c
            WHERE r.collection_id = c.collection_id AND r.batch_id = $batch_id AND r.outcome IN ({REVERSED_SQL})
              AND c.status <> 'EXTRACTED'
            """,
            {"batch_id": batch_id},
        )

    def _require_original_postings(self, batch_id: str) -> None:
        """A reversal before its collection is posted would count the money twice: wait for the posting batch."""
        missing = self.con.execute(
            f"""
            SELECT c.collection_id, c.business_date FROM dd_returns r JOIN dd_collections c USING (collection_id)
            WHERE r.batch_id = ? AND r.outcome IN ({REVERSED_SQL})
              AND NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.source_ref = c.collection_id
                              AND p.kind = 'DD_COLLECTION')
            ORDER BY 1 LIMIT 1
            """,
            [batch_id],
        ).fetchone()
        if missing:
            raise LookupError(f"debit {missing[0]} is not posted to the ledger yet: materialise "
                              f"dd_collection_posting_batch for {missing[1]} first, then re-run this report")

    def _apply_statements(self, params: dict) -> None:
        def run(sql: str) -> None:
            self.con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})

        handled = f"r.batch_id = $batch_id AND r.outcome IN ({REVERSED_SQL})"
        run(cancel_retries_sql("dd_returns", "DIRECT_DEBIT"))
        run(f"""
            INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor,
                                         currency, batch_id, source_ref, effective_at, posted_at)
            SELECT 'dd:' || c.collection_id || ':' || i.invoice_number || ':REVERSAL', c.account_number,
                   i.invoice_number, 'DD_REVERSAL', i.amount_minor, c.currency, $reversal, c.collection_id, $now, $now
            FROM dd_returns r JOIN dd_collections c USING (collection_id)
                 JOIN dd_collection_items i USING (collection_id)
            WHERE {handled}
            ON CONFLICT DO NOTHING
        """)
        run(f"""
            UPDATE dd_collections c SET status = {status_after_sql('RETURNED_UNCONFIGURED')},
                reason_code = r.reason_code, rejection_batch_id = r.batch_id, retry_due_on = r.retry_due_on
            FROM dd_returns r WHERE r.collection_id = c.collection_id AND {handled}
        """)
        run(suspend_accounts_sql("dd_returns"))
        for statement in revert_payment_type_sql("dd_returns", "collection_id", "DIRECT_DEBIT",
                                                 "direct debit returned"):
            run(statement)
        detail = ("', ' || r.transaction_code || ' debit of ' || minor_to_decimal(r.amount_minor) "
                  "|| ' returned with ' || r.return_code "
                  "|| coalesce(', re-presented on or after ' || r.retry_due_on, '')")
        run(events_sql("dd_returns", "collection_id", UNCONFIGURED_EVENT, detail))
        run(COMMUNICATION_SQL)
        for statement in MANDATE_ACTION_SQL:
            run(statement)

    def write_posting_file(self, posted: PostResult) -> str:
        return write_posting_file(self.con, self.files, posted.batch_id, f"{FEED}:{JOB}", self.now)[0]

    def write_reports(self, load: ReturnsLoad) -> tuple[str, str]:
        file_name = self.con.execute("SELECT file_name FROM inbound_files WHERE file_id = ?",
                                     [load.file_id]).fetchone()[0]
        header = {
            "file_id": load.file_id, "source_file_name": file_name, "bureau": load.partner,
            "batch_id": load.batch_id, "reversal_batch_id": reversal_batch_id(load.batch_id),
            "processed_at": self.now.isoformat(), "item_count": load.item_count,
            "reversed_count": load.reversed_count, "reversed_amount": format_minor(load.reversed_minor),
            "rejected_count": load.outcomes.get("REJECTED", 0), "outcomes": load.outcomes,
        }
        report = write_records_file(
            self.con, self.files, f"outbound/reports/{FEED}/{load.partner}/{file_stem(file_name)}.outcomes.json",
            header, "returns",
            f"""
            SELECT position, reference, transaction_code, return_code, return_description, collection_id,
                   account_number, minor_to_decimal(amount_minor) AS amount, reason_code, outcome, decline, attempt,
                   retry_due_on::VARCHAR AS represent_on, problem_code, problem
            FROM dd_returns WHERE batch_id = {sql_literal(load.batch_id)} ORDER BY position
            """,
        )
        communications = write_communications(self.con, self.files, load.batch_id, self.now, "collection_id")
        self.con.execute("UPDATE batches SET output_path = ? WHERE batch_id = ?", [report, load.batch_id])
        return report, communications
