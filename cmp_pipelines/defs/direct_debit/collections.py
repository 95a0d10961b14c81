"""The Recurring Payments job in DD mode: the day's debits as a Bacs Standard 18 file and their ledger postings.

A business day is one selection (DDX-<yyyymmdd>), chosen once and frozen, so a re-run writes the same file and
posts nothing more. Dates follow the Bacs cycle (defs/direct_debit/calendar.py): a run for a day that is not a Bacs
working day is input on the next one (and says so); UHL1 carries the processing day; what is due and whose advance
notice has run is judged on the entry day, when the money leaves the payer's account. The advance notice
(`raise_notices`, core/notices.py) must have been sent `advance_notice_days` Bacs working days before the entry day
(the Direct Debit Guarantee's "normally 10 working days"); an invoice without one waits. The file goes to the bureau
encrypted for it; the posting batch (DDP-<yyyymmdd>) takes the money off each invoice on the assumption the
debits are paid; ARUDD reverses those that are returned.

On PostgreSQL (`mirror`, defs/direct_debit/pg.py) the notices and the selection pull the direct-debit accounts,
their mandates, invoices, payments, notices and earlier debits (the selection under the mandates lock), run the same
SQL and push what they wrote in one transaction; the posting goes through `post_to_postgres` (UNIQUE keys) with its
batch row; the file step draws its serial from PostgreSQL's register; files are written from PostgreSQL's rows.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime

import duckdb

from cmp_pipelines.core import notices
from cmp_pipelines.core.config import DirectDebitConfig
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import transaction, unordered_inserts
from cmp_pipelines.core.db.mirror import Mirror, pull_postings
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.ledger import (
    PostResult,
    batch_id_of,
    lit,
    post,
    post_to_postgres,
    posted_batch,
    posting_count,
    record_posting_batch,
    write_posting_file,
)
from cmp_pipelines.defs.direct_debit import pg
from cmp_pipelines.defs.direct_debit.calendar import (
    BacsCycle,
    add_working_days,
    cycle,
    latest_notice_day,
    next_working_day,
)
from cmp_pipelines.defs.direct_debit.collections_rules import (
    COLLECTED_SQL,
    DUE_ITEMS_SQL,
    FINAL_CANCELLATIONS,
    INSERT_COLLECTIONS_SQL,
    INSERT_ITEMS_SQL,
)
from cmp_pipelines.defs.direct_debit.submission import write_submission

FEED = "dd_collections"
JOB = "Recurring Payments job (DD mode)"


def collection_batch_id(day: date) -> str:
    return batch_id_of("DD_COLLECTION", f"{day:%Y%m%d}")


def dd_posting_batch_id(day: date) -> str:
    return batch_id_of("DD_POSTING", f"{day:%Y%m%d}")


@dataclass
class CollectionBatch:
    batch_id: str
    business_date: date
    status: str  # SELECTED now, or ALREADY_SELECTED by an earlier run
    collection_count: int
    total_minor: int
    by_code: dict[str, int]
    mandates_cancelled: int = 0

    @property
    def cycle(self) -> BacsCycle:
        return cycle(self.business_date)


class DirectDebitCollections:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 config: DirectDebitConfig, now: datetime | None = None, mirror: Mirror | None = None):
        self.con, self.files, self.keyring, self.config = con, files, keyring, config
        self.now = now or datetime.now(UTC)
        self.mirror = mirror

    def _pushed(self):
        """The PostgreSQL transaction of a step's writes (nothing on the embedded store)."""
        return self.mirror.transaction() if self.mirror is not None else nullcontext()

    # ---- advance notice ------------------------------------------------------------------------------

    def raise_notices(self, day: date) -> notices.Raised:
        """Notices raised on `day` give an entry day at least the notice period of working days away (and no
        earlier than the entry day of `day`'s own cycle), moved to a working day."""
        earliest = max(add_working_days(day, self.config.advance_notice_days), cycle(day).entry_day)
        if self.mirror is None:
            return notices.raise_notices(self.con, "DIRECT_DEBIT", day, earliest, self.now, snap=next_working_day)
        with self.mirror.transaction():
            self.mirror.lock(pg.NOTICES_LOCK)
            pg.pull_direct_debit_payers(self.mirror, lock_mandates=False)
            self.con.execute("CREATE OR REPLACE TEMP TABLE dd_noticed AS SELECT notice_id FROM collection_notices")
            raised = notices.raise_notices(self.con, "DIRECT_DEBIT", day, earliest, self.now, snap=next_working_day)
            self.mirror.push("collection_notices", "notice_id NOT IN (SELECT notice_id FROM dd_noticed)")
            self.con.execute("DROP TABLE dd_noticed")
            pg.push_events(self.mirror, self.now)
            # the events' ids are PostgreSQL's: each new notice names its event by them
            self.mirror.execute(
                "UPDATE collection_notices n SET event_id = e.event_id FROM workflow_events e "
                "WHERE e.event_type = $1 AND e.source_ref = n.notice_id AND n.payment_type = 'DIRECT_DEBIT' "
                "AND n.created_at = $2", [notices.EVENT_TYPE, self.now])
        return raised

    def notice_cutoff(self, day: date) -> datetime:
        """For the run of `day`: notices sent by the end of this instant's day count (judged on the entry day)."""
        return notices.cutoff(latest_notice_day(cycle(day).entry_day, self.config.advance_notice_days))

    def waiting(self, day: date) -> notices.Waiting:
        """Invoices due by `day`'s entry day that wait for their advance notice."""
        return notices.waiting(self.con, "DIRECT_DEBIT", cycle(day).entry_day, self.notice_cutoff(day),
                               COLLECTED_SQL)

    def select(self, day: date) -> CollectionBatch:
        batch_id = collection_batch_id(day)
        with transaction(self.con), self._pushed():
            if self.mirror is not None:
                self.mirror.lock(pg.mandates_lock(self.config.service_user_number))
                pg.pull_batch(self.mirror, batch_id)
            if self.con.execute("SELECT 1 FROM batches WHERE batch_id = ?", [batch_id]).fetchone():
                return self.selected(day)
            if self.mirror is not None:
                pg.pull_direct_debit_payers(self.mirror, lock_mandates=True)
                pg.pull_collection_history(self.mirror)
                self.con.execute("CREATE OR REPLACE TEMP TABLE dd_raised AS SELECT notice_id FROM collection_notices "
                                 "WHERE status = 'RAISED'")
            dates = cycle(day)
            params = {"day": dates.entry_day, "notice_cutoff": self.notice_cutoff(day), "daystr": f"{day:%Y%m%d}"}
            notices.refresh_sent(self.con)
            try:
                with unordered_inserts(self.con):  # the file is ordered by collection_id, the postings by id
                    self.con.execute(DUE_ITEMS_SQL, params)
                    self.con.execute(INSERT_ITEMS_SQL)
                    self.con.execute(INSERT_COLLECTIONS_SQL, {"batch_id": batch_id, "day": day,
                                                              "processing": dates.processing_day})
            finally:
                self.con.execute("DROP TABLE IF EXISTS dd_due")
            cancelled = self._cancel_after_final_collection(day)
            self.con.execute(
                "INSERT INTO batches (batch_id, kind, feed, partner, status, record_count, total_minor, "
                "accepted_count, created_at) SELECT $batch_id, 'DD_COLLECTION', $feed, $bureau, 'SELECTED', "
                "count(*), coalesce(sum(amount_minor), 0), $cancelled, $now FROM dd_collections "
                "WHERE batch_id = $batch_id",
                {"batch_id": batch_id, "feed": FEED, "bureau": self.config.bureau, "cancelled": cancelled,
                 "now": self.now},
            )
            if self.mirror is not None:
                self._push_selection(batch_id)
        return self.selected(day, "SELECTED")

    def _push_selection(self, batch_id: str) -> None:
        """The day's debits and their invoices, the notices found SENT, the mandates cancelled after a final debit
        (and their history), then the batch row whose UNIQUE key makes the selection once per day."""
        mirror, params = self.mirror, {"batch": batch_id}
        mirror.push("dd_collections", "batch_id = $batch", params)
        mirror.push("dd_collection_items", "collection_id IN (SELECT collection_id FROM dd_collections "
                                           "WHERE batch_id = $batch)", params)
        mirror.push_update("collection_notices", ["notice_id"], ["status", "sent_at"],
                           "status = 'SENT' AND notice_id IN (SELECT notice_id FROM dd_raised)")
        self.con.execute("DROP TABLE dd_raised")
        pg.push_mandate_changes(mirror, self.now)
        mirror.push("batches", "batch_id = $batch", params)

    def _cancel_after_final_collection(self, day: date) -> int:
        params = {"day": day, "now": self.now}
        self.con.execute(
            f"INSERT INTO mandate_history SELECT mandate_id, status, 'CANCELLED', "
            f"'cancelled after its final collection (19) on ' || $day, $now FROM ({FINAL_CANCELLATIONS})", params)
        return self.con.execute(
            f"UPDATE mandates SET status = 'CANCELLED', pending_instruction = 'CANCEL', cancelled_on = $day, "
            f"final_collection_requested = FALSE WHERE mandate_id IN (SELECT mandate_id FROM ({FINAL_CANCELLATIONS}))",
            {"day": day},
        ).fetchone()[0]

    def selected(self, day: date, status: str = "ALREADY_SELECTED") -> CollectionBatch:
        batch_id = collection_batch_id(day)
        if self.mirror is not None and status == "ALREADY_SELECTED":  # chosen by an earlier run: PostgreSQL's rows
            pg.pull_batch(self.mirror, batch_id)
            pg.pull_collection_items(self.mirror, batch_id)
        row = self.con.execute("SELECT accepted_count FROM batches WHERE batch_id = ?", [batch_id]).fetchone()
        if row is None:
            raise LookupError(f"no direct debit collection batch for {day}: materialise dd_collections_due first")
        count, total = self.con.execute(
            "SELECT count(*), coalesce(sum(amount_minor), 0) FROM dd_collections WHERE batch_id = ?", [batch_id]
        ).fetchone()
        by_code = dict(self.con.execute(
            "SELECT transaction_code, count(*) FROM dd_collections WHERE batch_id = ? GROUP BY 1 ORDER BY 1",
            [batch_id],
        ).fetchall())
        return CollectionBatch(batch_id, day, status, count, total, by_code, row[0])

    def write_file(self, batch: CollectionBatch) -> str | None:
        """The Standard 18 collection file, ending with its 99 contra; the records are built in SQL.

        Nothing due, no file: Bacs has no use for a submission whose only record is a zero contra."""
        if batch.collection_count == 0:
            with self._pushed():
                self.con.execute("UPDATE batches SET status = 'NOTHING_DUE', completed_at = ? WHERE batch_id = ?",
                                 [self.now, batch.batch_id])
                if self.mirror is not None:
                    self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch.batch_id})
            return None
        dates = batch.cycle
        written = write_submission(self.con, self.files, self.keyring, self.config, dates.input_day,
                                   dates.processing_day, table="dd_collections", batch_id=batch.batch_id,
                                   order_by="collection_id", amount="amount_minor", with_contra=True,
                                   folder="outbound/dd_collections", mirror=self.mirror, now=self.now)
        path, count, total = written.path, written.record_count, written.total_minor
        with self._pushed():
            self.con.execute("UPDATE batches SET status = 'EXTRACTED', output_path = ?, completed_at = ?, "
                             "record_count = ?, total_minor = ? WHERE batch_id = ?",
                             [path, self.now, count, total, batch.batch_id])
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch.batch_id})
                self.mirror.push_deliveries(self.now)
        return path

    def post(self, batch: CollectionBatch) -> PostResult:
        """One posting per invoice of each debit, so what is owed stays per invoice; idempotent per item."""
        posting_batch = dd_posting_batch_id(batch.business_date)
        with transaction(self.con), unordered_inserts(self.con), self._pushed():
            if self.mirror is not None:
                pg.pull_batch(self.mirror, posting_batch)
            pull_postings(self.mirror, posting_batch)
            before = posting_count(self.con, posting_batch)
            posted_now = self._post(
                self.con,
                """
                SELECT c.collection_id, c.account_number, i.invoice_number, 'DD_COLLECTION' AS kind,
                       -i.amount_minor AS amount_minor, c.currency, c.collection_id AS source_ref,
                       $effective AS effective_at
                FROM dd_collections c JOIN dd_collection_items i USING (collection_id)
                WHERE c.batch_id = $batch_id
                """,
                source="dd", key=("collection_id", "invoice_number", lit("COLLECTION")), batch_id=posting_batch,
                order_by="collection_id, invoice_number",  # posting ids (and the posting file) in one order
                now=self.now, params={"batch_id": batch.batch_id,
                                      "effective": datetime.combine(batch.business_date, datetime.min.time(), UTC)},
            )
            pull_postings(self.mirror, posting_batch, unless_counts_agree=True)  # the batch's totals are PostgreSQL's
            if self.mirror is not None:  # posted now is what PostgreSQL took: a run at once may have posted the rest
                before = posting_count(self.con, posting_batch) - posted_now
            posted = record_posting_batch(self.con, batch_id=posting_batch, kind="DD_POSTING", feed=FEED,
                                          now=self.now, posted_before=before, partner=self.config.bureau,
                                          parent_batch_id=batch.batch_id)
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": posting_batch})
                self.mirror.push("job_runs", "batch_id = $batch AND started_at = $now",
                                 {"batch": posting_batch, "now": self.now})
            return posted

    def _post(self, con, sql: str, **kw) -> int:
        """`post`; on PostgreSQL, PostgreSQL's ledger first (UNIQUE keys: exactly once), then the same rows in the
        scratch, where the batch row's totals and the posting file read them."""
        if self.mirror is None:
            return post(con, sql, **kw)
        self.mirror.settle()
        posted = post_to_postgres(con, self.mirror.pg, sql, **kw)
        post(con, sql, **kw)
        return posted

    def posted(self, batch: CollectionBatch) -> PostResult:
        return self.posted_on(batch.business_date)

    def posted_on(self, day: date) -> PostResult:
        """The day's posting batch from its batch row alone: the posting file needs no count of the day's debits
        (`selected`), nor, on PostgreSQL, a pull of them."""
        if self.mirror is not None:
            pg.pull_batch(self.mirror, dd_posting_batch_id(day))
        return posted_batch(self.con, dd_posting_batch_id(day), "dd_collection_posting_batch")

    def write_posting_file(self, posted: PostResult) -> str:
        pull_postings(self.mirror, posted.batch_id)
        path = write_posting_file(self.con, self.files, posted.batch_id, f"{FEED}:{JOB}", self.now)[0]
        if self.mirror is not None:
            self.mirror.push_published(posted.batch_id, self.now)
        return path
