"""The API on the PostgreSQL store (`CMP_DATABASE_URL` set): payments, idempotency keys and set-up requests are
tables of the main schema (migration 0018), and accounts, balances, cards, events and payment history are read
from the store's own tables as they are now. No SQLite file, no read model, no lock file.

Concurrency is PostgreSQL's: the UNIQUE (client_id, idempotency_key) decides between twin requests (the loser's
INSERT ... ON CONFLICT DO NOTHING inserts nothing, waiting first if the winner has not committed, and it replays
the winner's payment); a set-up request locks its account row (SELECT ... FOR UPDATE) and is applied at once in one
transaction, so two requests for one account serialise there and never both see "no live mandate".
Connections come from a psycopg_pool pool of `CMP_API_DB_POOL_SIZE` (core/settings.api_pool_size).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import duckdb
from psycopg.rows import RowFactory
from psycopg_pool import ConnectionPool, PoolTimeout

from cmp_pipelines.core.db.api_store import PaymentRecords, one_off_history
from cmp_pipelines.core.db.connection import StoreBusyError
from cmp_pipelines.core.db.postgres import PostgresStoreError, _scrub, database_url
from cmp_pipelines.core.settings import API_POOL_SETTING, DATABASE_URL_SETTING, api_pool_size, redact_url


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """Our `?` placeholders as psycopg's `%s` (a literal `%` doubled). The SQL handed here has no `?` or `%` of
    its own inside string literals."""
    return sql.replace("%", "%%").replace("?", "%s")


def _iso_dict_row(cursor) -> Callable[[Any], dict]:
    """Rows as dicts, timestamps as ISO strings: the shape the SQLite store gives, so handlers serve both alike
    (the session runs in UTC, so `+00:00` as `datetime.now(UTC).isoformat()` writes it)."""
    names = [c.name for c in cursor.description] if cursor.description else []

    def make(values) -> dict:
        return {n: (v.isoformat() if isinstance(v, datetime) else v) for n, v in zip(names, values, strict=True)}

    return make


ISO_ROWS: RowFactory = _iso_dict_row


class DuckLike:
    """A psycopg connection inside an open transaction, as the set-up services (written for a DuckDB connection)
    use one: `execute(sql, [params])` with `?` placeholders, tuples back; their `transaction(con)` blocks become
    savepoints of the caller's transaction (BEGIN/COMMIT/ROLLBACK are mapped; the services never nest them), so
    everything commits together with the caller's own writes, and a refusal (SetupError), raised on through the
    caller's transaction, rolls all of it back."""

    _MAP = {"BEGIN TRANSACTION": "SAVEPOINT setup_block", "COMMIT": "RELEASE SAVEPOINT setup_block",
            "ROLLBACK": "ROLLBACK TO SAVEPOINT setup_block"}

    def __init__(self, con):
        self._con = con

    def execute(self, sql: str, params: list | tuple | None = None):
        mapped = self._MAP.get(sql.strip().upper())
        if mapped:
            return self._con.execute(mapped)
        return self._con.execute(pg_sql(sql), params or None)


class PostgresApiStore(PaymentRecords):
    """Both roles of the API's backend on PostgreSQL: the payment records (`PaymentRecords`) and the reads."""

    PAYMENTS = "api_payments"
    SETUP_REQUESTS = "api_setup_requests"
    blocking = True

    def __init__(self, url: str | None = None, *, pool_size: int | None = None, timeout: float = 10.0):
        self.url = database_url(url)
        size = pool_size or api_pool_size()
        self.pool = ConnectionPool(
            self.url, min_size=1, max_size=size, timeout=timeout, open=False, name="cmp-api",
            kwargs={"autocommit": True, "application_name": "cmp-pipelines-api", "options": "-c TimeZone=UTC",
                    "connect_timeout": 10})
        try:
            self.pool.open(wait=True, timeout=timeout)
        except Exception as exc:  # PoolTimeout: the server refused or is unreachable
            self.pool.close()
            raise PostgresStoreError(
                f"cannot reach the PostgreSQL store named by {DATABASE_URL_SETTING} ({redact_url(self.url)}): "
                f"{_scrub(str(exc), self.url)}") from None

    @property
    def store(self) -> PostgresApiStore:
        return self

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _connection(self):
        """A pooled connection; StoreBusyError (the API answers 503 with Retry-After) when every connection stays
        in use past the pool's timeout, rather than an unexplained 500."""
        try:
            con = self.pool.getconn()
        except PoolTimeout:
            raise StoreBusyError(f"all {self.pool.max_size} connections to the PostgreSQL store are in use "
                                 f"({API_POOL_SETTING}); retry shortly") from None
        try:
            yield con
        finally:
            self.pool.putconn(con)  # the pool rolls back whatever a failed request left open

    # --- the generic statements PaymentRecords and the Ledger Monitor use (`?` parameters, dict rows) ---

    def one(self, sql: str, params: list | tuple = ()) -> dict | None:
        with self._connection() as con, con.cursor(row_factory=ISO_ROWS) as cur:
            return cur.execute(pg_sql(sql), params or None).fetchone()

    def query(self, sql: str, params: list | tuple = ()) -> list[dict]:
        with self._connection() as con, con.cursor(row_factory=ISO_ROWS) as cur:
            return cur.execute(pg_sql(sql), params or None).fetchall()

    def write_one(self, sql: str, params: list | tuple = ()) -> int:
        """One statement, its own transaction (autocommit): rows changed."""
        with self._connection() as con:
            return con.execute(pg_sql(sql), params or None).rowcount

    @contextmanager
    def write(self):
        """One transaction; yields a connection taking `?` parameters (`DuckLike`)."""
        with self._connection() as con, con.transaction():
            yield DuckLike(con)

    def insert_if_valid(self, row: dict, columns: tuple[str, ...]) -> dict | None:
        """A new payment in one round trip instead of four (key lookup, account, insert): inserted only when the
        account exists, is ACTIVE, is billed in the payment's currency and, for CARD_ON_FILE, has a card - the
        checks `_validate_target` makes, which name the failing one whenever this inserts nothing. The key's
        UNIQUE constraint still decides between twins (ON CONFLICT DO NOTHING)."""
        values = ", ".join(f"?::{_CASTS.get(c, 'VARCHAR')}" for c in columns)
        return self.one(
            f"""
            WITH target AS (
                SELECT a.currency, a.status, c.card_token, c.last_four
                FROM accounts a LEFT JOIN payment_cards c USING (account_number)
                WHERE a.account_number = ? AND NOT a.is_suspense),
            inserted AS (
                INSERT INTO {self.PAYMENTS} ({", ".join(columns)}) SELECT {values} FROM target
                WHERE target.currency = ? AND target.status = 'ACTIVE'
                  AND (? <> 'CARD_ON_FILE' OR target.card_token IS NOT NULL)
                ON CONFLICT (client_id, idempotency_key) DO NOTHING RETURNING 1)
            SELECT card_token, last_four FROM target WHERE EXISTS (SELECT FROM inserted)
            """, [row["account_number"], *(row[c] for c in columns), row["currency"], row["method"]])

    # --- the reads (ApiBackend) ---

    def account(self, account_number: str) -> dict | None:
        """The account as it is now: balance summed from the ledger, card on file, the time of asking."""
        return self.one(
            """
            SELECT a.account_number, a.currency, a.status, a.payment_type,
                   coalesce((SELECT sum(l.amount_minor) FROM ledger_postings l
                             WHERE l.account_number = a.account_number), 0)::BIGINT AS balance_minor,
                   c.provider AS card_provider, c.card_token, c.last_four, c.expiry, now() AS published_at
            FROM accounts a LEFT JOIN payment_cards c USING (account_number)
            WHERE a.account_number = ? AND NOT a.is_suspense
            """, [account_number])

    def published_at(self) -> str | None:
        return self.one("SELECT now() AS now")["now"]

    def events(self, account_number: str, status: str | None, limit: int) -> list[dict]:
        return self.query(
            """
            SELECT * FROM (
                SELECT e.event_id, e.account_number, e.event_type, e.event_code, e.source_ref, e.detail,
                       to_char(e.raised_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS raised_at,
                       d.action, d.target, coalesce(d.status, 'NEW') AS status, coalesce(d.attempts, 0) AS attempts,
                       d.result, d.last_error, e.reason_type, e.reason_code, e.new_payment_type
                FROM workflow_events e LEFT JOIN workflow_dispatch d USING (event_id)
                WHERE e.account_number = ?) ev
            WHERE (?::VARCHAR IS NULL OR status = ?) ORDER BY event_id DESC LIMIT ?
            """, [account_number, status, status, limit])

    def history(self, account_number: str, flt) -> dict:
        """The payment history query (core/payment_history.HISTORY_SQL, DuckDB SQL) run by an in-memory DuckDB
        over this account's rows of each table it reads, fetched as Arrow; one-off payments from api_payments,
        fresher than one_off_payments (a payment awaiting its card shows with its status)."""
        from cmp_pipelines.core.db.transfer import adbc_connection
        from cmp_pipelines.core.payment_history import HISTORY_SQL, page

        duck = duckdb.connect()
        try:
            from cmp_pipelines.core.db.connection import SQL_MACROS

            duck.execute(SQL_MACROS)
            with adbc_connection(self.url) as pg, pg.cursor() as cur:
                for table, where in _HISTORY_TABLES.items():
                    cur.execute(f"SELECT * FROM {table} {where}", parameters=[account_number] if where else None)
                    duck.register(f"pg_{table}", cur.fetch_arrow_table())
                    duck.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM pg_{table}")
                pg.rollback()
            duck.register("api_one_off", one_off_history(self.account_payments(account_number), account_number))
            relation = (f"SELECT * FROM ({HISTORY_SQL}) h WHERE source <> 'ONE_OFF' "
                        "UNION ALL BY NAME SELECT * FROM api_one_off")
            return page(duck, relation, account_number, flt).as_dict()
        finally:
            duck.close()

    def on_main_store(self, work: Callable[[Any], Any]) -> Any:
        """`work(con)` in one PostgreSQL transaction; never busy: row locks, not a file lock, keep writers apart."""
        with self._connection() as con, con.transaction():
            return work(DuckLike(con))

    def apply_setup(self, kind: str, account_number: str, body: dict, *, now: datetime, cause: str,
                    client_id: str, channel: str, request_id: str) -> dict:
        """Apply a set-up request at once: the account row locked, the services' writes and the request's record
        (`api_setup_requests`, APPLIED) in one transaction; a SetupError rolls all of it back."""
        from cmp_pipelines.core.setup_requests import apply_request

        with self._connection() as con, con.transaction():
            con.execute("SELECT 1 FROM accounts WHERE account_number = %s FOR UPDATE", [account_number])
            result = apply_request(DuckLike(con), kind, account_number, body, now=now, cause=cause)
            con.execute(f"INSERT INTO {self.SETUP_REQUESTS} (request_id, client_id, channel, kind, account_number, "
                        "body, status, result, created_at, applied_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, 'APPLIED', %s, %s, %s)",
                        [request_id, client_id, channel, kind, account_number, json.dumps(body),
                         json.dumps(result, default=str), now, now])
        return result


# api_payments columns whose parameters are not text (INSERT ... SELECT types a bare parameter as text).
_CASTS = {"amount_minor": "BIGINT", "created_at": "TIMESTAMPTZ", "updated_at": "TIMESTAMPTZ",
          "completed_at": "TIMESTAMPTZ"}

# The tables HISTORY_SQL reads, each cut to one account ($1) where it can be.
_HISTORY_TABLES = {
    "nrp_records": "WHERE account_number = $1",
    "card_transactions": "WHERE account_number = $1",
    "card_refunds": "WHERE account_number = $1",
    "card_rejections": "WHERE account_number = $1",
    "dd_collections": "WHERE account_number = $1",
    "dd_collection_items": "WHERE collection_id IN (SELECT collection_id FROM dd_collections "
                           "WHERE account_number = $1)",
    "dd_returns": "WHERE account_number = $1",
    "one_off_payments": "WHERE account_number = $1",
    "batches": "WHERE batch_id IN (SELECT batch_id FROM nrp_records WHERE account_number = $1 "
               "UNION SELECT batch_id FROM card_rejections WHERE account_number = $1 "
               "UNION SELECT batch_id FROM dd_returns WHERE account_number = $1)",
    "config_rejection_codes": "",
}
