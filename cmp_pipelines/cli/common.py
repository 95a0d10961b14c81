"""What every command group shares: configuration and store access, errors as CLI errors."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click

from cmp_pipelines.core.settings import PROJECT_ROOT, paths


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _not_found(kind: str, ident: str) -> None:
    """The one wording every command uses for a missing account, mandate, order...: `account ACC1 not found`.
    A card number typed in place of an id is masked."""
    from cmp_pipelines.core.cards import mask_pans_in

    _fail(f"{kind} {mask_pans_in(ident) or ident} not found")


# How the set-up and order services word a missing record (the API answers it as a 404 with this detail).
_DOES_NOT_EXIST = re.compile(r"(?P<kind>[a-z][a-z ]*?) '(?P<ident>[^']*)' does not exist")


def _load_config(load, *args):
    """`load(config_dir, *args)`; a configuration error becomes a CLI error."""
    from cmp_pipelines.core.config import ConfigError

    try:
        return load(paths().config_dir, *args)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")


def _config():
    from cmp_pipelines.core.config import load_partners, load_probes

    return _load_config(load_partners), _load_config(load_probes)


def _connect(read_only: bool = False):
    from cmp_pipelines.core.db.connection import StoreBusyError, connect

    try:
        return connect(paths().database, read_only=read_only, wait_seconds=30)
    except StoreBusyError as exc:
        _fail(str(exc))


@contextmanager
def _service_connect(read_only: bool = False):
    """The store for the service commands (probes, summary, deliveries, events): the DuckDB file, or with
    CMP_DATABASE_URL set PostgreSQL itself (core/db/pg_duck.py; an unreachable server is a clear error)."""
    from cmp_pipelines.core.settings import store

    if store().backend != "postgres":
        with _connect(read_only=read_only) as con:
            yield con
        return
    from cmp_pipelines.core.db.pg_duck import open_pg_duck
    from cmp_pipelines.core.db.postgres import PostgresStoreError

    try:
        con = open_pg_duck()
    except PostgresStoreError as exc:
        _fail(str(exc))
    try:
        yield con
    finally:
        con.close()


def _refusals_as_errors(action, config, refusal: type[ValueError], connect=None):
    """Run `action(con, config)` in the store (`connect()`, default the DuckDB file); a refusal (`refusal` with
    .field and .message) becomes a clear CLI error naming the field."""
    with (connect or _connect)() as con:
        try:
            return action(con, config)
        except refusal as exc:
            missing = _DOES_NOT_EXIST.fullmatch(exc.message) if getattr(exc, "status", None) == 404 else None
            if missing:
                _not_found(missing["kind"], missing["ident"])
            _fail(f"{exc.field}: {exc.message}")


def _dagster_home() -> Path:
    """$DAGSTER_HOME with the project's dagster.yaml plus its storage: SQLite under this home, or the PostgreSQL block
    and the `cmp_db` pool's limit (CMP_DB_POOL_LIMIT, default 4) when the store is PostgreSQL; rewritten whenever it
    differs from what the settings call for."""
    from cmp_pipelines.core.settings import StoreSettingError, store, store_pool_limit
    from cmp_pipelines.lib import instance_config, run_workers

    home = paths().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    source = PROJECT_ROOT / "dagster.yaml"
    target = home / "dagster.yaml"
    if source.exists():
        try:
            on_postgres = store().backend == "postgres"
            limit = store_pool_limit()
        except StoreSettingError as exc:
            _fail(str(exc))
        project = source.read_bytes()
        try:
            wanted = instance_config.for_home(project, home, postgres=on_postgres)
        except ValueError as exc:
            _fail(f"{source}: {exc}")
        if limit != 1:
            wanted = wanted.replace(b"    default_limit: 1\n", f"    default_limit: {limit}\n".encode(), 1)
        if run_workers.broker_url():  # Celery's launcher replaces the warm one (runs go to worker machines)
            wanted, replaced = re.subn(rb"run_launcher:\n(?:  .*\n)+", b"", wanted, count=1)
            if not replaced:
                _fail(f"{source} has no run_launcher block for the Celery launcher to replace")
            wanted += run_workers.RUN_LAUNCHER_BLOCK.encode()
        if not target.exists() or target.read_bytes() != wanted:
            target.write_bytes(wanted)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _business_day(day: str | None):
    from datetime import date as date_type

    try:
        return date_type.fromisoformat(day) if day else datetime.now(UTC).date()
    except ValueError:
        _fail(f"--date {day!r} is not a date (YYYY-MM-DD)")


_date_option = click.option("--date", "day", default=None, help="Business day YYYY-MM-DD (default: today, UTC).")


def _dd_config():
    from cmp_pipelines.core.config import load_direct_debit

    partners, _ = _config()
    return _load_config(load_direct_debit, partners)


def _setup(action):
    """Run a payment set-up function; its refusals become a clear CLI error naming the field."""
    from cmp_pipelines.core.payment_setup import SetupError

    partners, _ = _config()
    return _refusals_as_errors(action, partners, SetupError)


def _hardware():
    from cmp_pipelines.defs.hardware_orders.config import load_hardware_orders

    partners, _ = _config()
    return _load_config(load_hardware_orders, partners)
