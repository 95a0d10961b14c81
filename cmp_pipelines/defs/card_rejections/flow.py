"""Recurring Payments Rejections job (card): the provider's rejection file, handled record by configured code.

Steps, each idempotent for a file:
1. `load`: decrypt, validate, classify and match every record (batch RCRJ-<hash16>); bad records are
   rejected with a reason, unknown transactions and unknown reason codes reported as job errors.
2. `apply` (the rejections engine shared with direct debits, core/rejections.py): in ONE transaction, the
   reversal batch (RCRV-<hash16>) and its ledger postings, the transactions' new status and retry date,
   account suspensions and payment-type reversions, workflow events and customer communications. A re-run
   finds the batch APPLIED and does nothing.
3. `write_posting_file`, `write_reports`: the reversal posting file for the sales ledger, the outcome
   report for operations and the partner, and the customer communications file.

On PostgreSQL (`mirror`, core/db/mirror.py) `con` is the run's scratch DuckDB and the SQL runs unchanged on it. Each
step starts by syncing the rejection codes from the YAML into PostgreSQL and copying them into the scratch
(core/reference.sync_rejection_codes_postgres: its own transaction under `config:rejection_codes`, before any other
lock). The load pulls the file's intake row, its duplicate candidates and the card transactions the file names
(their ids cross once as a temp table), classifies without any lock, and pushes its batch, records, job errors and
intake row under the intake's advisory locks on the content and the provider's file id. The apply takes row locks,
`SELECT ... FOR UPDATE` in one order (the load batch's row, then its transactions by id, then their accounts by
number), pulls under them what the engine reads (the batch, its records, the transactions, the accounts with their
cards and mandates, the payments' postings, the communications already written) and pushes what it wrote (reversal
postings through `core.ledger.reverse_to_postgres`, the records, transactions' statuses, accounts' suspensions and
payment types, the history, the events with ids from PostgreSQL's sequence, communications, batch rows) in ONE
transaction that releases them. Row locks rather than advisory ones: what two rejection files (or an API set-up)
must not both decide from is rows that exist and that the apply updates, the transactions' status and the accounts'
suspension and payment type; two files over different accounts never wait for each other, two over one transaction
or account run one after the other, and the second finds the transaction handled (ALREADY_REJECTED). A card day's
selection (defs/card_payments) locks none of these rows and updates only the soft declines it closes, so neither
waits for the other in a cycle.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from cmp_pipelines.core import rejections as engine
from cmp_pipelines.core.batch_outcomes import outcome_counts
from cmp_pipelines.core.config import Partner, RejectionConfig
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.db.mirror import (
    Mirror,
    local_event_ids,
    lock_rows,
    pull_postings,
    pull_replacing,
    push_events,
)
from cmp_pipelines.core.files import record_file
from cmp_pipelines.core.files.record_file import (
    RecordFileSpec,
    card_number_masks,
    first_schema_violation,
    with_shape_and_card_numbers,
)
from cmp_pipelines.core.files.record_scan import read_record_file
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import Intake, Received, file_stem, sha256_hex
from cmp_pipelines.core.ledger import batch_id_of, write_communications, write_posting_file, write_records_file
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.reference import sync_rejection_codes, sync_rejection_codes_postgres
from cmp_pipelines.core.rejections import REVERSED_SQL, RejectionTables
from cmp_pipelines.defs.card_rejections.rules import CLASSIFY_SQL, COMMUNICATION_SQL, UNCONFIGURED_EVENT

FEED = "card_rejections"
JOB = "Recurring Payments Rejections job (CARD)"
REJECTION_FIELDS = (
    "record_id", "transaction_id", "account_number", "amount", "reason_code", "reason_text", "rejected_at",
)
NON_ID_FIELDS = ("record_id", "amount", "reason_code", "reason_text", "rejected_at")
REJECTION_FILE = RecordFileSpec("card_rejections", "card rejections", "rejections", REJECTION_FIELDS, "rejection")
GUARD_SAMPLE = 200
# A payment another file handled since this one loaded is no longer reversed here: the batch counts follow.
RECOUNT_SQL = f"""
    UPDATE batches b SET accepted_count = s.n, total_minor = s.total, rejected_count = s.rejected
    FROM (SELECT count(*) FILTER (outcome IN ({REVERSED_SQL})) AS n,
                 coalesce(sum(amount_minor) FILTER (outcome IN ({REVERSED_SQL})), 0) AS total,
                 count(*) FILTER (outcome = 'REJECTED') AS rejected
          FROM card_rejections WHERE batch_id = $batch_id) s
    WHERE b.batch_id = $batch_id
"""
TABLES = RejectionTables(
    feed=FEED, load_kind="CARD_REJECTIONS", reversal_kind="CARD_REVERSAL", reversal_asset="card_reversal_batch",
    rejections="card_rejections", payments="card_transactions", payment="transaction_id",
    payment_type="RECURRING_CARD", revert_cause="card decline", unconfigured_status="DECLINED_UNCONFIGURED",
    unconfigured_event=UNCONFIGURED_EVENT,
    event_detail=("', attempt ' || r.attempt || ', amount ' || minor_to_decimal(r.amount_minor) "
                  "|| coalesce(', retry on ' || r.retry_due_on, '')"),
    already_handled=("ALREADY_REJECTED",
                     "'transaction ' || q(r.transaction_id) || ' was handled (' || p.status || ' by batch ' "
                     "|| coalesce(p.rejection_batch_id, '?') || ') after this file was loaded; nothing done twice'"),
    ledger_source="card",
    reversal_sql=f"""
        SELECT t.transaction_id, t.kind AS event, coalesce(r.rejected_at, $now) AS effective_at,
               t.transaction_id AS payment, t.business_date
        FROM card_rejections r JOIN card_transactions t USING (transaction_id)
        WHERE r.batch_id = $batch_id AND r.outcome IN ({REVERSED_SQL})
    """,
    ledger_refs=("transaction_id",), ledger_event="event",
    unposted_message=("transaction {payment} is not posted to the ledger yet: materialise card_payment_posting_batch "
                      "for {day} first, then re-run this file's reversal"),
    communication_sql=COMMUNICATION_SQL,
    # a failed refund is not retried as a payment would be
    retryable=("EXISTS (SELECT 1 FROM card_transactions t WHERE t.transaction_id = r.transaction_id "
               "AND t.kind = 'PAYMENT')"),
)


@dataclass
class RejectionLoad:
    file_id: str
    batch_id: str
    status: str  # LOADED now or ALREADY_LOADED
    partner: str
    record_count: int
    outcomes: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)
    reversed_count: int = 0
    reversed_minor: int = 0


@dataclass
class ApplyResult:
    batch_id: str  # the reversal batch
    applied_now: bool
    posting_count: int
    net_minor: int
    suspended_accounts: int
    reverted_accounts: int
    events: int
    communications: int


def with_id_card_numbers(table: pa.Table) -> pa.Table:
    """Card numbers in the id fields, kept apart: the rules decide, once matched, whether the id is ours."""
    for name in ("transaction_id", "account_number"):
        found = card_number_masks(table.column(name).combine_chunks())
        pans, masked = [None] * table.num_rows, [None] * table.num_rows
        for index, (pan, text) in found.items():
            pans[index], masked[index] = pan, text
        prefix = name.split("_")[0]
        table = table.append_column(f"{prefix}_pan", pa.array(pans, pa.string()))
        table = table.append_column(f"{prefix}_masked", pa.array(masked, pa.string()))
    return table


class CardRejections:
    def __init__(
        self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
        partners: dict[str, Partner], codes: RejectionConfig, now: datetime | None = None,
        mirror: Mirror | None = None,
    ):
        self.con, self.files, self.keyring, self.codes = con, files, keyring, codes
        self.now = now or datetime.now(UTC)
        self.mirror = mirror
        self.intake = Intake(con, files, keyring, partners, FEED, self.now, mirror=mirror)
        if mirror is not None:
            local_event_ids(con)
            # PostgreSQL's rejection tables synced from the YAML (their own transaction, before any step holds a lock)
            # and copied into the scratch, where every step of this object joins them
            sync_rejection_codes_postgres(mirror, codes)

    def _pushed(self):
        """The PostgreSQL transaction of a step's writes (nothing on the embedded store)."""
        return self.mirror.transaction() if self.mirror is not None else nullcontext()

    # ---- load: validate, match, classify ---------------------------------------------------------------

    def load(self, file_id: str) -> RejectionLoad:
        status = self.intake.load(file_id, self._load_new)
        return self._result(file_id, status)

    def loaded(self, file_id: str) -> RejectionLoad:
        return self._result(file_id, "ALREADY_LOADED")

    def _load_new(self, received: Received) -> None:
        plaintext = self.intake.decrypt(received)
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(sha256_hex, plaintext)
            read = read_record_file(REJECTION_FILE, plaintext, self.con)
            content_sha = digest.result()
        del plaintext
        header = read.header
        record_file.check_sender(header, received.partner)
        record_file.check_control_totals(REJECTION_FILE, header, read.record_count,
                                         read.table.column("amount").combine_chunks())
        self.intake.refuse_duplicate(received, content_sha, header["file_id"])
        table = with_id_card_numbers(with_shape_and_card_numbers(read.table, read.shape_errors, NON_ID_FIELDS))
        batch_id = batch_id_of("CARD_REJECTIONS", content_sha[:16])
        self._pull_named(table)
        with transaction(self.con):
            if self.mirror is None:  # on PostgreSQL the constructor synced them
                sync_rejection_codes(self.con, self.codes)  # the rules join what the YAML says now
            self.con.register("raw", table)
            try:
                self.con.execute(CLASSIFY_SQL, {"batch_id": batch_id, "provider": received.partner,
                                                "currency": header["currency"], "day": self.now.date()})
            finally:
                self.con.unregister("raw")
            self._guard_schema_agreement(batch_id, table)
            engine.record_loaded(self.con, TABLES, batch_id, received.partner, received.file_id, self.now)
            self.con.execute(
                """
                INSERT INTO job_errors (job, category, source_ref, detail, raised_at)
                SELECT $feed, 'DATA', $file_id || '#' || position, problem_code || ': ' || problem, $now
                FROM card_rejections WHERE batch_id = $batch_id AND problem_code = 'UNKNOWN_TRANSACTION'
                UNION ALL  -- an unknown code is a configuration error whatever else is wrong with the record
                SELECT $feed, 'CONFIGURATION', $file_id || '#' || position,
                       'UNKNOWN_REASON_CODE: reason code ' || q(r.reason_code) || ' is not configured', $now
                FROM card_rejections r
                WHERE batch_id = $batch_id AND regexp_full_match(r.reason_code, '[A-Za-z0-9]{1,8}')
                  AND r.reason_code NOT IN (SELECT code FROM config_rejection_codes)
                """,
                {"feed": FEED, "file_id": received.file_id, "now": self.now, "batch_id": batch_id},
            )
            self.intake.record_loaded(received, batch_id, content_sha, header["file_id"])
            if self.mirror is not None:  # the job errors join the load's transaction, committed by push_loaded
                self.mirror.push("job_errors", "job = $feed AND raised_at = $now AND starts_with(source_ref, $file)",
                                 {"feed": FEED, "now": self.now, "file": f"{received.file_id}#"})
            self.intake.push_loaded(received, content_sha, header["file_id"], batch_id,
                                    {"card_rejections": "batch_id = $batch_id"})

    def _pull_named(self, table: pa.Table) -> None:
        """On PostgreSQL: the card transactions the file names, which the matching reads; the ids cross once."""
        if self.mirror is None:
            return
        self.con.register("named", table)
        try:
            self.mirror.stage_keys("named_transactions", "SELECT transaction_id AS k FROM named")
        finally:
            self.con.unregister("named")
        self.mirror.pull("card_transactions", "transaction_id IN (SELECT k FROM named_transactions)",
                         key=["transaction_id"])

    def _pull_batch(self, batch_id: str) -> None:
        """On PostgreSQL: the load batch's row and records, and its children's rows (a later step, or a run
        resumed in a new process, finds them as the load left them)."""
        if self.mirror is None:
            return
        self.mirror.pull("batches", "batch_id = $1 OR parent_batch_id = $1", [batch_id], key=["batch_id"])
        pull_replacing(self.mirror, "card_rejections", "batch_id = $batch", "batch_id = $1", [batch_id],
                       {"batch": batch_id})

    def _lock_and_pull_for_apply(self, batch_id: str) -> None:
        """On PostgreSQL, in the apply's transaction: the row locks (the module docstring says which and why), then
        what the engine reads, pulled under them."""
        mirror = self.mirror
        handled = "transaction_id IN (SELECT transaction_id FROM card_rejections WHERE batch_id = $1)"
        accounts = f"account_number IN (SELECT account_number FROM card_transactions WHERE {handled})"
        lock_rows(mirror, "batches", "batch_id", "batch_id = $1", [batch_id])
        lock_rows(mirror, "accounts", "account_number", accounts, [batch_id])  # accounts first, as every writer
        lock_rows(mirror, "card_transactions", "transaction_id", handled, [batch_id])
        self._pull_batch(batch_id)
        mirror.pull("card_transactions", handled, [batch_id], key=["transaction_id"])
        mirror.pull("accounts", accounts, [batch_id], key=["account_number"])
        mirror.pull("payment_cards", accounts, [batch_id], key=["account_number"])
        mirror.pull("mandates", accounts, [batch_id], key=["mandate_id"])
        mirror.pull("ledger_postings", "source_ref IN (SELECT transaction_id FROM card_rejections WHERE batch_id = $1)"
                    " AND kind IN ('CARD_PAYMENT', 'CARD_REFUND', 'CARD_REVERSAL')", [batch_id],
                    key=["idempotency_key"])
        mirror.pull("customer_communications", "source_ref IN (SELECT transaction_id FROM card_rejections "
                    "WHERE batch_id = $1)", [batch_id], key=["template", "source_ref"])

    def _push_applied(self, load: RejectionLoad, reversal_batch: str) -> None:
        """What the engine wrote, into the apply's open transaction (the reversal postings are there already)."""
        mirror = self.mirror
        params = {"batch": load.batch_id}
        handled = f"batch_id = $batch AND outcome IN ({REVERSED_SQL})"
        mirror.upsert("card_rejections", ["batch_id", "position"], "batch_id = $batch", params)
        mirror.push_update("card_transactions", ["transaction_id"],
                           ["status", "reason_code", "rejection_batch_id", "retry_due_on"],
                           f"transaction_id IN (SELECT transaction_id FROM card_rejections WHERE {handled})", params)
        accounts = f"account_number IN (SELECT account_number FROM card_rejections WHERE {handled})"
        mirror.push_update("accounts", ["account_number"], ["suspended_until", "payment_type"], accounts, params)
        mirror.push("payment_type_changes", f"changed_at = $now AND {accounts}", {**params, "now": self.now})
        push_events(mirror)
        mirror.push("customer_communications", "batch_id = $batch", params, conflict="DO NOTHING")
        mirror.upsert("batches", ["batch_id"], "batch_id IN ($batch, $reversal)",
                      {**params, "reversal": reversal_batch})
        mirror.push("job_runs", "batch_id = $reversal AND started_at = $now",
                    {"reversal": reversal_batch, "now": self.now})

    def _guard_schema_agreement(self, batch_id: str, table: pa.Table) -> None:
        """The SQL rules must never accept what the JSON Schema rejects: spot-check handled records."""
        positions = [p for (p,) in self.con.execute(
            "SELECT position FROM card_rejections WHERE batch_id = ? AND outcome <> 'REJECTED' "
            "ORDER BY position LIMIT ?", [batch_id, GUARD_SAMPLE]
        ).fetchall()]
        violation = first_schema_violation(REJECTION_FILE, table, positions)
        if violation:
            raise AssertionError(f"rejection {violation[0]} was handled but violates the schema: {violation[1]}")

    def _result(self, file_id: str, status: str) -> RejectionLoad:
        batch_id, partner, _ = self.intake.loaded_batch(file_id)
        self._pull_batch(batch_id)
        outcomes, problems = outcome_counts(self.con, "card_rejections", batch_id)
        count, reversed_count, reversed_minor = self.con.execute(
            "SELECT record_count, accepted_count, total_minor FROM batches WHERE batch_id = ?", [batch_id]
        ).fetchone()
        return RejectionLoad(file_id, batch_id, status, partner, count, outcomes, problems, reversed_count,
                             reversed_minor)

    # ---- apply: reversals, account actions, events, communications -----------------------------------

    def apply(self, load: RejectionLoad) -> ApplyResult:
        mirror = self.mirror
        try:
            if mirror is not None:
                self._lock_and_pull_for_apply(load.batch_id)
            with transaction(self.con), self._pushed():
                posted = engine.apply(self.con, TABLES, load_batch=load.batch_id, partner=load.partner,
                                      file_id=load.file_id, now=self.now, day=self.now.date(),
                                      default_type=self.codes.default_payment_type, recheck_after=[RECOUNT_SQL],
                                      pg=mirror.pg if mirror is not None else None)
                if mirror is not None and posted is not None:
                    self._push_applied(load, posted.batch_id)
        finally:
            if mirror is not None:
                mirror.rollback()  # the row locks, when it was applied before and nothing was pushed
        return self.applied(load, applied_now=posted is not None)

    def applied(self, load: RejectionLoad, applied_now: bool = False) -> ApplyResult:
        if self.mirror is not None:
            reversal = engine.reversal_batch_id(self.con, TABLES, load.batch_id)
            self._pull_batch(load.batch_id)
            pull_postings(self.mirror, reversal)
            self.mirror.pull("workflow_events", "source_ref IN (SELECT transaction_id FROM card_rejections "
                             "WHERE batch_id = $1)", [load.batch_id], key=["event_id"])
            self.mirror.pull("customer_communications", "batch_id = $1", [load.batch_id],
                             key=["template", "source_ref"])
        posted = engine.reversal(self.con, TABLES, load.batch_id)
        suspended, reverted = self.con.execute(
            "SELECT count(DISTINCT account_number) FILTER (outcome = 'RETRY_SCHEDULED'), "
            "count(DISTINCT account_number) FILTER (outcome IN ('RETRIES_EXHAUSTED', 'HARD_DECLINE')) "
            "FROM card_rejections WHERE batch_id = ?", [load.batch_id]
        ).fetchone()
        events = self.con.execute(
            "SELECT count(*) FROM workflow_events e JOIN card_rejections r ON e.source_ref = r.transaction_id "
            f"WHERE r.batch_id = ? AND r.outcome IN ({REVERSED_SQL})", [load.batch_id]
        ).fetchone()[0]
        communications = self.con.execute(
            "SELECT count(*) FROM customer_communications WHERE batch_id = ?", [load.batch_id]
        ).fetchone()[0]
        return ApplyResult(posted.batch_id, applied_now, posted.posting_count, posted.total_minor, suspended,
                           reverted, events, communications)

    # ---- files: the reversal posting file, the outcome report, the communications --------------------

    def write_posting_file(self, applied: ApplyResult) -> str:
        pull_postings(self.mirror, applied.batch_id)
        path = write_posting_file(self.con, self.files, applied.batch_id, f"{FEED}:{JOB}", self.now)[0]
        if self.mirror is not None:
            self.mirror.push_published(applied.batch_id, self.now)
        return path

    def write_reports(self, load: RejectionLoad) -> tuple[str, str]:
        if self.mirror is not None:  # what the report and the communications file read, as PostgreSQL holds it
            self.mirror.pull("customer_communications", "batch_id = $1", [load.batch_id],
                             key=["template", "source_ref"])
        file_name, partner_file_id = self.con.execute(
            "SELECT file_name, header_file_id FROM inbound_files WHERE file_id = ?", [load.file_id]
        ).fetchone()
        stem = file_stem(file_name)
        header = {
            "file_id": load.file_id, "partner_file_id": partner_file_id, "source_file_name": file_name,
            "provider": load.partner,
            "batch_id": load.batch_id, "reversal_batch_id": engine.reversal_batch_id(self.con, TABLES, load.batch_id),
            "processed_at": self.now.isoformat(), "record_count": load.record_count,
            "reversed_count": load.reversed_count, "reversed_amount": format_minor(load.reversed_minor),
            "rejected_count": load.outcomes.get("REJECTED", 0), "outcomes": load.outcomes,
        }
        report = write_records_file(
            self.con, self.files, f"outbound/reports/{FEED}/{load.partner}/{stem}.outcomes.json", header,
            "records",
            f"""
            SELECT r.position, r.record_id, r.transaction_id, r.account_number,
                   minor_to_decimal(r.amount_minor) AS amount, r.reason_code, k.reason_type, k.reason_code AS reason,
                   r.outcome, r.decline, r.attempt, r.retry_due_on::VARCHAR AS retry_due_on, r.new_payment_type,
                   r.payment_type_note, r.problem_code, r.problem
            FROM card_rejections r LEFT JOIN config_rejection_codes k ON k.code = r.reason_code
            WHERE r.batch_id = {sql_literal(load.batch_id)} ORDER BY r.position
            """,
        )
        communications = write_communications(self.con, self.files, load.batch_id, self.now, "transaction_id")
        self.con.execute("UPDATE batches SET output_path = ? WHERE batch_id = ?", [report, load.batch_id])
        if self.mirror is not None:
            with self.mirror.transaction():
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": load.batch_id})
        return report, communications
