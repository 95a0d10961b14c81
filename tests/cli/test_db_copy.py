"""`cmp-pipelines db copy --from duckdb --to postgres` against the real server: every table, every value, the
sequences' positions; counts and money sums printed; a mismatch commits nothing; a non-empty target refused."""

from __future__ import annotations

from datetime import UTC, date, datetime

import duckdb
import psycopg
import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core.db.migrate import migrate
from cmp_pipelines.core.settings import Store

pytestmark = pytest.mark.postgres

POSTINGS = [  # (key, account, invoice, kind, amount, batch, effective)
    ("nrp:aa:1:PAYMENT", "ACC1", "INV1", "PAYMENT", -1234, "NRPP-aa", datetime(2026, 11, 20, 14, 3, tzinfo=UTC)),
    ("nrp:aa:2:PAYMENT", "ACC2", None, "PAYMENT", -1, "NRPP-aa", None),
    ("invoice:INV1:CHARGE", "ACC1", "INV1", "CHARGE", 99999, "INVOICES-1", datetime(2026, 11, 1, tzinfo=UTC)),
]


def seed(path) -> None:
    """A small store with the awkward types: NULLs, arrays, booleans, dates, time zones, quotes, sequences."""
    migrate(Store("duckdb", path=path))
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO accounts (account_number, name, is_suspense, suspended_until, created_at) VALUES "
                "('ACC1', 'O''Brien & Co', false, DATE '2026-12-24', TIMESTAMPTZ '2026-01-02 03:04:05.123456+00'), "
                "('ACC2', 'Zoë Ltd', true, NULL, TIMESTAMPTZ '2026-01-02 03:04:05+00')")
    con.execute("INSERT INTO invoices VALUES ('INV1', 'ACC1', DATE '2026-11-01', DATE '2026-11-30', 99999, 'GBP')")
    for key, account, invoice, kind, amount, batch, effective in POSTINGS:
        con.execute("INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, "
                    "currency, batch_id, effective_at) VALUES (?, ?, ?, ?, ?, 'GBP', ?, ?)",
                    [key, account, invoice, kind, amount, batch, effective])
    con.execute("INSERT INTO config_probes VALUES ('nrp_load', 0, 24, ['ops@example.com', 'lead@example.com'])")
    con.execute("INSERT INTO batches (batch_id, kind, feed, status, record_count, total_minor) VALUES "
                "('NRPP-aa', 'NRP_POSTING', 'nrp', 'POSTED', 2, -1235)")
    con.execute("INSERT INTO workflow_events (event_type, event_code, detail) VALUES ('CARD', 'SOFT', 'a\nb')")
    con.close()


def rows(url, sql):
    with psycopg.connect(url) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def env(tmp_path, monkeypatch, pg_url):
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CMP_DATABASE_URL", pg_url)
    seed(tmp_path / "data" / "cmp.duckdb")
    return tmp_path


def copy(*extra):
    return CliRunner().invoke(main, ["db", "copy", "--from", "duckdb", "--to", "postgres", *extra])


def test_every_table_and_value_arrives_and_the_checks_are_printed(env, pg_url):
    result = copy()
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    assert "  ok       ledger_postings                  rows=3  amount_minor=987.64\n" in out
    assert "  ok       batches                          rows=1  record_count" not in out  # counts are no money
    assert "  ok       batches                          rows=1  total_minor=-12.35\n" in out
    assert "  ok       invoices                         rows=1  amount_minor=999.99\n" in out
    assert out.rstrip().endswith("every count and money sum equal")
    assert rows(pg_url, "SELECT account_number, name, is_suspense, suspended_until, created_at FROM accounts "
                        "ORDER BY 1") == [
        ("ACC1", "O'Brien & Co", False, date(2026, 12, 24), datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("ACC2", "Zoë Ltd", True, None, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))]
    assert rows(pg_url, "SELECT posting_id, idempotency_key, account_number, invoice_number, kind, amount_minor, "
                        "batch_id, effective_at FROM ledger_postings ORDER BY posting_id") == [
        (i + 1, key, account, invoice, kind, amount, batch, effective)
        for i, (key, account, invoice, kind, amount, batch, effective) in enumerate(POSTINGS)]
    assert rows(pg_url, "SELECT recipients FROM config_probes") == [(["ops@example.com", "lead@example.com"],)]
    assert rows(pg_url, "SELECT detail FROM workflow_events") == [("a\nb",)]
    # the sequences continue where the embedded store's stopped: the next posting is number 4
    assert rows(pg_url, "SELECT nextval('ledger_posting_seq'), nextval('workflow_event_seq')") == [(4, 2)]


def test_a_target_holding_rows_is_refused_unless_replaced(env, pg_url):
    assert copy().exit_code == 0
    again = copy()
    assert again.exit_code == 1
    assert again.stderr.startswith("Error: the PostgreSQL store already holds rows in accounts, ")
    assert "--replace empties every table first" in again.stderr
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("INSERT INTO accounts (account_number, name) VALUES ('ACC9', 'only in PostgreSQL')")
    replaced = copy("--replace")
    assert replaced.exit_code == 0, replaced.stderr
    assert rows(pg_url, "SELECT account_number FROM accounts ORDER BY 1") == [("ACC1",), ("ACC2",)]
    assert rows(pg_url, "SELECT count(*), sum(amount_minor) FROM ledger_postings") == [(3, 98764)]


def test_a_mismatch_exits_non_zero_and_commits_nothing(env, pg_url, monkeypatch):
    from cmp_pipelines.core.db import transfer

    real = transfer.ingest_adbc

    def lossy(cursor, table, batches, **kw):  # a driver that drops the last row of the ledger
        data = batches.read_all()
        return real(cursor, table, data.slice(0, data.num_rows - 1) if table == "ledger_postings" else data, **kw)

    monkeypatch.setattr(transfer, "ingest_adbc", lossy)
    result = copy()
    assert result.exit_code == 1
    assert "  MISMATCH ledger_postings                  rows=3 / 2  amount_minor=987.64 / -12.35\n" in result.stdout
    assert result.stderr == "MISMATCH in ledger_postings: nothing was committed to the PostgreSQL store\n"
    assert rows(pg_url, "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM ledger_postings)") == [(0, 0)]


def test_an_unmigrated_source_and_a_missing_setting_are_refused(tmp_path, monkeypatch, pg_url):
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CMP_DATABASE_URL", raising=False)
    assert copy().stderr == "Error: db copy --to postgres needs CMP_DATABASE_URL set to the PostgreSQL store to fill\n"
    monkeypatch.setenv("CMP_DATABASE_URL", pg_url)
    duckdb.connect(str(tmp_path / "cmp.duckdb")).close()
    refused = copy()
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"Error: the embedded store {tmp_path / 'cmp.duckdb'} lacks migrations 0001, ")
