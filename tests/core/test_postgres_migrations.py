"""One migration sequence for both stores: every migration applies on the real PostgreSQL server and leaves the
same tables, columns, types, nullability, keys and sequences as on DuckDB."""

from __future__ import annotations

import duckdb
import psycopg
import pytest

from cmp_pipelines.core.db.migrate import migrate, postgres_migrations, status
from cmp_pipelines.core.db.migrations import MIGRATIONS
from cmp_pipelines.core.settings import Store

pytestmark = pytest.mark.postgres

ALL = [version for version, _, _ in MIGRATIONS]

# information_schema spells PostgreSQL's types in full; DuckDB's as declared
_PG_TYPES = {"character varying": "VARCHAR", "bigint": "BIGINT", "integer": "INTEGER", "boolean": "BOOLEAN",
             "date": "DATE", "timestamp with time zone": "TIMESTAMP WITH TIME ZONE"}
_PG_ARRAYS = {"_varchar": "VARCHAR[]"}


def duckdb_schema(path) -> dict:
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = {(t, c, d, n == "YES") for t, c, d, n in con.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'main'").fetchall()}
        keys = {(t, k, tuple(cols)) for t, k, cols in con.execute(
            "SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints() "
            "WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE') AND schema_name = 'main'").fetchall()}
        sequences = {s for (s,) in con.execute(
            "SELECT sequence_name FROM duckdb_sequences() WHERE schema_name = 'main'").fetchall()}
    finally:
        con.close()
    return {"columns": columns, "keys": keys, "sequences": sequences}


def postgres_schema(url) -> dict:
    with psycopg.connect(url) as con:
        columns = {(t, c, _PG_ARRAYS[u] if d == "ARRAY" else _PG_TYPES[d], n == "YES")
                   for t, c, d, u, n in con.execute(
            "SELECT table_name, column_name, data_type, udt_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public'").fetchall()}
        keys = {(t, {"p": "PRIMARY KEY", "u": "UNIQUE"}[k], tuple(cols)) for t, k, cols in con.execute(
            """SELECT c.conrelid::regclass::text, c.contype,
                      array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i)
               FROM pg_constraint c JOIN pg_namespace s ON s.oid = c.connamespace
               WHERE s.nspname = 'public' AND c.contype IN ('p', 'u')""").fetchall()}
        sequences = {s for (s,) in con.execute(
            "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = 'public'").fetchall()}
    return {"columns": columns, "keys": keys, "sequences": sequences}


def test_every_migration_applies_on_postgres_once_in_order(pg_url):
    assert migrate(pg_url) == ALL
    assert migrate(pg_url) == []
    with psycopg.connect(pg_url) as con:
        assert [v for (v,) in con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()] == ALL


def test_both_stores_have_the_same_tables_columns_types_and_keys(pg_url, tmp_path):
    migrate(pg_url)
    migrate(Store("duckdb", path=tmp_path / "cmp.duckdb"))
    on_duckdb, on_postgres = duckdb_schema(tmp_path / "cmp.duckdb"), postgres_schema(pg_url)
    assert len(on_duckdb["columns"]) > 400  # every table of the sequence, not an empty comparison
    assert on_postgres["columns"] - on_duckdb["columns"] == set()
    assert on_duckdb["columns"] - on_postgres["columns"] == set()
    assert on_postgres["keys"] == on_duckdb["keys"]
    assert ("ledger_postings", "UNIQUE", ("idempotency_key",)) in on_postgres["keys"]
    assert on_postgres["sequences"] == on_duckdb["sequences"] == {
        "ledger_posting_seq", "workflow_event_seq", "hw_order_seq", "hw_generation_seq", "delivery_register_seq",
        "hw_order_history_seq"}


def test_the_ledger_key_refuses_a_second_posting_on_postgres(pg_store):
    with psycopg.connect(pg_store) as con:
        row = ("nrp:abc:1:PAYMENT", "ACC1", "PAYMENT", -1234, "GBP", "NRPP-abc")
        insert = ("INSERT INTO ledger_postings (idempotency_key, account_number, kind, amount_minor, currency, "
                  "batch_id) VALUES (%s, %s, %s, %s, %s, %s)")
        con.execute(insert, row)
        with pytest.raises(psycopg.errors.UniqueViolation):
            con.execute(insert, row)


def test_a_migration_that_fails_on_postgres_leaves_nothing_and_names_itself(pg_url, monkeypatch):
    from cmp_pipelines.core.db import migrate as module

    broken = [*postgres_migrations(), (99, "broken", "CREATE TABLE half_done (x INT); SELECT no_such_column;")]
    monkeypatch.setattr(module, "postgres_migrations", lambda: broken)
    with pytest.raises(psycopg.errors.UndefinedColumn):
        migrate(pg_url)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == ALL[-1]


def test_status_lists_applied_and_pending_on_both_stores(pg_url, tmp_path):
    duck = Store("duckdb", path=tmp_path / "cmp.duckdb")
    for target in (pg_url, duck):
        assert [(s.version, s.status) for s in status(target)] == [(v, "pending") for v in ALL]
        migrate(target)
        states = status(target)
        assert [(s.version, s.status) for s in states] == [(v, "applied") for v in ALL]
        assert all(s.applied_at is not None for s in states)
    assert not (tmp_path / "other.duckdb").exists()
    assert status(Store("duckdb", path=tmp_path / "other.duckdb"))[0].status == "pending"
    assert not (tmp_path / "other.duckdb").exists()  # status reads, never creates


def test_a_postgres_twin_replaces_its_file_on_postgres_only(tmp_path, monkeypatch, pg_url):
    from cmp_pipelines.core.db import migrate as module

    (tmp_path / "0001_core_reference_tables.postgres.sql").write_text(
        "-- core reference tables\nCREATE TABLE twin_marker (x INT);")
    (tmp_path / "0001_core_reference_tables.sql").write_text("-- core reference tables\n")
    monkeypatch.setattr(module, "FOLDER", tmp_path)
    monkeypatch.setattr(module, "MIGRATIONS", [MIGRATIONS[0]])
    assert [(v, sql) for v, _, sql in postgres_migrations()] == [
        (1, "-- core reference tables\nCREATE TABLE twin_marker (x INT);")]
    assert [s.postgres_twin for s in status(pg_url)] == [True]
    (tmp_path / "0099_orphan.postgres.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match=r"^migration twin 0099_orphan.postgres.sql has no NNNN_name.sql"):
        postgres_migrations()
