"""Hardware orders as Dagster assets: Sales Order Request, Sales Order Dispatch, Device Enrolment Request and
Response. Each job's partitions: one per request batch (sensor on orders awaiting generation), one per warehouse
response file, one per day, one per manufacturer response file."""

from datetime import UTC, date, datetime

import dagster as dg

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.intake import FileQuarantined
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.settings import paths
from cmp_pipelines.defs.hardware_orders.config import load_hardware_orders
from cmp_pipelines.defs.hardware_orders.dispatch import DispatchLoad, DispatchResult, WarehouseDispatch
from cmp_pipelines.defs.hardware_orders.enrolment import EnrolmentRequests, EnrolmentResponses
from cmp_pipelines.defs.hardware_orders.fraud_check import FraudCheck
from cmp_pipelines.defs.hardware_orders.manufacturer import DeviceManufacturer
from cmp_pipelines.defs.hardware_orders.sales_orders import RequestBatch, SalesOrderRequests
from cmp_pipelines.lib.metadata import markdown_table
from cmp_pipelines.lib.resources.cipher import PartnerCipher
from cmp_pipelines.lib.resources.database import DB_POOL, Database
from cmp_pipelines.lib.resources.file_store import FileStore

REQUEST_GROUP = "sales_order_request"
DISPATCH_GROUP = "sales_order_dispatch"
ENROLMENT_REQUEST_GROUP = "device_enrolment_request"
ENROLMENT_RESPONSE_GROUP = "device_enrolment_response"

sales_order_request_partitions = dg.DynamicPartitionsDefinition(name="sales_order_request_batches")
warehouse_dispatch_files_partitions = dg.DynamicPartitionsDefinition(name="warehouse_dispatch_files")
enrolment_days_partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1, timezone="UTC")
enrolment_response_files_partitions = dg.DynamicPartitionsDefinition(name="device_enrolment_response_files")


def _config():
    config_dir = paths().config_dir
    partners = load_partners(config_dir)
    return partners, load_hardware_orders(config_dir, partners)


def _quarantined(quarantined: FileQuarantined) -> dg.Failure:
    return dg.Failure(
        description=f"File quarantined ({quarantined.code}): {quarantined.message}",
        metadata={"error_code": quarantined.code, "error": quarantined.message,
                  "quarantined_file": quarantined.quarantined_path},
        allow_retries=False,
    )


# ---- Sales Order Request ---------------------------------------------------------------------------------

def _requests(con, file_store: FileStore, cipher: PartnerCipher, fraud_check: FraudCheck,
              mirror=None) -> SalesOrderRequests:
    return SalesOrderRequests(con, file_store, cipher.keyring(), _config()[1], fraud_check, datetime.now(UTC),
                              mirror)


def _request_metadata(batch: RequestBatch) -> dict:
    return {
        "batch_id": batch.batch_id, "status": batch.status,
        "order_count": dg.MetadataValue.int(batch.order_count),
        "fraud_checked": dg.MetadataValue.int(batch.fraud_checked),
        "fraud_failed": dg.MetadataValue.int(batch.fraud_failed),
        "sent_count": dg.MetadataValue.int(batch.sent_count),
    }


@dg.asset(
    partitions_def=sales_order_request_partitions,
    pool=DB_POOL,
    group_name=REQUEST_GROUP,
    kinds={"duckdb"},
    description=(
        "Sales Order Request job, selection: every order awaiting generation up to the batch's generation number, "
        "claimed once and frozen; the fraud check resource judges the delivery name and address of the orders "
        "that ask for it, and a failure puts the order in ERROR with the reason and raises a workflow event."
    ),
)
def sales_order_request_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher,
    fraud_check: FraudCheck,
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        flow = _requests(con, file_store, cipher, fraud_check, mirror)
        batch = flow.check_fraud(flow.claim(context.partition_key))
        preview = con.execute(
            "SELECT o.order_id, o.account_number, o.status, CASE WHEN o.fraud_check THEN coalesce(f.reason, 'passed') "
            "ELSE 'not required' END FROM hw_request_orders r JOIN hw_orders o USING (order_id) "
            "LEFT JOIN hw_fraud_checks f ON f.batch_id = r.batch_id AND f.order_id = r.order_id "
            "WHERE r.batch_id = ? ORDER BY o.order_id LIMIT 10", [batch.batch_id]
        ).fetchall()
    metadata = _request_metadata(batch)
    metadata["preview"] = dg.MetadataValue.md(markdown_table(["order", "account", "status", "fraud check"], preview))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=sales_order_request_partitions,
    deps=[sales_order_request_batch],
    pool=DB_POOL,
    group_name=REQUEST_GROUP,
    kinds={"json"},
    description=(
        "One JSON sales order request per warehouse and currency (schema sales_order_request.schema.json, with "
        "each order's fraud-check flag), encrypted for the warehouse (outbound/sales_orders/<WAREHOUSE>/); the "
        "orders sent become AWAITING_DISPATCH."
    ),
)
def sales_order_request_files(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher,
    fraud_check: FraudCheck,
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        flow = _requests(con, file_store, cipher, fraud_check, mirror)
        batch = flow.send(flow.batch(context.partition_key))
    metadata = _request_metadata(batch)
    metadata["files_written"] = dg.MetadataValue.json([f.path for f in batch.files])
    metadata["by_warehouse"] = dg.MetadataValue.md(markdown_table(
        ["warehouse", "currency", "orders", "amount"],
        [(f.warehouse, f.currency, f.order_count, format_minor(f.total_minor)) for f in batch.files]))
    return dg.MaterializeResult(metadata=metadata)


# ---- Sales Order Dispatch --------------------------------------------------------------------------------

def _dispatch(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> WarehouseDispatch:
    partners, config = _config()
    return WarehouseDispatch(con, file_store, cipher.keyring(), partners, config, datetime.now(UTC), mirror)


def _load_metadata(load: DispatchLoad) -> dict:
    return {"file_id": load.file_id, "batch_id": load.batch_id, "load_status": load.status,
            "warehouse": load.warehouse, "record_count": dg.MetadataValue.int(load.record_count),
            "outcomes": dg.MetadataValue.json(load.outcomes), "problems": dg.MetadataValue.json(load.problems)}


def _result_metadata(result: DispatchResult) -> dict:
    return {
        "billing_batch_id": result.batch_id, "applied_now": result.applied_now,
        "orders_completed": dg.MetadataValue.int(result.orders_completed),
        "orders_failed": dg.MetadataValue.int(result.orders_failed),
        "orders_partly_dispatched": dg.MetadataValue.int(result.orders_waiting),
        "devices": dg.MetadataValue.int(result.devices),
        "ledger_charges": dg.MetadataValue.int(result.ledger_charges),
        "ledger_amount": format_minor(result.ledger_minor),
        "pending_charges": dg.MetadataValue.int(result.pending_charges),
        "pending_amount": format_minor(result.pending_minor),
    }


@dg.asset(
    partitions_def=warehouse_dispatch_files_partitions,
    pool=DB_POOL,
    group_name=DISPATCH_GROUP,
    kinds={"duckdb", "csv", "json"},
    description=(
        "The adaptor: the warehouse's response CSV decrypted and converted to the JSON dispatch batch "
        "(converted/warehouse_dispatch/<WAREHOUSE>/, schema warehouse_dispatch_batch.schema.json); each record "
        "judged alone (status, IMEI check digit, dates). A file that cannot be read is quarantined."
    ),
)
def warehouse_dispatch_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        flow = _dispatch(con, file_store, cipher, mirror)
        try:
            load = flow.load(context.partition_key)
        except FileQuarantined as quarantined:
            raise _quarantined(quarantined) from quarantined
        converted = flow.write_converted(load)
        preview = con.execute(
            "SELECT position, order_id, line_number, sku, status, coalesce(imei, serial_number), "
            "coalesce(problem_code, '') FROM hw_dispatch_records WHERE batch_id = ? ORDER BY position LIMIT 10",
            [load.batch_id],
        ).fetchall()
    metadata = _load_metadata(load)
    metadata["files_written"] = converted
    metadata["preview"] = dg.MetadataValue.md(markdown_table(
        ["row", "order", "line", "sku", "status", "device", "problem"], preview))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=warehouse_dispatch_files_partitions,
    deps=[warehouse_dispatch_batch],
    pool=DB_POOL,
    group_name=DISPATCH_GROUP,
    kinds={"duckdb"},
    description=(
        "Sales Order Dispatch, in one transaction: each record matched to its order line (unknown order, unknown "
        "SKU, wrong warehouse, duplicate device... rejected with the reason), devices recorded, every order whose "
        "lines are all settled COMPLETE or ERROR (partly dispatched orders wait), and each settled order billed "
        "once: a ledger charge or a pending charge for the next invoice, as the order chose."
    ),
)
def sales_order_dispatch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        flow = _dispatch(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        result = flow.apply(load)
        orders = con.execute(
            "SELECT h.order_id, h.new_status, h.cause FROM hw_order_history h WHERE h.cause LIKE '%(' || ? || ')%' "
            "ORDER BY h.order_id LIMIT 10", [load.batch_id]
        ).fetchall()
    metadata = _result_metadata(result)
    metadata["orders"] = dg.MetadataValue.md(markdown_table(["order", "status", "cause"], orders))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=warehouse_dispatch_files_partitions,
    deps=[sales_order_dispatch],
    pool=DB_POOL,
    group_name=DISPATCH_GROUP,
    kinds={"json"},
    description=(
        "The immediate charges formatted for the target sales ledger (outbound/ledger/HWB-<hash>.json, when there "
        "are any) and every record's outcome (outbound/reports/warehouse_dispatch/<WAREHOUSE>/<file>.outcomes.json)."
    ),
)
def sales_order_dispatch_files(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        flow = _dispatch(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        result = flow.applied(load)
        written = [path for path in (flow.write_posting_file(result), flow.write_report(load, result)) if path]
    metadata = _result_metadata(result)
    metadata["files_written"] = dg.MetadataValue.json(written)
    return dg.MaterializeResult(metadata=metadata)


# ---- Device Enrolment Request ----------------------------------------------------------------------------

def _enrolment(con, file_store: FileStore, cipher: PartnerCipher,
               device_manufacturer: DeviceManufacturer, mirror=None) -> EnrolmentRequests:
    return EnrolmentRequests(con, file_store, cipher.keyring(), device_manufacturer, datetime.now(UTC),
                             config=_config()[1], mirror=mirror)


@dg.asset(
    partitions_def=enrolment_days_partitions,
    pool=DB_POOL,
    group_name=ENROLMENT_REQUEST_GROUP,
    kinds={"duckdb"},
    description=(
        "Device Enrolment Request, selection: every dispatched handset waiting for enrolment (its order asked for "
        "it) or unenrolment (an agent asked), chosen once per day and frozen."
    ),
)
def device_enrolment_request_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher,
    device_manufacturer: DeviceManufacturer,
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        batch = _enrolment(con, file_store, cipher, device_manufacturer, mirror).select(
            date.fromisoformat(context.partition_key))
    return dg.MaterializeResult(metadata={
        "batch_id": batch.batch_id, "status": batch.status, "enrol_count": dg.MetadataValue.int(batch.enrol_count),
        "unenrol_count": dg.MetadataValue.int(batch.unenrol_count),
        "by_manufacturer": dg.MetadataValue.json(batch.by_manufacturer),
    })


@dg.asset(
    partitions_def=enrolment_days_partitions,
    deps=[device_enrolment_request_batch],
    pool=DB_POOL,
    group_name=ENROLMENT_REQUEST_GROUP,
    kinds={"json"},
    description=(
        "One enrolment batch per manufacturer (schema device_enrolment_request.schema.json), sent through the "
        "device manufacturer resource (by default encrypted into outbound/device_enrolment/<MANUFACTURER>/)."
    ),
)
def device_enrolment_request_files(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher,
    device_manufacturer: DeviceManufacturer,
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        flow = _enrolment(con, file_store, cipher, device_manufacturer, mirror)
        batch = flow.batch(date.fromisoformat(context.partition_key))
        sent = flow.send(batch)
    return dg.MaterializeResult(metadata={
        "batch_id": batch.batch_id, "files_written": dg.MetadataValue.json(sent),
        "record_count": dg.MetadataValue.int(batch.enrol_count + batch.unenrol_count),
    })


# ---- Device Enrolment Response ---------------------------------------------------------------------------

def _responses(con, file_store: FileStore, cipher: PartnerCipher, mirror=None) -> EnrolmentResponses:
    return EnrolmentResponses(con, file_store, cipher.keyring(), _config()[0], datetime.now(UTC), mirror)


@dg.asset(
    partitions_def=enrolment_response_files_partitions,
    pool=DB_POOL,
    group_name=ENROLMENT_RESPONSE_GROUP,
    kinds={"duckdb", "json"},
    description=(
        "Device Enrolment Response: the manufacturer's file decrypted and validated (schema "
        "device_enrolment_response.schema.json); each answer matched to its request and applied in the same "
        "transaction: ENROLLED, UNENROLLED, or FAILED with the reason and a workflow event. Bad answers rejected."
    ),
)
def device_enrolment_response_batch(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        try:
            load = _responses(con, file_store, cipher, mirror).load(context.partition_key)
        except FileQuarantined as quarantined:
            raise _quarantined(quarantined) from quarantined
        preview = con.execute(
            "SELECT position, request_id, device_id, outcome, coalesce(reason, problem, '') "
            "FROM hw_enrolment_responses WHERE batch_id = ? ORDER BY position LIMIT 10", [load.batch_id]
        ).fetchall()
    return dg.MaterializeResult(metadata={
        "file_id": load.file_id, "batch_id": load.batch_id, "load_status": load.status,
        "manufacturer": load.manufacturer, "record_count": dg.MetadataValue.int(load.record_count),
        "outcomes": dg.MetadataValue.json(load.outcomes), "problems": dg.MetadataValue.json(load.problems),
        "preview": dg.MetadataValue.md(markdown_table(["position", "request", "device", "outcome", "reason"],
                                                      preview)),
    })


@dg.asset(
    partitions_def=enrolment_response_files_partitions,
    deps=[device_enrolment_response_batch],
    pool=DB_POOL,
    group_name=ENROLMENT_RESPONSE_GROUP,
    kinds={"json"},
    description="Every answer's outcome (outbound/reports/device_enrolment/<MANUFACTURER>/<file>.outcomes.json).",
)
def device_enrolment_response_report(
    context: dg.AssetExecutionContext, database: Database, file_store: FileStore, cipher: PartnerCipher
) -> dg.MaterializeResult:
    with database.flow_store() as (con, mirror):  # on PostgreSQL the run's scratch (pg.py)
        flow = _responses(con, file_store, cipher, mirror)
        load = flow.loaded(context.partition_key)
        report = flow.write_report(load)
    return dg.MaterializeResult(metadata={"batch_id": load.batch_id, "files_written": report,
                                          "outcomes": dg.MetadataValue.json(load.outcomes)})


HARDWARE_ORDER_ASSETS = [
    sales_order_request_batch, sales_order_request_files,
    warehouse_dispatch_batch, sales_order_dispatch, sales_order_dispatch_files,
    device_enrolment_request_batch, device_enrolment_request_files,
    device_enrolment_response_batch, device_enrolment_response_report,
]
