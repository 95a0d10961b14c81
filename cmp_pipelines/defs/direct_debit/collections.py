"""The Recurring Payments job in DD mode: the day's debits as a Bacs Standard 18 file and their ledger postings.

A business day is one selection (DDX-<yyyymmdd>), chosen once and frozen, so a re-run writes the same file and
posts nothing more. Dates follow the Bacs cycle (defs/direct_debit/calendar.py): a run for a day that is not a Bacs
working day is input on the next one (and says so); UHL1 carries the processing day; what is due and whose advance
notice has run is judged on the entry day, when the money leaves the payer's account. The advance notice
(`raise_notices`, core/notices.py) must have been sent `advance_notice_days` Bacs working days before the entry day
(the Direct Debit Guarantee's "normally 10 working days"); an invoice without one waits. The file goes to the bureau
encrypted for it; the posting batch (DDP-<yyyymmdd>) takes the money off each invoice on the assumption the
debits are paid; ARUDD reverses those that are returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import duckdb

from cmp_pipelines.core import notices
from cmp_pipelines.core.config import DirectDebitConfig
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import transaction, unordered_inserts
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.ledger import (
    PostResult,
    batch_id_of,
    lit,
    post,
    posted_batch,
    posting_count,
    record_posting_batch,
    write_posting_file,
)
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
                 config: DirectDebitConfig, now: datetime | None = None):
        self.con, self.files, self.keyring, self.config = con, files, keyring, config
        self.now = now or datetime.now(UTC)

    # ---- advance notice ------------------------------------------------------------------------------

    def raise_notices(self, day: date) -> notices.Raised:
        """Notices raised on `day` give an entry day at least the notice period of working days away (and no
        earlier than the entry day of `day`'s own cycle), moved to a working day."""
        earliest = max(add_working_days(day, self.config.advance_notice_days), cycle(day).entry_day)
        return notices.raise_notices(self.con, "DIRECT_DEBIT", day, earliest, self.now, snap=next_working_day)

    def notice_cutoff(self, day: date) -> datetime:
        """For the run of `day`: notices sent by the end of this instant's day count (judged on the entry day)."""
        return notices.cutoff(latest_notice_day(cycle(day).entry_day, self.config.advance_notice_days))

    def waiting(self, day: date) -> notices.Waiting:
        """Invoices due by `day`'s entry day that wait for their advance notice."""
        return notices.waiting(self.con, "DIRECT_DEBIT", cycle(day).entry_day, self.notice_cutoff(day),
                               COLLECTED_SQL)

    def select(self, day: date) -> CollectionBatch:
        batch_id = collection_batch_id(day)
        with transaction(self.con):
            if self.con.execute("SELECT 1 FROM batches WHERE batch_id = ?", [batch_id]).fetchone():
                return self.selected(day)
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
        return self.selected(day, "SELECTED")

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
            self.con.execute("UPDATE batches SET status = 'NOTHING_DUE', completed_at = ? WHERE batch_id = ?",
                             [self.now, batch.batch_id])
            return None
        dates = batch.cycle
        written = write_submission(self.con, self.files, self.keyring, self.config, dates.input_day,
                                   dates.processing_day, table="dd_collections", batch_id=batch.batch_id,
                                   order_by="collection_id", amount="amount_minor", with_contra=True,
                                   folder="outbound/dd_collections")
        path, count, total = written.path, written.record_count, written.total_minor
        self.con.execute("UPDATE batches SET status = 'EXTRACTED', output_path = ?, completed_at = ?, "
                         "record_count = ?, total_minor = ? WHERE batch_id = ?",
                         [path, self.now, count, total, batch.batch_id])
        return path

    def post(self, batch: CollectionBatch) -> PostResult:
        """One posting per invoice of each debit, so what is owed stays per invoice; idempotent per item."""
        posting_batch = dd_posting_batch_id(batch.business_date)
        with transaction(self.con), unordered_inserts(self.con):
            before = posting_count(self.con, posting_batch)
            post(
                self.con,
                """
                SELECT c.collection_id, c.account_number, i.invoice_number, 'DD_COLLECTION' AS kind,
                       -i.amount_minor AS amount_minor, c.currency, c.collection_id AS source_ref,
                       $effective AS effective_at
                FROM dd_collections c JOIN dd_collection_items i USING (collection_id)
                WHERE c.batch_id = $batch_id
                """,
                source="dd", key=("collection_id", "invoice_number", lit("COLLECTION")), batch_id=posting_batch,
                now=self.now, params={"batch_id": batch.batch_id,
                                      "effective": datetime.combine(batch.business_date, datetime.min.time(), UTC)},
            )
            return record_posting_batch(self.con, batch_id=posting_batch, kind="DD_POSTING", feed=FEED,
                                        now=self.now, posted_before=before, partner=self.config.bureau,
                                        parent_batch_id=batch.batch_id)

    def posted(self, batch: CollectionBatch) -> PostResult:
        return posted_batch(self.con, dd_posting_batch_id(batch.business_date), "dd_collection_posting_batch")

    def write_posting_file(self, posted: PostResult) -> str:
        return write_posting_file(self.con, self.files, posted.batch_id, f"{FEED}:{JOB}", self.now)[0]
