"""Ordered schema migrations, one numbered .sql file each (NNNN_name.sql; the first line, a `--` comment, is
its name). Append only: a shipped migration is never edited, so every store converges.

One sequence serves both stores: PostgreSQL applies the same files, except where a twin
`NNNN_name.postgres.sql` stands beside one because the two dialects really differ there (core/db/migrate.py).
A new migration is written in SQL both accept; tests/core/test_postgres_migrations.py (`make test-pg`) proves both
stores end with the same tables, columns, types and keys, and a twin is added only when it cannot be."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

FOLDER = Path(__file__).resolve().parent
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
POSTGRES_SUFFIX = ".postgres.sql"


def _load() -> list[tuple[int, str, str]]:
    found = []
    for path in sorted(p for p in FOLDER.glob("*.sql") if not p.name.endswith(POSTGRES_SUFFIX)):
        match = _FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name}: the name must be NNNN_lowercase_words.sql")
        sql = path.read_text(encoding="utf-8")
        first, _, _ = sql.partition("\n")
        name = first[2:].strip() if first.startswith("--") else path.stem[5:].replace("_", " ")
        found.append((int(match.group(1)), name, sql))
    versions = [v for v, _, _ in found]
    # Numbers are reserved per piece of work, so one may land before a lower one: unique is what matters (each
    # store records the versions it applied and applies any missing one, whatever its place).
    if len(set(versions)) != len(versions) or (versions and versions[0] != 1):
        raise ValueError(f"migration files in {FOLDER} must be numbered from 1, each number once; found {versions}")
    return found


MIGRATIONS: list[tuple[int, str, str]] = _load()


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply what is missing, each migration in its own transaction; returns the versions applied now."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, sql in MIGRATIONS:
        if version in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
