"""Migrations apply in order, once, and a later one keeps what an earlier schema held."""

from __future__ import annotations

import duckdb
import pytest

from cmp_pipelines.core.db import migrations
from cmp_pipelines.core.db.migrations import MIGRATIONS, apply_migrations


def test_every_migration_applies_once_in_order(tmp_path):
    con = duckdb.connect(str(tmp_path / "cmp.duckdb"))
    assert apply_migrations(con) == [version for version, _, _ in MIGRATIONS]
    assert apply_migrations(con) == []
    assert [v for (v,) in con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()] == \
        [version for version, _, _ in MIGRATIONS]


def test_v10_keeps_the_loaded_nrp_records_and_drops_only_the_primary_key(tmp_path, monkeypatch):
    con = duckdb.connect(str(tmp_path / "cmp.duckdb"))
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 10])
    apply_migrations(con)
    con.execute("INSERT INTO nrp_records (batch_id, position, record_id, amount_minor, outcome, reason) VALUES "
                "('NRPL-a', 1, 'R1', 1234, 'ACCEPTED', NULL), ('NRPL-a', 2, 'R2', 5, 'REJECTED', 'amount ''x''')")
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    assert apply_migrations(con) == [version for version, _, _ in MIGRATIONS if version >= 10]
    assert con.execute("SELECT batch_id, position, record_id, amount_minor, outcome, reason FROM nrp_records "
                       "ORDER BY position").fetchall() == [("NRPL-a", 1, "R1", 1234, "ACCEPTED", None),
                                                          ("NRPL-a", 2, "R2", 5, "REJECTED", "amount 'x'")]
    kinds = {kind for (kind,) in con.execute(
        "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = 'nrp_records'").fetchall()}
    assert kinds == {"NOT NULL"}
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO nrp_records (batch_id, position, outcome) VALUES ('NRPL-b', NULL, 'ACCEPTED')")
