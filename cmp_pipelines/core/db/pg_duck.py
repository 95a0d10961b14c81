"""The daemon's service work (delivery, the workflow dispatcher and its outbox, probes, recovery clean-up) on the
PostgreSQL store, through the same core functions as on the embedded store.

Those functions handle a few rows at a time with plain SQL both dialects accept; what differs is only the
driver: DuckDB's `?` and `$name` placeholders against psycopg's `%s` and `%(name)s`, and DuckDB answering an
INSERT/UPDATE/DELETE with a one-row count where psycopg gives `rowcount`. `PgDuck` bridges exactly that and
nothing else, so a DuckDB-only construct fails loudly on PostgreSQL instead of being guessed at. Set-based work
on many rows stays on the mirror pattern (core/db/mirror.py).

The connection is in autocommit, as the embedded store's is: each statement commits, and the services'
`transaction(con)` blocks (BEGIN TRANSACTION ... COMMIT) are real PostgreSQL transactions. The session runs in
UTC, so timestamps read back as the embedded store gives them. Where two processes must not do the same work
at once (two dispatchers), `exclusive` holds a session advisory lock for the whole pass.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cmp_pipelines.core.db.mirror import advisory_key

_NAMED = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


@functools.lru_cache(maxsize=1024)
def pg_placeholders(sql: str) -> str:
    """DuckDB's `?` and `$name` placeholders as psycopg's `%s` and `%(name)s` (a literal `%` doubled). The SQL handed
    here has no `?`, `$` or `%` of its own inside string literals."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")).replace("?", "%s")


class _Count:
    """What DuckDB answers to a write without RETURNING: one row, the number of rows changed."""

    description = None

    def __init__(self, count: int):
        self._rows = [(max(count, 0),)]

    def fetchone(self):
        return self._rows[0]

    def fetchall(self):
        return list(self._rows)


class PgDuck:
    """A psycopg connection (autocommit) answering `execute` and `executemany` as a DuckDB connection does."""

    dialect = "postgres"

    def __init__(self, con):
        self.pg = con

    def execute(self, sql: str, params: Sequence | dict | None = None):
        cur = self.pg.cursor()
        cur.execute(pg_placeholders(sql), _params(params))
        return cur if cur.description is not None else _Count(cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.pg.cursor() as cur:
            cur.executemany(pg_placeholders(sql), [list(r) for r in rows])

    @contextmanager
    def exclusive(self, name: str) -> Iterator[PgDuck]:
        """A session advisory lock on `name` held for the block: a second holder waits until the first is done."""
        key = advisory_key(name)
        self.pg.execute("SELECT pg_advisory_lock(%s)", [key])
        try:
            yield self
        finally:
            self.pg.execute("SELECT pg_advisory_unlock(%s)", [key])

    def close(self) -> None:
        self.pg.close()


def _params(params):
    if params is None:
        return None
    return dict(params) if isinstance(params, dict) else list(params)


def dialect(con) -> str:
    """'postgres' for a `PgDuck`, else 'duckdb': for the few queries that must be worded per dialect."""
    return getattr(con, "dialect", "duckdb")


def open_pg_duck(url: str | None = None) -> PgDuck:
    """A `PgDuck` on the store (or `url`); the caller closes it. Errors name the setting, never the password."""
    from cmp_pipelines.core.db.postgres import connect

    con = connect(url)
    try:
        con.execute("SET TIME ZONE 'UTC'")
    except BaseException:
        con.close()
        raise
    return PgDuck(con)


@contextmanager
def pg_duck(url: str | None = None) -> Iterator[PgDuck]:
    """`open_pg_duck` for a block, closed at its end."""
    con = open_pg_duck(url)
    try:
        yield con
    finally:
        con.close()
