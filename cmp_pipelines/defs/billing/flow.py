"""The billing feed, step by step, free of Dagster so the CLI, tests and assets share it: a billing run's file
(accounts created or changed, invoices issued) loaded, its invoices posted to the ledger with the hardware charges
waiting for the account's next invoice, the posting file and the acknowledgement to the billing system.

Each step is idempotent: the same file twice is refused as a duplicate, and a step that already completed returns
what it recorded, so a re-run partition or a resumed run posts nothing twice.

On PostgreSQL (a `Mirror`, core/db/mirror.py) the rules run unchanged on the run's scratch DuckDB. The load pulls
the accounts and invoices the file names (the accounts `FOR UPDATE`: an API call changing one waits) under an
advisory lock taken by every billing load (`billing:load`: billing runs are few, and two at once would otherwise
both create a new account), and pushes the accounts it created, the columns it changed, the invoices, its records,
batch and intake row in one transaction (`Intake.push_loaded`). The posting step, under a lock on its load batch,
pulls the batch's records, the pending hardware charges of its accounts (`FOR UPDATE`) and the postings already
under its keys, posts in the scratch and pushes the new postings (ids from PostgreSQL's sequence), the charges'
invoice and the batch rows. The posting file and the acknowledgement are written from pulled rows.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cmp_pipelines.core.config import Partner, PaymentTermsConfig
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.delivery import enqueue
from cmp_pipelines.core.files import record_file
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.files.record_file import (
    RecordFileSpec,
    check_sender,
    first_schema_violation,
    with_shape_and_card_numbers,
)
from cmp_pipelines.core.files.record_scan import read_record_file
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import FileQuarantined, Intake, Received, file_stem, sha256_hex
from cmp_pipelines.core.invoicing import attach_pending_charges_sql, post_attached_charges, post_invoices
from cmp_pipelines.core.ledger import (
    PostResult,
    batch_id_of,
    child_batch_id,
    json_document,
    posted_batch,
    posting_count,
    record_posting_batch,
    write_posting_file,
    write_posting_file_postgres,
)
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.defs.billing import rules

__all__ = ["BILLING_FILE", "BillingRun", "FileQuarantined", "LoadResult", "PostingResult"]

FEED = "billing"
JOB = "Billing run job"
RECORD_FIELDS = ("record_id", "record_type", "account_number", "name", "email", "phone", "payment_term",
                 "invoice_number", "amount", "issue_date")
BILLING_FILE = RecordFileSpec("billing_run", "billing run", "records", RECORD_FIELDS, "record")
PAN_SCANNED_FIELDS = ("record_id", "account_number", "name", "email", "phone", "invoice_number")
GUARD_SAMPLE = 200


def ack_path(partner: str, file_name: str, kind: str) -> str:
    return f"outbound/acknowledgements/{FEED}/{partner}/{file_stem(file_name)}.{kind}.json.enc"


def check_control_totals(header: dict, table: pa.Table) -> None:
    """record_count and total_amount (the invoice amounts) as every feed checks them, then the count of each
    record type: a run that lost its accounts or its invoices is refused whole."""
    record_file.check_control_totals(BILLING_FILE, header, table.num_rows, table.column("amount").combine_chunks())
    kinds = table.column("record_type")
    for kind, key in (("ACCOUNT", "account_count"), ("INVOICE", "invoice_count")):
        found = pc.sum(pc.fill_null(pc.equal(kinds, kind), False)).as_py() or 0
        if header[key] != found:
            raise FileRejected("CONTROL_TOTALS", f"header {key} is {header[key]} but the file holds {found} "
                                                 f"{kind} records")


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
    accounts_created: int
    accounts_updated: int
    invoices_issued: int
    invoiced_minor: int
    rejections: dict[str, int] = field(default_factory=dict)
    archived_path: str | None = None


@dataclass
class PostingResult:
    posted: PostResult
    charges_attached: int  # hardware charges billed on this run's invoices
    charges_minor: int


class BillingRun:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 partners: dict[str, Partner], terms: PaymentTermsConfig, now: datetime | None = None,
                 mirror: Mirror | None = None):
        self.con, self.files, self.keyring, self.partners, self.terms = con, files, keyring, partners, terms
        self.now = now or datetime.now(UTC)
        self.mirror = mirror
        self.intake = Intake(con, files, keyring, partners, FEED, self.now, self._acknowledge_rejection, mirror)
        self._partner_file_id: str | None = None

    # ---- load: decrypt, validate, apply the accounts, issue the invoices ---------------------------------

    def load(self, file_id: str) -> LoadResult:
        if self.mirror is not None:  # from before the file's row is read: a second run of it waits, then finds it
            self.mirror.lock("billing:load")
        try:
            status = self.intake.load(file_id, self._load_new)
            return self._load_result(file_id, status)
        finally:
            if self.mirror is not None:
                self.mirror.rollback()  # what was not committed (nothing, once loaded): the lock goes with it

    def loaded(self, file_id: str) -> LoadResult:
        return self._load_result(file_id, "ALREADY_LOADED")

    def _load_new(self, received: Received) -> None:
        plaintext = self.intake.decrypt(received)
        content_sha = sha256_hex(plaintext)
        read = read_record_file(BILLING_FILE, plaintext, self.con)
        del plaintext
        header = read.header
        self._partner_file_id = header.get("file_id")
        check_sender(header, received.partner)
        check_control_totals(header, read.table)
        self.intake.refuse_duplicate(received, content_sha, header["file_id"])
        table = with_shape_and_card_numbers(read.table, read.shape_errors, PAN_SCANNED_FIELDS)
        batch = batch_id_of("BILLING_LOAD", content_sha[:16])
        default = self.terms.default_for("MANUAL")
        params = {"batch_id": batch, "currency": header["currency"]}
        self._pull_named(table)
        with transaction(self.con):
            self.con.register("raw", table)
            self.con.register("billing_terms", pa.table({
                "code": [t.code for t in self.terms.terms.values()],
                "days_to_pay": [t.days_to_pay for t in self.terms.terms.values()]}))
            self.con.register("billing_term_defaults", pa.table({
                "payment_type": [d.payment_type for d in self.terms.defaults.values()],
                "code": [d.code for d in self.terms.defaults.values()]}))
            try:
                self.con.execute(rules.CLASSIFY_SQL, {**params,
                                                      "known_terms": ", ".join(sorted(self.terms.terms))})
                self._guard_schema_agreement(batch, table)
                self.con.execute(rules.UPDATE_ACCOUNTS_SQL, {"batch_id": batch})
                self.con.execute(rules.CREATE_ACCOUNTS_SQL, {"batch_id": batch, "now": self.now,
                                                             "default_term": default and default.code})
                self.con.execute(rules.JUDGE_INVOICES_SQL, {"batch_id": batch})
                self.con.execute(rules.ISSUE_INVOICES_SQL, {"batch_id": batch})
            finally:
                for name in ("raw", "billing_terms", "billing_term_defaults"):
                    self.con.unregister(name)
            self.con.execute(
                """
                INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at,
                                     record_count, total_minor, accepted_count, rejected_count)
                SELECT ?, 'BILLING_LOAD', ?, ?, ?, 'LOADED', ?, count(*),
                       coalesce(sum(amount_minor) FILTER (outcome = 'ACCEPTED' AND record_type = 'INVOICE'), 0),
                       count(*) FILTER (outcome = 'ACCEPTED'), count(*) FILTER (outcome = 'REJECTED')
                FROM billing_records WHERE batch_id = ?
                """,
                [batch, FEED, received.partner, received.file_id, self.now, batch],
            )
            self.intake.record_loaded(received, batch, content_sha, header["file_id"])
            if self.mirror is not None:
                self._push_accounts_and_invoices(batch)
                self.intake.push_loaded(received, content_sha, header["file_id"], batch,
                                        {"billing_records": "batch_id = $batch_id"})

    def _pull_named(self, table: pa.Table) -> None:
        """On PostgreSQL: the accounts (locked) and invoices the file names, the names crossing once as temp tables,
        under the lock every billing load takes (released by the load's commit)."""
        if self.mirror is None:
            return
        self.mirror.lock("billing:load")
        self.con.register("named_raw", table)
        try:
            self.mirror.stage_keys("billing_accounts", "SELECT account_number AS k FROM named_raw")
            self.mirror.stage_keys("billing_invoices", "SELECT invoice_number AS k FROM named_raw "
                                                       "WHERE record_type = 'INVOICE'")
        finally:
            self.con.unregister("named_raw")
        self.mirror.pull("accounts", "account_number IN (SELECT k FROM billing_accounts) "
                         "ORDER BY account_number FOR UPDATE", key=["account_number"])  # accounts in one order
        self.mirror.pull("invoices", "invoice_number IN (SELECT k FROM billing_invoices)", key=["invoice_number"])

    def _push_accounts_and_invoices(self, batch: str) -> None:
        """The accounts the load created (whole rows), the columns it changed on the others (never the payment
        type or card another service sets), and the invoices it issued."""
        of = "account_number IN (SELECT account_number FROM billing_records WHERE batch_id = $batch AND " \
             "record_type = 'ACCOUNT' AND outcome = 'ACCEPTED' AND action = '{}')"
        self.mirror.push("accounts", of.format("CREATED"), {"batch": batch})
        self.mirror.push_update("accounts", ["account_number"], ["name", "payment_term", "email", "phone"],
                                of.format("UPDATED"), {"batch": batch})
        self.mirror.push("invoices", "invoice_number IN (SELECT invoice_number FROM billing_records WHERE "
                                     "batch_id = $batch AND action = 'ISSUED')", {"batch": batch})

    def _pull_load(self, batch_id: str) -> None:
        """On PostgreSQL: a load batch's records and its batch rows (and its children's), unless the run's scratch
        holds them: a later step in a new process reads what the load wrote."""
        if self.mirror is None or self.con.execute(
                "SELECT 1 FROM billing_records WHERE batch_id = ? LIMIT 1", [batch_id]).fetchone():
            return
        self.mirror.pull("billing_records", "batch_id = $1", [batch_id], key=["batch_id", "position"])
        self.mirror.pull("batches", "batch_id = $1 OR parent_batch_id = $1", [batch_id], key=["batch_id"])

    def _guard_schema_agreement(self, batch_id: str, table: pa.Table) -> None:
        """The set-based rules must never accept what the JSON Schema rejects: spot-check accepted records."""
        positions = [p for (p,) in self.con.execute(
            "SELECT position FROM billing_records WHERE batch_id = ? AND outcome = 'ACCEPTED' ORDER BY position "
            "LIMIT ?", [batch_id, GUARD_SAMPLE]).fetchall()]
        violation = first_schema_violation(BILLING_FILE, table, positions)
        if violation:
            raise AssertionError(f"record {violation[0]} was accepted but violates the schema: {violation[1]}")

    def _load_result(self, file_id: str, status: str) -> LoadResult:
        batch_id, partner, archived = self.intake.loaded_batch(file_id)
        self._pull_load(batch_id)
        totals = self.con.execute(
            """
            SELECT any_value(currency), count(*), count(*) FILTER (outcome = 'ACCEPTED'),
                   count(*) FILTER (outcome = 'REJECTED'), count(*) FILTER (action = 'CREATED'),
                   count(*) FILTER (action = 'UPDATED'), count(*) FILTER (action = 'ISSUED'),
                   coalesce(sum(amount_minor) FILTER (action = 'ISSUED'), 0)
            FROM billing_records WHERE batch_id = ?
            """, [batch_id]).fetchone()
        rejections = dict(self.con.execute(
            "SELECT reason_code, count(*) FROM billing_records WHERE batch_id = ? AND outcome = 'REJECTED' "
            "GROUP BY 1 ORDER BY 1", [batch_id]).fetchall())
        return LoadResult(file_id, batch_id, status, partner, totals[0] or "GBP", *totals[1:], rejections, archived)

    # ---- posting: the invoices and the hardware charges waiting for them ----------------------------------

    def post(self, load: LoadResult) -> PostingResult:
        """One transaction: each invoice's charge under `invoice:<number>:CHARGE`, every pending hardware charge
        of the invoiced accounts attached to its next invoice and posted under `hw:<order>:CHARGE`, and the posting
        batch. A re-run finds the charges attached and every key posted: nothing moves twice."""
        with transaction(self.con), self._pushed():
            self._pull_for_posting(load.batch_id)
            posting_batch = child_batch_id(self.con, load.batch_id, "BILLING_POSTING")
            before = posting_count(self.con, posting_batch)
            params = {"load_batch": load.batch_id, "now": self.now}
            post_invoices(self.con, rules.ISSUED_SQL, batch_id=posting_batch, now=self.now, params=params)
            self.con.execute(attach_pending_charges_sql(rules.ISSUED_SQL), params)
            post_attached_charges(self.con, rules.ISSUED_SQL, batch_id=posting_batch, now=self.now, params=params)
            posted = record_posting_batch(
                self.con, batch_id=posting_batch, kind="BILLING_POSTING", feed=FEED, now=self.now,
                posted_before=before, partner=load.partner, source_file_id=load.file_id,
                parent_batch_id=load.batch_id)
            self.con.execute("UPDATE batches SET status = 'POSTED' WHERE batch_id = ? AND status = 'LOADED'",
                             [load.batch_id])
            if self.mirror is not None:
                at = {"batch": posting_batch, "now": self.now}
                self.mirror.push_new("ledger_postings", "posting_id", "batch_id = $batch AND posted_at = $now", at,
                                     unique="idempotency_key")
                self.mirror.push_update("hw_pending_charges", ["order_id"], ["invoice_number", "invoiced_at"],
                                        "invoiced_at = $now", {"now": self.now})
                self.mirror.upsert("batches", ["batch_id"], "batch_id IN ($batch, $load)",
                                   {"batch": posting_batch, "load": load.batch_id})
                self.mirror.push("job_runs", "batch_id = $batch AND started_at = $now", at)
        return self._posting_result(load, posted)

    def _pushed(self):
        """The PostgreSQL transaction of a step's writes (nothing on the embedded store)."""
        return self.mirror.transaction() if self.mirror is not None else nullcontext()

    def _pull_for_posting(self, load_batch: str) -> None:
        """On PostgreSQL, under a lock on the load batch (the same partition posted twice at once runs once): the
        batch's records, the hardware charges of its invoiced accounts still pending or already on its invoices
        (locked), and the postings already made under the keys the step posts, so a re-run counts them."""
        if self.mirror is None:
            return
        self.mirror.lock(f"billing:post:{load_batch}")
        self._pull_load(load_batch)
        self.mirror.stage_keys("billing_posting_invoices", rules.ISSUED_SQL.replace("SELECT invoice_number,",
                                                                                   "SELECT invoice_number AS k,"),
                               {"load_batch": load_batch})
        self.mirror.stage_keys("billing_posting_accounts", rules.ISSUED_SQL.replace(
            "SELECT invoice_number, account_number,", "SELECT account_number AS k,"), {"load_batch": load_batch})
        self.mirror.pull("hw_pending_charges", "account_number IN (SELECT k FROM billing_posting_accounts) AND "
                         "(invoice_number IS NULL OR invoice_number IN (SELECT k FROM billing_posting_invoices)) "
                         "ORDER BY order_id FOR UPDATE", key=["order_id"])
        self.mirror.pull("ledger_postings", "idempotency_key IN (SELECT 'invoice:' || k || ':CHARGE' FROM "
                         "billing_posting_invoices) OR idempotency_key IN (SELECT 'hw:' || order_id || ':CHARGE' "
                         "FROM hw_pending_charges WHERE account_number IN (SELECT k FROM billing_posting_accounts))",
                         key=["idempotency_key"])

    def posted(self, load: LoadResult) -> PostingResult:
        if self.mirror is not None:
            self._pull_load(load.batch_id)
            self.mirror.pull("batches", "parent_batch_id = $1", [load.batch_id], key=["batch_id"])
            self.mirror.rollback()
        posted = posted_batch(self.con, child_batch_id(self.con, load.batch_id, "BILLING_POSTING"),
                              "billing_posting_batch")
        return self._posting_result(load, posted)

    def _posting_result(self, load: LoadResult, posted: PostResult) -> PostingResult:
        count, total = self.con.execute(
            "SELECT count(*), coalesce(sum(amount_minor), 0) FROM ledger_postings "
            "WHERE batch_id = ? AND kind = 'HARDWARE_CHARGE'", [posted.batch_id]).fetchone()
        return PostingResult(posted, count, total)

    def write_posting_file(self, result: PostingResult) -> str:
        if self.mirror is not None:  # written once, from the postings PostgreSQL holds
            batch = result.posted.batch_id
            return write_posting_file_postgres(self.mirror, self.files, batch, f"{FEED}:{JOB}", self.now) or \
                self.mirror.query("SELECT output_path FROM batches WHERE batch_id = $1", [batch]).column(0)[0].as_py()
        return write_posting_file(self.con, self.files, result.posted.batch_id, f"{FEED}:{JOB}", self.now)[0]

    # ---- the acknowledgement to the billing system ---------------------------------------------------------

    def acknowledge(self, load: LoadResult) -> str:
        """Every record's outcome; each invoice with the due date we set and the hardware charges we added."""
        file_name, partner_file_id = self.con.execute(
            "SELECT file_name, header_file_id FROM inbound_files WHERE file_id = ?", [load.file_id]).fetchone()
        header = {
            "file_id": load.file_id, "partner_file_id": partner_file_id, "source_file_name": file_name,
            "recipient": load.partner, "status": "PROCESSED", "reason_code": None, "reason": None,
            "processed_at": self.now.isoformat(), "record_count": load.record_count,
            "accepted_count": load.accepted_count, "rejected_count": load.rejected_count,
            "accounts_created": load.accounts_created, "accounts_updated": load.accounts_updated,
            "invoices_issued": load.invoices_issued, "invoiced_amount": format_minor(load.invoiced_minor),
            "currency": load.currency,
        }
        batch = sql_literal(load.batch_id)
        if self.mirror is not None:  # the hardware charges on this run's invoices, as PostgreSQL now holds them
            self._pull_load(load.batch_id)
            self.mirror.pull("hw_pending_charges", "invoice_number IN (SELECT invoice_number FROM billing_records "
                             "WHERE batch_id = $1 AND action = 'ISSUED')", [load.batch_id], key=["order_id"])
            self.mirror.rollback()
        with json_document(self.con, header, "records", f"""
            SELECT r.position, r.record_id, r.record_type, r.account_number, r.invoice_number, r.outcome, r.action,
                   strftime(r.due_on, '%Y-%m-%d') AS due_date,
                   CASE WHEN r.action = 'ISSUED' THEN minor_to_decimal(coalesce(c.charges_minor, 0)) END
                       AS hardware_charges,
                   c.orders AS hardware_orders, r.reason_code, r.reason
            FROM billing_records r
            LEFT JOIN (SELECT invoice_number, sum(amount_minor) AS charges_minor, list(order_id ORDER BY order_id)
                              AS orders
                       FROM hw_pending_charges WHERE invoice_number IS NOT NULL GROUP BY 1) c
                   ON c.invoice_number = r.invoice_number AND r.action = 'ISSUED'
            WHERE r.batch_id = {batch} ORDER BY r.position
            """) as document:
            token = self.keyring.encrypt_parts(load.partner, [document])
            path = self.files.write_parts(ack_path(load.partner, file_name, "ack"), token)
        with transaction(self.con), self._pushed():
            enqueue(self.con, self.files, "BILLING_ACKNOWLEDGEMENT", path, partner=load.partner,
                    reference=file_name, now=self.now)
            self.con.execute(
                "UPDATE batches SET status = 'ACKNOWLEDGED', output_path = ?, completed_at = ? WHERE batch_id = ?",
                [path, self.now, load.batch_id])
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": load.batch_id})
                self.mirror.push_deliveries(self.now)
        return path

    def _acknowledge_rejection(self, partner: str, file_name: str, file_id: str, rejected: FileRejected) -> None:
        """Tell the billing system its whole run was refused, when we hold a key to tell it with."""
        if not self.keyring.has_keys(partner):
            return
        header = {
            "file_id": file_id, "partner_file_id": self._partner_file_id, "source_file_name": file_name,
            "recipient": partner, "status": "REJECTED", "reason_code": rejected.code, "reason": rejected.message,
            "processed_at": self.now.isoformat(), "record_count": 0, "accepted_count": 0, "rejected_count": 0,
            "accounts_created": 0, "accounts_updated": 0, "invoices_issued": 0, "invoiced_amount": "0.00",
            "currency": None,
        }
        try:
            token = self.keyring.encrypt(partner, orjson.dumps({"header": header, "records": []}))
        except FileRejected:
            return
        path = self.files.write_bytes(ack_path(partner, file_name, "rejected.ack"), token)
        enqueue(self.con, self.files, "BILLING_ACKNOWLEDGEMENT", path, partner=partner, reference=file_name,
                now=self.now)
