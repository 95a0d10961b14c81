"""The Ledger Monitor's run (`api_sync_job`): where the API's own store meets the main store.

Four steps, cheap when there is nothing to do: reconcile payments whose provider call timed out, apply
set-up requests the API had to queue, post final payments to the sales ledger (or raise their workflow
event), and publish accounts, cards and balances back to the API's read model. On PostgreSQL
(`CMP_DATABASE_URL`) the API's payments live in the store itself: the run only reconciles and posts outcomes;
nothing is ever queued and no read model is published (the API reads the store directly).
"""

from datetime import UTC, datetime

import dagster as dg

from cmp_pipelines.core.config_payments import load_provider_settings
from cmp_pipelines.core.db.api_store import ApiStore, open_api_store
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths, store
from cmp_pipelines.core.setup_requests import apply_queued
from cmp_pipelines.defs.one_off import flow as one_off
from cmp_pipelines.lib.metadata import markdown_table
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore
from cmp_pipelines.lib.resources.payment_provider import PaymentProviderResource

GROUP = "one_off_payments"


def _now() -> datetime:
    return datetime.now(UTC)


@dg.asset(group_name=GROUP, kinds={"sqlite"}, description=(
    "Reconciliation: every payment left PENDING by a provider timeout (or a hosted card page never finished) "
    "is looked up at the provider; what the provider never received is FAILED. Each payment moves once."))
def one_off_reconciliation(payment_provider: PaymentProviderResource) -> dg.MaterializeResult:
    settings = load_provider_settings(paths().config_dir)
    api = open_api_store(pool_size=2)
    try:
        result = one_off.reconcile(api, payment_provider.provider(), settings, _now())
    finally:
        api.close()
    return dg.MaterializeResult(metadata={
        "asked": dg.MetadataValue.int(result.asked), "succeeded": dg.MetadataValue.int(result.succeeded),
        "declined": dg.MetadataValue.int(result.declined), "failed": dg.MetadataValue.int(result.failed)})


@dg.asset(group_name=GROUP, pool=DB_POOL, kinds={"duckdb"}, description=(
    "Set-up requests (payment type, card token, mandate) the API queued while a run held the store, applied in "
    "order with the same services; a refused one is FAILED with the field at fault."))
def api_setup_requests_applied(database: Database) -> dg.MaterializeResult:
    if _postgres_url():  # applied at once by the API in one transaction: nothing is ever queued there
        return dg.MaterializeResult(metadata={"applied": dg.MetadataValue.int(0), "failed": dg.MetadataValue.int(0)})
    with database.connection() as con:
        counts = apply_queued(con, ApiStore(), _now())
    return dg.MaterializeResult(metadata={"applied": dg.MetadataValue.int(counts["APPLIED"]),
                                          "failed": dg.MetadataValue.int(counts["FAILED"])})


@dg.asset(group_name=GROUP, pool=DB_POOL, kinds={"duckdb", "json"},
          deps=[one_off_reconciliation, api_setup_requests_applied], description=(
    "CMP Ledger Monitor: successful one-off payments posted to the sales ledger in one batch (idempotency key "
    "one_off:<payment>:PAYMENT, never twice) with its posting file; each failure raises the configured workflow "
    "event and posts nothing."))
def one_off_ledger_postings(database: Database, file_store: FileStore) -> dg.MaterializeResult:
    settings = load_provider_settings(paths().config_dir)
    url = _postgres_url()
    if url:
        now = _now()
        result = one_off.post_to_ledger_postgres(url, settings, now)
        written = one_off.write_posting_files_postgres(url, file_store, now)
        result.posting_file = written.get(result.batch_id) if result.batch_id else None
        preview = _postgres_preview(url, result.batch_id)
        return dg.MaterializeResult(metadata=_posting_metadata(result, preview))
    with database.connection() as con:
        result = one_off.post_to_ledger(con, ApiStore(), file_store, settings, _now())
        preview = con.execute(
            "SELECT payment_id, account_number, channel, status, coalesce(reason_code, ''), "
            "minor_to_decimal(amount_minor) FROM one_off_payments WHERE batch_id = ? ORDER BY payment_id LIMIT 10",
            [result.batch_id or ""]).fetchall()
    return dg.MaterializeResult(metadata=_posting_metadata(result, preview))


def _postgres_url() -> str | None:
    configured = store()
    return configured.url if configured.backend == "postgres" else None


def _postgres_preview(url: str, batch_id: str | None) -> list[tuple]:
    from cmp_pipelines.core.db.postgres import connect

    with connect(url) as con:
        return con.execute(
            "SELECT payment_id, account_number, channel, status, coalesce(reason_code, ''), "
            "minor_to_decimal(amount_minor) FROM one_off_payments WHERE batch_id = %s ORDER BY payment_id LIMIT 10",
            [batch_id or ""]).fetchall()


def _posting_metadata(result: one_off.MonitorResult, preview: list[tuple]) -> dict:
    return {
        "batch_id": result.batch_id or "(nothing new)",
        "payments": dg.MetadataValue.int(result.payments),
        "posted_now": dg.MetadataValue.int(result.posted_now),
        "posted_amount": format_minor(-result.posted_minor),
        "workflow_events": dg.MetadataValue.int(result.events_now),
        "posting_file": result.posting_file or "",
        "preview": dg.MetadataValue.md(markdown_table(
            ["payment", "account", "channel", "status", "reason", "amount"], preview)),
    }


@dg.asset(group_name=GROUP, pool=DB_POOL, kinds={"sqlite"}, deps=[one_off_ledger_postings], description=(
    "The API's read model: accounts, payment types, cards on file and ledger balances, written to a new file "
    "and swapped in, so the API answers from it while runs hold the main store."))
def api_read_model(database: Database) -> dg.MaterializeResult:
    if _postgres_url():  # the API reads accounts, balances and events from the store itself
        return dg.MaterializeResult(metadata={"accounts": dg.MetadataValue.int(0),
                                              "skipped": "PostgreSQL store: the API reads it directly"})
    with database.connection(read_only=True) as con:
        count = one_off.publish_accounts(con, _now())
    return dg.MaterializeResult(metadata={"accounts": dg.MetadataValue.int(count)})


ONE_OFF_ASSETS = [one_off_reconciliation, api_setup_requests_applied, one_off_ledger_postings, api_read_model]

api_sync_job = dg.define_asset_job(
    "api_sync_job",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    description="CMP Ledger Monitor job: reconcile, apply queued set-up, post one-off payments, publish the read "
                "model.",
)
