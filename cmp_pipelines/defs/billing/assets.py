"""The billing feed: one dynamic partition per billing run file, four assets per file."""

import dagster as dg

from cmp_pipelines.core.config import load_partners, load_payment_terms
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.billing.flow import BillingRun, FileQuarantined, LoadResult
from cmp_pipelines.lib.metadata import markdown_table, quarantine_failure
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore

GROUP = "billing"
billing_files_partitions = dg.DynamicPartitionsDefinition(name="billing_files")


def open_flow(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> BillingRun:
    config = paths().config_dir
    return BillingRun(con, file_store, cipher.keyring(), load_partners(config), load_payment_terms(config),
                      mirror=mirror)


def _load_metadata(load: LoadResult) -> dict:
    return {
        "file_id": load.file_id,
        "batch_id": load.batch_id,
        "load_status": load.status,
        "record_count": dg.MetadataValue.int(load.record_count),
        "accepted_count": dg.MetadataValue.int(load.accepted_count),
        "rejected_count": dg.MetadataValue.int(load.rejected_count),
        "accounts_created": dg.MetadataValue.int(load.accounts_created),
        "accounts_updated": dg.MetadataValue.int(load.accounts_updated),
        "invoices_issued": dg.MetadataValue.int(load.invoices_issued),
        "invoiced_amount": f"{format_minor(load.invoiced_minor)} {load.currency}",
        "rejections_by_reason": dg.MetadataValue.json(load.rejections),
        "archived_file": load.archived_path or "",
    }


@dg.asset(
    partitions_def=billing_files_partitions,
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb", "json"},
    description=(
        "A billing run from the billing system: decrypts the file, validates it (JSON Schema contract "
        "core/files/schemas/billing_run.schema.json, control totals, record rules), creates or changes the "
        "accounts and issues the invoices, each due after its account's payment term. Bad files are quarantined."
    ),
)
def billing_run_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch and its link
        flow = open_flow(con, file_store, cipher, mirror)
        try:
            load = flow.load(context.partition_key)
        except FileQuarantined as quarantined:
            raise quarantine_failure(quarantined) from quarantined
        preview = con.execute(
            "SELECT position, record_id, record_type, outcome, coalesce(action, '') AS action, "
            "coalesce(invoice_number, '') AS invoice, coalesce(minor_to_decimal(amount_minor), '') AS amount, "
            "coalesce(due_on::VARCHAR, '') AS due, coalesce(reason_code, '') AS reason_code "
            "FROM billing_records WHERE batch_id = ? ORDER BY position LIMIT 10", [load.batch_id]).fetchall()
    metadata = _load_metadata(load)
    metadata["files_read"] = f"inbound/billing/{context.partition_key.split('@')[0]}"
    metadata["preview"] = dg.MetadataValue.md(markdown_table(
        ["position", "record_id", "type", "outcome", "action", "invoice", "amount", "due", "reason_code"], preview))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=billing_files_partitions,
    deps=[billing_run_batch],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "The invoices of the billing run posted to the sales ledger, with every hardware charge waiting for its "
        "account's next invoice attached to the first invoice this run issued to the account; one transaction, "
        "idempotency keys, so a re-run posts nothing twice."
    ),
)
def billing_posting_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch and its link
        flow = open_flow(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        result = flow.post(load)
    posted = result.posted
    return dg.MaterializeResult(metadata={
        "batch_id": posted.batch_id,
        "load_batch_id": load.batch_id,
        "posting_count": dg.MetadataValue.int(posted.posting_count),
        "posted_now": dg.MetadataValue.int(posted.posted_now),
        "total_amount": f"{format_minor(posted.total_minor)} {load.currency}",
        "hardware_charges_invoiced": dg.MetadataValue.int(result.charges_attached),
        "hardware_charges_amount": f"{format_minor(result.charges_minor)} {load.currency}",
    })


@dg.asset(
    partitions_def=billing_files_partitions,
    deps=[billing_posting_batch],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"json"},
    description="The posting batch of the billing run as a file for the target sales ledger (outbound/ledger/).",
)
def billing_ledger_posting_file(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch and its link
        flow = open_flow(con, file_store, cipher, mirror)
        result = flow.posted(flow.loaded(context.partition_key))
        path = flow.write_posting_file(result)
    return dg.MaterializeResult(metadata={
        "batch_id": result.posted.batch_id,
        "files_written": path,
        "record_count": dg.MetadataValue.int(result.posted.posting_count),
        "total_amount": format_minor(result.posted.total_minor),
    })


@dg.asset(
    partitions_def=billing_files_partitions,
    deps=[billing_ledger_posting_file],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"json"},
    description=(
        "An encrypted acknowledgement to the billing system: every record's outcome and reason, each invoice's "
        "due date and the hardware charges added to it (outbound/acknowledgements/billing/<partner>/)."
    ),
)
def billing_acknowledgement(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch and its link
        flow = open_flow(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        path = flow.acknowledge(load)
    metadata = _load_metadata(load)
    metadata["files_written"] = path
    return dg.MaterializeResult(metadata=metadata)


BILLING_ASSETS = [billing_run_batch, billing_posting_batch, billing_ledger_posting_file, billing_acknowledgement]
