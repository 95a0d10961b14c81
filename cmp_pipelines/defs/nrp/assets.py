"""Non-recurring payments: one dynamic partition per inbound partner file, four assets per file."""


import dagster as dg

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.nrp.flow import FileQuarantined, LoadResult, NonRecurringPayments
from cmp_pipelines.lib.metadata import markdown_table, quarantine_failure
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore

GROUP = "non_recurring_payments"
nrp_files_partitions = dg.DynamicPartitionsDefinition(name="nrp_files")


def open_flow(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> NonRecurringPayments:
    return NonRecurringPayments(con, file_store, cipher.keyring(), load_partners(paths().config_dir), mirror=mirror)


def _load_metadata(load: LoadResult) -> dict:
    return {
        "file_id": load.file_id,
        "batch_id": load.batch_id,
        "load_status": load.status,
        "record_count": dg.MetadataValue.int(load.record_count),
        "accepted_count": dg.MetadataValue.int(load.accepted_count),
        "rejected_count": dg.MetadataValue.int(load.rejected_count),
        "accepted_amount": f"{format_minor(load.accepted_minor)} {load.currency}",
        "rejected_amount": f"{format_minor(load.rejected_minor)} {load.currency}",
        "allocations": dg.MetadataValue.json(load.allocations),
        "rejections_by_reason": dg.MetadataValue.json(load.rejections),
        "archived_file": load.archived_path or "",
    }


@dg.asset(
    partitions_def=nrp_files_partitions,
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb", "json"},
    description=(
        "CMP daemon 'Load Non Recurring Payments From Generic Format': decrypts the partner file, validates "
        "it (JSON Schema contract, control totals, record rules), matches each payment (invoice, account or "
        "suspense) and loads the non-recurring payments batch. Bad files are quarantined with a reason."
    ),
)
def nrp_payments_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = open_flow(con, file_store, cipher, mirror)
        try:
            load = flow.load(context.partition_key)
        except FileQuarantined as quarantined:
            raise quarantine_failure(quarantined) from quarantined
        preview = con.execute(
            "SELECT position, record_id, outcome, coalesce(allocation, '') AS allocation, "
            "coalesce(minor_to_decimal(amount_minor), '') AS amount, coalesce(reason_code, '') AS reason_code "
            "FROM nrp_records WHERE batch_id = ? ORDER BY position LIMIT 10",
            [load.batch_id],
        ).fetchall()
    metadata = _load_metadata(load)
    metadata["files_read"] = f"inbound/nrp/{context.partition_key.split('@')[0]}"
    metadata["preview"] = dg.MetadataValue.md(markdown_table(
        ["position", "record_id", "outcome", "allocation", "amount", "reason_code"], preview
    ))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=nrp_files_partitions,
    deps=[nrp_payments_batch],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "CMP 'Non Recurring Payment job': the posting batch of the matched payments, written to the sales "
        "ledger (ledger_postings) in one transaction with idempotency keys, so a re-run posts nothing twice."
    ),
)
def nrp_posting_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = open_flow(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        posted = flow.post(load)
        by_account = con.execute(
            "SELECT account_number, count(*), minor_to_decimal(sum(amount_minor)) FROM ledger_postings "
            "WHERE batch_id = ? GROUP BY 1 ORDER BY sum(amount_minor) LIMIT 10",
            [posted.batch_id],
        ).fetchall()
    return dg.MaterializeResult(metadata={
        "batch_id": posted.batch_id,
        "load_batch_id": load.batch_id,
        "posting_count": dg.MetadataValue.int(posted.posting_count),
        "posted_now": dg.MetadataValue.int(posted.posted_now),
        "total_amount": f"{format_minor(posted.total_minor)} {load.currency}",
        "largest_postings_by_account": dg.MetadataValue.md(
            markdown_table(["ledger account", "postings", "amount"], by_account)
        ),
    })


@dg.asset(
    partitions_def=nrp_files_partitions,
    deps=[nrp_posting_batch],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"json"},
    description=(
        "CMP posting daemon: formats the posting batch and writes it to outbound/ledger/ for the target "
        "sales ledger (schema core/files/schemas/ledger_posting_batch.schema.json)."
    ),
)
def nrp_ledger_posting_file(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = open_flow(con, file_store, cipher, mirror)
        posted = flow.posted(flow.loaded(context.partition_key))
        path = flow.write_posting_file(posted)
    return dg.MaterializeResult(metadata={
        "batch_id": posted.batch_id,
        "files_written": path,
        "record_count": dg.MetadataValue.int(posted.posting_count),
        "total_amount": format_minor(posted.total_minor),
    })


# The partner's acknowledgement ("receipt and processing" of its file) and our posting file for the sales ledger
# (the daemons that detect the posting batch) are separate CMP daemons; neither reads the other's output. The
# acknowledgement goes first (ready steps run by priority): the partner hears about its file as soon as its payments
# are posted, ~1 s sooner on a 1M file, and the posting file follows in the same run.
ACK_FIRST = {"dagster/priority": "1"}


@dg.asset(
    partitions_def=nrp_files_partitions,
    deps=[nrp_posting_batch],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"json"},
    op_tags=ACK_FIRST,
    description=(
        "CMP daemon 'Acknowledge Non Recurring Payments Receipt Of': an encrypted acknowledgement to the "
        "partner with every record's outcome, allocation and reason (outbound/acknowledgements/nrp/<partner>/), "
        "once its payments are posted."
    ),
)
def nrp_acknowledgement(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = open_flow(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        path = flow.acknowledge(load)
    metadata = _load_metadata(load)
    metadata["files_written"] = path
    return dg.MaterializeResult(metadata=metadata)


NRP_ASSETS = [nrp_payments_batch, nrp_posting_batch, nrp_ledger_posting_file, nrp_acknowledgement]
