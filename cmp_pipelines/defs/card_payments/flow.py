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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import duckdb

from cmp_pipelines.core import notices
from cmp_pipelines.core.config import CardPaymentsConfig, Partner, load_card_payments
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.delivery import enqueue
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.ledger import (
    PostResult,
    batch_id_of,
    json_document,
    post,
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
    ):
        self.con, self.files, self.keyring, self.partners = con, files, keyring, partners
        self.now = now or datetime.now(UTC)
        self.config = config or load_card_payments(paths().config_dir)

    # ---- advance notice ------------------------------------------------------------------------------

    def raise_notices(self, day: date) -> notices.Raised:
        """Notices raised on `day` give a date at least the notice period away (or the due date, if later)."""
        return notices.raise_notices(self.con, "RECURRING_CARD", day,
                                     day + timedelta(days=self.config.advance_notice_days), self.now)

    def notice_cutoff(self, day: date) -> datetime:
        return notices.cutoff(day - timedelta(days=self.config.advance_notice_days))

    def waiting(self, day: date) -> notices.Waiting:
        """Invoices due by `day` that wait for their advance notice (none raised, not sent, or sent too late)."""
        return notices.waiting(self.con, "RECURRING_CARD", day, self.notice_cutoff(day), COLLECTED_SQL)

    def select_due(self, day: date) -> DueBatch:
        batch_id = extract_batch_id(day)
        with transaction(self.con):
            exists = self.con.execute("SELECT 1 FROM batches WHERE batch_id = ?", [batch_id]).fetchone()
            if not exists:
                providers = card_providers(self.partners)
                params = {"day": day, "batch_id": batch_id, "providers": providers,
                          "notice_cutoff": self.notice_cutoff(day)}
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
        return self.due(day, "ALREADY_SELECTED" if exists else "SELECTED")

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
        return written

    # ---- the posting batch: the sales ledger, assuming every payment and refund succeeds -------------

    def post(self, due: DueBatch) -> PostResult:
        posting_batch = posting_batch_id(due.business_date)
        with transaction(self.con):
            before = posting_count(self.con, posting_batch)
            post(
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
            return record_posting_batch(self.con, batch_id=posting_batch, kind="CARD_POSTING", feed=FEED,
                                        now=self.now, posted_before=before, parent_batch_id=due.batch_id)

    def posted(self, due: DueBatch) -> PostResult:
        return posted_batch(self.con, posting_batch_id(due.business_date), "card_payment_posting_batch")

    def write_posting_file(self, posted: PostResult) -> str:
        return write_posting_file(self.con, self.files, posted.batch_id, f"{FEED}:{JOB}", self.now)[0]
