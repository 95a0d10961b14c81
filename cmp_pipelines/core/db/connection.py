"""Opening the DuckDB store. DuckDB admits one writing process, so busy files are retried, then named."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from cmp_pipelines.core.crashpoints import crashpoint
from cmp_pipelines.core.db.migrations import apply_migrations

SQL_MACROS = """
CREATE OR REPLACE TEMP MACRO minor_to_decimal(a) AS
    CASE WHEN a IS NULL THEN NULL
         ELSE (CASE WHEN a < 0 THEN '-' ELSE '' END) || (abs(a) // 100)::VARCHAR || '.'
              || lpad((abs(a) % 100)::VARCHAR, 2, '0') END;
CREATE OR REPLACE TEMP MACRO q(v) AS
    '''' || CASE WHEN length(v) > 40 THEN left(v, 40) || '...' ELSE v END || '''';
"""


# DuckDB checkpoints on the commit that finds its write-ahead log past `checkpoint_threshold` (default 16 MiB), so a
# flow's big UPDATE (100,000 card rejections: accounts, transactions) paid a checkpoint inside its commit, before its
# report (0.3 s of a 1.8 s apply). A writer's connection is closed when its unit of work ends (a run, a CLI command),
# and the close checkpoints: below this threshold, that is the only checkpoint, after the published files. Committed
# updates stay in memory until then (about half the log's size), and a crash before the close leaves the log, which
# every later opening replays until a writer closes (the recovery run): hence 256 MB, not more.
CHECKPOINT_THRESHOLD = "256MB"


class StoreBusyError(RuntimeError):
    pass


def _open(path: Path, read_only: bool, wait_seconds: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                if "lock" in str(exc).lower():
                    raise StoreBusyError(
                        f"the store {path} is held by another process (a pipeline run is writing); "
                        f"waited {wait_seconds:.0f} s - try again shortly"
                    ) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@contextmanager
def connect(path: Path, read_only: bool = False, wait_seconds: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection with the schema migrated (writers) and the SQL money macros defined."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_only and not path.exists():
        read_only = False
    con = _open(path, read_only, wait_seconds)
    try:
        if not read_only:
            apply_migrations(con)
            con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        con.execute(SQL_MACROS)
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    crashpoint("before commit")
    con.execute("COMMIT")
    crashpoint("after commit")


@contextmanager
def unordered_inserts(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Lets DuckDB insert a query's rows in parallel, in no particular order: about twice as fast on a million
    rows. Only for rows nobody reads back without an ORDER BY (never for history whose ties order events)."""
    con.execute("SET preserve_insertion_order = false")
    try:
        yield con
    finally:
        con.execute("RESET preserve_insertion_order")


@contextmanager
def ordered_reads(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Rows come back in the order of the files they are read from, whatever the session set: a record's
    position in its file is its row number."""
    was = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    if not was:
        con.execute("SET preserve_insertion_order = true")
    try:
        yield con
    finally:
        if not was:
            con.execute("SET preserve_insertion_order = false")


def sql_literal(value: str) -> str:
    """A string as a SQL literal, for the few places DuckDB takes no parameter (COPY targets, table functions)."""
    return "'" + value.replace("'", "''") + "'"
