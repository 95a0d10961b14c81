"""Recurring Payments job, CARD mode: one daily partition per business day, four assets per day."""

from datetime import date

import dagster as dg

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.card_payments.flow import DueBatch, RecurringCardPayments
from cmp_pipelines.lib.metadata import awaiting_notice_metadata, markdown_table
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore

GROUP = "recurring_card_payments"
# end_offset=1: the run scheduled on a day takes that day's partition, i.e. what is due by today.
card_payment_days_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1,
                                                            timezone="UTC")


def _flow(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> RecurringCardPayments:
    """On PostgreSQL (`mirror`) `con` is the run's scratch DuckDB linked to it (Database.flow_store)."""
    return RecurringCardPayments(con, file_store, cipher.keyring(), load_partners(paths().config_dir), mirror=mirror)


def _day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def _due_metadata(due: DueBatch) -> dict:
    return {
        "batch_id": due.batch_id,
        "business_date": due.business_date.isoformat(),
        "selection": due.status,
        "record_count": dg.MetadataValue.int(due.record_count),
        "payment_count": dg.MetadataValue.int(due.payment_count),
        "payment_amount": format_minor(due.payment_minor),
        "refund_count": dg.MetadataValue.int(due.refund_count),
        "refund_amount": format_minor(due.refund_minor),
        "retries": dg.MetadataValue.int(due.retry_count),
        "by_provider": dg.MetadataValue.json(due.by_provider),
    }


@dg.asset(
    partitions_def=card_payment_days_partitions,
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "Advance notice of card collections: one ADVANCE_NOTICE/CARD_COLLECTION workflow event per open invoice of "
        "a card-paying account (once per invoice), dated at least advance_notice_days (config/card_payments.yaml) "
        "ahead; the dispatcher e-mails it (template advance_notice) and the extract takes an invoice only once its "
        "notice was sent that long before."
    ),
)
def card_payment_notices(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _flow(con, file_store, cipher, mirror)
        raised = flow.raise_notices(_day(context))
        waiting = flow.waiting(_day(context))
    return dg.MaterializeResult(metadata={
        "notices_raised": dg.MetadataValue.int(raised.count),
        "notices_amount": format_minor(raised.total_minor),
        "advance_notice_days": dg.MetadataValue.int(flow.config.advance_notice_days),
        **awaiting_notice_metadata(waiting),
    })


@dg.asset(
    partitions_def=card_payment_days_partitions,
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "Recurring Payments job (CARD mode), selection: every payment due from a card-paying account (open "
        "invoices past their due date, account not suspended, invoice never extracted), every soft-declined "
        "payment whose retry is due, and every approved card refund due. Chosen once per day and frozen."
    ),
)
def card_payments_due(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _flow(con, file_store, cipher, mirror)
        due = flow.select_due(_day(context))
        waiting = flow.waiting(_day(context))
        preview = con.execute(
            "SELECT transaction_id, kind, account_number, coalesce(invoice_number, refund_id), "
            "minor_to_decimal(amount_minor), attempt FROM card_transactions WHERE batch_id = ? "
            "ORDER BY transaction_id LIMIT 10", [due.batch_id]
        ).fetchall()
    metadata = {**_due_metadata(due), **awaiting_notice_metadata(waiting)}
    metadata["preview"] = dg.MetadataValue.md(markdown_table(
        ["transaction", "type", "account", "invoice/refund", "amount", "attempt"], preview))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=card_payment_days_partitions,
    deps=["card_payment_posting_batch"],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"json"},
    description=(
        "The generic JSON card payment extract for the provider adapter (schema "
        "core/files/schemas/card_payment_extract.schema.json), one per provider and currency, encrypted for "
        "the provider, in outbound/card_payments/<PROVIDER>/."
    ),
)
def card_payment_extract(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _flow(con, file_store, cipher, mirror)
        due = flow.due(_day(context))
        written = flow.write_extracts(due)
    return dg.MaterializeResult(metadata={
        **_due_metadata(due),
        "files_written": dg.MetadataValue.json([f.path for f in written]),
        "control_totals": dg.MetadataValue.md(markdown_table(
            ["provider", "currency", "records", "total"],
            [(f.provider, f.currency, f.record_count, format_minor(f.total_minor)) for f in written])),
    })


@dg.asset(
    partitions_def=card_payment_days_partitions,
    deps=[card_payments_due],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "The second batch of the CARD-mode job: posts every selected payment (a credit) and refund (a debit) "
        "to the sales ledger assuming it succeeds; idempotency key card:<transaction>:<kind>. Committed before "
        "the extract is published, so the provider never collects money the ledger has not recorded."
    ),
)
def card_payment_posting_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _flow(con, file_store, cipher, mirror)
        posted = flow.post(flow.due(_day(context)))
    return dg.MaterializeResult(metadata={
        "batch_id": posted.batch_id,
        "posting_count": dg.MetadataValue.int(posted.posting_count),
        "posted_now": dg.MetadataValue.int(posted.posted_now),
        "net_amount": format_minor(posted.total_minor),
    })


@dg.asset(
    partitions_def=card_payment_days_partitions,
    deps=["card_payment_extract"],
    pool=DB_POOL,
    group_name=GROUP,
    kinds={"json"},
    description="The card posting batch formatted for the target sales ledger (outbound/ledger/RCP-<date>.json).",
)
def card_payment_ledger_posting_file(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _flow(con, file_store, cipher, mirror)
        posted = flow.posted_on(_day(context))
        path = flow.write_posting_file(posted)
    return dg.MaterializeResult(metadata={
        "batch_id": posted.batch_id,
        "files_written": path,
        "record_count": dg.MetadataValue.int(posted.posting_count),
        "net_amount": format_minor(posted.total_minor),
    })


CARD_PAYMENT_ASSETS = [card_payment_notices, card_payments_due, card_payment_extract, card_payment_posting_batch,
                       card_payment_ledger_posting_file]
