"""The store setting and the PostgreSQL connection helper, against the real server the session starts."""

from __future__ import annotations

import socket

import psycopg
import pytest

from cmp_pipelines.core.db.postgres import PostgresStoreError, connect, database_url, transaction
from cmp_pipelines.core.settings import DATABASE_URL_SETTING, Store, StoreSettingError, paths, redact_url, store

pytestmark = pytest.mark.postgres

SECRET = "s3cr3t-Pa55"


def test_unset_setting_is_the_embedded_duckdb_file(monkeypatch, tmp_path):
    monkeypatch.delenv(DATABASE_URL_SETTING, raising=False)
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path))
    assert store() == Store("duckdb", path=tmp_path / "cmp.duckdb")
    assert store().path == paths().database
    monkeypatch.setenv(DATABASE_URL_SETTING, "   ")
    assert store().backend == "duckdb"


def test_a_postgresql_url_selects_postgres_and_prints_without_its_password(monkeypatch):
    url = f"postgresql://cmp:{SECRET}@db.internal:5433/cmp"
    monkeypatch.setenv(DATABASE_URL_SETTING, url)
    chosen = store()
    assert (chosen.backend, chosen.url, chosen.path) == ("postgres", url, None)
    assert str(chosen) == "postgresql://cmp:***@db.internal:5433/cmp"
    assert redact_url("postgresql://cmp@localhost/cmp") == "postgresql://cmp@localhost/cmp"


@pytest.mark.parametrize("value, detail", [
    (f"mysql://root:{SECRET}@host/db", "got mysql://root:***@host/db"),
    (f"host=db password={SECRET}", "got a value without a scheme"),
])
def test_another_scheme_is_refused_naming_the_setting(monkeypatch, value, detail):
    monkeypatch.setenv(DATABASE_URL_SETTING, value)
    with pytest.raises(StoreSettingError) as caught:
        store()
    assert str(caught.value) == (f"CMP_DATABASE_URL must be a postgresql:// URL (or unset for the embedded DuckDB "
                                 f"file); {detail}")
    assert SECRET not in str(caught.value)


def test_an_unreachable_server_is_named_without_the_password():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PostgresStoreError) as caught:
        connect(f"postgresql://cmp:{SECRET}@127.0.0.1:{port}/cmp", connect_timeout=3)
    message = str(caught.value)
    assert message.startswith(f"cannot reach the PostgreSQL store named by CMP_DATABASE_URL "
                              f"(postgresql://cmp:***@127.0.0.1:{port}/cmp): ")
    assert "refused" in message.lower()
    assert SECRET not in message and caught.value.__cause__ is None


def test_a_malformed_url_is_named_without_the_password():
    with pytest.raises(PostgresStoreError) as caught:
        database_url(f"postgresql://cmp:{SECRET}@localhost/cmp?no_such_option=1")
    assert str(caught.value).startswith(
        "CMP_DATABASE_URL is not a valid PostgreSQL URL (postgresql://cmp:***@localhost/cmp?no_such_option=1): ")
    assert SECRET not in str(caught.value)


def test_no_setting_no_postgres(monkeypatch):
    monkeypatch.delenv(DATABASE_URL_SETTING, raising=False)
    with pytest.raises(PostgresStoreError,
                       match="^CMP_DATABASE_URL is not set: the store is the embedded DuckDB file$"):
        connect()


def test_wrong_password_is_refused_without_echoing_it(postgres_server, pg_url):
    postgres_server.execute(f"CREATE ROLE app LOGIN PASSWORD '{SECRET}x'")
    hba = postgres_server.data_dir / "pg_hba.conf"  # the session's server trusts loopback; this role needs a password
    original = hba.read_text()
    try:
        hba.write_text(f"host all app 127.0.0.1/32 scram-sha-256\n{original}")
        postgres_server.execute("SELECT pg_reload_conf()")
        url = f"postgresql://app:{SECRET}@127.0.0.1:{postgres_server.port}/postgres"
        with pytest.raises(PostgresStoreError) as caught:
            connect(url)
        assert "password authentication failed for user \"app\"" in str(caught.value)
        assert SECRET not in str(caught.value)
    finally:
        hba.write_text(original)
        postgres_server.execute("SELECT pg_reload_conf()")


def test_the_session_server_is_real_and_on_loopback_only(monkeypatch, pg_url):
    monkeypatch.setenv(DATABASE_URL_SETTING, pg_url)
    with connect() as con:
        version = con.execute("SHOW server_version_num").fetchone()[0]
        listen = con.execute("SHOW listen_addresses").fetchone()[0]
        database = con.execute("SELECT current_database()").fetchone()[0]
    assert int(version) >= 150000
    assert listen == "127.0.0.1"
    assert pg_url.endswith(f"/{database}")


def test_each_test_has_a_database_of_its_own(postgres_server, pg_url):
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE TABLE mine (x INTEGER)")
    other = postgres_server.url(pg_url.rsplit("/", 1)[1] + "_other")
    postgres_server.execute(f"CREATE DATABASE {other.rsplit('/', 1)[1]}")
    with psycopg.connect(other) as con:
        assert con.execute("SELECT to_regclass('mine')").fetchone()[0] is None


def test_transaction_commits_or_leaves_nothing(pg_url):
    with connect(pg_url) as con:
        con.execute("CREATE TABLE t (x BIGINT)")
        with transaction(con):
            con.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ZeroDivisionError), transaction(con):
            con.execute("INSERT INTO t VALUES (2)")
            1 / 0  # noqa: B018
        assert con.execute("SELECT array_agg(x) FROM t").fetchone()[0] == [1]
