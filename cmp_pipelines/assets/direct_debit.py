"""Direct debit over Bacs: the daily AUDDIS extract (one daily partition per business day)."""

from datetime import UTC, date, datetime

import dagster as dg

from cmp_pipelines.configuration import load_direct_debit, load_partners
from cmp_pipelines.resources.cipher import PartnerCipher
from cmp_pipelines.resources.database import DB_POOL, Database
from cmp_pipelines.resources.file_store import FileStore
from cmp_pipelines.services.auddis import AuddisExtract
from cmp_pipelines.settings import paths

GROUP = "direct_debit"
auddis_days_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1, timezone="UTC")


def _extract(con, file_store: FileStore, cipher: PartnerCipher) -> AuddisExtract:
    config = paths().config_dir
    return AuddisExtract(con, file_store, cipher.keyring(), load_direct_debit(config, load_partners(config)),
                         datetime.now(UTC))


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
    with database.connection() as con:
        batch = _extract(con, file_store, cipher).select(date.fromisoformat(context.partition_key))
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
    description="The AUDDIS Standard 18 file for the bureau, encrypted for it (outbound/auddis/<BUREAU>/).",
)
def auddis_file(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.connection() as con:
        extract = _extract(con, file_store, cipher)
        batch = extract.selected(date.fromisoformat(context.partition_key))
        path = extract.write_file(batch)
    return dg.MaterializeResult(metadata={
        "batch_id": batch.batch_id, "files_written": path, "record_count": dg.MetadataValue.int(batch.record_count),
        "by_transaction_code": dg.MetadataValue.json(batch.by_code),
    })


DIRECT_DEBIT_ASSETS = [auddis_instructions_batch, auddis_file]
