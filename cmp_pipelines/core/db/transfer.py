"""Data crossing from DuckDB to PostgreSQL as Arrow, through an official driver.

Two drivers were measured on 1,000,000 ledger postings (benchmarks/pg_copy.py): the Arrow project's ADBC
PostgreSQL driver (`adbc_ingest`: Arrow batches encoded to binary COPY in C) and psycopg 3's binary COPY
(`write_row`, each row turned into Python objects first). ADBC is the one used (figures in benchmarks/README.md:
27 s against 108 s on 1M postings); psycopg's path stays here so the benchmark measures the code it would run.

Binary COPY takes each column in exactly the target's type. Both stores are built by the same migrations, so
DuckDB's Arrow types (BIGINT int64, INTEGER int32, VARCHAR string, TIMESTAMPTZ timestamp[us, tz]) match.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa

BATCH_ROWS = 122_880  # DuckDB's vector-aligned row group size: batches of a few MB each


def arrow_batches(con: duckdb.DuckDBPyConnection, sql: str, params: dict | list | None = None
                  ) -> pa.RecordBatchReader:
    """A query's rows streamed as Arrow record batches: never the whole result in memory at once."""
    relation = con.sql(sql, params=params) if params else con.sql(sql)
    return relation.to_arrow_reader(BATCH_ROWS)


@contextmanager
def adbc_connection(url: str) -> Iterator:
    """An ADBC connection, not autocommit: everything done on it is one PostgreSQL transaction that the caller
    commits (`con.commit()`) or that is rolled back when it is closed uncommitted."""
    import adbc_driver_postgresql.dbapi as adbc

    from cmp_pipelines.core.db.postgres import PostgresStoreError, _scrub, database_url
    from cmp_pipelines.core.settings import DATABASE_URL_SETTING, redact_url

    url = database_url(url)
    try:
        con = adbc.connect(url)
    except Exception as exc:  # the driver manager's own error classes; named, never with the password
        raise PostgresStoreError(
            f"cannot reach the PostgreSQL store named by {DATABASE_URL_SETTING} ({redact_url(url)}): "
            f"{_scrub(str(exc), url)}"
        ) from None
    try:
        yield con
    finally:
        con.close()


def ingest_adbc(cursor, table: str, batches: pa.RecordBatchReader | pa.Table, *, temporary: bool = False) -> int:
    """Append the batches to the existing `table` (a temporary one with `temporary`) by binary COPY; returns the
    rows written."""
    written = cursor.adbc_ingest(table, batches, mode="append", temporary=temporary)
    return int(written) if written is not None and written >= 0 else -1


def ingest_psycopg(con, table: str, batches: pa.RecordBatchReader | pa.Table) -> int:
    """The same append by psycopg 3's binary COPY: each batch's rows handed to `write_row` (psycopg's C
    adapters encode them). Kept for the measurement, not used by the product."""
    names = [f.name for f in batches.schema]
    oids = dict(con.execute(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped", [table]).fetchall())
    columns = ", ".join(f'"{n}"' for n in names)
    written = 0
    reader = batches.to_reader() if isinstance(batches, pa.Table) else batches
    with con.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([oids[n] for n in names])
        for batch in reader:
            for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                copy.write_row(row)
            written += batch.num_rows
    return written
