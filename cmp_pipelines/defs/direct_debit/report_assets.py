"""The bureau's Bacs reports, one dynamic partition per file: ADDACS (mandate advices) and ARUDD (returned debits,
the Recurring Payments Rejections job in DD mode). Each step runs on `database.flow_store()` (on PostgreSQL the run's
scratch and its link, defs/direct_debit/pg.py)."""

import dagster as dg

from cmp_pipelines.core.config import (
    load_direct_debit,
    load_mandate_revision_codes,
    load_partners,
    load_rejection_codes,
)
from cmp_pipelines.core.intake import FileQuarantined
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.direct_debit.addacs import AddacsReports, AdviceLoad
from cmp_pipelines.defs.direct_debit.returns import DirectDebitReturns, ReturnsLoad
from cmp_pipelines.lib.metadata import markdown_table, quarantine_failure
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore

ADDACS_GROUP = "direct_debit_addacs"
ARUDD_GROUP = "direct_debit_returns"
addacs_files_partitions = dg.DynamicPartitionsDefinition(name="addacs_files")
arudd_files_partitions = dg.DynamicPartitionsDefinition(name="arudd_files")


def _addacs(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> AddacsReports:
    config = paths().config_dir
    partners = load_partners(config)
    return AddacsReports(con, file_store, cipher.keyring(), partners, load_mandate_revision_codes(config),
                         load_direct_debit(config, partners), load_rejection_codes(config).default_payment_type,
                         mirror=mirror)


def _returns(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> DirectDebitReturns:
    config = paths().config_dir
    partners = load_partners(config)
    return DirectDebitReturns(con, file_store, cipher.keyring(), partners, load_rejection_codes(config),
                              load_direct_debit(config, partners), mirror=mirror)


def _advice_metadata(load: AdviceLoad) -> dict:
    return {"file_id": load.file_id, "batch_id": load.batch_id, "load_status": load.status,
            "advice_count": dg.MetadataValue.int(load.advice_count), "outcomes": dg.MetadataValue.json(load.outcomes),
            "problems": dg.MetadataValue.json(load.problems)}


def _returns_metadata(load: ReturnsLoad) -> dict:
    return {"file_id": load.file_id, "batch_id": load.batch_id, "load_status": load.status,
            "item_count": dg.MetadataValue.int(load.item_count),
            "reversed_count": dg.MetadataValue.int(load.reversed_count),
            "reversed_amount": format_minor(load.reversed_minor), "outcomes": dg.MetadataValue.json(load.outcomes),
            "problems": dg.MetadataValue.json(load.problems)}


@dg.asset(
    partitions_def=addacs_files_partitions,
    pool=DB_POOL,
    group_name=ADDACS_GROUP,
    kinds={"duckdb", "xml"},
    description=(
        "CMP ADDACS daemon, load: the bank's mandate amendment and cancellation report (Bacs XML, ISO-8859-1) "
        "decrypted, parsed and each advice matched to its mandate and classified by its configured mandate "
        "revision code. Unknown references and codes are reported; bad reports quarantined."
    ),
)
def addacs_advices(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        try:
            load = _addacs(con, file_store, cipher, mirror).load(context.partition_key)
        except FileQuarantined as quarantined:
            raise quarantine_failure(quarantined) from quarantined
        preview = con.execute(
            "SELECT position, reference, reason_code, outcome, coalesce(problem_code, '') FROM addacs_advices "
            "WHERE batch_id = ? ORDER BY position LIMIT 10", [load.batch_id]).fetchall()
    metadata = _advice_metadata(load)
    metadata["preview"] = dg.MetadataValue.md(markdown_table(["position", "reference", "code", "outcome", "problem"],
                                                             preview))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=addacs_files_partitions,
    deps=[addacs_advices],
    pool=DB_POOL,
    group_name=ADDACS_GROUP,
    kinds={"duckdb", "json"},
    description=(
        "In one transaction: each advice applied by its action (CANCEL: cancelled or failed, account to the "
        "default payment type; AMEND: new bank details lodged again with 0N alone, or reinstated), with the "
        "mandate history and the configured workflow event; then the outcome report for the bureau."
    ),
)
def addacs_mandate_updates(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _addacs(con, file_store, cipher, mirror)
        load = flow.apply(flow.loaded(context.partition_key))
        report = flow.write_report(load)
        by_reason = _by_reason(con, "addacs_advices", "config_mandate_revision_codes", load.batch_id)
    metadata = _advice_metadata(load)
    metadata["files_written"] = report
    metadata["advices_by_reason"] = dg.MetadataValue.md(markdown_table(
        ["outcome", "code", "reason", "count"], by_reason))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=arudd_files_partitions,
    pool=DB_POOL,
    group_name=ARUDD_GROUP,
    kinds={"duckdb", "xml"},
    description=(
        "Recurring Payments Rejections job (DD), load: the bank's ARUDD report of returned debits (Bacs XML, "
        "ISO-8859-1), Totals checked, each item matched to its debit and its four-digit return code mapped to a "
        "configured rejection code. Unknown debits and codes are reported; bad reports quarantined."
    ),
)
def dd_returns_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        try:
            load = _returns(con, file_store, cipher, mirror).load(context.partition_key)
        except FileQuarantined as quarantined:
            raise quarantine_failure(quarantined) from quarantined
        preview = con.execute(
            "SELECT r.position, r.reference, r.return_code, r.reason_code, "
            "coalesce(k.reason_type || '/' || k.reason_code, '-'), r.outcome, coalesce(r.problem_code, '') "
            "FROM dd_returns r LEFT JOIN config_rejection_codes k ON k.code = r.reason_code "
            "WHERE r.batch_id = ? ORDER BY r.position LIMIT 10", [load.batch_id]).fetchall()
    metadata = _returns_metadata(load)
    metadata["preview"] = dg.MetadataValue.md(markdown_table(
        ["position", "reference", "return code", "code", "reason", "outcome", "problem"], preview))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=arudd_files_partitions,
    deps=[dd_returns_batch],
    pool=DB_POOL,
    group_name=ARUDD_GROUP,
    kinds={"duckdb"},
    description=(
        "In one transaction, by the rules shared with card declines: the reversal batch (one posting per invoice of "
        "each returned debit), re-presentation (18) of soft returns with the account suspended until then, the "
        "payment-type reversion of hard returns, workflow events and customer communications."
    ),
)
def dd_reversal_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _returns(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        posted = flow.apply(load)
        by_reason = _by_reason(con, "dd_returns", "config_rejection_codes", load.batch_id)
    return dg.MaterializeResult(metadata={
        "batch_id": posted.batch_id, "posting_count": dg.MetadataValue.int(posted.posting_count),
        "net_amount": format_minor(posted.total_minor),
        "outcomes_by_reason": dg.MetadataValue.md(markdown_table(
            ["outcome", "code", "reason", "account now pays by", "count"], by_reason))})


def _by_reason(con, table: str, codes: str, batch_id: str) -> list[tuple]:
    """Outcomes by code with the code's configured reason type/code (and, for returns, the payment type a
    reversion gave the account)."""
    new_type = ", coalesce(r.new_payment_type, '-')" if table == "dd_returns" else ""
    return con.execute(
        f"SELECT r.outcome, r.reason_code, coalesce(k.reason_type || '/' || k.reason_code, '-'){new_type}, "
        f"count(*) FROM {table} r LEFT JOIN {codes} k ON k.code = r.reason_code WHERE r.batch_id = ? "
        "GROUP BY ALL ORDER BY ALL", [batch_id]).fetchall()


@dg.asset(
    partitions_def=arudd_files_partitions,
    deps=[dd_reversal_batch],
    pool=DB_POOL,
    group_name=ARUDD_GROUP,
    kinds={"json"},
    description=(
        "The reversal batch for the sales ledger (outbound/ledger/ARV-<hash>.json), every item's outcome "
        "(outbound/reports/arudd/<BUREAU>/<file>.outcomes.json) and the customer communications."
    ),
)
def dd_return_reports(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):
        flow = _returns(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        posted = flow.reversal(load)
        files = [flow.write_posting_file(posted), *flow.write_reports(load)]
    metadata = _returns_metadata(load)
    metadata["files_written"] = dg.MetadataValue.json(files)
    return dg.MaterializeResult(metadata=metadata)


ADDACS_ASSETS = [addacs_advices, addacs_mandate_updates]
ARUDD_ASSETS = [dd_returns_batch, dd_reversal_batch, dd_return_reports]
