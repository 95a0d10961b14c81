"""`db`: the store's schema (migrate, status) on either backend, and the one-shot move of an embedded store to
PostgreSQL (copy). The backend is `CMP_DATABASE_URL`: unset, the embedded DuckDB file; postgresql://, PostgreSQL."""

from __future__ import annotations

import click

from cmp_pipelines.cli.common import _fail


def _store():
    from cmp_pipelines.core.settings import StoreSettingError, store

    try:
        return store()
    except StoreSettingError as exc:
        _fail(str(exc))


def _store_errors(action):
    """`action()`, with a store that cannot be reached or is misnamed as a CLI error (no traceback, no password)."""
    import duckdb

    from cmp_pipelines.core.db.postgres import PostgresStoreError

    try:
        return action()
    except PostgresStoreError as exc:
        _fail(str(exc))
    except duckdb.IOException as exc:  # the embedded file held by a running pipeline, or unreadable
        _fail(f"the embedded store cannot be opened: {exc}")


@click.group()
def db() -> None:
    """The store's schema and its move to PostgreSQL ($CMP_DATABASE_URL selects the store)."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply every pending migration of core/db/migrations to the store."""
    from cmp_pipelines.core.db.migrate import migrate

    target = _store()
    applied = _store_errors(lambda: migrate(target))
    click.echo(f"{target.backend} store {target}: "
               + (f"applied {', '.join(f'{v:04d}' for v in applied)}" if applied else "up to date"))


@db.command("status")
def db_status() -> None:
    """Each migration, applied (when) or pending; exits 1 while any is pending."""
    from cmp_pipelines.core.db.migrate import status

    target = _store()
    states = _store_errors(lambda: status(target))
    click.echo(f"{target.backend} store {target}")
    for state in states:
        when = f"{state.applied_at:%Y-%m-%d %H:%M:%S}" if state.applied_at else ""
        twin = "  (PostgreSQL twin)" if state.postgres_twin and target.backend == "postgres" else ""
        click.echo(f"{state.version:04d}  {state.status:<8} {when:<19}  {state.name}{twin}")
    pending = sum(1 for s in states if s.applied_at is None)
    click.echo(f"{len(states) - pending} applied, {pending} pending")
    if pending:
        raise SystemExit(1)


@db.command("copy")
@click.option("--from", "source_kind", type=click.Choice(["duckdb"]), required=True,
              help="The embedded store ($CMP_DATA_DIR/cmp.duckdb, or --source).")
@click.option("--to", "target_kind", type=click.Choice(["postgres"]), required=True,
              help="The PostgreSQL store named by $CMP_DATABASE_URL.")
@click.option("--source", "source_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Another DuckDB file to copy.")
@click.option("--replace", is_flag=True, help="Empty every table of a target that holds rows first (one transaction).")
def db_copy(source_kind: str, target_kind: str, source_path: str | None, replace: bool) -> None:
    """Move an embedded store into PostgreSQL, every table, as Arrow; then compare each table's row count and the
    sums of its money columns. Commits only when all match; exits 1 otherwise."""
    from pathlib import Path

    from cmp_pipelines.core.db.copy_store import CopyRefused, copy_to_postgres
    from cmp_pipelines.core.money import format_minor
    from cmp_pipelines.core.settings import paths

    target = _store()
    if target.backend != "postgres":
        _fail("db copy --to postgres needs CMP_DATABASE_URL set to the PostgreSQL store to fill")
    source = Path(source_path) if source_path else paths().database
    click.echo(f"copying {source} -> {target}")
    try:
        report = _store_errors(lambda: copy_to_postgres(
            source, target.url, replace=replace,
            progress=lambda table, rows: click.echo(f"  copied {table:<32} {rows:>12,} rows")))
    except CopyRefused as exc:
        _fail(str(exc))
    click.echo("checks (source / target):")
    for check in report.tables:
        sums = "  ".join(f"{c}={format_minor(s)}" + ("" if s == t else f" / {format_minor(t)}")
                         for c, (s, t) in check.sums.items())
        rows = f"{check.source_rows:,}"
        if check.target_rows != check.source_rows:
            rows += f" / {check.target_rows:,}"
        click.echo(f"  {'ok' if check.matches else 'MISMATCH':<8} {check.table:<32} rows={rows}  {sums}".rstrip())
    if not report.committed:
        bad = [c.table for c in report.tables if not c.matches]
        click.echo(f"MISMATCH in {', '.join(bad)}: nothing was committed to the PostgreSQL store", err=True)
        raise SystemExit(1)
    total = sum(c.source_rows for c in report.tables)
    click.echo(f"committed: {len(report.tables)} tables, {total:,} rows, every count and money sum equal")
