"""`db migrate` and `db status` on either store: the one numbered sequence in core/db/migrations.

PostgreSQL applies each `NNNN_name.sql` as DuckDB does, unless a twin `NNNN_name.postgres.sql` stands beside it:
the twin is the PostgreSQL text of the same change and must leave the same tables, columns, types, nullability
and keys (tests/core/test_postgres_migrations.py compares the two information_schemas). A twin is written only
where the dialects really differ; every other file is plain SQL both accept. Each migration is one transaction;
on PostgreSQL a session advisory lock lets two processes start at once without applying one twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from cmp_pipelines.core.db.migrations import FOLDER, MIGRATIONS, POSTGRES_SUFFIX, apply_migrations
from cmp_pipelines.core.settings import Store

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)
_LOCK_KEY = 0x636D70_6D6967  # "cmp" "mig": one advisory lock for migrating the store


def postgres_migrations() -> list[tuple[int, str, str]]:
    """The sequence as PostgreSQL applies it: the twin's text where one exists, else the shared file's."""
    twins = {}
    for path in FOLDER.glob(f"*{POSTGRES_SUFFIX}"):
        version = int(path.name[:4]) if path.name[:4].isdigit() else None
        shared = [m for m in MIGRATIONS if m[0] == version]
        if not shared or not (FOLDER / (path.name[: -len(POSTGRES_SUFFIX)] + ".sql")).exists():
            raise ValueError(f"migration twin {path.name} has no NNNN_name.sql of the same name beside it")
        twins[version] = path.read_text(encoding="utf-8")
    return [(version, name, twins.get(version, sql)) for version, name, sql in MIGRATIONS]


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    applied_at: datetime | None
    postgres_twin: bool

    @property
    def status(self) -> str:
        return "applied" if self.applied_at else "pending"


def apply_postgres(con) -> list[int]:
    """Apply what is missing on a psycopg connection in autocommit mode; returns the versions applied now."""
    con.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
    try:
        con.execute(MIGRATIONS_TABLE)
        done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
        applied = []
        for version, name, sql in postgres_migrations():
            if version in done:
                continue
            with con.transaction():
                con.execute(sql)  # no parameters: psycopg sends a file of many statements as one simple query
                con.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", [version, name])
            applied.append(version)
        return applied
    finally:
        con.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])


def migrate(target: Store | str) -> list[int]:
    """Bring the store up to date: a Store, or a postgresql:// URL."""
    if isinstance(target, str):
        target = Store("postgres", url=target)
    if target.backend == "postgres":
        from cmp_pipelines.core.db.postgres import connect

        with connect(target.url) as con:
            return apply_postgres(con)
    assert target.path is not None
    Path(target.path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(target.path))
    try:
        return apply_migrations(con)
    finally:
        con.close()


def status(target: Store | str) -> list[MigrationState]:
    """Every migration of the sequence, applied (when) or pending; reads only, creates nothing."""
    if isinstance(target, str):
        target = Store("postgres", url=target)
    applied: dict[int, datetime] = {}
    if target.backend == "postgres":
        from cmp_pipelines.core.db.postgres import connect

        with connect(target.url) as con:
            if con.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is not None:
                applied = dict(con.execute("SELECT version, applied_at FROM schema_migrations").fetchall())
    elif target.path is not None and Path(target.path).exists():
        con = duckdb.connect(str(target.path), read_only=True)
        try:
            known = con.execute("SELECT count(*) FROM information_schema.tables "
                                "WHERE table_name = 'schema_migrations'").fetchone()[0]
            if known:
                applied = dict(con.execute("SELECT version, applied_at FROM schema_migrations").fetchall())
        finally:
            con.close()
    twins = {int(p.name[:4]) for p in FOLDER.glob(f"*{POSTGRES_SUFFIX}")}
    return [MigrationState(v, name, applied.get(v), v in twins) for v, name, _ in MIGRATIONS]
