"""`db copy --from duckdb --to postgres`: moves an embedded store, every table, into PostgreSQL as Arrow.

The whole move is one PostgreSQL transaction on the ADBC connection that writes it: the rows, the sequences'
positions, then the checks (every table's row count and the sum of each of its money columns, `*_minor`, read back
inside that transaction and compared with the DuckDB file). Anything short commits nothing. A target holding rows
is refused unless `replace` says to empty it first (in the same transaction).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cmp_pipelines.core.db.migrate import apply_postgres
from cmp_pipelines.core.db.migrations import MIGRATIONS

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class CopyRefused(RuntimeError):
    pass


@dataclass
class TableCheck:
    table: str
    source_rows: int
    target_rows: int
    sums: dict[str, tuple[int, int]] = field(default_factory=dict)  # money column -> (source, target)

    @property
    def matches(self) -> bool:
        return self.source_rows == self.target_rows and all(s == t for s, t in self.sums.values())


@dataclass
class CopyReport:
    tables: list[TableCheck]
    committed: bool

    @property
    def matches(self) -> bool:
        return all(t.matches for t in self.tables)


def _name(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise CopyRefused(f"table or column {value!r} is not a plain lowercase name; refusing to copy it")
    return value


def _source_tables(duck: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    """Each base table of the embedded store with its columns (name, type) in order; schema_migrations is the
    target's own."""
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in duck.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.table_schema = 'main' AND t.table_type = 'BASE TABLE' AND c.table_name <> 'schema_migrations' "
            "ORDER BY c.table_name, c.ordinal_position").fetchall():
        tables.setdefault(_name(table), []).append((_name(column), kind))
    return tables


def _money(columns: list[tuple[str, str]]) -> list[str]:
    return [c for c, kind in columns if c.endswith("_minor") and kind in ("BIGINT", "INTEGER", "HUGEINT")]


def _checks_sql(table: str, money: list[str]) -> str:
    sums = "".join(f", coalesce(sum({c}), 0)" for c in money)
    return f"SELECT count(*){sums} FROM {table}"


def _source_migrations(duck: duckdb.DuckDBPyConnection) -> set[int]:
    known = duck.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
                         ).fetchall()[0][0]
    return {v for (v,) in duck.execute("SELECT version FROM schema_migrations").fetchall()} if known else set()


def copy_to_postgres(source: Path, url: str, *, replace: bool = False,
                     progress: Callable[[str, int], None] | None = None) -> CopyReport:
    """Copy the DuckDB file `source` into the PostgreSQL store at `url` (migrated first). Raises CopyRefused when
    the source is not fully migrated or the target holds rows (without `replace`). Returns what was compared;
    `committed` is False when anything differed (and then nothing was written)."""
    from cmp_pipelines.core.db.postgres import connect
    from cmp_pipelines.core.db.transfer import adbc_connection, arrow_batches, ingest_adbc

    if not Path(source).exists():
        raise CopyRefused(f"there is no embedded store at {source}")
    duck = duckdb.connect(str(source), read_only=True)
    try:
        missing = sorted({v for v, _, _ in MIGRATIONS} - _source_migrations(duck))
        if missing:
            raise CopyRefused(
                f"the embedded store {source} lacks migrations {', '.join(f'{v:04d}' for v in missing)}: run "
                f"`cmp-pipelines db migrate` with CMP_DATABASE_URL unset first")
        tables = _source_tables(duck)
        with connect(url) as pg:
            apply_postgres(pg)
            present = {t for (t,) in pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()}
            absent = sorted(set(tables) - present)
            if absent:
                raise CopyRefused(f"the PostgreSQL store has no table {', '.join(absent)}: its migrations differ")
            holding = [t for t in tables if pg.execute(f"SELECT EXISTS (SELECT 1 FROM {t})").fetchone()[0]]
        if holding and not replace:
            raise CopyRefused(
                f"the PostgreSQL store already holds rows in {', '.join(holding)}; refusing to copy over them "
                f"(--replace empties every table first, in the same transaction)")
        sequences = [(_name(s), v) for s, v in duck.execute(
            "SELECT sequence_name, last_value FROM duckdb_sequences() WHERE schema_name = 'main'").fetchall()]

        checks = []
        with adbc_connection(url) as pg, pg.cursor() as cur:
            if replace:
                cur.execute(f"TRUNCATE {', '.join(tables)}")
            for table, columns in tables.items():
                names = ", ".join(c for c, _ in columns)
                source_rows = duck.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                if source_rows:
                    ingest_adbc(cur, table, arrow_batches(duck, f"SELECT {names} FROM {table}"))
                if progress:
                    progress(table, source_rows)
            for sequence, last in sequences:
                if last is not None:
                    cur.execute(f"SELECT setval('{sequence}', {int(last)})")
                    cur.fetchall()
            for table, columns in tables.items():
                money = _money(columns)
                src = duck.execute(_checks_sql(table, money)).fetchall()[0]
                cur.execute(_checks_sql(table, money))
                tgt = cur.fetchone()
                checks.append(TableCheck(table, int(src[0]), int(tgt[0]),
                                         {c: (int(src[i + 1]), int(tgt[i + 1])) for i, c in enumerate(money)}))
            report = CopyReport(checks, committed=False)
            if report.matches:
                pg.commit()
                report.committed = True
            else:
                pg.rollback()
        return report
    finally:
        duck.close()
