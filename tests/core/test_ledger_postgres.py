"""The one ledger writer posting on PostgreSQL (core/ledger.py `post_to_postgres`), against the real server: the
same postings as on DuckDB, idempotent, exact under four concurrent writers, and nothing left by a killed one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import psycopg
import pytest

from cmp_pipelines.core.db.migrate import migrate
from cmp_pipelines.core.db.transfer import adbc_connection
from cmp_pipelines.core.ledger import commit_postgres, lit, post, post_to_postgres
from cmp_pipelines.core.settings import Store

pytestmark = pytest.mark.postgres

PROJECT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
COLUMNS = ("posting_id, idempotency_key, account_number, invoice_number, kind, amount_minor, currency, batch_id, "
           "source_ref, effective_at, posted_at")
STAGED = """
    SELECT * FROM (VALUES
        ('3', 'ACC1', 'INV1', 'PAYMENT', -1234, 'GBP', 'PP 3', TIMESTAMPTZ '2026-11-20 14:03:00+00'),
        ('1', 'ACC2', NULL, 'PAYMENT', -1, 'GBP', NULL, NULL),
        ('2', 'ACC1', 'INV1', 'PAYMENT', -98765, 'GBP', 'PP ''2''', TIMESTAMPTZ '2026-11-21 00:00:00+00')
    ) t(record_id, account_number, invoice_number, kind, amount_minor, currency, source_ref, effective_at)
"""
KEY = [lit("abc"), "record_id", lit("PAYMENT")]


def ledger(url: str) -> list[tuple]:
    with psycopg.connect(url) as con:
        return con.execute(f"SELECT {COLUMNS} FROM ledger_postings ORDER BY posting_id").fetchall()


def test_the_same_postings_as_on_duckdb_in_the_same_order_and_once(pg_store, tmp_path):
    duck = duckdb.connect(str(tmp_path / "cmp.duckdb"))
    migrate(Store("duckdb", path=tmp_path / "cmp.duckdb"))
    assert post(duck, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW, order_by="record_id") == 3
    on_duckdb = duck.execute(f"SELECT {COLUMNS} FROM ledger_postings ORDER BY posting_id").fetchall()

    with adbc_connection(pg_store) as pg:
        assert post_to_postgres(duck, pg, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW,
                                order_by="record_id") == 3
        assert ledger(pg_store) == []  # not committed yet: nothing visible outside the transaction
        commit_postgres(pg)
    assert ledger(pg_store) == on_duckdb
    assert [r[1] for r in on_duckdb] == ["nrp:abc:1:PAYMENT", "nrp:abc:2:PAYMENT", "nrp:abc:3:PAYMENT"]

    with adbc_connection(pg_store) as pg:  # again, twice in one transaction: nothing more
        for _ in range(2):
            assert post_to_postgres(duck, pg, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW) == 0
        commit_postgres(pg)
    assert ledger(pg_store) == on_duckdb


def test_posted_at_defaults_to_the_transaction_time_and_batch_ids_come_from_the_rows(pg_store):
    duck = duckdb.connect()
    staged = f"SELECT *, 'NRPP-' || record_id AS batch_id FROM ({STAGED})"
    with adbc_connection(pg_store) as pg:
        assert post_to_postgres(duck, pg, staged, source="nrp", key=KEY, batch_id=None, now=None) == 3
        with pg.cursor() as cur:
            cur.execute("SELECT now()")
            transaction_time = cur.fetchone()[0]
        commit_postgres(pg)
    rows = ledger(pg_store)
    assert {r[7] for r in rows} == {"NRPP-1", "NRPP-2", "NRPP-3"}
    assert {r[10] for r in rows} == {transaction_time}


def test_a_bad_row_fails_the_whole_post_and_leaves_nothing(pg_store):
    duck = duckdb.connect()
    staged = STAGED.replace("'ACC2'", "NULL")  # account_number is NOT NULL
    with adbc_connection(pg_store) as pg, pytest.raises(Exception, match="account_number"):
        post_to_postgres(duck, pg, staged, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW)
    assert ledger(pg_store) == []


def _expected(ranges: list[tuple[int, int]]) -> tuple[int, int, dict[str, int]]:
    keys = set().union(*(range(a, b) for a, b in ranges))
    balances: dict[str, int] = {}
    for i in keys:
        account = f"ACC{i % 50:03d}"
        balances[account] = balances.get(account, 0) - (i % 997 + 1)
    return len(keys), sum(balances.values()), balances


def _workers(url: str, tmp_path: Path, specs: list[tuple[int, int, str, str]], env: dict | None = None):
    start = tmp_path / "start"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.core.pg_ledger_worker", url, str(a), str(b), order, batch,
                               str(start)], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})})
             for a, b, order, batch in specs]
    deadline = time.monotonic() + 120  # every worker has staged its rows and waits for the start
    while len(list(tmp_path.glob("start.ready.*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    start.touch()
    return [(p, *p.communicate(timeout=240)) for p in procs]


def test_four_writers_at_once_post_every_key_exactly_once(pg_store, tmp_path):
    # the same batch twice, and two batches overlapping it (and each other) on the same accounts, one of them
    # written in the opposite order: without one lock order two of them would deadlock
    specs = [(0, 30_000, "ASC", "NRPP-x"), (0, 30_000, "ASC", "NRPP-x"),
             (15_000, 45_000, "ASC", "NRPP-y"), (10_000, 40_000, "DESC", "NRPP-z")]
    results = _workers(pg_store, tmp_path, specs)
    for proc, _out, err in results:
        assert proc.returncode == 0, err
        assert "deadlock" not in err.lower()
    posted = [json.loads(out)["posted"] for _, out, _ in results]
    count, total, balances = _expected([(a, b) for a, b, _, _ in specs])
    assert sum(posted) == count == 45_000
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT count(*), count(DISTINCT idempotency_key), sum(amount_minor) "
                           "FROM ledger_postings").fetchone() == (count, count, total)
        assert dict(con.execute("SELECT account_number, sum(amount_minor) FROM ledger_postings GROUP BY 1"
                                ).fetchall()) == balances
        assert con.execute("SELECT batch_id, record_count FROM batches ORDER BY 1").fetchall() == [
            ("NRPP-x", max(posted[:2])), ("NRPP-y", posted[2]), ("NRPP-z", posted[3])]
        assert min(posted[:2]) == 0  # the second copy of the same batch posted nothing


def _staged_table(pg) -> str | None:
    with pg.cursor() as cur:
        cur.execute("SELECT to_regclass('pg_temp.ledger_stage')::TEXT")
        return cur.fetchone()[0]


def test_a_first_posting_of_a_key_domain_is_copied_in_with_the_same_rows_as_the_general_path(pg_store, tmp_path):
    duck = duckdb.connect()
    with adbc_connection(pg_store) as pg:  # the general path, for comparison
        assert post_to_postgres(duck, pg, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=None,
                                order_by="record_id") == 3
        assert _staged_table(pg) == "ledger_stage"
        pg.rollback()
    with adbc_connection(pg_store) as pg:
        assert post_to_postgres(duck, pg, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=None,
                                order_by="record_id") == 3
        with pg.cursor() as cur:
            cur.execute("SELECT now()")
            transaction_time = cur.fetchone()[0]
        commit_postgres(pg)
    general = [r[1:] for r in ledger(pg_store)]
    with psycopg.connect(pg_store) as con:
        con.execute("DELETE FROM ledger_postings")

    with adbc_connection(pg_store) as pg:
        assert post_to_postgres(duck, pg, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=None,
                                order_by="record_id", key_domain="nrp:abc:") == 3
        assert _staged_table(pg) is None  # copied straight in
        with pg.cursor() as cur:
            cur.execute("SELECT now()")
            fast_time = cur.fetchone()[0]
        commit_postgres(pg)
    fast = ledger(pg_store)
    assert [r[1] for r in fast] == ["nrp:abc:1:PAYMENT", "nrp:abc:2:PAYMENT", "nrp:abc:3:PAYMENT"]  # ids in order
    assert [r[1:10] for r in fast] == [r[:9] for r in general]
    assert {r[10] for r in fast} == {fast_time} and {r[9] for r in general} == {transaction_time}

    with adbc_connection(pg_store) as pg:  # the domain holds postings in the keys' range now: the general path
        assert post_to_postgres(duck, pg, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW,
                                key_domain="nrp:abc:") == 0
        assert _staged_table(pg) == "ledger_stage"
        commit_postgres(pg)
    assert ledger(pg_store) == fast


def test_an_unordered_posting_is_numbered_in_key_order_on_either_path_and_the_callers_work_runs_once(pg_store):
    duck = duckdb.connect()
    duck.execute("CREATE TABLE mine (n INTEGER, copying INTEGER)")
    staged = STAGED.replace("('1',", "('10',")  # record ids 3, 10, 2: key order 10, 2, 3 (bytes: '1' < '2' < '3')
    in_key_order = ["nrp:abc:10:PAYMENT", "nrp:abc:2:PAYMENT", "nrp:abc:3:PAYMENT"]
    for domain, n in ((None, 1), ("nrp:abc:", 2)):  # the general path, then the copy of a new domain
        with adbc_connection(pg_store) as pg:
            assert post_to_postgres(duck, pg, staged, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW,
                                    key_domain=domain,
                                    meanwhile=lambda copying, n=n: duck.execute(
                                        "INSERT INTO mine VALUES (?, ?)",
                                        [n, None if copying is None else copying.num_rows])) == 3
            assert (_staged_table(pg) is None) == (domain is not None)
            commit_postgres(pg)
        assert [r[1] for r in ledger(pg_store)] == in_key_order
        with psycopg.connect(pg_store) as con:
            con.execute("DELETE FROM ledger_postings")
    # once on each path, told which: only the copy runs it while PostgreSQL writes, given the rows it copies
    assert duck.execute("SELECT n, copying FROM mine ORDER BY n").fetchall() == [(1, None), (2, 3)]

    def broken(copying):
        raise RuntimeError("the scratch's copy failed")

    with adbc_connection(pg_store) as pg:  # the caller's work fails while PostgreSQL copies: the copy is waited
        with pytest.raises(RuntimeError, match="the scratch's copy failed"):  # for, then the error surfaces
            post_to_postgres(duck, pg, staged, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW,
                             key_domain="nrp:abc:", meanwhile=broken)
        with pg.cursor() as cur:
            cur.execute("SELECT count(*) FROM ledger_postings")
            assert cur.fetchone()[0] == 3  # written inside the open transaction, which the caller rolls back
        pg.rollback()
    assert ledger(pg_store) == []


def test_the_scratch_posting_in_key_order_numbers_its_rows_as_postgresql_does(pg_store, tmp_path):
    from cmp_pipelines.core.db.connection import connect
    from cmp_pipelines.core.ledger import posting_key_sql

    staged = STAGED.replace("('1',", "('10',")
    with connect(tmp_path / "scratch.duckdb") as duck, adbc_connection(pg_store) as pg:
        post_to_postgres(duck, pg, staged, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW, key_domain="nrp:abc:",
                         meanwhile=lambda _: post(duck, staged, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW,
                                                order_by=posting_key_sql("nrp", *KEY)))
        commit_postgres(pg)
        scratch = [r[0] for r in duck.execute("SELECT idempotency_key FROM ledger_postings ORDER BY posting_id"
                                              ).fetchall()]
    assert scratch == [r[1] for r in ledger(pg_store)] == ["nrp:abc:10:PAYMENT", "nrp:abc:2:PAYMENT",
                                                           "nrp:abc:3:PAYMENT"]


def test_a_key_domain_already_holding_some_of_the_keys_posts_only_the_rest(pg_store):
    duck = duckdb.connect()
    with adbc_connection(pg_store) as pg:  # record 2 released earlier, under the same key, in another batch
        assert post_to_postgres(duck, pg, f"SELECT * FROM ({STAGED}) WHERE record_id = '2'", source="nrp", key=KEY,
                                batch_id="NRPR-abc", now=NOW, key_domain="nrp:abc:") == 1
        commit_postgres(pg)
    with adbc_connection(pg_store) as pg:
        assert post_to_postgres(duck, pg, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW,
                                order_by="record_id", key_domain="nrp:abc:") == 2
        commit_postgres(pg)
    assert [(r[1], r[7]) for r in ledger(pg_store)] == [
        ("nrp:abc:2:PAYMENT", "NRPR-abc"), ("nrp:abc:1:PAYMENT", "NRPP-abc"), ("nrp:abc:3:PAYMENT", "NRPP-abc")]
    with adbc_connection(pg_store) as pg, pytest.raises(ValueError, match="3 posting keys lie outside their "
                                                                            "declared domain 'nrp:xyz:'"):
        post_to_postgres(duck, pg, STAGED, source="nrp", key=KEY, batch_id="NRPP-abc", now=NOW, key_domain="nrp:xyz:")


def test_four_writers_of_one_key_domain_at_once_post_every_key_exactly_once(pg_store, tmp_path):
    # as above, every writer declaring the domain: the first to take its lock copies its rows in, the others find
    # postings in their range and take the general path
    specs = [(0, 30_000, "ASC", "NRPP-x"), (0, 30_000, "ASC", "NRPP-x"),
             (15_000, 45_000, "ASC", "NRPP-y"), (10_000, 40_000, "DESC", "NRPP-z")]
    results = _workers(pg_store, tmp_path, specs, {"LEDGER_KEY_DOMAIN": "nrp:f:"})
    for proc, _out, err in results:
        assert proc.returncode == 0, err
    posted = [json.loads(out)["posted"] for _, out, _ in results]
    count, total, balances = _expected([(a, b) for a, b, _, _ in specs])
    assert sum(posted) == count == 45_000
    assert max(posted) == 30_000  # one writer copied its whole batch in: the first to take the lock
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT count(*), count(DISTINCT idempotency_key), sum(amount_minor) "
                           "FROM ledger_postings").fetchone() == (count, count, total)
        assert dict(con.execute("SELECT account_number, sum(amount_minor) FROM ledger_postings GROUP BY 1"
                                ).fetchall()) == balances


def test_the_keys_compare_in_byte_order_on_postgresql(pg_store):
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT c.collname FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation "
                           "WHERE a.attrelid = 'ledger_postings'::regclass AND a.attname = 'idempotency_key'"
                           ).fetchone() == ("C",)


def test_a_writer_killed_before_its_commit_leaves_nothing_and_blocks_no_one(pg_store, tmp_path):
    [(proc, _, err)] = _workers(pg_store, tmp_path, [(0, 20_000, "ASC", "NRPP-k")], {"CMP_CRASHPOINT": "1"})
    assert proc.returncode == -signal.SIGKILL, err
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT (SELECT count(*) FROM ledger_postings), (SELECT count(*) FROM batches)"
                           ).fetchone() == (0, 0)
    for path in tmp_path.glob("start*"):
        path.unlink()
    [(proc, out, err)] = _workers(pg_store, tmp_path, [(0, 20_000, "ASC", "NRPP-k")])
    assert proc.returncode == 0, err
    count, total, _ = _expected([(0, 20_000)])
    assert json.loads(out)["posted"] == count
    with psycopg.connect(pg_store) as con:
        assert con.execute("SELECT count(*), sum(amount_minor) FROM ledger_postings").fetchone() == (count, total)
