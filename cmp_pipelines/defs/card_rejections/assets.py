"""Recurring Payments Rejections job (card): one dynamic partition per provider rejection file."""


import dagster as dg

from cmp_pipelines.core.config import load_partners, load_rejection_codes
from cmp_pipelines.core.intake import FileQuarantined
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.card_rejections.flow import CardRejections, RejectionLoad
from cmp_pipelines.lib.metadata import markdown_table, quarantine_failure
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore

GROUP = "recurring_payment_rejections"
card_rejection_files_partitions = dg.DynamicPartitionsDefinition(name="card_rejection_files")


def _flow(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> CardRejections:
    """On PostgreSQL (`mirror`) `con` is the run's scratch DuckDB linked to it (Database.flow_store)."""
    config = paths().config_dir
    return CardRejections(con, file_store, cipher.keyring(), load_partners(config), load_rejection_codes(config),
                          mirror=mirror)


def _load_metadata(load: RejectionLoad) -> dict:
    return {
        "file_id": load.file_id,
        "batch_id": load.batch_id,
        "load_status": load.status,
        "record_count": dg.MetadataValue.int(load.record_count),
        "reversed_count": dg.MetadataValue.int(load.reversed_count),
        "reversed_amount": format_minor(load.reversed_minor),
        "outcomes": dg.MetadataValue.json(load.outcomes),
        "problems": dg.MetadataValue.json(load.problems),
    }


@dg.asset(
    partitions_def=card_rejection_files_partitions,
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb", "json"},
    description=(
        "The rejected payments batch of one provider file: decrypted, validated (JSON Schema contract, control "
        "totals, record rules), each rejection matched to its extracted transaction and classified by its "
        "configured reason code. Unknown transactions and reason codes are reported; bad files quarantined."
    ),
)
def card_rejections_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        try:
            load = _flow(con, file_store, cipher, mirror).load(context.partition_key)
        except FileQuarantined as quarantined:
            raise quarantine_failure(quarantined) from quarantined
        preview = con.execute(
            "SELECT position, record_id, transaction_id, reason_code, outcome, coalesce(problem_code, '') "
            "FROM card_rejections WHERE batch_id = ? ORDER BY position LIMIT 10", [load.batch_id]
        ).fetchall()
    metadata = _load_metadata(load)
    metadata["preview"] = dg.MetadataValue.md(markdown_table(
        ["position", "record_id", "transaction", "reason", "outcome", "problem"], preview))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=card_rejection_files_partitions,
    deps=[card_rejections_batch],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "In one transaction: the reversal batch and its ledger postings, the retry schedule and account "
        "suspension of soft declines, the payment-type reversion of hard declines (and of soft declines out "
        "of retries), the configured workflow events and the customer communications."
    ),
)
def card_reversal_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _flow(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        applied = flow.apply(load)
        events = con.execute(
            "SELECT e.event_type || '/' || e.event_code, coalesce(e.reason_type || '/' || e.reason_code, '-'), "
            "coalesce(e.new_payment_type, '-'), count(*) FROM workflow_events e "
            "JOIN card_transactions t ON t.transaction_id = e.source_ref "
            "WHERE t.rejection_batch_id = ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            [load.batch_id],
        ).fetchall()
    return dg.MaterializeResult(metadata={
        "batch_id": applied.batch_id,
        "applied_now": applied.applied_now,
        "posting_count": dg.MetadataValue.int(applied.posting_count),
        "net_amount": format_minor(applied.net_minor),
        "accounts_suspended": dg.MetadataValue.int(applied.suspended_accounts),
        "accounts_reverted_to_default": dg.MetadataValue.int(applied.reverted_accounts),
        "workflow_events": dg.MetadataValue.int(applied.events),
        "customer_communications": dg.MetadataValue.int(applied.communications),
        "events_by_type": dg.MetadataValue.md(markdown_table(["event", "reason", "account now pays by", "count"],
                                                             events)),
    })


@dg.asset(
    partitions_def=card_rejection_files_partitions,
    deps=[card_reversal_batch],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"json"},
    description="The reversal batch formatted for the target sales ledger (outbound/ledger/RCRV-<hash>.json).",
)
def card_reversal_ledger_posting_file(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _flow(con, file_store, cipher, mirror)
        applied = flow.applied(flow.loaded(context.partition_key))
        path = flow.write_posting_file(applied)
    return dg.MaterializeResult(metadata={
        "batch_id": applied.batch_id, "files_written": path,
        "record_count": dg.MetadataValue.int(applied.posting_count), "net_amount": format_minor(applied.net_minor),
    })


@dg.asset(
    partitions_def=card_rejection_files_partitions,
    deps=[card_reversal_ledger_posting_file],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"json"},
    description=(
        "The outcome of every record (outbound/reports/card_rejections/<PROVIDER>/<file>.outcomes.json) and "
        "the customer communications to send (outbound/communications/<batch>.json)."
    ),
)
def card_rejection_reports(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _flow(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        report, communications = flow.write_reports(load)
    metadata = _load_metadata(load)
    metadata["files_written"] = dg.MetadataValue.json([report, communications])
    return dg.MaterializeResult(metadata=metadata)


CARD_REJECTION_ASSETS = [card_rejections_batch, card_reversal_batch, card_reversal_ledger_posting_file,
                         card_rejection_reports]
