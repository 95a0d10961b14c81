"""`cmp-pipelines db migrate|status` on both stores, as an operator runs them."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core.db.migrations import MIGRATIONS

pytestmark = pytest.mark.postgres

LAST = MIGRATIONS[-1][0]


def run(*args):
    return CliRunner().invoke(main, ["db", *args])


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request, tmp_path, monkeypatch):
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    if request.param == "postgres":
        monkeypatch.setenv("CMP_DATABASE_URL", request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv("CMP_DATABASE_URL", raising=False)
    return request.param


def test_status_then_migrate_then_status(backend):
    before = run("status")
    assert before.exit_code == 1
    lines = before.output.splitlines()
    assert lines[0].startswith(f"{backend} store ")
    assert lines[1] == f"0001  pending                       {MIGRATIONS[0][1]}"
    assert lines[-1] == f"0 applied, {len(MIGRATIONS)} pending"

    done = run("migrate")
    assert done.exit_code == 0, done.output
    assert done.output.strip().endswith("applied " + ", ".join(f"{v:04d}" for v, _, _ in MIGRATIONS))
    assert run("migrate").output.strip().endswith(": up to date")

    after = run("status")
    assert after.exit_code == 0, after.output
    assert after.output.splitlines()[-1] == f"{len(MIGRATIONS)} applied, 0 pending"
    assert f"{LAST:04d}  applied  " in after.output


def test_an_unreachable_store_is_a_clear_error_without_the_password(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CMP_DATABASE_URL", f"postgresql://cmp:hunter22@127.0.0.1:{port}/cmp")
    result = run("migrate")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot reach the PostgreSQL store named by CMP_DATABASE_URL "
                                    f"(postgresql://cmp:***@127.0.0.1:{port}/cmp): ")
    assert "hunter22" not in result.output and "Traceback" not in result.output


def test_a_wrong_scheme_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CMP_DATABASE_URL", "sqlite:///tmp/x.db")
    result = run("status")
    assert result.exit_code == 1
    assert result.output == ("Error: CMP_DATABASE_URL must be a postgresql:// URL (or unset for the embedded DuckDB "
                             "file); got sqlite:///tmp/x.db\n")


def test_init_puts_the_dagster_instance_in_the_same_postgres(tmp_path, monkeypatch, pg_url):
    """dagster-postgres: run, event log and schedule storage in the store's PostgreSQL; the URL is referenced by
    its variable, so the instance file holds no password."""
    import psycopg

    from cmp_pipelines.core.settings import PROJECT_ROOT
    from cmp_pipelines.lib.instance_config import for_home

    home = tmp_path / "data" / "dagster_home"
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CMP_DATABASE_URL", pg_url)
    done = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    written = (home / "dagster.yaml").read_text()
    assert written == (PROJECT_ROOT / "dagster.yaml").read_text().replace(
        "    default_limit: 1\n", "    default_limit: 4\n") + (
        "\n# CMP_DATABASE_URL is set: the instance's run, event log and schedule storage are in that PostgreSQL "
        "database\nstorage:\n  postgres:\n    postgres_url:\n      env: CMP_DATABASE_URL\n")
    with psycopg.connect(pg_url) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'public'").fetchall()}
        assert {"runs", "event_logs", "jobs", "job_ticks", "concurrency_limits"} <= tables
        assert con.execute("SELECT concurrency_key, \"limit\" FROM concurrency_limits").fetchall() == [("cmp_db", 4)]

    monkeypatch.delenv("CMP_DATABASE_URL")  # unset again: the embedded instance, the project's file, its home named
    assert CliRunner().invoke(main, ["init"], catch_exceptions=False).exit_code == 0
    written = (home / "dagster.yaml").read_text()
    assert written.encode() == for_home((PROJECT_ROOT / "dagster.yaml").read_bytes(), home)
    assert "storage:\n  custom:" in written and f'base_dir: "{home}"' in written and "postgres" not in written


def test_init_sets_the_pool_limit_from_the_setting_on_postgres_and_keeps_one_on_duckdb(tmp_path, monkeypatch, pg_url):
    """Several runs at once on PostgreSQL (CMP_DB_POOL_LIMIT, default 4); one writer on the embedded store, where a
    larger value is refused rather than ignored."""
    import psycopg

    home = tmp_path / "data" / "dagster_home"
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CMP_DATABASE_URL", pg_url)
    monkeypatch.setenv("CMP_DB_POOL_LIMIT", "6")
    done = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "pool cmp_db limited to 6" in done.output
    assert "    default_limit: 6\n" in (home / "dagster.yaml").read_text()
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT concurrency_key, \"limit\" FROM concurrency_limits").fetchall() == [("cmp_db", 6)]

    monkeypatch.setenv("CMP_DB_POOL_LIMIT", "0")
    refused = CliRunner().invoke(main, ["init"])
    assert refused.exit_code == 1
    assert "CMP_DB_POOL_LIMIT must be a whole number of runs, 1 or more; got '0'" in refused.output

    monkeypatch.delenv("CMP_DATABASE_URL")
    monkeypatch.setenv("CMP_DB_POOL_LIMIT", "4")
    refused = CliRunner().invoke(main, ["init"])
    assert refused.exit_code == 1
    assert "CMP_DB_POOL_LIMIT=4 needs CMP_DATABASE_URL" in refused.output
    monkeypatch.delenv("CMP_DB_POOL_LIMIT")
    done = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    assert done.exit_code == 0 and "pool cmp_db limited to 1" in done.output
    assert "    default_limit: 1\n" in (home / "dagster.yaml").read_text()


@pytest.mark.postgres
def test_init_on_postgres_migrates_it_and_loads_the_configuration_there_with_no_duckdb_file(tmp_path, monkeypatch,
                                                                                             pg_url):
    """A worker or daemon machine of a PostgreSQL deployment keeps no store of its own: init writes the partners,
    the probes' configuration and the suspense account into PostgreSQL, twice without duplicating anything."""
    import psycopg

    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster_home"))
    monkeypatch.setenv("CMP_DATABASE_URL", pg_url)
    for _ in range(2):
        done = CliRunner().invoke(main, ["init"], catch_exceptions=False)
        assert done.exit_code == 0, done.output
    assert not list((tmp_path / "data").rglob("*.duckdb"))
    with psycopg.connect(pg_url) as con:
        partners = con.execute("SELECT partner_id, feed FROM partners ORDER BY 1, 2").fetchall()
        probes = con.execute("SELECT count(*) FROM config_probes").fetchone()[0]
        suspense = con.execute("SELECT account_number FROM accounts WHERE is_suspense").fetchall()
    assert ("PAYPOINT", "nrp") in partners and len(partners) == len(set(partners))
    assert probes > 0 and suspense == [("SUSPENSE",)]
