"""The API's own store (`$CMP_DATA_DIR/api.sqlite`) and its read model (`api_read_model.sqlite`): the embedded
backend. With `CMP_DATABASE_URL` set the API uses core/db/api_postgres.py instead, behind the same `ApiBackend`
interface (`open_api_store` picks one); the payment records' SQL (`PaymentRecords`) is shared by both.

The API never opens `cmp.duckdb` on a request's hot path: DuckDB locks the whole file for one process,
so a pipeline run would stall every request. Payments, idempotency keys and queued set-up requests live in
this SQLite store (WAL: the Ledger Monitor run reads and marks rows while the API writes). Accounts,
balances and cards come from a read model the pipelines publish as a whole file, swapped atomically.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cmp_pipelines.core.db.sqlite import LocalSqlite
from cmp_pipelines.core.settings import paths, store

FINAL = ("SUCCEEDED", "DECLINED", "FAILED")

API_SCHEMA = """
CREATE TABLE payments (
    payment_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    account_number TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    method TEXT NOT NULL,
    reference TEXT,
    status TEXT NOT NULL,
    reason_code TEXT,
    reason TEXT,
    provider TEXT NOT NULL,
    provider_reference TEXT,
    hosted_session TEXT UNIQUE,
    redirect_url TEXT,
    last_four TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT,
    ledger_state TEXT NOT NULL DEFAULT 'WAITING',
    ledger_batch_id TEXT,
    UNIQUE (client_id, idempotency_key)
);
CREATE INDEX payments_account ON payments (account_number, created_at);
CREATE INDEX payments_ledger ON payments (ledger_state, status);
CREATE TABLE setup_requests (
    request_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    account_number TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    problem TEXT,
    created_at TEXT NOT NULL,
    applied_at TEXT
);
CREATE INDEX setup_requests_status ON setup_requests (status, created_at);
CREATE TABLE account_overlay (
    account_number TEXT PRIMARY KEY,
    payment_type TEXT NOT NULL,
    card_provider TEXT,
    card_token TEXT,
    last_four TEXT,
    expiry TEXT,
    applied_at TEXT NOT NULL
)
"""

READ_MODEL_SCHEMA = """
CREATE TABLE accounts (
    account_number TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    payment_type TEXT NOT NULL,
    balance_minor INTEGER NOT NULL,
    card_provider TEXT,
    card_token TEXT,
    last_four TEXT,
    expiry TEXT
);
CREATE TABLE meta (published_at TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE events (
    event_id INTEGER PRIMARY KEY,
    account_number TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_code TEXT NOT NULL,
    source_ref TEXT,
    detail TEXT,
    raised_at TEXT NOT NULL,
    action TEXT,
    target TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    result TEXT,
    last_error TEXT,
    reason_type TEXT,
    reason_code TEXT,
    new_payment_type TEXT
);
CREATE INDEX events_account ON events (account_number, event_id)
"""

EVENT_COLUMNS = ("event_id", "account_number", "event_type", "event_code", "source_ref", "detail", "raised_at",
                 "action", "target", "status", "attempts", "result", "last_error", "reason_type", "reason_code",
                 "new_payment_type")


def api_store_path() -> Path:
    return paths().data_dir / "api.sqlite"


def read_model_path() -> Path:
    return paths().data_dir / "api_read_model.sqlite"


class PaymentRecords:
    """API payments, idempotency keys and set-up requests: the SQL both backends run (`?` parameters), on their own
    table names. The store provides `one`, `query`, `write_one` and `write`."""

    PAYMENTS = "payments"
    SETUP_REQUESTS = "setup_requests"
    blocking = False  # True: each call waits on the network, so handlers run it off the event loop

    def payment(self, payment_id: str) -> Any:
        return self.one(f"SELECT * FROM {self.PAYMENTS} WHERE payment_id = ?", [payment_id])

    def payment_by_key(self, client_id: str, key: str) -> Any:
        return self.one(f"SELECT * FROM {self.PAYMENTS} WHERE client_id = ? AND idempotency_key = ?", [client_id, key])

    def payment_by_session(self, session_id: str) -> Any:
        return self.one(f"SELECT * FROM {self.PAYMENTS} WHERE hosted_session = ?", [session_id])

    def insert_payment(self, row: dict, columns: tuple[str, ...]) -> bool:
        """False when the (client, key) pair is taken: the UNIQUE key decides between concurrent duplicates."""
        return self.write_one(
            f"INSERT INTO {self.PAYMENTS} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            "ON CONFLICT (client_id, idempotency_key) DO NOTHING", [row[c] for c in columns]) == 1

    def insert_if_valid(self, row: dict, columns: tuple[str, ...]) -> dict | None:
        """The payment inserted only if its account takes it, in one statement: the account's card (`card_token`,
        `last_four`) when inserted, None otherwise (and always where the accounts live in another file)."""
        return None

    def set_hosted(self, payment_id: str, session_id: str, redirect_url: str) -> None:
        self.write_one(f"UPDATE {self.PAYMENTS} SET hosted_session = ?, redirect_url = ? WHERE payment_id = ?",
                       [session_id, redirect_url, payment_id])

    def action_required(self, payment_id: str, session_id: str, redirect_url: str, provider_reference: str) -> None:
        self.write_one(f"UPDATE {self.PAYMENTS} SET status = 'AWAITING_CARD', hosted_session = ?, redirect_url = ?, "
                       "provider_reference = ? WHERE payment_id = ? AND status = 'PENDING'",
                       [session_id, redirect_url, provider_reference, payment_id])

    def finish(self, payment_id: str, from_status: tuple[str, ...], status: str, now: str, *,
               reason_code: str | None, reason: str | None, provider_reference: str | None,
               last_four: str | None) -> bool:
        marks = ",".join("?" * len(from_status))
        return self.write_one(
            f"UPDATE {self.PAYMENTS} SET status = ?, reason_code = ?, reason = ?, "
            f"provider_reference = coalesce(?, provider_reference), last_four = coalesce(?, last_four), "
            f"updated_at = ?, completed_at = ?, ledger_state = 'DUE' "
            f"WHERE payment_id = ? AND status IN ({marks})",
            [status, reason_code, reason, provider_reference, last_four, now, now, payment_id, *from_status],
        ) == 1

    def awaiting_ledger(self, account_number: str) -> int:
        return self.one(f"SELECT coalesce(sum(amount_minor), 0) AS waiting FROM {self.PAYMENTS} "
                        "WHERE account_number = ? AND status = 'SUCCEEDED' AND ledger_state = 'DUE'",
                        [account_number])["waiting"]

    def account_payments(self, account_number: str) -> list:
        return self.query(
            "SELECT payment_id, created_at, completed_at, method, amount_minor, currency, status, reason_code, "
            f"reason, reference, ledger_batch_id FROM {self.PAYMENTS} WHERE account_number = ?", [account_number])

    def stale(self, pending_before: str, hosted_before: str) -> list:
        return self.query(
            f"SELECT payment_id, status FROM {self.PAYMENTS} WHERE (status = 'PENDING' AND updated_at <= ?) "
            "OR (status = 'AWAITING_CARD' AND created_at <= ?) ORDER BY created_at LIMIT 10000",
            [pending_before, hosted_before])

    def due_count(self) -> tuple[int, str | None]:
        row = self.one(f"SELECT count(*) AS due, max(updated_at) AS newest FROM {self.PAYMENTS} "
                       "WHERE ledger_state = 'DUE'")
        return row["due"], row["newest"]

    def setup_request(self, request_id: str) -> Any:
        return self.one(f"SELECT * FROM {self.SETUP_REQUESTS} WHERE request_id = ?", [request_id])

    def queued_for(self, account_number: str) -> int:
        return self.one(f"SELECT count(*) AS n FROM {self.SETUP_REQUESTS} WHERE account_number = ? "
                        "AND status = 'QUEUED'", [account_number])["n"]

    def queued(self) -> tuple[int, str | None]:
        """Set-up requests waiting for the next api_sync_job run (embedded store only), and the newest one's time."""
        row = self.one(f"SELECT count(*) AS n, max(created_at) AS newest FROM {self.SETUP_REQUESTS} "
                       "WHERE status = 'QUEUED'")
        return row["n"], row["newest"]

    def close(self) -> None:
        """Release what the store holds (PostgreSQL: its pool); the SQLite store keeps per-thread connections."""

    def queue_setup_request(self, request_id: str, client_id: str, channel: str, kind: str, account_number: str,
                            body: str, now: str) -> None:
        self.write_one(f"INSERT INTO {self.SETUP_REQUESTS} (request_id, client_id, channel, kind, account_number, "
                       "body, status, created_at) VALUES (?, ?, ?, ?, ?, ?, 'QUEUED', ?)",
                       [request_id, client_id, channel, kind, account_number, body, now])


def one_off_history(rows: list, account_number: str):
    """The API's own payments as payment-history rows (core/payment_history.COLUMNS): fresher than the main
    store's one_off_payments, which holds only what the Ledger Monitor has recorded."""
    from datetime import date

    import pyarrow as pa

    from cmp_pipelines.core.payment_history import COLUMNS

    schema = pa.schema([(c, pa.int64() if c == "amount_minor" else pa.date32() if c == "date" else pa.string())
                        for c in COLUMNS])
    return pa.Table.from_pylist([
        {"payment_ref": r["payment_id"], "account_number": account_number,
         "date": date.fromisoformat((r["completed_at"] or r["created_at"])[:10]), "source": "ONE_OFF",
         "method": r["method"], "kind": "PAYMENT", "amount_minor": r["amount_minor"], "currency": r["currency"],
         "status": r["status"], "reason_code": r["reason_code"], "reason": r["reason"], "invoice_number": None,
         "reference": r["reference"], "batch_id": r["ledger_batch_id"]} for r in rows], schema=schema)


class ApiBackend(Protocol):
    """What the API needs from where it keeps and reads its data: `EmbeddedBackend` (SQLite store, read model,
    cmp.duckdb for set-up) or `PostgresApiStore` (everything in the PostgreSQL store)."""

    store: PaymentRecords

    def account(self, account_number: str) -> dict | None: ...  # None: no such account

    def published_at(self) -> str | None: ...  # None: nothing to answer from yet (embedded: never published)

    def events(self, account_number: str, status: str | None, limit: int) -> list[dict]: ...

    def history(self, account_number: str, flt) -> dict: ...

    def on_main_store(self, work: Callable[[Any], Any]) -> Any: ...  # StoreBusyError when it cannot now

    def apply_setup(self, kind: str, account_number: str, body: dict, *, now, cause: str, client_id: str,
                    channel: str, request_id: str) -> dict | None: ...  # None: queue it (embedded store only)


class ApiStore(PaymentRecords, LocalSqlite):
    def __init__(self, path: Path | None = None, background_checkpoint: bool = False):
        super().__init__(path or api_store_path(), API_SCHEMA, background_checkpoint=background_checkpoint)

    close = LocalSqlite.close  # not PaymentRecords' no-op: the checkpoint thread stops with the store


def open_api_store(pool_size: int | None = None):
    """The store of the configured backend: PostgreSQL's tables when `CMP_DATABASE_URL` is set, else api.sqlite."""
    configured = store()
    if configured.backend == "postgres":
        from cmp_pipelines.core.db.api_postgres import PostgresApiStore

        return PostgresApiStore(configured.url, pool_size=pool_size)
    return ApiStore()


class ReadModel:
    """The published snapshot, reopened per thread whenever the publisher swaps the file in."""

    def __init__(self, path: Path | None = None):
        self.path = path or read_model_path()
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection | None:
        try:
            identity = os.stat(self.path).st_ino
        except FileNotFoundError:
            return None
        cached = getattr(self._local, "cached", None)
        if cached is None or cached[0] != identity:
            if cached is not None:
                cached[1].close()
            # immutable: a published file is never changed in place (a new one is renamed over it, a new inode),
            # so SQLite can skip the file locks and change checks it would make on every query
            con = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            con.row_factory = sqlite3.Row
            self._local.cached = cached = (identity, con)
        return cached[1]

    def account(self, account_number: str) -> sqlite3.Row | None:
        con = self._connection()
        if con is None:
            return None
        return con.execute("SELECT *, (SELECT published_at FROM meta) AS published_at FROM accounts "
                           "WHERE account_number = ?", [account_number]).fetchone()

    def events(self, account_number: str, status: str | None, limit: int) -> list[sqlite3.Row]:
        con = self._connection()
        if con is None:
            return []
        try:
            return con.execute("SELECT * FROM events WHERE account_number = ? AND (? IS NULL OR status = ?) "
                               "ORDER BY event_id DESC LIMIT ?", [account_number, status, status, limit]).fetchall()
        except sqlite3.OperationalError:  # a snapshot published before events were
            return []

    def published_at(self) -> str | None:
        con = self._connection()
        row = con.execute("SELECT published_at FROM meta").fetchone() if con else None
        return row[0] if row else None


def publish_read_model(rows: list[tuple], published_at: str, source: str, path: Path | None = None,
                       events: list[tuple] = ()) -> int:
    """Write the snapshot to a new file and swap it in: readers never wait and never see half a snapshot."""
    path = path or read_model_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.executescript(READ_MODEL_SCHEMA)
        con.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.execute("INSERT INTO meta VALUES (?, ?)", [published_at, source])
        con.executemany(f"INSERT INTO events VALUES ({', '.join('?' * len(EVENT_COLUMNS))})", events)
        con.commit()
    finally:
        con.close()
    os.replace(tmp, path)
    return len(rows)
