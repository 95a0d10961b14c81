"""`init` loads the rejection codes, the Bacs return codes and the ADDACS reasons on either store, so the tables the
rules and the API's payment history join hold them before the first card-rejection, ARUDD or ADDACS run; a second
`init` of the same configuration rewrites no row (on PostgreSQL no row version changes: it takes no row lock)."""

from __future__ import annotations

import duckdb
import psycopg
import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core.config import load_mandate_revision_codes, load_rejection_codes
from cmp_pipelines.core.settings import PROJECT_ROOT

CONFIG = PROJECT_ROOT / "config"
CODES = ("SELECT code, description FROM config_rejection_codes ORDER BY code",
         "SELECT return_code, rejection_code FROM config_bacs_return_codes ORDER BY return_code",
         "SELECT code, name FROM config_mandate_revision_codes ORDER BY code")
# Each table's rows with their row version (PostgreSQL's xmin): equal before and after an init that writes nothing.
VERSIONS = ("SELECT code, xmin::text FROM config_rejection_codes ORDER BY code",
            "SELECT return_code, xmin::text FROM config_bacs_return_codes ORDER BY return_code",
            "SELECT code, xmin::text FROM config_mandate_revision_codes ORDER BY code")


def _configured():
    rejection, revision = load_rejection_codes(CONFIG), load_mandate_revision_codes(CONFIG)
    return [sorted((c.code, c.description) for c in rejection.codes.values()),
            sorted(rejection.bacs_return_codes.items()),
            sorted((c.code, c.name) for c in revision.values())]


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path, monkeypatch):
    """A fresh data folder and a fresh store; returns how to read it (a function of SQL to rows)."""
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster_home"))
    if request.param == "duckdb":
        monkeypatch.delenv("CMP_DATABASE_URL", raising=False)

        def read(sql):
            with duckdb.connect(str(tmp_path / "data" / "cmp.duckdb"), read_only=True) as con:
                return con.execute(sql).fetchall()
        return request.param, read
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("CMP_DATABASE_URL", url)

    def read(sql):
        with psycopg.connect(url) as con:
            return con.execute(sql).fetchall()
    return request.param, read


def _init():
    done = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    assert done.exit_code == 0, done.output


def test_init_loads_the_configured_codes_and_a_second_init_rewrites_nothing(store):
    backend, read = store
    _init()
    loaded = [read(sql) for sql in CODES]
    assert loaded == _configured()
    assert len(loaded[0]) >= 4 and loaded[1] and loaded[2]
    assert dict(loaded[0])["51"] == "Insufficient funds"
    assert dict(loaded[2])["1"] == "Instruction cancelled by payer"

    versions = [read(sql) for sql in VERSIONS] if backend == "postgres" else None
    _init()
    assert [read(sql) for sql in CODES] == loaded
    if backend == "postgres":
        assert [read(sql) for sql in VERSIONS] == versions
