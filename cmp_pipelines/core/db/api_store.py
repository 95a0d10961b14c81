"""The API's own store (`$CMP_DATA_DIR/api.sqlite`) and its read model (`api_read_model.sqlite`).

The API never opens `cmp.duckdb` on a request's hot path: DuckDB locks the whole file for one process,
so a pipeline run would stall every request. Payments, idempotency keys and queued set-up requests live in
this SQLite store (WAL: the Ledger Monitor run reads and marks rows while the API writes). Accounts,
balances and cards come from a read model the pipelines publish as a whole file, swapped atomically.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from cmp_pipelines.core.db.sqlite import LocalSqlite
from cmp_pipelines.core.settings import paths

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


class ApiStore(LocalSqlite):
    def __init__(self, path: Path | None = None, background_checkpoint: bool = False):
        super().__init__(path or api_store_path(), API_SCHEMA, background_checkpoint=background_checkpoint)


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
