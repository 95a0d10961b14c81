"""Delivery receipts in Dagster: one dynamic partition per receipt file (see `flow.py`)."""

from datetime import UTC, datetime

import dagster as dg

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.intake import FileQuarantined
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.receipts.flow import DeliveryReceipts
from cmp_pipelines.lib.metadata import quarantine_failure
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore

GROUP = "delivery_receipts"
receipt_files_partitions = dg.DynamicPartitionsDefinition(name="delivery_receipt_files")


@dg.asset(
    partitions_def=receipt_files_partitions,
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb", "json"},
    description=(
        "A partner's receipt for documents we sent it (the sales ledger's acceptance of posting files, the Bacs "
        "bureau's submission report), from inbound/delivery_receipts/<PARTNER>/: each ACCEPTED document becomes "
        "CONFIRMED in the delivery register, each REJECTED one FAILED with the partner's reason."
    ),
)
def delivery_receipts(context: dg.AssetExecutionContext, database: Database, file_store: FileStore,
                      cipher: PartnerCipher) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch and its link (core/db/mirror)
        flow = DeliveryReceipts(con, file_store, cipher.keyring(), load_partners(paths().config_dir),
                                datetime.now(UTC), mirror)
        try:
            load = flow.load(context.partition_key)
        except FileQuarantined as quarantined:
            raise quarantine_failure(quarantined) from None
    if load.unmatched:
        context.log.warning(f"{len(load.unmatched)} receipt(s) name no document sent to {load.partner}: "
                            f"{', '.join(load.unmatched[:20])}")
    return dg.MaterializeResult(metadata={
        "file_id": load.file_id, "load_status": load.status, "partner": load.partner,
        "confirmed": dg.MetadataValue.int(load.confirmed), "rejected": dg.MetadataValue.int(load.rejected),
        "unmatched": dg.MetadataValue.json(load.unmatched[:100]),
    })
