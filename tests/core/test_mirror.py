"""core/db/mirror.py against a real PostgreSQL: what a run on PostgreSQL pulls into its scratch DuckDB and pushes
back (issue 19, phase 2)."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from cmp_pipelines.core.db.mirror import advisory_key, mirrored

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _batch(con, batch_id: str, status: str) -> None:
    con.execute("INSERT INTO batches (batch_id, kind, feed, status, created_at) VALUES (?, 'NRP_LOAD', 'nrp', ?, ?)",
                [batch_id, status, NOW])


def test_pull_replaces_by_key_and_push_writes_in_one_transaction(pg_store):
    with psycopg.connect(pg_store) as pg:
        pg.execute("INSERT INTO batches (batch_id, kind, feed, status, created_at) VALUES "
                   "('NRPL-a', 'NRP_LOAD', 'nrp', 'POSTED', %s), ('NRPL-b', 'NRP_LOAD', 'nrp', 'LOADED', %s)",
                   [NOW, NOW])
    with mirrored(pg_store) as mirror:
        _batch(mirror.con, "NRPL-a", "STALE")
        assert mirror.pull("batches", "batch_id = $1", ["NRPL-a"], key=["batch_id"]) == 1
        assert mirror.con.execute("SELECT batch_id, status FROM batches").fetchall() == [("NRPL-a", "POSTED")]

        mirror.con.execute("UPDATE batches SET status = 'ACKNOWLEDGED'")
        _batch(mirror.con, "NRPL-c", "LOADED")
        with mirror.transaction():
            mirror.upsert("batches", ["batch_id"], "batch_id = $b", {"b": "NRPL-a"})
            mirror.push("batches", "batch_id = $b", {"b": "NRPL-c"})
            with psycopg.connect(pg_store) as other:  # not visible before the commit
                assert other.execute("SELECT count(*) FROM batches WHERE batch_id = 'NRPL-c'").fetchone() == (0,)
    with psycopg.connect(pg_store) as pg:
        assert pg.execute("SELECT batch_id, status FROM batches ORDER BY 1").fetchall() == [
            ("NRPL-a", "ACKNOWLEDGED"), ("NRPL-b", "LOADED"), ("NRPL-c", "LOADED")]


def test_a_duplicate_key_fails_the_whole_push_and_the_next_transaction_starts_clean(pg_store):
    with psycopg.connect(pg_store) as pg:
        pg.execute("INSERT INTO batches (batch_id, kind, feed, status, created_at) "
                   "VALUES ('NRPL-a', 'NRP_LOAD', 'nrp', 'LOADED', %s)", [NOW])
    with mirrored(pg_store) as mirror:
        _batch(mirror.con, "NRPL-new", "LOADED")
        _batch(mirror.con, "NRPL-a", "LOADED")
        with pytest.raises(Exception, match="duplicate key"), mirror.transaction():
            mirror.push("batches", "batch_id = $b", {"b": "NRPL-new"})
            mirror.push("batches", "batch_id = $b", {"b": "NRPL-a"})  # a batch is written once: refused
        with mirror.transaction():  # the connection is usable again: the failed transaction was rolled back
            mirror.push("batches", "batch_id = $b", {"b": "NRPL-new"})
    with psycopg.connect(pg_store) as pg:
        assert pg.execute("SELECT batch_id FROM batches ORDER BY 1").fetchall() == [("NRPL-a",), ("NRPL-new",)]


def test_advisory_keys_are_stable_signed_64_bit_and_distinct():
    keys = {advisory_key(f"nrp:content:{i}") for i in range(1000)}
    assert len(keys) == 1000 and all(-(2 ** 63) <= k < 2 ** 63 for k in keys)
    assert advisory_key("nrp:window:PAYPOINT") == advisory_key("nrp:window:PAYPOINT")
