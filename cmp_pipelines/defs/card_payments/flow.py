"""Recurring Payments job in CARD mode: the day's due payments and refunds, the provider extract, the postings.

Steps, each idempotent for a business day:
0. `raise_notices`: the advance notice of every invoice it will collect (core/notices.py), at least
   `advance_notice_days` (config/card_payments.yaml) before the card is charged; a payment waits for its notice.
1. `select_due`: the day's transactions are chosen once and frozen (batch RCX-<yyyymmdd>); a re-run
   finds them instead of choosing again, so the day's extract is always the same.
2. `write_extracts`: one generic JSON extract per provider and currency, encrypted for the provider.
3. `post`: the second batch (RCP-<yyyymmdd>) posts every payment and refund to the ledger assuming it
   succeeds; the idempotency key is the transaction id, so nothing posts twice.
4. `write_posting_file`: the posting batch for the external sales ledger.

On PostgreSQL (`mirror`, core/db/mirror.py) `con` is the run's scratch DuckDB and the SQL below runs unchanged on
it. The notices and the selection pull the day's card state: the accounts the card rules can touch (paying by card,
holding a soft decline, or owed a card refund), with their cards, invoices, the non-invoice postings against those
invoices, their card transactions (and those of the same card tokens), refunds, notices and the notices' dispatch
and e-mail rows. Both decide under the transaction-level advisory lock `card_payments:day`, taken before the pull
and released by the push's COMMIT: two card days (or a re-run of one) never select from the same state, so an
invoice is never taken twice (its transaction id `P<invoice>-1` is also PostgreSQL's primary key) and a notice is
raised once. They push only what they wrote: new notices and their events (ids drawn from PostgreSQL's sequence,
`push_events`), new transactions and the batch row, the status of the retries closed now, notices found sent. A
rejection file running at the same time locks its transactions and accounts (`FOR UPDATE`, defs/card_rejections);
the selection writes none of those rows but the soft declines it closes, so a selection and a rejection file
serialise only there and cannot wait for each other in a cycle. Postings go through `post_to_postgres` (UNIQUE keys
inserted in key order); the extract and the posting file push their batch row and delivery registrations.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import duckdb

from cmp_pipelines.core import notices
from cmp_pipelines.core.config import CardPaymentsConfig, Partner, load_card_payments
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.db.mirror import Mirror, local_event_ids, pull_postings, push_events
from cmp_pipelines.core.delivery import enqueue
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.ledger import (
    PostResult,
    batch_id_of,
    json_document,
    post,
    post_to_postgres,
    posted_batch,
    posting_count,
    record_posting_batch,
    write_posting_file,
)
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.payment_setup import card_providers
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.card_payments.rules import CLOSE_UNNEEDED_RETRIES_SQL, COLLECTED_SQL, SELECT_DUE_SQL

FEED = "card_payments"
JOB = "Recurring Payments job (CARD mode)"
DAY_LOCK = f"{FEED}:day"  # the advisory lock under which notices are raised and a day's payments selected

# On PostgreSQL: the accounts the card rules can touch on $1 (the day), into a temp table the pulls join on.
CARD_ACCOUNTS_PG = """
    CREATE TEMP TABLE card_accounts ON COMMIT DROP AS
    SELECT account_number FROM accounts WHERE payment_type = 'RECURRING_CARD'
    UNION SELECT account_number FROM card_transactions WHERE status = 'SOFT_DECLINED'
    UNION SELECT account_number FROM card_refunds WHERE due_on <= $1
"""


def extract_batch_id(day: date) -> str:
    return batch_id_of("CARD_EXTRACT", f"{day:%Y%m%d}")


def posting_batch_id(day: date) -> str:
    return batch_id_of("CARD_POSTING", f"{day:%Y%m%d}")


@dataclass
class DueBatch:
    batch_id: str
    business_date: date
    status: str  # SELECTED now, or ALREADY_SELECTED by an earlier run
    payment_count: int
    payment_minor: int
    refund_count: int
    refund_minor: int
    retry_count: int
    by_provider: dict[str, int] = field(default_factory=dict)

    @property
    def record_count(self) -> int:
        return self.payment_count + self.refund_count


@dataclass
class ExtractFile:
    provider: str
    currency: str
    path: str
    record_count: int
    total_minor: int


class RecurringCardPayments:
    def __init__(
        self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
        partners: dict[str, Partner], now: datetime | None = None, config: CardPaymentsConfig | None = None,
        mirror: Mirror | None = None,
    ):
        self.con, self.files, self.keyring, self.partners = con, files, keyring, partners
        self.now = now or datetime.now(UTC)
        self.config = config or load_card_payments(paths().config_dir)
        self.mirror = mirror
        if mirror is not None:
            local_event_ids(con)

    def _pushed(self):
        """The PostgreSQL transaction of a step's writes (nothing on the embedded store)."""
        return self.mirror.transaction() if self.mirror is not None else nullcontext()

    # ---- on PostgreSQL: what the day's rules read --------------------------------------------------------

    def _pull_day(self, day: date) -> None:
        """The card state the notices, the selection and `waiting` read (see the module docstring), replacing what
        the scratch held under the same keys."""
        mirror = self.mirror
        mirror.settle()
        mirror.execute("DROP TABLE IF EXISTS pg_temp.card_accounts")
        mirror.execute(CARD_ACCOUNTS_PG, [day])
        accounts = "account_number IN (SELECT account_number FROM card_accounts)"
        invoices = f"invoice_number IN (SELECT invoice_number FROM invoices WHERE {accounts})"
        notices_of = f"payment_type = 'RECURRING_CARD' AND {invoices}"
        mirror.pull("accounts", accounts, key=["account_number"])
        mirror.pull("payment_cards", accounts, key=["account_number"])
        mirror.pull("invoices", accounts, key=["invoice_number"])
        mirror.pull("ledger_postings", f"{invoices} AND kind <> 'INVOICE'", key=["idempotency_key"])
        mirror.pull("card_transactions", f"{accounts} OR card_token IN (SELECT card_token FROM payment_cards "
                                         f"WHERE {accounts})", key=["transaction_id"])
        mirror.pull("card_refunds", accounts, key=["refund_id"])
        mirror.pull("collection_notices", notices_of, key=["notice_id"])
        sent = f"event_id IN (SELECT event_id FROM collection_notices WHERE {notices_of})"
        mirror.pull("workflow_dispatch", sent, key=["event_id"])
        mirror.pull("email_outbox", f"kind = 'COMMUNICATION' AND status = 'SENT' AND source_ref IN "
                                    f"(SELECT event_id::VARCHAR FROM collection_notices WHERE {notices_of})",
                    key=["message_id"])

    def _pull_batch(self, batch_id: str, transactions: bool = False) -> None:
        """A batch row (and, for the extract batch, its transactions) an earlier step or run recorded."""
        if self.mirror is None:
            return
        self.mirror.pull("batches", "batch_id = $1", [batch_id], key=["batch_id"])
        if transactions:
            self.mirror.pull("card_transactions", "batch_id = $1", [batch_id], key=["transaction_id"])

    def _done_reading(self) -> None:
        """End a step's read-only PostgreSQL transaction (releasing its snapshot and any advisory lock)."""
        if self.mirror is not None:
            self.mirror.rollback()

    # ---- advance notice ------------------------------------------------------------------------------

    def raise_notices(self, day: date) -> notices.Raised:
        """Notices raised on `day` give a date at least the notice period away (or the due date, if later)."""
        if self.mirror is None:
            return notices.raise_notices(self.con, "RECURRING_CARD", day,
                                         day + timedelta(days=self.config.advance_notice_days), self.now)
        try:
            self.mirror.lock(DAY_LOCK)
            self._pull_day(day)
            self.con.execute("CREATE OR REPLACE TEMP TABLE card_notices_before AS "
                             "SELECT notice_id FROM collection_notices")
            raised = notices.raise_notices(self.con, "RECURRING_CARD", day,
                                           day + timedelta(days=self.config.advance_notice_days), self.now)
            with self.mirror.transaction():
                push_events(self.mirror, [("collection_notices", "event_id")])
                self.mirror.push("collection_notices", "notice_id NOT IN (SELECT notice_id FROM card_notices_before)")
            self.con.execute("DROP TABLE card_notices_before")
            return raised
        finally:
            self._done_reading()

    def notice_cutoff(self, day: date) -> datetime:
        return notices.cutoff(day - timedelta(days=self.config.advance_notice_days))

    def waiting(self, day: date) -> notices.Waiting:
        """Invoices due by `day` that wait for their advance notice (none raised, not sent, or sent too late)."""
        if self.mirror is not None:
            try:
                self._pull_day(day)
            finally:
                self._done_reading()
        return notices.waiting(self.con, "RECURRING_CARD", day, self.notice_cutoff(day), COLLECTED_SQL)

    def select_due(self, day: date) -> DueBatch:
        batch_id = extract_batch_id(day)
        try:
            exists = self._select_due(day, batch_id)
        finally:
            self._done_reading()  # the day lock, when the batch existed and nothing was pushed
        return self.due(day, "ALREADY_SELECTED" if exists else "SELECTED")

    def _select_due(self, day: date, batch_id: str) -> bool:
        if self.mirror is not None:  # under the day lock: what it pulls is what no other card day is changing
            self.mirror.lock(DAY_LOCK)
            self._pull_batch(batch_id)
            if not self.con.execute("SELECT 1 FROM batches WHERE batch_id = ?", [batch_id]).fetchone():
                self._pull_day(day)
        with transaction(self.con), self._pushed():
            exists = self.con.execute("SELECT 1 FROM batches WHERE batch_id = ?", [batch_id]).fetchone()
            if not exists:
                providers = card_providers(self.partners)
                params = {"day": day, "batch_id": batch_id, "providers": providers,
                          "notice_cutoff": self.notice_cutoff(day)}
                self.con.execute("CREATE OR REPLACE TEMP TABLE card_day_before AS SELECT notice_id AS k "
                                 "FROM collection_notices WHERE status = 'RAISED' UNION ALL SELECT transaction_id "
                                 "FROM card_transactions WHERE status = 'SOFT_DECLINED'")
                notices.refresh_sent(self.con)
                self._report_unconfigured_providers(providers)
                self.con.execute(CLOSE_UNNEEDED_RETRIES_SQL, {"day": day})
                self.con.execute(SELECT_DUE_SQL, params)
                self.con.execute(
                    """
                    INSERT INTO batches (batch_id, kind, feed, status, record_count, total_minor, accepted_count,
                                         created_at)
                    SELECT $batch_id, 'CARD_EXTRACT', 'card_payments', 'SELECTED', count(*),
                           coalesce(sum(amount_minor), 0), count(*), $now
                    FROM card_transactions WHERE batch_id = $batch_id
                    """,
                    {"batch_id": batch_id, "now": self.now},
                )
                if self.mirror is not None:
                    self._push_selection(batch_id)
                self.con.execute("DROP TABLE card_day_before")
        return bool(exists)

    def _push_selection(self, batch_id: str) -> None:
        """What the selection wrote, into PostgreSQL's open transaction (committed with the scratch's)."""
        mirror, changed = self.mirror, "IN (SELECT k FROM card_day_before)"
        mirror.push("card_transactions", "batch_id = $batch", {"batch": batch_id})
        mirror.push("batches", "batch_id = $batch", {"batch": batch_id})
        mirror.push_update("card_transactions", ["transaction_id"], ["status"],
                           f"status = 'RETRY_NOT_NEEDED' AND transaction_id {changed}")
        mirror.push_update("collection_notices", ["notice_id"], ["status", "sent_at"],
                           f"status = 'SENT' AND notice_id {changed}")
        mirror.push("job_errors", "job = $feed AND raised_at = $now", {"feed": FEED, "now": self.now})

    def _report_unconfigured_providers(self, providers: list[str]) -> None:
        self.con.execute(
            """
            INSERT INTO job_errors (job, category, source_ref, detail, raised_at)
            SELECT 'card_payments', 'CONFIGURATION', provider,
                   count(*) || ' recurring card account(s) use provider ' || provider
                   || ', which is not a card provider in config/partners.yaml; they were not extracted', $now
            FROM payment_cards c JOIN accounts a USING (account_number)
            WHERE a.payment_type = 'RECURRING_CARD' AND NOT list_contains($providers, provider) GROUP BY provider
            """,
            {"providers": providers, "now": self.now},
        )

    def due(self, day: date, status: str = "ALREADY_SELECTED") -> DueBatch:
        batch_id = extract_batch_id(day)
        self._pull_batch(batch_id, transactions=True)
        if not self.con.execute("SELECT 1 FROM batches WHERE batch_id = ?", [batch_id]).fetchone():
            raise LookupError(f"no CARD extract batch for {day}: materialise card_payments_due for it first")
        row = self.con.execute(
            """
            SELECT count(*) FILTER (kind = 'PAYMENT'), coalesce(sum(amount_minor) FILTER (kind = 'PAYMENT'), 0),
                   count(*) FILTER (kind = 'REFUND'), coalesce(sum(amount_minor) FILTER (kind = 'REFUND'), 0),
                   count(*) FILTER (attempt > 1)
            FROM card_transactions WHERE batch_id = ?
            """,
            [batch_id],
        ).fetchone()
        by_provider = dict(self.con.execute(
            "SELECT provider, count(*) FROM card_transactions WHERE batch_id = ? GROUP BY 1 ORDER BY 1", [batch_id]
        ).fetchall())
        return DueBatch(batch_id, day, status, *row, by_provider=by_provider)

    # ---- the extract for the provider adapter ------------------------------------------------------

    def write_extracts(self, due: DueBatch) -> list[ExtractFile]:
        """One encrypted file per provider and currency; the header's totals are computed apart from the rows."""
        created_at = self.con.execute(
            "SELECT created_at FROM batches WHERE batch_id = ?", [due.batch_id]
        ).fetchone()[0]
        groups = self.con.execute(
            """
            SELECT provider, currency, count(*), sum(amount_minor),
                   count(*) FILTER (kind = 'PAYMENT'), coalesce(sum(amount_minor) FILTER (kind = 'PAYMENT'), 0),
                   count(*) FILTER (kind = 'REFUND'), coalesce(sum(amount_minor) FILTER (kind = 'REFUND'), 0)
            FROM card_transactions WHERE batch_id = ? GROUP BY ALL ORDER BY ALL
            """,
            [due.batch_id],
        ).fetchall()
        written = []
        for provider, currency, count, total, payments, payment_minor, refunds, refund_minor in groups:
            file_id = f"{due.batch_id}-{provider}-{currency}"
            header = {
                "file_id": file_id, "sender": "CMP", "recipient": provider,
                "business_date": due.business_date.isoformat(),
                "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "currency": currency, "record_count": count, "total_amount": format_minor(total),
                "payment_count": payments, "payment_amount": format_minor(payment_minor),
                "refund_count": refunds, "refund_amount": format_minor(refund_minor),
            }
            with json_document(
                self.con, header, "transactions",
                f"""
                SELECT transaction_id, kind AS type, account_number, invoice_number, refund_id, card_token,
                       minor_to_decimal(amount_minor) AS amount, currency, attempt, due_on::VARCHAR AS due_date
                FROM card_transactions
                WHERE batch_id = {sql_literal(due.batch_id)} AND provider = {sql_literal(provider)}
                  AND currency = {sql_literal(currency)}
                ORDER BY transaction_id
                """,
            ) as document:
                token = self.keyring.encrypt_parts(provider, [document])
                path = self.files.write_parts(f"outbound/card_payments/{provider}/{file_id}.json.enc", token)
            enqueue(self.con, self.files, "CARD_EXTRACT", path, partner=provider, reference=file_id, now=self.now)
            written.append(ExtractFile(provider, currency, path, count, total))
        self.con.execute(
            "UPDATE batches SET status = 'EXTRACTED', output_path = ?, completed_at = ?, record_count = ?, "
            "total_minor = ? WHERE batch_id = ?",
            [", ".join(f.path for f in written) or None, self.now, sum(f.record_count for f in written),
             sum(f.total_minor for f in written), due.batch_id],
        )
        if self.mirror is not None:
            self.mirror.push_published(due.batch_id, self.now)
        return written

    # ---- the posting batch: the sales ledger, assuming every payment and refund succeeds -------------

    def post(self, due: DueBatch) -> PostResult:
        posting_batch = posting_batch_id(due.business_date)
        with transaction(self.con), self._pushed():
            pull_postings(self.mirror, posting_batch)
            before = posting_count(self.con, posting_batch)
            self._writer()(
                self.con,
                """
                SELECT transaction_id, kind AS event, account_number, invoice_number,
                       CASE kind WHEN 'PAYMENT' THEN 'CARD_PAYMENT' ELSE 'CARD_REFUND' END AS kind,
                       CASE kind WHEN 'PAYMENT' THEN -amount_minor ELSE amount_minor END AS amount_minor,
                       currency, transaction_id AS source_ref, $effective AS effective_at
                FROM card_transactions WHERE batch_id = $extract_batch
                """,
                source="card", key=("transaction_id", "event"), batch_id=posting_batch, now=self.now,
                params={"extract_batch": due.batch_id,
                        "effective": datetime.combine(due.business_date, datetime.min.time(), UTC)},
            )
            pull_postings(self.mirror, posting_batch)  # the scratch holds what PostgreSQL holds for the batch (counts)
            posted = record_posting_batch(self.con, batch_id=posting_batch, kind="CARD_POSTING", feed=FEED,
                                          now=self.now, posted_before=before, parent_batch_id=due.batch_id)
            if self.mirror is not None:
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": posting_batch})
                self.mirror.push("job_runs", "batch_id = $batch AND started_at = $now",
                                 {"batch": posting_batch, "now": self.now})
            return posted

    def _writer(self):
        """`post`, or on PostgreSQL `post_to_postgres` into its open transaction (the scratch's copy is then pulled
        back from PostgreSQL, `pull_postings`)."""
        if self.mirror is None:
            return post
        mirror = self.mirror

        def to_postgres(con, sql, **kw) -> int:
            mirror.settle()
            return post_to_postgres(con, mirror.pg, sql, **kw)

        return to_postgres

    def posted(self, due: DueBatch) -> PostResult:
        return self.posted_on(due.business_date)

    def posted_on(self, day: date) -> PostResult:
        """The day's posting batch from its batch row alone: the posting file needs no count of the extract's
        transactions (`due`), nor, on PostgreSQL, a pull of them."""
        self._pull_batch(posting_batch_id(day))
        return posted_batch(self.con, posting_batch_id(day), "card_payment_posting_batch")

    def write_posting_file(self, posted: PostResult) -> str:
        pull_postings(self.mirror, posted.batch_id)
        path = write_posting_file(self.con, self.files, posted.batch_id, f"{FEED}:{JOB}", self.now)[0]
        if self.mirror is not None:
            self.mirror.push_published(posted.batch_id, self.now)
        return path
