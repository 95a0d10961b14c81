"""`init` and `keys`: a working data directory, its configuration checked, partner keys."""

from __future__ import annotations

import click

from cmp_pipelines.cli.common import _config, _connect, _dagster_home, _fail, _load_config
from cmp_pipelines.cli.config import require_valid_config
from cmp_pipelines.core.settings import paths


@click.command()
def init() -> None:
    """Check every configuration file, create the data folders, migrate the store, load configuration and prepare
    the Dagster instance. Nothing is created while a configuration file has an error."""
    from cmp_pipelines.core.reference import sync_reference_data

    require_valid_config()
    p = paths()
    for folder in p.skeleton():
        folder.mkdir(parents=True, exist_ok=True)
    partners, probes = _config()
    for partner in partners.values():
        for feed in partner.feeds:
            (p.inbound / feed / partner.partner_id).mkdir(parents=True, exist_ok=True)
    codes = _codes()
    if _store().backend == "postgres":
        _sync_postgres(partners, probes, *codes)
    else:
        with _connect() as con:
            sync_reference_data(con, partners, probes, *codes)
    home = _dagster_home()
    from cmp_pipelines.core.settings import store_pool_limit
    from cmp_pipelines.lib.instance import limit_store_pool

    limit = store_pool_limit()
    limit_store_pool(limit)
    click.echo(f"store ready: {_store()}\ndagster instance: {home} (pool cmp_db limited to {limit})")


def _store():
    from cmp_pipelines.core.settings import StoreSettingError, store

    try:
        return store()
    except StoreSettingError as exc:
        _fail(str(exc))


def _codes():
    """The rejection and Bacs return codes and the ADDACS reasons: loaded by `init` on either store, so the tables
    the rules and the API's payment history join hold them before the first card-rejection, ARUDD or ADDACS run."""
    from cmp_pipelines.core.config import load_mandate_revision_codes, load_rejection_codes

    return _load_config(load_rejection_codes), _load_config(load_mandate_revision_codes)


def _sync_postgres(partners, probes, rejection_codes=None, mandate_revision_codes=None) -> None:
    """On PostgreSQL: migrate it and load the configuration's reference rows into it in one transaction, computed
    by the same `sync_reference_data` in a scratch DuckDB (core/db/mirror). No DuckDB file is created. The code
    tables are synced as the flows sync them (each its own transaction under its advisory lock, an unchanged
    configuration rewriting no row), so an `init` during a run's sync waits rather than colliding."""
    from cmp_pipelines.core.db.migrate import migrate
    from cmp_pipelines.core.db.mirror import mirrored
    from cmp_pipelines.core.db.postgres import PostgresStoreError
    from cmp_pipelines.core.reference import (
        sync_mandate_revision_codes_postgres,
        sync_reference_data,
        sync_rejection_codes_postgres,
    )

    try:
        migrate(_store())
        with mirrored() as mirror:
            with mirror.transaction():
                sync_reference_data(mirror.con, partners, probes)
                for table in ("partners", "config_probes"):
                    mirror.execute(f"DELETE FROM {table}")  # noqa: S608 - our table names
                    mirror.push(table, "true")
                mirror.push("accounts", "is_suspense", conflict="(account_number) DO NOTHING")
            if rejection_codes is not None:
                sync_rejection_codes_postgres(mirror, rejection_codes)
            if mandate_revision_codes is not None:
                sync_mandate_revision_codes_postgres(mirror, mandate_revision_codes)
    except PostgresStoreError as exc:
        _fail(str(exc))


@click.group()
def keys() -> None:
    """Partner encryption keys ($CMP_KEYS_DIR/<partner>.keys, newest key first)."""


@keys.command("init")
@click.option("--partner", "partner_ids", multiple=True, help="Partner id (default: every configured partner).")
@click.option("--rotate", is_flag=True, help="Add a new newest key, keeping the old ones for decryption.")
def keys_init(partner_ids: tuple[str, ...], rotate: bool) -> None:
    """Create demo keys for partners that have none (or rotate with --rotate). Keys are never printed."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring

    partners, _ = _config()
    unknown = [partner for partner in partner_ids if partner not in partners]
    if unknown:
        _fail(f"{'partner' if len(unknown) == 1 else 'partners'} {', '.join(unknown)} "
              f"{'is' if len(unknown) == 1 else 'are'} not configured; configured partners (partners.yaml): "
              f"{', '.join(partners)}")
    keyring = PartnerKeyring(paths().keys_dir)
    for partner in partner_ids or tuple(partners):
        existed = keyring.has_keys(partner)
        path = keyring.init_keys(partner, rotate=rotate)
        state = "rotated" if rotate and existed else ("kept" if existed else "created")
        click.echo(f"{partner}: {state} {path}")
