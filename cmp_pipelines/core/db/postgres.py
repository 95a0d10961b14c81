"""Opening the PostgreSQL store (psycopg 3). Errors name the setting and the server, never the password: a URL
with credentials must not end up in a log, a run's metadata or an operator's terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import conninfo

from cmp_pipelines.core.crashpoints import crashpoint
from cmp_pipelines.core.settings import DATABASE_URL_SETTING, redact_url, store


class PostgresStoreError(RuntimeError):
    pass


def _scrub(message: str, url: str) -> str:
    """psycopg's own message, without the password should libpq ever echo it."""
    try:
        password = conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    text = " ".join(str(message).split())
    return text.replace(str(password), "***") if password else text


def database_url(url: str | None = None) -> str:
    """`url`, else `CMP_DATABASE_URL`, checked for form before any connection is tried."""
    if url is None:
        configured = store()
        if configured.backend != "postgres":
            raise PostgresStoreError(f"{DATABASE_URL_SETTING} is not set: the store is the embedded DuckDB file")
        url = configured.url or ""
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise PostgresStoreError(
            f"{DATABASE_URL_SETTING} is not a valid PostgreSQL URL ({redact_url(url)}): {_scrub(str(exc), url)}"
        ) from None
    return url


def connect(url: str | None = None, *, autocommit: bool = True, connect_timeout: int = 10) -> psycopg.Connection:
    """A connection to the store (or to `url`); the caller closes it (`with connect(...) as con:`). Autocommit by
    default, as psycopg advises: writes then go in explicit `transaction` blocks, each a real BEGIN ... COMMIT
    rather than a savepoint inside an implicit transaction left open."""
    url = database_url(url)
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=connect_timeout,
                               application_name="cmp-pipelines")
    except psycopg.OperationalError as exc:
        raise PostgresStoreError(
            f"cannot reach the PostgreSQL store named by {DATABASE_URL_SETTING} ({redact_url(url)}): "
            f"{_scrub(str(exc), url)}"
        ) from None
    except psycopg.ProgrammingError as exc:
        raise PostgresStoreError(
            f"{DATABASE_URL_SETTING} is not a valid PostgreSQL URL ({redact_url(url)}): {_scrub(str(exc), url)}"
        ) from None


@contextmanager
def transaction(con: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """One PostgreSQL transaction with the same crash points as the DuckDB store's, so the kill -9 tests can stop
    a writer just before its commit and prove nothing of it is left."""
    with con.transaction():
        yield con
        crashpoint("before commit")
    crashpoint("after commit")
