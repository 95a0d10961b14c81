"""Small SQLite stores in WAL mode, for what must stay writable while a pipeline run holds the DuckDB file.

DuckDB admits one process per database file (not even readers beside a writer); SQLite in WAL mode lets
many processes read while one writes, and a write lock lasts microseconds. The API's own store, its read
model and the sandbox provider's state live here. One connection per thread; writes in one process are
serialised by a lock (no busy-wait between our own threads), other processes wait on `busy_timeout`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LocalSqlite:
    def __init__(self, path: Path, schema: str = "", version: int = 1, background_checkpoint: bool = False):
        """`background_checkpoint`: a server's store copies its WAL into the database from a thread of its
        own each second, so no request waits on a checkpoint's fsync (SQLite would run it inside a commit)."""
        self.path = Path(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._background_checkpoint = background_checkpoint
        if background_checkpoint:
            threading.Thread(target=self._checkpoint_forever, name=f"checkpoint {self.path.name}",
                             daemon=True).start()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if schema:
            self._migrate(schema, version)

    def _migrate(self, schema: str, version: int) -> None:
        con = self.connection()
        if con.execute("PRAGMA user_version").fetchone()[0] >= version:
            return  # the usual case: no write lock taken just to open the store
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                current = con.execute("PRAGMA user_version").fetchone()[0]
                if current < version:
                    for statement in [s for s in schema.split(";") if s.strip()]:
                        con.execute(statement)
                    con.execute(f"PRAGMA user_version = {int(version)}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=10000")
            if self._background_checkpoint:
                con.execute("PRAGMA wal_autocheckpoint=0")
            con.row_factory = sqlite3.Row
            self._local.con = con
        return con

    def _checkpoint_forever(self, every_seconds: float = 1.0) -> None:
        while True:
            time.sleep(every_seconds)
            with contextlib.suppress(sqlite3.Error):  # busy or gone: the next round tries again
                self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding SQLite's write lock: read-then-write inside it is atomic across processes."""
        con = self.connection()
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def write_one(self, sql: str, params: tuple | list | dict = ()) -> int:
        """One statement in its own implicit transaction (one call into SQLite instead of three); rows changed."""
        with self._write_lock:
            return self.connection().execute(sql, params).rowcount

    def query(self, sql: str, params: tuple | list | dict = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | list | dict = ()) -> sqlite3.Row | None:
        return self.connection().execute(sql, params).fetchone()
