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
from cmp_pipelines.core.db.api_store import FINAL, ApiStore, PaymentRecords, publish_read_model
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


def finish(api: PaymentRecords, payment_id: str, from_status: tuple[str, ...], status: str, now: datetime, *,
           reason_code: str | None = None, reason: str | None = None, provider_reference: str | None = None,
           last_four: str | None = None) -> bool:
    """Move a payment to a final status once: only from `from_status`, so a late callback changes nothing."""
    return api.finish(payment_id, from_status, status, now.isoformat(), reason_code=reason_code, reason=reason,
                      provider_reference=provider_reference, last_four=last_four)


def stale(api: PaymentRecords, settings: ProviderSettings, now: datetime) -> list:
    """Payments whose outcome is overdue: provider timed out (PENDING), or a hosted page left unfinished."""
    return api.stale((now - timedelta(seconds=settings.reconcile_after_seconds)).isoformat(),
                     (now - timedelta(minutes=settings.hosted_session_minutes)).isoformat())


def reconcile(api: PaymentRecords, provider: PaymentProvider, settings: ProviderSettings, now: datetime) -> Reconciled:
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
            status = api.payment(row["payment_id"])["status"]
            key = {"SUCCEEDED": "succeeded", "DECLINED": "declined"}.get(status, "failed")
            setattr(result, key, getattr(result, key) + 1)
    return result


def due_count(api: PaymentRecords) -> tuple[int, str | None]:
    """How many final payments wait for the ledger, and the newest one's update stamp (a sensor run key)."""
    return api.due_count()


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


def write_posting_files_postgres(url: str, files: FileStoreLike, now: datetime) -> dict[str, str]:
    """On PostgreSQL: the posting file of every one-off batch still without one (this run's, and one a crash after
    the posting COMMIT left without its file), by `core.ledger.write_posting_file_postgres`; batch -> path."""
    from cmp_pipelines.core.db.mirror import mirrored
    from cmp_pipelines.core.ledger import write_posting_file_postgres

    written = {}
    with mirrored(url) as mirror:
        pending = mirror.query("SELECT batch_id FROM batches WHERE feed = $1 AND output_path IS NULL "
                               "AND record_count > 0 ORDER BY 1", [FEED]).column("batch_id").to_pylist()
        mirror.rollback()
        for batch_id in pending:
            path = write_posting_file_postgres(mirror, files, batch_id, FEED, now)
            if path:
                written[batch_id] = path
    return written


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


def post_to_ledger_postgres(url: str, settings: ProviderSettings, now: datetime,
                            limit: int = BATCH_LIMIT) -> MonitorResult:
    """The Ledger Monitor on PostgreSQL, where the API's payments are a table of the store: one transaction locks
    the final payments not yet recorded (FOR UPDATE, in payment order, so a second monitor waits, then finds them
    RECORDED), records each in one_off_payments, posts the successes through `post_to_postgres` (the same key
    `one_off:<payment>:PAYMENT`: never twice), raises each failure's workflow event, writes the batch row and
    marks the payments RECORDED with their batch. A crash before COMMIT leaves all of it undone, to be redone.
    The posting file is written after the COMMIT (`write_posting_files_postgres`)."""
    from cmp_pipelines.core.db.connection import SQL_MACROS, sql_literal
    from cmp_pipelines.core.db.transfer import adbc_connection, ingest_adbc
    from cmp_pipelines.core.ledger import commit_postgres, post_to_postgres

    batch_id = batch_id_of("ONE_OFF_POSTING", f"{now:%Y%m%d%H%M%S%f}")
    at = f"{sql_literal(now.isoformat())}::TIMESTAMPTZ"
    finals = ", ".join(sql_literal(s) for s in FINAL)
    duck = duckdb.connect()
    duck.execute(SQL_MACROS)
    try:
        with adbc_connection(url) as pg, pg.cursor() as cur:
            cur.execute(
                "SELECT payment_id, account_number, amount_minor, currency, channel, client_id, method, status, "
                "reason_code, reason, provider, provider_reference, created_at, completed_at FROM api_payments "
                f"WHERE ledger_state = 'DUE' AND status IN ({finals}) ORDER BY payment_id LIMIT {int(limit)} "
                "FOR UPDATE")
            incoming = cur.fetch_arrow_table()
            if incoming.num_rows == 0:
                pg.rollback()
                return MonitorResult(None, 0, 0, 0, 0, None)
            cur.execute("CREATE TEMP TABLE one_off_locked (payment_id VARCHAR PRIMARY KEY) ON COMMIT DROP")
            ingest_adbc(cur, "one_off_locked", incoming.select(["payment_id"]), temporary=True)
            cur.execute(
                "CREATE TEMP TABLE one_off_due ON COMMIT DROP AS SELECT p.* FROM api_payments p "
                "JOIN one_off_locked USING (payment_id) "
                "WHERE NOT EXISTS (SELECT 1 FROM one_off_payments o WHERE o.payment_id = p.payment_id)")
            cur.execute(
                "INSERT INTO one_off_payments SELECT payment_id, account_number, amount_minor, currency, channel, "
                "client_id, method, status, reason_code, provider, provider_reference, created_at, completed_at, "
                f"{sql_literal(batch_id)}, {at} FROM one_off_due")
            duck.register("incoming_one_off", incoming)
            posted_now = post_to_postgres(
                duck, pg,
                """
                SELECT payment_id, account_number, NULL AS invoice_number, 'PAYMENT' AS kind,
                       -amount_minor AS amount_minor, currency, payment_id AS source_ref,
                       completed_at::TIMESTAMPTZ AS effective_at
                FROM incoming_one_off WHERE status = 'SUCCEEDED'
                """,
                source="one_off", key=("payment_id", lit("PAYMENT")), batch_id=batch_id, now=now,
                order_by="effective_at, payment_id")
            cur.execute(
                "WITH raised AS (INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, "
                "detail, raised_at) "
                f"SELECT {sql_literal(settings.failure_event.event_type)}, "
                f"{sql_literal(settings.failure_event.event_code)}, account_number, payment_id, "
                "'one-off payment ' || status || coalesce(': reason ' || reason_code, '') "
                "|| coalesce(' (' || reason || ')', '') || ', amount ' || minor_to_decimal(amount_minor) "
                f"|| ', channel ' || channel || '; nothing posted', {at} "
                "FROM one_off_due WHERE status <> 'SUCCEEDED' ORDER BY completed_at, payment_id RETURNING 1) "
                "SELECT count(*) FROM raised")
            events = int(cur.fetchone()[0])
            cur.execute("SELECT count(*), coalesce(sum(amount_minor), 0)::BIGINT FROM ledger_postings "
                        f"WHERE batch_id = {sql_literal(batch_id)}")
            count, total = cur.fetchone()
            cur.execute("SELECT count(*) FROM one_off_due")
            fresh = int(cur.fetchone()[0])
            if fresh:  # a batch row only for what this run recorded: a re-run finds nothing new, writes no batch
                cur.execute(
                    "INSERT INTO batches (batch_id, kind, feed, status, record_count, total_minor, accepted_count, "
                    f"created_at, completed_at) VALUES ({sql_literal(batch_id)}, 'ONE_OFF_POSTING', "
                    f"{sql_literal(FEED)}, 'POSTED', {int(count)}, {int(total)}, {int(count)}, {at}, {at})")
                cur.execute(f"INSERT INTO job_runs (job, batch_id, started_at) VALUES ({sql_literal(FEED)}, "
                            f"{sql_literal(batch_id)}, {at})")
            cur.execute(
                "UPDATE api_payments a SET ledger_state = 'RECORDED', ledger_batch_id = o.batch_id "
                "FROM one_off_payments o WHERE o.payment_id = a.payment_id AND a.ledger_state = 'DUE' "
                "AND a.payment_id IN (SELECT payment_id FROM one_off_locked)")
            commit_postgres(pg)
    finally:
        duck.close()
    return MonitorResult(batch_id if fresh else None, incoming.num_rows, posted_now, int(total) if fresh else 0,
                         events, None)
