"""The NRP test platform with PostgreSQL as the store (CMP_DATABASE_URL): the same seeded store the `platform`
fixture copies, moved into a database of the test's own by `db copy`; the flow runs on a scratch DuckDB linked to
it (core/db/mirror.py) and every read below asks PostgreSQL, the system of record."""

from __future__ import annotations

import psycopg
import pytest

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.db.copy_store import copy_to_postgres
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.nrp.flow import NonRecurringPayments
from tests.support.platform import NOW, Platform


class PgPlatform(Platform):
    url: str = ""

    def connect(self):
        raise AssertionError("this test reads the embedded DuckDB file directly; on PostgreSQL ask `query`")

    def process(self, key: str):
        with mirrored(self.url) as mirror:
            flow = NonRecurringPayments(mirror.con, self.files, self.keyring, load_partners(PROJECT_ROOT / "config"),
                                        NOW, mirror)
            load = flow.load(key)
            posted = flow.post(load)
            flow.write_posting_file(posted)
            flow.acknowledge(load)
            return load

    def query(self, sql: str, params=None) -> list[tuple]:
        with psycopg.connect(self.url) as con:
            return con.execute(sql.replace("%", "%%").replace("?", "%s"), params or []).fetchall()

    def balance(self, account: str) -> int:
        return self.query("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE account_number = ?",
                          [account])[0][0]

    def records(self, key: str) -> dict[str, tuple]:
        rows = self.query(
            "SELECT r.position, r.record_id, r.outcome, r.allocation, r.reason_code, r.reason, r.ledger_account "
            "FROM nrp_records r JOIN inbound_files f ON f.batch_id = r.batch_id WHERE f.file_id = ? "
            "ORDER BY position", [key])
        return {row[1]: row[2:] for row in rows}

    def execute(self, sql: str, params=None) -> None:
        with psycopg.connect(self.url) as con:
            con.execute(sql.replace("%", "%%").replace("?", "%s"), params or [])

    def payment_postings(self) -> int:
        return self.query("SELECT count(*) FROM ledger_postings WHERE kind = 'PAYMENT'")[0][0]


def moved_to_postgres(platform: Platform, url: str, monkeypatch) -> PgPlatform:
    """`platform` with its seeded store copied into PostgreSQL at `url` and CMP_DATABASE_URL naming it; the DuckDB
    file is removed so nothing can read it by mistake."""
    copy_to_postgres(platform.database, url)
    platform.database.unlink()
    monkeypatch.setenv("CMP_DATABASE_URL", url)
    moved = PgPlatform(platform.root, platform.files, platform.keyring)
    moved.url = url
    return moved


@pytest.fixture
def pg_platform(platform, pg_url, monkeypatch) -> PgPlatform:
    return moved_to_postgres(platform, pg_url, monkeypatch)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_platform(request) -> Platform:
    """The same test body on both stores."""
    return request.getfixturevalue("platform" if request.param == "duckdb" else "pg_platform")
