"""One-off payments on the pipelines' side: reconciliation, the Ledger Monitor and the API's read model.

The API records payments in its own store; the Ledger Monitor moves the final ones into the main store:
a success is posted to the sales ledger (idempotency key `one_off:<payment id>:PAYMENT`, UNIQUE), a
failure raises the configured workflow event and posts nothing. The payment's row in `one_off_payments`
(primary key: payment id) is written in the same transaction, so a crash or a re-run posts and raises
nothing twice; the API store is marked afterwards, and a mark lost to a crash is simply redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa

from cmp_pipelines.core.config_payments import ProviderSettings
from cmp_pipelines.core.db.api_store import FINAL, ApiStore, publish_read_model
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.ledger import batch_id_of, lit, post, posting_count, record_posting_batch, write_posting_file
from cmp_pipelines.core.payment_history import publish_history, published_history_path
from cmp_pipelines.core.payment_provider import PaymentProvider, ProviderTimeout

FEED = "one_off"
BATCH_LIMIT = 50_000


@dataclass
class Reconciled:
    asked: int
    succeeded: int
    declined: int
    failed: int


@dataclass
class MonitorResult:
    batch_id: str | None
    payments: int
    posted_now: int
    posted_minor: int  # signed, as in the ledger: payments are negative
    events_now: int
    posting_file: str | None


def finish(api: ApiStore, payment_id: str, from_status: tuple[str, ...], status: str, now: datetime, *,
           reason_code: str | None = None, reason: str | None = None, provider_reference: str | None = None,
           last_four: str | None = None) -> bool:
    """Move a payment to a final status once: only from `from_status`, so a late callback changes nothing."""
    marks = ",".join("?" * len(from_status))
    return api.write_one(
        f"UPDATE payments SET status = ?, reason_code = ?, reason = ?, "
        f"provider_reference = coalesce(?, provider_reference), last_four = coalesce(?, last_four), "
        f"updated_at = ?, completed_at = ?, ledger_state = 'DUE' "
        f"WHERE payment_id = ? AND status IN ({marks})",
        [status, reason_code, reason, provider_reference, last_four, now.isoformat(), now.isoformat(),
         payment_id, *from_status],
    ) == 1


def stale(api: ApiStore, settings: ProviderSettings, now: datetime) -> list:
    """Payments whose outcome is overdue: provider timed out (PENDING), or a hosted page left unfinished."""
    pending_before = (now - timedelta(seconds=settings.reconcile_after_seconds)).isoformat()
    hosted_before = (now - timedelta(minutes=settings.hosted_session_minutes)).isoformat()
    return api.query(
        "SELECT payment_id, status FROM payments WHERE (status = 'PENDING' AND updated_at <= ?) "
        "OR (status = 'AWAITING_CARD' AND created_at <= ?) ORDER BY created_at LIMIT 10000",
        [pending_before, hosted_before],
    )


def reconcile(api: ApiStore, provider: PaymentProvider, settings: ProviderSettings, now: datetime) -> Reconciled:
    """Ask the provider what became of each overdue payment; what it never received has FAILED."""
    result = Reconciled(0, 0, 0, 0)
    for row in stale(api, settings, now):
        result.asked += 1
        try:
            outcome = provider.lookup(row["payment_id"])
        except ProviderTimeout:
            continue  # still unknown: asked again next time
        if outcome is not None:
            done = finish(api, row["payment_id"], (row["status"],), outcome.status, now,
                          reason_code=outcome.reason_code, reason=outcome.reason,
                          provider_reference=outcome.provider_reference, last_four=outcome.last_four)
        elif row["status"] == "AWAITING_CARD":
            done = finish(api, row["payment_id"], ("AWAITING_CARD",), "FAILED", now, reason_code="EXPIRED",
                          reason="the hosted card page was not completed in time")
        else:
            done = finish(api, row["payment_id"], ("PENDING",), "FAILED", now, reason_code="NOT_RECEIVED",
                          reason="the provider has no record of the payment (its request timed out)")
        if done:
            status = api.one("SELECT status FROM payments WHERE payment_id = ?", [row["payment_id"]])["status"]
            key = {"SUCCEEDED": "succeeded", "DECLINED": "declined"}.get(status, "failed")
            setattr(result, key, getattr(result, key) + 1)
    return result


def due_count(api: ApiStore) -> tuple[int, str | None]:
    """How many final payments wait for the ledger, and the newest one's update stamp (a sensor run key)."""
    row = api.one("SELECT count(*), max(updated_at) FROM payments WHERE ledger_state = 'DUE'")
    return row[0], row[1]


def _due(api: ApiStore, limit: int) -> pa.Table:
    marks = ",".join("?" * len(FINAL))
    rows = api.query(
        "SELECT payment_id, account_number, amount_minor, currency, channel, client_id, method, status, reason_code, "
        "reason, provider, provider_reference, created_at, completed_at FROM payments "
        f"WHERE ledger_state = 'DUE' AND status IN ({marks}) ORDER BY completed_at, payment_id LIMIT ?",
        [*FINAL, limit],
    )
    columns = ["payment_id", "account_number", "amount_minor", "currency", "channel", "client_id", "method",
               "status", "reason_code", "reason", "provider", "provider_reference", "created_at", "completed_at"]
    return pa.table({c: [r[c] for r in rows] for c in columns},
                    schema=pa.schema([(c, pa.int64() if c == "amount_minor" else pa.string()) for c in columns]))


def post_to_ledger(con: duckdb.DuckDBPyConnection, api: ApiStore, files: FileStoreLike,
                   settings: ProviderSettings, now: datetime, limit: int = BATCH_LIMIT) -> MonitorResult:
    """One posting batch of every final payment not yet in the main store: successes posted, failures raised."""
    incoming = _due(api, limit)
    if incoming.num_rows == 0:
        return MonitorResult(None, 0, 0, 0, 0, None)
    batch_id = batch_id_of("ONE_OFF_POSTING", f"{now:%Y%m%d%H%M%S%f}")
    con.register("incoming_one_off", incoming)
    try:
        with transaction(con):
            before = posting_count(con, batch_id)
            events_before = con.execute("SELECT count(*) FROM workflow_events").fetchone()[0]
            con.execute(
                """
                CREATE TEMP TABLE new_one_off AS
                SELECT i.* FROM incoming_one_off i ANTI JOIN one_off_payments p USING (payment_id)
                """
            )
            con.execute(
                """
                INSERT INTO one_off_payments
                SELECT payment_id, account_number, amount_minor, currency, channel, client_id, method, status,
                       reason_code, provider, provider_reference, created_at::TIMESTAMPTZ, completed_at::TIMESTAMPTZ,
                       $batch, $now FROM new_one_off
                """,
                {"batch": batch_id, "now": now},
            )
            post(
                con,
                """
                SELECT payment_id, account_number, NULL AS invoice_number, 'PAYMENT' AS kind,
                       -amount_minor AS amount_minor, currency, payment_id AS source_ref,
                       completed_at::TIMESTAMPTZ AS effective_at
                FROM new_one_off WHERE status = 'SUCCEEDED'
                """,
                source="one_off", key=("payment_id", lit("PAYMENT")), batch_id=batch_id, now=now,
            )
            con.execute(
                """
                INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
                SELECT $type, $code, account_number, payment_id,
                       'one-off payment ' || status || coalesce(': reason ' || reason_code, '')
                       || coalesce(' (' || reason || ')', '') || ', amount ' || minor_to_decimal(amount_minor)
                       || ', channel ' || channel || '; nothing posted', $now
                FROM new_one_off WHERE status <> 'SUCCEEDED'
                """,
                {"type": settings.failure_event.event_type, "code": settings.failure_event.event_code, "now": now},
            )
            events = con.execute("SELECT count(*) FROM workflow_events").fetchone()[0] - events_before
            fresh = con.execute("SELECT count(*) FROM new_one_off").fetchone()[0]
            posted = None
            if fresh:  # a re-run after a crash finds everything recorded: no empty batch
                posted = record_posting_batch(con, batch_id=batch_id, kind="ONE_OFF_POSTING", feed=FEED, now=now,
                                              posted_before=before)
            con.execute("DROP TABLE new_one_off")
    finally:
        con.unregister("incoming_one_off")
    path = None
    for pending_file in unwritten_posting_files(con):  # this batch's, and one a crash left without its file
        written = write_posting_file(con, files, pending_file, FEED, now)[0]
        path = written if pending_file == batch_id else path
    recorded = dict(con.execute(
        "SELECT payment_id, batch_id FROM one_off_payments WHERE payment_id IN (SELECT unnest($ids))",
        {"ids": incoming.column("payment_id").to_pylist()}).fetchall())
    with api.write() as w:
        w.executemany("UPDATE payments SET ledger_state = 'RECORDED', ledger_batch_id = ? WHERE payment_id = ?",
                      [(b, i) for i, b in recorded.items()])
    return MonitorResult(batch_id if posted else None, len(recorded), posted.posted_now if posted else 0,
                         posted.total_minor if posted else 0, events, path)


def unwritten_posting_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in con.execute(
        "SELECT batch_id FROM batches WHERE feed = ? AND output_path IS NULL AND record_count > 0 ORDER BY 1",
        [FEED]).fetchall()]


def publish_accounts(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """The API's read model from the main store: accounts with payment type, card on file and ledger balance; the
    payment history beside it."""
    rows = con.execute(
        """
        WITH balances AS (SELECT account_number, sum(amount_minor) AS balance FROM ledger_postings GROUP BY 1)
        SELECT a.account_number, a.currency, a.status, a.payment_type, coalesce(b.balance, 0)::BIGINT,
               c.provider, c.card_token, c.last_four, c.expiry
        FROM accounts a LEFT JOIN balances b USING (account_number) LEFT JOIN payment_cards c USING (account_number)
        WHERE NOT a.is_suspense
        """
    ).fetchall()
    publish_history(con, published_history_path())  # first: the read model's time then covers the history too
    events = con.execute(
        """
        SELECT e.event_id, e.account_number, e.event_type, e.event_code, e.source_ref, e.detail,
               strftime(e.raised_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'), d.action, d.target,
               coalesce(d.status, 'NEW'), coalesce(d.attempts, 0), d.result, d.last_error, e.reason_type,
               e.reason_code, e.new_payment_type
        FROM workflow_events e LEFT JOIN workflow_dispatch d USING (event_id)
        WHERE e.account_number IS NOT NULL
        """
    ).fetchall()
    return publish_read_model(rows, now.isoformat(), "cmp.duckdb", events=events)
