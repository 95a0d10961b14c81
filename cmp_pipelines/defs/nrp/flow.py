"""The non-recurring payments flow, step by step, free of Dagster so the CLI, benchmark and assets share it.

Each step is idempotent: a step that already completed for a file returns what it recorded, so a
re-run partition, a re-dropped file or a resumed run never posts twice.

On PostgreSQL (`mirror`, core/db/mirror.py, the pattern every flow follows) `con` is the run's scratch DuckDB and
the SQL below runs unchanged on it. Each step pulls what its rules read and pushes what it wrote in one
PostgreSQL transaction: the load pulls the file's intake row, the accounts and invoices the file names and the
duplicate window's matching records, and pushes its batch, records and intake row under advisory locks on the
content and the partner's file id; the posting pulls its load batch and posts through `post_to_postgres` (UNIQUE
keys in key order: exactly once and no deadlock between runs sharing accounts) with its batch rows; the posting
file and the acknowledgement push their batch row and delivery registrations. No lock is held while a file is
decrypted, parsed or matched: two partners' files run those in parallel and meet only at the short pushes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa

from cmp_pipelines.core.config import DEFAULT_DUPLICATE_WINDOW_DAYS, Partner
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import SQL_MACROS, sql_literal, transaction
from cmp_pipelines.core.db.mirror import Mirror, pull_postings
from cmp_pipelines.core.delivery import enqueue
from cmp_pipelines.core.files.errors import FileRejected
from cmp_pipelines.core.files.prepared import PreparedDocument, discard_all, prepare, take
from cmp_pipelines.core.files.record_file import check_sender, first_schema_violation, with_shape_and_card_numbers
from cmp_pipelines.core.files.record_scan import read_record_file
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import (  # noqa: F401  (re-exported: the file identity every feed shares)
    FileQuarantined,
    Intake,
    Received,
    file_stem,
    partition_key,
    sha256_hex,
)
from cmp_pipelines.core.ledger import (
    PostResult,
    batch_id_of,
    batch_stem,
    child_batch_id,
    json_document,
    lit,
    post,
    post_to_postgres,
    posted_batch,
    posting_count,
    posting_file_key,
    posting_key_sql,
    posting_totals,
    prepare_posting_file,
    record_posting_batch,
    write_posting_file,
)
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.defs.nrp import file_format as nrp_file
from cmp_pipelines.defs.nrp.rules import CLASSIFY_AND_MATCH_SQL, HOLD_SUSPECTED_DUPLICATES_SQL

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
    held_count: int = 0  # suspected duplicates of an earlier file: not posted until released
    held_minor: int = 0


@dataclass
class ReleaseResult:
    load_batch_id: str
    released: int
    posting_batch_id: str | None
    posted_now: int
    total_minor: int
    posting_file: str | None


class NonRecurringPayments:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        files: FileStoreLike,
        keyring: PartnerKeyring,
        partners: dict[str, Partner],
        now: datetime | None = None,
        mirror: Mirror | None = None,
    ):
        self.con, self.files, self.keyring, self.partners = con, files, keyring, partners
        self.now = now or datetime.now(UTC)
        self.mirror = mirror
        self.intake = Intake(con, files, keyring, partners, FEED, self.now, self._acknowledge_rejection, mirror)

    def _pushed(self):
        """The PostgreSQL transaction of a step's writes (nothing on the embedded store)."""
        return self.mirror.transaction() if self.mirror is not None else nullcontext()

    # ---- load ("Load Non Recurring Payments From Generic Format") -------------------------------

    def load(self, file_id: str) -> LoadResult:
        status = self.intake.load(file_id, self._load_new)
        return self._load_result(file_id, status)

    def _load_new(self, received: Received) -> None:
        partner = received.partner
        self._partner_file_id = None
        plaintext = self.intake.decrypt(received)
        with ThreadPoolExecutor(max_workers=1) as pool:
            content_digest = pool.submit(sha256_hex, plaintext)  # hashlib releases the GIL: overlaps the read
            read = read_record_file(nrp_file.NRP_FILE, plaintext, self.con)
            content_sha = content_digest.result()
        del plaintext
        header = read.header
        self._partner_file_id = header.get("file_id")  # echoed by a rejection's acknowledgement
        check_sender(header, partner)
        nrp_file.check_control_totals(header, read.record_count, read.table.column("amount").combine_chunks())
        self.intake.refuse_duplicate(received, content_sha, header["file_id"])
        table = with_shape_and_card_numbers(read.table, read.shape_errors, PAN_SCANNED_FIELDS)
        load_batch = batch_id_of("NRP_LOAD", content_sha[:16])
        self._pull_named(table)
        with transaction(self.con):
            if self.con.execute("SELECT count(*) FROM nrp_records WHERE batch_id = ?", [load_batch]).fetchall()[0][0]:
                raise AssertionError(f"load batch {load_batch} already holds records; a batch is written once")
            self.con.register("raw", table)
            try:
                self.con.execute(
                    CLASSIFY_AND_MATCH_SQL, {"batch_id": load_batch, "currency": header["currency"]}
                )
            finally:
                self.con.unregister("raw")
            self._guard_schema_agreement(load_batch, table)
            self._hold_suspected_duplicates(load_batch, partner)
            self.con.execute(
                """
                INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at,
                                     record_count, total_minor, accepted_count, rejected_count)
                SELECT ?, 'NRP_LOAD', ?, ?, ?, 'LOADED', ?, count(*),
                       coalesce(sum(amount_minor) FILTER (outcome = 'ACCEPTED'), 0),
                       count(*) FILTER (outcome = 'ACCEPTED'), count(*) FILTER (outcome = 'REJECTED')
                FROM nrp_records WHERE batch_id = ?
                """,
                [load_batch, FEED, partner, received.file_id, self.now, load_batch],
            )
            self.intake.record_loaded(received, load_batch, content_sha, header["file_id"])
            self.intake.push_loaded(received, content_sha, header["file_id"], load_batch,
                                    {"nrp_records": "batch_id = $batch_id"})

    def _pull_named(self, table: pa.Table) -> None:
        """On PostgreSQL: the accounts (and the suspense account) and the invoices the file names, which the
        matching rule reads; the names cross once, as a temp table PostgreSQL joins on its keys."""
        if self.mirror is None:
            return
        self.con.register("named", table)
        try:
            self.mirror.stage_keys("named_accounts", "SELECT account_number AS k FROM named")
            self.mirror.stage_keys("named_invoices", "SELECT invoice_number AS k FROM named")
        finally:
            self.con.unregister("named")
        self.mirror.pull("accounts", "account_number IN (SELECT k FROM named_accounts) OR is_suspense",
                         key=["account_number"])
        self.mirror.pull("invoices", "invoice_number IN (SELECT k FROM named_invoices)", key=["invoice_number"])

    def _hold_suspected_duplicates(self, batch_id: str, partner: str) -> None:
        known = self.partners.get(partner)
        days = known.duplicate_window_days if known is not None else DEFAULT_DUPLICATE_WINDOW_DAYS
        if days:
            self._pull_window(batch_id, partner, self.now - timedelta(days=days))
            self.con.execute(HOLD_SUSPECTED_DUPLICATES_SQL, {
                "batch_id": batch_id, "partner": partner, "since": self.now - timedelta(days=days)})

    def _pull_window(self, batch_id: str, partner: str, since: datetime) -> None:
        """On PostgreSQL: the partner's earlier load batches in the duplicate window, their intake rows and only
        those of their records that share a record id with this batch's accepted ones, under the partner's
        advisory lock (taken before the file identity locks of `push_loaded`: one order, no deadlock), held to the
        load's commit so a resend arriving at the same moment is held, not posted twice."""
        if self.mirror is None:
            return
        # two files of one partner at once serialise from here to their commit: each sees the other's records
        self.mirror.lock(f"{FEED}:window:{partner}")
        window = ("SELECT batch_id FROM batches WHERE kind = 'NRP_LOAD' AND partner = $1 AND batch_id <> $2 "
                  "AND created_at >= $3")
        if not self.mirror.pull("batches", f"batch_id IN ({window})", [partner, batch_id, since], key=["batch_id"]):
            return
        self.mirror.pull("inbound_files", f"batch_id IN ({window})", [partner, batch_id, since], key=["file_id"])
        self.mirror.stage_keys("window_ids", "SELECT record_id AS k FROM nrp_records "
                               "WHERE batch_id = $batch_id AND outcome = 'ACCEPTED'", {"batch_id": batch_id})
        self.mirror.pull("nrp_records", f"batch_id IN ({window}) AND outcome IN ('ACCEPTED', 'HELD') "
                         "AND record_id IN (SELECT k FROM window_ids)", [partner, batch_id, since],
                         key=["batch_id", "position"])

    def _pull_load(self, file_id: str) -> None:
        """On PostgreSQL, at the start of every later step: the load batch and its children (posting, releases),
        and the batch's records unless this run's scratch holds them already (written once, never changed by the
        job)."""
        if self.mirror is None:
            return
        self.intake.pull_file(file_id)
        rows = self.con.execute("SELECT batch_id FROM inbound_files WHERE file_id = ? AND status = 'LOADED'",
                                [file_id]).fetchall()
        if not rows:
            return
        row = rows[0]
        self.mirror.pull("batches", "batch_id = $1 OR parent_batch_id = $1", [row[0]], key=["batch_id"])
        if not self.con.execute("SELECT count(*) FROM nrp_records WHERE batch_id = ?", [row[0]]).fetchall()[0][0]:
            self.mirror.pull("nrp_records", "batch_id = $1", [row[0]])

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
        self._pull_load(file_id)
        batch_id, partner, archived = self.intake.loaded_batch(file_id)
        totals = self.con.execute(
            """
            SELECT any_value(currency), count(*),
                   count(*) FILTER (outcome = 'ACCEPTED'), count(*) FILTER (outcome = 'REJECTED'),
                   coalesce(sum(amount_minor) FILTER (outcome = 'ACCEPTED'), 0),
                   coalesce(sum(amount_minor) FILTER (outcome = 'REJECTED'), 0),
                   count(*) FILTER (outcome = 'HELD'), coalesce(sum(amount_minor) FILTER (outcome = 'HELD'), 0)
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
            totals[5], allocations, rejections, archived, totals[6], totals[7],
        )

    # ---- Non Recurring Payment job: posting batch and ledger postings ------------------------------

    def post(self, load: LoadResult) -> PostResult:
        prepared: dict[str, PreparedDocument] = {}
        try:
            posted = self._post(load, prepared)
        except BaseException:
            discard_all(prepared)
            raise
        if self.mirror is not None:  # committed: the documents rendered meanwhile are true now
            self.mirror.keep_prepared(prepared)
        return posted

    def _post(self, load: LoadResult, prepared: dict[str, PreparedDocument]) -> PostResult:
        with transaction(self.con), self._pushed():
            posting_batch = child_batch_id(self.con, load.batch_id, "NRP_POSTING")
            pull_postings(self.mirror, posting_batch, unless_counts_agree=True)
            before = posting_count(self.con, posting_batch)
            copied: list[bool] = []

            def prepare_documents(rows: pa.Table) -> None:
                copied.append(True)
                self._prepare_documents(load, posting_batch, rows, prepared)

            posted_now = self._insert_postings(load.batch_id, posting_batch, load.partner, prepare=prepare_documents)
            if not copied or posted_now != posting_count(self.con, posting_batch) - before:
                # the scratch holds what PostgreSQL holds for the batch (counts); on the copy, PostgreSQL took exactly
                # the rows the scratch posted, which the counts just compared say without asking it
                pull_postings(self.mirror, posting_batch, unless_counts_agree=True)
            posted = record_posting_batch(
                self.con, batch_id=posting_batch, kind="NRP_POSTING", feed=FEED, now=self.now, posted_before=before,
                partner=load.partner, source_file_id=load.file_id, parent_batch_id=load.batch_id,
            )
            self.con.execute(
                "UPDATE batches SET status = 'POSTED' WHERE batch_id = ? AND status = 'LOADED'", [load.batch_id]
            )
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id IN ($posting, $load)",
                                   {"posting": posting_batch, "load": load.batch_id})
                self.mirror.push("job_runs", "batch_id = $batch AND started_at = $now",
                                 {"batch": posting_batch, "now": self.now})
        return posted

    def _insert_postings(self, load_batch: str, posting_batch: str, partner: str, only_released: bool = False,
                         prepare: Callable[[pa.Table], object] | None = None) -> int:
        """The ledger postings of a load batch's accepted records, under keys `nrp:<content sha>:<record id>:PAYMENT`
        that the UNIQUE constraint makes idempotent: a posting, a re-run and a release never post a record twice.
        `prepare`: on PostgreSQL, run while PostgreSQL copies the rows in, when every row it copies is one the
        scratch holds (the documents that follow are rendered then, on the core the copy leaves idle), with the rows
        being copied. Returns the rows posted now (PostgreSQL's count there)."""
        mirror = self.mirror
        if mirror is not None:
            mirror.settle()

        stem = batch_stem("NRP_LOAD", load_batch)

        def both(con, sql, **kw) -> int:
            """PostgreSQL's ledger and, while PostgreSQL writes, the same rows in the scratch (numbered in key order
            on both, as PostgreSQL numbers a caller naming no order), where the batch row's totals and the posting
            file read them (cheaper than pulling a million rows back; after it, `post` compares PostgreSQL's count
            with the scratch's, and pulls PostgreSQL's rows when they differ). The keys' domain is the load file's:
            only its posting and its releases write `nrp:<stem>:` keys, so a first posting is copied straight in."""
            in_key_order = posting_key_sql(kw["source"], *kw["key"])

            def meanwhile(copying: pa.Table | None) -> None:
                post(con, sql, **kw, order_by=in_key_order)
                if copying is not None and prepare is not None:
                    prepare(copying)

            return post_to_postgres(con, mirror.pg, sql, **kw, key_domain=f"nrp:{stem}:", meanwhile=meanwhile)

        writer = post if mirror is None else both
        return writer(
            self.con,
            f"""
            SELECT record_id, ledger_account AS account_number,
                   CASE WHEN allocation = 'INVOICE' THEN invoice_number END AS invoice_number, 'PAYMENT' AS kind,
                   -amount_minor AS amount_minor, currency, $partner || '/' || record_id AS source_ref,
                   coalesce(payment_date, $now) AS effective_at
            FROM nrp_records
            WHERE batch_id = $load_batch AND outcome = 'ACCEPTED'
                  {"AND reason_code = 'RELEASED'" if only_released else ""}
            """,
            source="nrp", key=(lit(stem), "record_id", lit("PAYMENT")),
            batch_id=posting_batch, now=self.now,
            params={"partner": partner, "now": self.now, "load_batch": load_batch},
        )

    # ---- operator: release records held as suspected duplicates ----------------------------------------

    def release_held(self, load_batch: str, record_id: str | None = None) -> ReleaseResult:
        """Post the records of `load_batch` held as suspected duplicates (or only `record_id`), through the same
        posting code and keys as the flow, in a release posting batch of their own with its posting file. A
        second release finds nothing held and posts nothing."""
        try:
            result = self._release_held(load_batch, record_id)
            if not result.released:  # nothing held: a release whose file failed earlier is written now
                result = self._write_unwritten_releases(load_batch)
            return result
        finally:
            if self.mirror is not None:
                self.mirror.rollback()  # nothing left open (the release lock) when it returned without posting

    def _release_held(self, load_batch: str, record_id: str | None) -> ReleaseResult:
        if self.mirror is not None:  # two operators releasing one batch at once: one after the other
            self.mirror.lock(f"{FEED}:release:{load_batch}")
            self.mirror.pull("batches", "batch_id = $1 OR parent_batch_id = $1", [load_batch], key=["batch_id"])
            self.mirror.pull("nrp_records", "batch_id = $1 AND (outcome = 'HELD' OR reason_code = 'RELEASED')",
                             [load_batch], key=["batch_id", "position"])
        row = self.con.execute(
            "SELECT partner, source_file_id FROM batches WHERE batch_id = ? AND kind = 'NRP_LOAD'", [load_batch]
        ).fetchone()
        if row is None:
            raise LookupError(f"{load_batch} is not a non-recurring payments load batch (NRPL-...)")
        partner, file_id = row
        only = "AND record_id = $record_id" if record_id is not None else ""
        params = {"batch": load_batch, **({"record_id": record_id} if record_id is not None else {})}
        if record_id is not None:
            outcome = self.con.execute(
                "SELECT outcome, reason_code FROM nrp_records WHERE batch_id = $batch AND record_id = $record_id",
                params).fetchone()
            if outcome is None:
                raise LookupError(f"record {record_id!r} is not in batch {load_batch}")
            if outcome[0] != "HELD" and outcome[1] != "RELEASED":
                raise LookupError(f"record {record_id!r} of batch {load_batch} is {outcome[0]}, not held")
        with transaction(self.con):
            released, released_minor = self.con.execute(
                f"SELECT count(*), coalesce(sum(amount_minor), 0) FROM nrp_records "
                f"WHERE batch_id = $batch AND outcome = 'HELD' {only}", params).fetchone()
            if not released:
                return ReleaseResult(load_batch, 0, None, 0, 0, None)
            self.con.execute(
                f"""
                UPDATE nrp_records SET outcome = 'ACCEPTED', reason_code = 'RELEASED',
                       reason = 'held as a suspected duplicate; released by an operator at ' || $at
                WHERE batch_id = $batch AND outcome = 'HELD' {only}
                """, {**params, "at": self.now.isoformat(timespec="seconds")})
            posting_batch = child_batch_id(self.con, load_batch, "NRP_RELEASE", numbered=True)
            self._insert_postings(load_batch, posting_batch, partner, only_released=True)
            pull_postings(self.mirror, posting_batch, unless_counts_agree=True)
            posted = record_posting_batch(
                self.con, batch_id=posting_batch, kind="NRP_RELEASE", feed=FEED, now=self.now, posted_before=0,
                partner=partner, source_file_id=file_id, parent_batch_id=load_batch,
            )
            self.con.execute(
                "UPDATE batches SET accepted_count = accepted_count + ?, total_minor = total_minor + ? "
                "WHERE batch_id = ?", [released, released_minor, load_batch])
            if self.mirror is not None:
                self.mirror.push_update("nrp_records", ["batch_id", "position"], ["outcome", "reason_code", "reason"],
                                        f"batch_id = $batch AND reason_code = 'RELEASED' {only}", params)
                self.mirror.upsert("batches", ["batch_id"], "batch_id IN ($posting, $batch)",
                                   {"posting": posting_batch, "batch": load_batch})
                self.mirror.push("job_runs", "batch_id = $posting AND started_at = $now",
                                 {"posting": posting_batch, "now": self.now})
                self.mirror.commit()
        path = self.write_posting_file(posted)
        return ReleaseResult(load_batch, released, posting_batch, posted.posted_now, posted.total_minor, path)

    def _write_unwritten_releases(self, load_batch: str) -> ReleaseResult:
        """A release whose posting file failed after its commit (the probe ledger_posting_files_missing flags it):
        the next release of the batch, with nothing left held, writes it from the postings committed and names
        it (nothing released or posted now)."""
        result = ReleaseResult(load_batch, 0, None, 0, 0, None)
        for (batch,) in self.con.execute(
                "SELECT batch_id FROM batches WHERE parent_batch_id = ? AND kind = 'NRP_RELEASE' "
                "AND output_path IS NULL ORDER BY batch_id", [load_batch]).fetchall():
            posted = posted_batch(self.con, batch, "the release (cmp-pipelines nrp release-held)")
            result = ReleaseResult(load_batch, 0, batch, 0, posted.total_minor, self.write_posting_file(posted))
        return result

    def posted(self, load: LoadResult) -> PostResult:
        return posted_batch(self.con, child_batch_id(self.con, load.batch_id, "NRP_POSTING"), "nrp_posting_batch")

    # ---- posting file for the external sales ledger ----------------------------------------------

    def write_posting_file(self, posted: PostResult) -> str:
        ready = None
        if self.mirror is not None:  # rendered while PostgreSQL copied these very rows in: no need to ask it again
            ready = take(self.mirror.prepared, posting_file_key(posted.batch_id),
                         posting_totals(self.con, posted.batch_id))
        if ready is None:
            pull_postings(self.mirror, posted.batch_id, unless_counts_agree=True)
        path = write_posting_file(self.con, self.files, posted.batch_id, f"{FEED}:{JOB}", self.now, ready)[0]
        if self.mirror is not None:
            self.mirror.push_published(posted.batch_id, self.now)
        return path

    # ---- "Acknowledge Non Recurring Payments Receipt Of" -----------------------------------------

    def acknowledge(self, load: LoadResult) -> str:
        path, header, records = self._acknowledgement(load)
        ready = take(self.mirror.prepared, f"ack:{load.batch_id}", _unstamped(header)) if self.mirror else None
        if ready is not None:
            path = ready.publish()
        else:
            with json_document(self.con, header, "records", records) as document:
                path = self.files.write_parts(path, self.keyring.encrypt_parts(load.partner, [document]))
        with transaction(self.con), self._pushed():
            enqueue(self.con, self.files, "NRP_ACKNOWLEDGEMENT", path, partner=load.partner,
                    reference=header["source_file_name"], now=self.now,
                    digest=ready.published_digest if ready is not None else None)
            self.con.execute(
                "UPDATE batches SET status = 'ACKNOWLEDGED', output_path = ?, completed_at = ? WHERE batch_id = ?",
                [path, self.now, load.batch_id],
            )
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": load.batch_id})
                self.mirror.push_deliveries(self.now)
        return path

    def _acknowledgement(self, load: LoadResult, con: duckdb.DuckDBPyConnection | None = None
                         ) -> tuple[str, dict, str]:
        """Where the acknowledgement goes, its header, and the query of its records (read on `con`, the scratch's)."""
        file_name, partner_file_id = (con or self.con).execute(
            "SELECT file_name, header_file_id FROM inbound_files WHERE file_id = ?", [load.file_id]
        ).fetchone()
        header = {
            "file_id": load.file_id,
            "partner_file_id": partner_file_id,  # the partner's own id, from its file's header: what it matches on
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
            "held_count": load.held_count,
            "held_amount": format_minor(load.held_minor),
            "currency": load.currency,
        }
        records = f"""
            SELECT position, record_id, outcome, allocation, minor_to_decimal(amount_minor) AS amount,
                   reason_code, reason
            FROM nrp_records WHERE batch_id = {sql_literal(load.batch_id)} ORDER BY position
        """
        return ack_path(load.partner, file_name, "ack"), header, records

    def _prepare_documents(self, load: LoadResult, posting_batch: str, rows: pa.Table,
                           prepared: dict[str, PreparedDocument]) -> None:
        """On PostgreSQL, while it copies the postings in: the posting file (from `rows`, those postings) and
        the acknowledgement rendered into `prepared`, for `write_posting_file` and `acknowledge` to publish once the
        posting has committed, each only if what its step would write from the scratch still agrees. Rendered on a
        DuckDB connection of its own, which reads what the load committed and cannot touch the posting's open
        transaction, and never on PostgreSQL's (the copy holds it): a document that fails here (a full disk) is
        left to its step, which renders it and reports, and the posting goes on. Its time is the posting's: the
        acknowledgement's processed_at and the posting file's created_at are this step's."""
        con = self.con.cursor()
        try:
            con.execute(SQL_MACROS)  # the scratch's macros are its connection's own
            with contextlib.suppress(OSError, ValueError, duckdb.Error):
                key, posting_file = prepare_posting_file(con, self.files, posting_batch, f"{FEED}:{JOB}", self.now,
                                                         rows)
                prepared[key] = posting_file
            path, header, records = self._acknowledgement(load, con)

            def render(target: Path) -> None:
                with json_document(con, header, "records", records) as document, open(target, "wb") as out:
                    for chunk in self.keyring.encrypt_parts(load.partner, [document]):
                        out.write(chunk)

            with contextlib.suppress(OSError, ValueError, duckdb.Error):
                prepared[f"ack:{load.batch_id}"] = prepare(self.files, path, render, _unstamped(header))
        finally:
            con.close()

    def _acknowledge_rejection(self, partner: str, file_name: str, file_id: str, rejected: FileRejected) -> None:
        """Tell the partner the whole file was refused, when we hold a key to tell them with."""
        if not self.keyring.has_keys(partner):
            return
        header = {
            "file_id": file_id, "partner_file_id": getattr(self, "_partner_file_id", None),
            "source_file_name": file_name, "recipient": partner, "status": "REJECTED",
            "reason_code": rejected.code, "reason": rejected.message, "processed_at": self.now.isoformat(),
            "record_count": 0, "accepted_count": 0, "rejected_count": 0, "accepted_amount": "0.00",
            "rejected_amount": "0.00", "held_count": 0, "held_amount": "0.00", "currency": None,
        }
        try:
            token = self.keyring.encrypt(partner, orjson.dumps({"header": header, "records": []}))
        except FileRejected:
            return  # the partner's key file is unusable: the quarantine report says why
        path = self.files.write_bytes(ack_path(partner, file_name, "rejected.ack"), token)
        enqueue(self.con, self.files, "NRP_ACKNOWLEDGEMENT", path, partner=partner, reference=file_name, now=self.now)


def _unstamped(header: dict) -> tuple:
    """An acknowledgement's header without its time: what a prepared one must agree with to be published."""
    return tuple((name, value) for name, value in header.items() if name != "processed_at")
