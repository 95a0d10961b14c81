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
    from cmp_pipelines.core.db.postgres import PostgresStoreError

    try:
        return action()
    except PostgresStoreError as exc:
        _fail(str(exc))


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
