"""`demo`: sample accounts, invoices and partner files for `make run` and `make demo`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click

from cmp_pipelines.cli.common import _config, _connect, _dagster_home, _dd_config, _fail, _hardware, _service_connect
from cmp_pipelines.core.settings import paths

# What each seeding command reads and writes (`_seeding` pulls these whole on PostgreSQL).
_SEED_TABLES = ("accounts", "invoices", "ledger_postings")
_CARD_TABLES = ("accounts", "invoices", "ledger_postings", "payment_cards", "payment_type_changes", "card_refunds",
                "mandates", "collection_notices")
_DD_TABLES = ("accounts", "invoices", "ledger_postings", "mandates", "payment_type_changes", "collection_notices")


@click.group()
def demo() -> None:
    """Deterministic demo data."""


def _on_postgres() -> bool:
    from cmp_pipelines.cli.setup import _store

    return _store().backend == "postgres"


@contextmanager
def _seeding(*tables: str) -> Iterator:
    """The connection a seeding command writes through. The seeding SQL is DuckDB's (range, hash, named
    parameters), so on PostgreSQL it runs unchanged in a scratch DuckDB holding PostgreSQL's rows of `tables` (the
    demo is small: they are pulled whole), and what it added or changed (it deletes nothing) is pushed back in one
    transaction (core/db/mirror.py): upserted by primary key, new postings numbered by PostgreSQL's sequence
    (`push_new`). For preparing a demo, not beside running flows: a row they change meanwhile is overwritten."""
    if not _on_postgres():
        with _connect() as con:
            yield con
        return
    from cmp_pipelines.core.db.mirror import mirrored
    from cmp_pipelines.core.db.postgres import PostgresStoreError

    try:
        with mirrored() as mirror, mirror.transaction():
            con = mirror.con
            for table in tables:
                mirror.pull(table, "TRUE")
                con.execute(f"CREATE TEMP TABLE before_{table} AS SELECT * FROM {table}")  # noqa: S608 - ours
            yield con
            for table in tables:
                _push_changes(mirror, table)
    except PostgresStoreError as exc:
        _fail(str(exc))


def _push_changes(mirror, table: str) -> None:
    changed = f"SELECT * FROM {table} EXCEPT SELECT * FROM before_{table}"  # noqa: S608 - our tables
    if table == "ledger_postings":
        mirror.push_new(table, "posting_id", f"idempotency_key IN (SELECT idempotency_key FROM ({changed}))",
                        unique="idempotency_key")
        return
    key = mirror.con.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                             "AND constraint_type = 'PRIMARY KEY'", [table]).fetchone()
    if key is None:  # no key (payment_type_changes, a history): the seeding only adds rows to it
        names = [n for (n,) in mirror.con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ?",
                                                  [table]).fetchall()]
        same = " AND ".join(f"c.{n} IS NOT DISTINCT FROM {table}.{n}" for n in names)
        mirror.push(table, f"EXISTS (SELECT 1 FROM ({changed}) c WHERE {same})")
        return
    columns = ", ".join(key[0])
    mirror.upsert(table, key[0], f"({columns}) IN (SELECT {columns} FROM ({changed}))")


@demo.command("seed")
@click.option("--accounts", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--seed", default=42, show_default=True, type=int)
def demo_seed(accounts: int, seed: int) -> None:
    """Accounts ACC00000001..N, each with at least one open invoice (its charge posted to the ledger)."""
    from cmp_pipelines.core.config import load_payment_terms
    from cmp_pipelines.core.reference import sync_reference_data
    from cmp_pipelines.demo import data as demo_data

    partners, probes = _config()
    manual_term = load_payment_terms(paths().config_dir).default_for("MANUAL")
    on_postgres = _on_postgres()
    if on_postgres:  # as `init` loads them there
        from cmp_pipelines.cli.setup import _sync_postgres

        _sync_postgres(partners, probes)
    with _seeding(*_SEED_TABLES) as con, click.progressbar(length=2, label="seeding accounts and invoices") as bar:
        if not on_postgres:
            sync_reference_data(con, partners, probes)
        bar.update(1)
        invoices = demo_data.seed_accounts(con, accounts, seed, datetime.now(UTC))
        if manual_term is not None:  # created as MANUAL: the MANUAL payment term default applies
            con.execute("UPDATE accounts SET payment_term = ? WHERE payment_term IS NULL AND NOT is_suspense",
                        [manual_term.code])
        bar.update(1)
    click.echo(f"{accounts} accounts, {invoices} invoices in total")


@demo.command("files")
@click.option("--seed", default=42, show_default=True, type=int)
def demo_files(seed: int) -> None:
    """Sample encrypted non-recurring payment files in data/inbound/nrp/ (one with bad records, one empty)."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.demo import data as demo_data
    from cmp_pipelines.lib.resources.file_store import configured_file_store

    with _service_connect() as con:
        accounts = con.execute("SELECT count(*) FROM accounts WHERE NOT is_suspense").fetchone()[0]
    if accounts < 2:
        _fail("no demo accounts: run `cmp-pipelines demo seed` first")
    with click.progressbar(length=4, label="writing sample files") as bar:
        written = demo_data.demo_files(
            configured_file_store(), PartnerKeyring(paths().keys_dir), accounts, seed, progress=lambda _: bar.update(1)
        )
    for path in written:
        click.echo(path)


@demo.command("cards")
def demo_cards() -> None:
    """Every 10th demo account pays by recurring card (a token, never a card number), with an invoice due."""
    from cmp_pipelines.core.payment_setup import card_providers
    from cmp_pipelines.demo import data as demo_data

    partners, _ = _config()
    providers = card_providers(partners)
    if not providers:
        _fail("no card provider in config/partners.yaml (a partner with feed card_rejections)")
    with _seeding(*_CARD_TABLES) as con:
        count = demo_data.seed_card_accounts(con, providers[0], datetime.now(UTC))
    click.echo(f"{count} accounts pay by recurring card through {providers[0]}")


@demo.command("card-rejections")
def demo_card_rejections() -> None:
    """A sample provider rejection file for extracted card payments (soft, hard, unknown code)."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.payment_setup import card_providers
    from cmp_pipelines.demo import data as demo_data
    from cmp_pipelines.lib.resources.file_store import configured_file_store

    partners, _ = _config()
    provider = card_providers(partners)[0]
    with _service_connect() as con:
        path = demo_data.card_rejection_file(con, configured_file_store(), PartnerKeyring(paths().keys_dir), provider,
                                             datetime.now(UTC))
    if path is None:
        _fail("no extracted card payment to reject: run `cmp-pipelines run-card-payments` first")
    click.echo(path)


@demo.command("direct-debit")
def demo_direct_debit() -> None:
    """Every 10th demo account (numbers ending 5) pays by direct debit with an invoice due; a few mandates wait
    for today's AUDDIS."""
    from cmp_pipelines.demo import data as demo_data

    config = _dd_config()
    with _seeding(*_DD_TABLES) as con:
        active, pending = demo_data.seed_direct_debit_accounts(con, config.service_user_number, datetime.now(UTC))
    click.echo(f"{active} active mandate(s) collecting by direct debit, {pending} waiting for the next AUDDIS")


@demo.command("bacs-reports")
def demo_bacs_reports() -> None:
    """Sample ADDACS and ARUDD reports from the bureau for today's mandates and debits."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.demo import data as demo_data
    from cmp_pipelines.lib.resources.file_store import configured_file_store

    config = _dd_config()
    with _service_connect() as con:
        written = demo_data.bacs_report_files(con, configured_file_store(), PartnerKeyring(paths().keys_dir),
                                              config.bureau, config.service_user_number, datetime.now(UTC))
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo("nothing to report on: run `demo direct-debit` and `run-dd-collections` first")


@demo.command("orders")
def demo_orders() -> None:
    """Stock files, four generated hardware orders sent by the Sales Order Request job (one fails its fraud
    check), and one more order left for the sensor."""
    from cmp_pipelines.defs.hardware_orders.sales_orders import pending_generation, request_batch_id
    from cmp_pipelines.demo import hardware as demo_hardware

    config = _hardware()
    now = datetime.now(UTC)
    for path in demo_hardware.write_stock_files(config, paths().data_dir / "stock"):
        click.echo(path)
    with _service_connect() as con:
        if con.execute("SELECT count(*) FROM hw_orders").fetchone()[0]:
            click.echo("demo orders exist already")
            return
        created = demo_hardware.create_orders(con, config, now)
        up_to = pending_generation(con)
    _dagster_home()
    from cmp_pipelines.defs.hardware_orders.assets import sales_order_request_partitions
    from cmp_pipelines.lib.instance import run_new_partition

    outcome = run_new_partition(sales_order_request_partitions.name, request_batch_id(up_to), "sales_order_request_job")
    if not outcome.success:
        _fail(f"sales_order_request_job {request_batch_id(up_to)} failed: {outcome.error}")
    with _service_connect() as con:
        created += demo_hardware.create_orders(con, config, now, demo_hardware.ORDERS[2:3])
        for order_id in created:
            status = con.execute("SELECT status, coalesce(error_reason, '') FROM hw_orders WHERE order_id = ?",
                                 [order_id]).fetchone()
            click.echo(f"{order_id}: {status[0]} {status[1]}".rstrip())


@demo.command("warehouse-dispatch")
def demo_warehouse_dispatch() -> None:
    """A response CSV per warehouse for the orders awaiting dispatch (a failed line, a unit still to come, a bad
    IMEI), encrypted into data/inbound/warehouse_dispatch/<WAREHOUSE>/."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.demo import hardware as demo_hardware
    from cmp_pipelines.lib.resources.file_store import configured_file_store

    with _service_connect() as con:
        written = demo_hardware.warehouse_response_files(con, configured_file_store(), PartnerKeyring(paths().keys_dir),
                                                         datetime.now(UTC))
    if not written:
        _fail("no order awaiting dispatch: run `cmp-pipelines demo orders` first")
    for path in written:
        click.echo(path)


@demo.command("billing-run")
def demo_billing_run() -> None:
    """A sample billing run file from the billing system (new and changed accounts, the day's invoices, three bad
    records), encrypted into data/inbound/billing/BILLSYS/."""
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.demo import billing as demo_billing
    from cmp_pipelines.lib.resources.file_store import configured_file_store

    click.echo(demo_billing.demo_billing_run(configured_file_store(), PartnerKeyring(paths().keys_dir)))
