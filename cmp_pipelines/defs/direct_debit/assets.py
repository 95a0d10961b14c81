"""Direct debit over Bacs: the daily AUDDIS extract and the DD-mode Recurring Payments job (collections), each one
daily partition per business day. Each step runs on `database.flow_store()`: the DuckDB store, or on PostgreSQL the
run's scratch and its link (defs/direct_debit/pg.py)."""

from datetime import UTC, date, datetime

import dagster as dg

from cmp_pipelines.core.config import load_direct_debit, load_partners
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.direct_debit.auddis import AuddisExtract
from cmp_pipelines.defs.direct_debit.calendar import cycle
from cmp_pipelines.defs.direct_debit.collections import CollectionBatch, DirectDebitCollections
from cmp_pipelines.lib.metadata import awaiting_notice_metadata, markdown_table
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore

GROUP = "direct_debit"
COLLECTIONS_GROUP = "direct_debit_collections"
auddis_days_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1, timezone="UTC")
dd_collection_days_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1, timezone="UTC")


def _config():
    config = paths().config_dir
    return load_direct_debit(config, load_partners(config))


def _cycle_metadata(day: date) -> dict:
    """The Bacs cycle of a run's day: input, processing (UHL1) and entry days, and why the day moved if it did."""
    dates = cycle(day)
    return {"input_day": dates.input_day.isoformat(), "processing_day": dates.processing_day.isoformat(),
            "entry_day": dates.entry_day.isoformat(), "moved_to_working_day": dates.moved or "no"}


def _extract(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> AuddisExtract:
    return AuddisExtract(con, file_store, cipher.keyring(), _config(), datetime.now(UTC), mirror)


@dg.asset(
    partitions_def=auddis_days_partitions,
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "The day's Direct Debit Instructions for AUDDIS: mandates pending submission (0N), amended (0C then 0N), "
        "cancelled (0C), converted (0S); submitted mandates with no rejection for the configured days become "
        "ACTIVE first. Chosen once per day and frozen."
    ),
)
def auddis_instructions_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        batch = _extract(con, file_store, cipher, mirror).select(date.fromisoformat(context.partition_key))
    return dg.MaterializeResult(metadata={
        "batch_id": batch.batch_id, "selection": batch.status,
        "record_count": dg.MetadataValue.int(batch.record_count),
        "by_transaction_code": dg.MetadataValue.json(batch.by_code),
        "mandates_activated": dg.MetadataValue.int(batch.activated),
    })


@dg.asset(
    partitions_def=auddis_days_partitions,
    deps=[auddis_instructions_batch],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"bacs"},
    description="The AUDDIS Standard 18 file for the bureau, encrypted for it (outbound/auddis/<BUREAU>/), checked "
                "against the Standard 18 layout before it is published; no file when nothing is pending.",
)
def auddis_file(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        extract = _extract(con, file_store, cipher, mirror)
        batch = extract.selected(date.fromisoformat(context.partition_key))
        path = extract.write_file(batch)
    return dg.MaterializeResult(metadata={
        "batch_id": batch.batch_id,
        "files_written": path or "none: no instruction pending, so no AUDDIS submission (Bacs has no use for one)",
        "record_count": dg.MetadataValue.int(batch.record_count),
        "by_transaction_code": dg.MetadataValue.json(batch.by_code), **_cycle_metadata(batch.business_date),
    })


# ---- the DD-mode Recurring Payments job ----------------------------------------------------------------------


def _collections(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> DirectDebitCollections:
    return DirectDebitCollections(con, file_store, cipher.keyring(), _config(), mirror=mirror)


def _collection_metadata(batch: CollectionBatch) -> dict:
    return {"batch_id": batch.batch_id, "business_date": batch.business_date.isoformat(), "selection": batch.status,
            "collection_count": dg.MetadataValue.int(batch.collection_count),
            "total_amount": format_minor(batch.total_minor),
            "by_transaction_code": dg.MetadataValue.json(batch.by_code),
            "mandates_cancelled_after_final_collection": dg.MetadataValue.int(batch.mandates_cancelled)}


@dg.asset(
    partitions_def=dd_collection_days_partitions,
    pool=DB_POOL,
    group_name=COLLECTIONS_GROUP,
    kinds={"duckdb"},
    description=(
        "Advance notice of direct debits: one ADVANCE_NOTICE/DD_COLLECTION workflow event per open GBP invoice of a "
        "direct-debit account with a mandate (once per invoice), dated at least advance_notice_days Bacs working "
        "days ahead (config/direct_debit.yaml); the dispatcher e-mails it (template advance_notice, with the "
        "mandate reference, service user number and the Guarantee) and a debit takes an invoice only once its "
        "notice was sent that long before its entry day."
    ),
)
def dd_collection_notices(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    with database.flow_store() as (con, mirror):
        flow = _collections(con, file_store, cipher, mirror)
        raised = flow.raise_notices(day)
        waiting = flow.waiting(day)
    return dg.MaterializeResult(metadata={
        "notices_raised": dg.MetadataValue.int(raised.count),
        "notices_amount": format_minor(raised.total_minor),
        "advance_notice_working_days": dg.MetadataValue.int(flow.config.advance_notice_days),
        **awaiting_notice_metadata(waiting),
    })


@dg.asset(
    partitions_def=dd_collection_days_partitions,
    pool=DB_POOL,
    group_name=COLLECTIONS_GROUP,
    kinds={"duckdb"},
    description=(
        "Recurring Payments job (DD mode), selection: one debit per active mandate of a direct-debit account for "
        "its invoices due whose advance notice was sent in time (01 first, 17 regular, 19 final), plus "
        "soft-returned debits due for re-presentation (18). Chosen once per day and frozen."
    ),
)
def dd_collections_due(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _collections(con, file_store, cipher, mirror)
        batch = flow.select(date.fromisoformat(context.partition_key))
        waiting = flow.waiting(batch.business_date)
        preview = con.execute(
            "SELECT collection_id, transaction_code, reference, minor_to_decimal(amount_minor) FROM dd_collections "
            "WHERE batch_id = ? ORDER BY collection_id LIMIT 10", [batch.batch_id]).fetchall()
    metadata = {**_collection_metadata(batch), **_cycle_metadata(batch.business_date),
                **awaiting_notice_metadata(waiting)}
    metadata["preview"] = dg.MetadataValue.md(markdown_table(["debit", "code", "reference", "amount"], preview))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=dd_collection_days_partitions,
    deps=["dd_collection_posting_batch"],
    pool=DB_POOL,
    group_name=COLLECTIONS_GROUP,
    kinds={"bacs"},
    description="The Standard 18 collection file with its 99 contra, encrypted for the bureau "
                "(outbound/dd_collections/<BUREAU>/DDX-<date>.std18.enc); no file when nothing is due.",
)
def dd_collection_file(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _collections(con, file_store, cipher, mirror)
        batch = flow.selected(date.fromisoformat(context.partition_key))
        path = flow.write_file(batch)
    metadata = {**_collection_metadata(batch), **_cycle_metadata(batch.business_date)}
    metadata["files_written"] = path or "none: nothing due"
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=dd_collection_days_partitions,
    deps=[dd_collections_due],
    pool=DB_POOL,
    group_name=COLLECTIONS_GROUP,
    kinds={"duckdb"},
    description="The day's debits in the sales ledger, one posting per invoice of each debit (DDP-<date>), "
                "idempotent, committed before the file goes to the bureau; returned debits are reversed by "
                "the ARUDD Rejections job.",
)
def dd_collection_posting_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _collections(con, file_store, cipher, mirror)
        posted = flow.post(flow.selected(date.fromisoformat(context.partition_key)))
    return dg.MaterializeResult(metadata={
        "batch_id": posted.batch_id, "posted_now": dg.MetadataValue.int(posted.posted_now),
        "posting_count": dg.MetadataValue.int(posted.posting_count), "net_amount": format_minor(posted.total_minor)})


@dg.asset(
    partitions_def=dd_collection_days_partitions,
    deps=["dd_collection_file"],
    pool=DB_POOL,
    group_name=COLLECTIONS_GROUP,
    kinds={"json"},
    description="The posting batch formatted for the target sales ledger (outbound/ledger/DDP-<date>.json).",
)
def dd_collection_ledger_posting_file(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _collections(con, file_store, cipher, mirror)
        posted = flow.posted_on(date.fromisoformat(context.partition_key))
        path = flow.write_posting_file(posted)
    return dg.MaterializeResult(metadata={"batch_id": posted.batch_id, "files_written": path,
                                          "record_count": dg.MetadataValue.int(posted.posting_count)})


DIRECT_DEBIT_ASSETS = [auddis_instructions_batch, auddis_file]
DD_COLLECTION_ASSETS = [dd_collection_notices, dd_collections_due, dd_collection_file, dd_collection_posting_batch,
                        dd_collection_ledger_posting_file]
