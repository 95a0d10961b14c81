"""An order's history keeps its insertion order where transitions share a timestamp (migration 0024): a column
`history_seq` drawn from a sequence, not rowid/ctid, which VACUUM FULL, CLUSTER and pg_repack rewrite; rows of a
store migrated before 0024 are numbered in the order they were inserted, on both stores."""

from __future__ import annotations

import duckdb
import psycopg
import pytest

from cmp_pipelines.core.db import migrate as migrate_module
from cmp_pipelines.core.db import migrations as migrations_module
from cmp_pipelines.core.db.migrate import apply_postgres
from cmp_pipelines.core.db.migrations import MIGRATIONS, apply_migrations
from cmp_pipelines.core.db.mirror import scratch_duckdb
from cmp_pipelines.core.db.pg_duck import pg_duck
from cmp_pipelines.defs.hardware_orders.orders import Delivery, create_order, move_order, order_view
from tests.support.platform import NOW

LIFECYCLE = ["NEW", "AWAITING_GENERATION", "AWAITING_DISPATCH", "COMPLETE"]  # not alphabetical, nor by cause
BEFORE_0024 = [m for m in MIGRATIONS if m[0] < 24]
# rows of three orders, interleaved, all at one instant: insertion order is the only order
OLD_HISTORY = """
    INSERT INTO hw_order_history (order_id, old_status, new_status, cause, changed_at)
    SELECT 'HO' || (i % 3), NULL, ['NEW', 'AWAITING_GENERATION', 'AWAITING_DISPATCH', 'COMPLETE'][1 + (i // 3) % 4],
           'row ' || i, TIMESTAMPTZ '2026-12-01 10:00:00+00'
    FROM range({n}) r(i) ORDER BY i
"""


def _orders_at_one_instant(con) -> list[str]:
    """Three orders taken through their whole lifecycle at the same `now`, their transitions interleaved."""
    con.execute("INSERT INTO accounts (account_number, name, currency) VALUES ('ACC00000001', 'A', 'GBP')")
    orders = [create_order(con, "ACC00000001", billing="IMMEDIATE", fraud_check=False, enrolment=False,
                           delivery=Delivery(), now=NOW)["order_id"] for _ in range(3)]
    for new_status in LIFECYCLE[1:]:
        for order_id in orders:
            move_order(con, order_id, new_status, cause="z-first" if new_status == "COMPLETE" else "agent", now=NOW)
    return orders


def test_duckdb_history_ties_in_insertion_order():
    with scratch_duckdb() as con:  # the store's schema and macros, in memory
        for order_id in _orders_at_one_instant(con):
            assert [h["to"] for h in order_view(con, order_id)["history"]] == LIFECYCLE


def test_duckdb_store_with_history_before_0024_is_numbered_in_insertion_order(tmp_path, monkeypatch):
    """150,000 rows (two of DuckDB's row groups) written before 0024: numbered 1.. in rowid order, and the next row
    written after the migration is numbered after them."""
    con = duckdb.connect(str(tmp_path / "cmp.duckdb"))
    monkeypatch.setattr(migrations_module, "MIGRATIONS", BEFORE_0024)
    assert 24 not in apply_migrations(con)
    con.execute(OLD_HISTORY.format(n=150_000))
    monkeypatch.setattr(migrations_module, "MIGRATIONS", MIGRATIONS)
    assert apply_migrations(con) == [m[0] for m in MIGRATIONS if m[0] >= 24]
    assert con.execute("SELECT count(*), count(*) FILTER (history_seq = split_part(cause, ' ', 2)::BIGINT + 1) "
                       "FROM hw_order_history").fetchone() == (150_000, 150_000)
    con.execute("INSERT INTO hw_order_history (order_id, new_status, cause, changed_at) "
                "VALUES ('HO0', 'ERROR', 'after', now())")
    assert con.execute("SELECT history_seq FROM hw_order_history WHERE cause = 'after'").fetchone() == (150_001,)
    assert con.execute("SELECT is_nullable FROM information_schema.columns WHERE table_name = 'hw_order_history' "
                       "AND column_name = 'history_seq'").fetchone() == ("NO",)


@pytest.mark.postgres
def test_postgres_history_order_survives_vacuum_full_and_cluster(pg_store):
    """The same ties on PostgreSQL; the table then rewritten in another physical order (CLUSTER on an index by
    status, then VACUUM FULL, as pg_repack would): ctid no longer follows insertion, the history still does."""
    with pg_duck(pg_store) as con:
        orders = _orders_at_one_instant(con)
    with psycopg.connect(pg_store, autocommit=True) as pg:
        pg.execute("CREATE INDEX by_status ON hw_order_history (order_id, new_status)")
        pg.execute("CLUSTER hw_order_history USING by_status")
        pg.execute("VACUUM FULL hw_order_history")
        by_ctid = [s for (s,) in pg.execute("SELECT new_status FROM hw_order_history WHERE order_id = %s "
                                            "ORDER BY changed_at, ctid", [orders[0]]).fetchall()]
        assert by_ctid != LIFECYCLE  # what ordering by ctid would now show
    with pg_duck(pg_store) as con:
        for order_id in orders:
            assert [h["to"] for h in order_view(con, order_id)["history"]] == LIFECYCLE


@pytest.mark.postgres
def test_postgres_store_with_history_before_0024_keeps_the_order_it_showed(pg_url, monkeypatch):
    """20,000 rows of varying width written before 0024 at three instants: numbered in the order the history showed
    until then (changed_at, then ctid; PostgreSQL kept no truer insertion order), and the next row after them."""
    every = migrate_module.postgres_migrations()
    monkeypatch.setattr(migrate_module, "postgres_migrations", lambda: [m for m in every if m[0] < 24])
    shown = "SELECT cause FROM hw_order_history ORDER BY changed_at, {}"
    with psycopg.connect(pg_url, autocommit=True) as pg:
        assert 24 not in apply_postgres(pg)
        pg.execute("""
            INSERT INTO hw_order_history (order_id, old_status, new_status, cause, changed_at)
            SELECT 'HO' || (i % 3), NULL, 'NEW', 'row ' || i || repeat('.', (i * 7) % 90),
                   TIMESTAMPTZ '2026-12-01 10:00:00+00' + ((i / 5000) % 3) * INTERVAL '1 second'
            FROM generate_series(0, 19999) i ORDER BY i
        """)
        before = pg.execute(shown.format("ctid")).fetchall()
        monkeypatch.setattr(migrate_module, "postgres_migrations", lambda: every)
        assert apply_postgres(pg) == [m[0] for m in MIGRATIONS if m[0] >= 24]
        assert len(before) == 20_000
        # one numbering over the whole table, in the order shown before
        assert pg.execute("SELECT cause FROM hw_order_history ORDER BY history_seq").fetchall() == before
        assert pg.execute(shown.format("history_seq")).fetchall() == before
        assert pg.execute("SELECT min(history_seq), max(history_seq), count(DISTINCT history_seq) "
                          "FROM hw_order_history").fetchone() == (1, 20_000, 20_000)
        pg.execute("INSERT INTO hw_order_history (order_id, new_status, cause, changed_at) "
                   "VALUES ('HO0', 'ERROR', 'after', now())")
        assert pg.execute("SELECT history_seq FROM hw_order_history WHERE cause = 'after'").fetchone() == (20_001,)
