"""Small SQLite stores in WAL mode, for what must stay writable while a pipeline run holds the DuckDB file.

DuckDB admits one process per database file (not even readers beside a writer); SQLite in WAL mode lets
many processes read while one writes, and a write lock lasts microseconds. The API's own store, its read
model and the sandbox provider's state live here. One connection per thread; our writers, in any process,
queue on a lock file beside the store (no busy-wait); anything else writing waits on `busy_timeout`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LocalSqlite:
    def __init__(self, path: Path, schema: str = "", version: int = 1, background_checkpoint: bool = False,
                 checkpoint_every: float = 1.0):
        """`background_checkpoint`: a server's store copies its WAL into the database from a thread of its
        own every `checkpoint_every` seconds, so no request waits on a checkpoint's fsync (SQLite would run it
        inside a commit)."""
        self.path = Path(path)
        self._local = threading.local()
        self._thread_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._background_checkpoint = background_checkpoint
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if background_checkpoint:
            self._checkpointer = threading.Thread(target=self._checkpoint_forever, args=(checkpoint_every,),
                                                  name=f"checkpoint {self.path.name}", daemon=True)
            self._checkpointer.start()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if schema:
            self._migrate(schema, version)

    def _migrate(self, schema: str, version: int) -> None:
        con = self.connection()
        if con.execute("PRAGMA user_version").fetchone()[0] >= version:
            return  # the usual case: no write lock taken just to open the store
        with self._write_lock():
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
            con.execute("PRAGMA page_size=1024")
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=10000")
            if self._background_checkpoint:
                con.execute("PRAGMA wal_autocheckpoint=0")
                con.execute(f"PRAGMA journal_size_limit={64 << 20}")  # a burst's WAL is cut back on restart
            con.row_factory = sqlite3.Row
            self._local.con = con
        return con

    def _checkpoint_forever(self, every_seconds: float = 1.0) -> None:
        """A PASSIVE checkpoint copies the second's frames without blocking anyone, but under steady writes it never
        lets the log restart: the WAL grew by ~57 MB a second at 1,500 payments/s (1 GB in 20 s) and every write
        went to a newly allocated block, stalling behind the checkpoint's fsync. So a RESTART follows, for the few
        frames written meanwhile: it holds writers for a millisecond or two and, with no busy wait on this thread's
        connection, gives up at once when a reader (a Ledger Monitor run) still uses the log."""
        while not self._stop.wait(every_seconds):
            with contextlib.suppress(sqlite3.Error):  # busy or gone: the next round tries again
                con = self.connection()
                con.execute("PRAGMA busy_timeout=0")
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                with self._write_lock():  # our writers queue behind it on the lock file, not in SQLite's busy loop
                    con.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()

    def close(self) -> None:
        """Stop the checkpoint thread (a server shutting down; a test that must not leave a thread inside SQLite
        when its process forks) and close this thread's connection; other threads' close with them."""
        self._stop.set()
        if self._checkpointer is not None and self._checkpointer is not threading.current_thread():
            self._checkpointer.join(timeout=10)
        con = getattr(self._local, "con", None)
        if con is not None:
            self._local.con = None
            con.close()

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Writers queue on a lock file (threads of this process on a mutex first) before SQLite's own lock.

        SQLite's busy handler polls with sleeps of 1, 2, 5, 10 ms and more, so two API worker processes meeting
        on its write lock added tens of milliseconds to the slowest requests; a waiter on `flock` is woken the
        moment the lock is released."""
        with self._thread_lock:
            if self._lock_fd is None:
                self._lock_fd = os.open(f"{self.path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding SQLite's write lock: read-then-write inside it is atomic across processes."""
        con = self.connection()
        with self._write_lock():
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def write_one(self, sql: str, params: tuple | list | dict = ()) -> int:
        """One statement in its own implicit transaction (one call into SQLite instead of three); rows changed."""
        with self._write_lock():
            return self.connection().execute(sql, params).rowcount

    def query(self, sql: str, params: tuple | list | dict = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | list | dict = ()) -> sqlite3.Row | None:
        return self.connection().execute(sql, params).fetchone()
