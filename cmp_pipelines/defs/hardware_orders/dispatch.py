"""Sales Order Dispatch job: a warehouse's response file, converted to JSON, completes or fails each order and
bills what was dispatched.

Steps, each idempotent for a file:
1. `load`: decrypt, convert the warehouse CSV with the adaptor (defs/hardware_orders/dispatch_csv.py), judge each
   record alone (batch WHD-<hash16>); a file that cannot be read is quarantined, a bad record rejected.
   `write_converted` writes the adaptor's JSON batch (schema warehouse_dispatch_batch.schema.json).
2. `apply`: in ONE transaction, match every record to its order line, record the dispatched devices, move each
   order whose lines are all settled to COMPLETE or ERROR (a partly dispatched order waits for the rest), and
   bill each settled order once: a ledger charge (posting batch HWB-<hash16>) or a pending charge for the next
   invoice, as the order chose. A re-run finds the batch APPLIED and does nothing.
3. `write_posting_file`, `write_report`: the ledger posting file and every record's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from cmp_pipelines.core.config import Partner
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.intake import Intake, Received, file_stem, sha256_hex
from cmp_pipelines.core.ledger import (
    batch_id_of,
    child_batch_id,
    is_posted_sql,
    lit,
    post,
    posted_batch,
    record_posting_batch,
    write_posting_file,
    write_posting_file_postgres,
    write_records_file,
)
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.defs.hardware_orders import dispatch_csv as warehouse_dispatch_csv
from cmp_pipelines.defs.hardware_orders import pg
from cmp_pipelines.defs.hardware_orders.config import HardwareConfig
from cmp_pipelines.defs.hardware_orders.device_card_numbers import with_card_numbers_masked
from cmp_pipelines.defs.hardware_orders.dispatch_rules import FORMAT_RULES, MATCH_RULES, first_broken
from cmp_pipelines.defs.hardware_orders.orders import sync_hardware_reference
from cmp_pipelines.defs.hardware_orders.rules import COMPLETE, ERROR, ORDER_ERROR_EVENT
from cmp_pipelines.defs.hardware_orders.transitions import move_orders

FEED = "warehouse_dispatch"
JOB = "Sales Order Dispatch job"
ACCEPTED = "('DISPATCHED', 'LINE_ERROR')"
# Every string of a row but the device ids (an IMEI passes the card-number test: see device_card_numbers.py).
FREE_TEXT = ("order_id", "line_number", "sku", "status", "courier_reference", "dispatched_at", "error_reason",
             "row_problem")


@dataclass
class DispatchLoad:
    file_id: str
    batch_id: str
    status: str  # LOADED now or ALREADY_LOADED
    warehouse: str
    record_count: int
    outcomes: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)


@dataclass
class DispatchResult:
    batch_id: str
    applied_now: bool
    orders_completed: int
    orders_failed: int
    orders_waiting: int  # partly dispatched: still AWAITING_DISPATCH
    devices: int
    ledger_charges: int
    ledger_minor: int
    pending_charges: int
    pending_minor: int


class WarehouseDispatch:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 partners: dict[str, Partner], config: HardwareConfig, now: datetime | None = None,
                 mirror: Mirror | None = None):
        """`mirror`: on PostgreSQL, the run's link to the store (each step's pulls, pushes and lock: pg.py)."""
        self.con, self.files, self.config, self.mirror = con, files, config, mirror
        self.now = now or datetime.now(UTC)
        self.intake = Intake(con, files, keyring, partners, FEED, self.now, mirror=mirror)

    # ---- load: the adaptor, then each record judged alone ------------------------------------------------

    def load(self, file_id: str) -> DispatchLoad:
        status = self.intake.load(file_id, self._load_new)
        return self._result(file_id, status)

    def loaded(self, file_id: str) -> DispatchLoad:
        return self._result(file_id, "ALREADY_LOADED")

    def _load_new(self, received: Received) -> None:
        plaintext = self.intake.decrypt(received)
        records = with_card_numbers_masked(warehouse_dispatch_csv.convert(plaintext), {}, FREE_TEXT,
                                           ("imei", "serial_number"))
        content_sha = sha256_hex(plaintext)
        self.intake.refuse_duplicate(received, content_sha, file_stem(received.file_name))
        batch_id = batch_id_of("WAREHOUSE_DISPATCH", content_sha[:16])
        code, message = first_broken(FORMAT_RULES)
        with transaction(self.con):
            self.con.register("converted", records)
            try:
                self.con.execute(
                    f"""
                    INSERT INTO hw_dispatch_records
                    SELECT $batch, r.record_id::BIGINT, r.order_id, r.line_number, r.sku, r.status, r.imei,
                           r.serial_number, r.courier_reference, r.dispatched_at, r.error_reason,
                           CASE WHEN {code} IS NULL THEN 'LOADED' ELSE 'REJECTED' END, {code}, {message}
                    FROM converted r
                    """,
                    {"batch": batch_id},
                )
            finally:
                self.con.unregister("converted")
            self.con.execute(
                """
                INSERT INTO batches (batch_id, kind, feed, partner, source_file_id, status, created_at, record_count,
                                     rejected_count)
                SELECT ?, 'WAREHOUSE_DISPATCH', ?, ?, ?, 'LOADED', ?, count(*), count(*) FILTER (outcome = 'REJECTED')
                FROM hw_dispatch_records WHERE batch_id = ?
                """,
                [batch_id, FEED, received.partner, received.file_id, self.now, batch_id],
            )
            self.intake.record_loaded(received, batch_id, content_sha, file_stem(received.file_name))
            self.intake.push_loaded(received, content_sha, file_stem(received.file_name), batch_id,
                                    {"hw_dispatch_records": "batch_id = $batch_id"})

    def _result(self, file_id: str, status: str) -> DispatchLoad:
        batch_id, partner, _ = self.intake.loaded_batch(file_id)
        pg.refresh(self.mirror, lambda mirror: pg.pull_dispatch_batch(mirror, batch_id))
        outcomes = dict(self.con.execute(
            "SELECT outcome, count(*) FROM hw_dispatch_records WHERE batch_id = ? GROUP BY 1 ORDER BY 1", [batch_id]
        ).fetchall())
        problems = dict(self.con.execute(
            "SELECT problem_code, count(*) FROM hw_dispatch_records WHERE batch_id = ? AND problem_code IS NOT NULL "
            "GROUP BY 1 ORDER BY 1", [batch_id]
        ).fetchall())
        return DispatchLoad(file_id, batch_id, status, partner, sum(outcomes.values()), outcomes, problems)

    def write_converted(self, load: DispatchLoad) -> str:
        """The adaptor's JSON batch, as converted from the warehouse's CSV (before any record was judged)."""
        file_name = self.con.execute("SELECT file_name FROM inbound_files WHERE file_id = ?",
                                     [load.file_id]).fetchone()[0]
        counts = self.con.execute(
            "SELECT count(*) FILTER (status = 'DISPATCHED'), count(*) FILTER (status = 'ERROR'), "
            "count(*) FILTER (problem_code = 'UNREADABLE_ROW') FROM hw_dispatch_records WHERE batch_id = ?",
            [load.batch_id],
        ).fetchone()
        created = self.con.execute("SELECT created_at FROM batches WHERE batch_id = ?", [load.batch_id]).fetchone()[0]
        header = {"file_id": file_stem(file_name), "batch_id": load.batch_id, "source_file_name": file_name,
                  "warehouse": load.warehouse,
                  "converted_at": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "record_count": load.record_count, "dispatched_count": counts[0], "error_count": counts[1],
                  "unreadable_count": counts[2]}
        return write_records_file(
            self.con, self.files, f"converted/{FEED}/{load.warehouse}/{file_stem(file_name)}.json", header,
            "dispatches",
            f"""
            SELECT position::VARCHAR AS record_id, order_id, line_number, sku, status, imei, serial_number,
                   courier_reference, dispatched_at, error_reason,
                   CASE WHEN problem_code = 'UNREADABLE_ROW' THEN problem END AS row_problem
            FROM hw_dispatch_records WHERE batch_id = {sql_literal(load.batch_id)} ORDER BY position
            """,
        )

    # ---- apply: match, devices, order statuses, billing ------------------------------------------------

    def apply(self, load: DispatchLoad) -> DispatchResult:
        with pg.deciding(self.mirror, pg.pull_dispatch_state(load.batch_id)), transaction(self.con):
            params = {"batch": load.batch_id, "warehouse": load.warehouse, "now": self.now,
                      "billing": child_batch_id(self.con, load.batch_id, "HARDWARE_CHARGE")}
            status = self.con.execute("SELECT status FROM batches WHERE batch_id = ?", [load.batch_id]).fetchone()[0]
            if status == "APPLIED":
                return self.applied(load, applied_now=False)
            sync_hardware_reference(self.con, self.config)
            self._match(params)
            self._record_dispatches(params)
            self._settle_orders(params)
            self._bill(params)
            record_posting_batch(self.con, batch_id=params["billing"], kind="HARDWARE_CHARGE", feed=FEED,
                                 now=self.now, posted_before=0, partner=load.warehouse,
                                 source_file_id=load.file_id, parent_batch_id=load.batch_id)
            self.con.execute(
                "INSERT INTO job_errors (job, category, source_ref, detail, raised_at) "
                "SELECT $feed, 'DATA', $file || '#' || position, problem_code || ': ' || problem, $now "
                "FROM hw_dispatch_records WHERE batch_id = $batch AND outcome = 'REJECTED' ORDER BY position",
                {"feed": FEED, "file": load.file_id, "now": self.now, "batch": load.batch_id},
            )
            self.con.execute(
                "UPDATE batches SET status = 'APPLIED', completed_at = ?, accepted_count = (SELECT count(*) FROM "
                f"hw_dispatch_records WHERE batch_id = ? AND outcome IN {ACCEPTED}), rejected_count = (SELECT "
                "count(*) FROM hw_dispatch_records WHERE batch_id = ? AND outcome = 'REJECTED') WHERE batch_id = ?",
                [self.now, load.batch_id, load.batch_id, load.batch_id],
            )
            if self.mirror is not None:
                pg.push_dispatch_applied(self.mirror, load.batch_id, params["billing"], self.now)
        return self.applied(load, applied_now=True)

    def _match(self, params: dict) -> None:
        code, message = first_broken(MATCH_RULES)
        run = self.con.execute
        run(
            f"""
            UPDATE hw_dispatch_records t SET outcome = 'REJECTED', problem_code = m.code, problem = m.message
            FROM (SELECT r.position, {code} AS code, {message} AS message
                  FROM hw_dispatch_records r
                  LEFT JOIN hw_orders o ON o.order_id = r.order_id
                  LEFT JOIN hw_order_lines l ON l.order_id = r.order_id
                        AND l.line_number = try_cast(r.line_number AS INTEGER)
                  LEFT JOIN hw_products p ON p.sku = r.sku
                  WHERE r.batch_id = $batch AND r.outcome = 'LOADED') m
            WHERE t.batch_id = $batch AND t.position = m.position AND m.code IS NOT NULL
            """,
            {"batch": params["batch"], "warehouse": params["warehouse"]},
        )
        run(  # a device is shipped once: not twice in this file, not again after an earlier file
            """
            UPDATE hw_dispatch_records t SET outcome = 'REJECTED', problem_code = 'DUPLICATE_DEVICE',
                problem = 'device ' || q(d.device_id) || CASE WHEN d.known THEN ' was already dispatched'
                                                             ELSE ' is repeated in this file' END
            FROM (SELECT position, coalesce(imei, serial_number) AS device_id,
                         coalesce(imei, serial_number) IN (SELECT device_id FROM hw_devices) AS known,
                         row_number() OVER (PARTITION BY coalesce(imei, serial_number) ORDER BY position) AS rank
                  FROM hw_dispatch_records WHERE batch_id = $batch AND outcome = 'LOADED' AND status = 'DISPATCHED') d
            WHERE t.batch_id = $batch AND t.position = d.position AND (d.known OR d.rank > 1)
            """,
            {"batch": params["batch"]},
        )
        run(  # never more units than the line still waits for
            """
            UPDATE hw_dispatch_records t SET outcome = 'REJECTED', problem_code = 'OVER_DISPATCHED',
                problem = 'line ' || t.line_number || ' of order ' || t.order_id || ' waits for ' || x.waiting
                          || ' unit(s); this file ships more'
            FROM (SELECT r.position, l.quantity - l.dispatched_quantity AS waiting,
                         row_number() OVER (PARTITION BY r.order_id, r.line_number ORDER BY r.position) AS rank
                  FROM hw_dispatch_records r JOIN hw_order_lines l
                    ON l.order_id = r.order_id AND l.line_number = try_cast(r.line_number AS INTEGER)
                  WHERE r.batch_id = $batch AND r.outcome = 'LOADED' AND r.status = 'DISPATCHED') x
            WHERE t.batch_id = $batch AND t.position = x.position AND x.rank > x.waiting
            """,
            {"batch": params["batch"]},
        )
        run(
            "UPDATE hw_dispatch_records SET outcome = CASE status WHEN 'DISPATCHED' THEN 'DISPATCHED' "
            "ELSE 'LINE_ERROR' END WHERE batch_id = $batch AND outcome = 'LOADED'",
            {"batch": params["batch"]},
        )

    def _record_dispatches(self, params: dict) -> None:
        self.con.execute(
            f"""
            UPDATE hw_order_lines l SET dispatched_quantity = l.dispatched_quantity + s.shipped,
                error_reason = coalesce(l.error_reason, s.reason)
            FROM (SELECT order_id, try_cast(line_number AS INTEGER) AS line_number,
                         count(*) FILTER (outcome = 'DISPATCHED') AS shipped,
                         string_agg(error_reason, '; ' ORDER BY position) FILTER (outcome = 'LINE_ERROR') AS reason
                  FROM hw_dispatch_records WHERE batch_id = $batch AND outcome IN {ACCEPTED} GROUP BY ALL) s
            WHERE l.order_id = s.order_id AND l.line_number = s.line_number
            """,
            {"batch": params["batch"]},
        )
        self.con.execute(
            """
            INSERT INTO hw_devices
            SELECT coalesce(r.imei, r.serial_number), r.imei, r.serial_number, r.sku, p.manufacturer, r.order_id,
                   try_cast(r.line_number AS INTEGER), o.account_number, r.courier_reference, $batch,
                   try_cast(r.dispatched_at AS TIMESTAMPTZ),
                   CASE WHEN o.enrolment AND p.product_type = 'HANDSET' AND p.manufacturer IS NOT NULL
                        THEN 'ENROL_PENDING' ELSE 'NOT_REQUESTED' END, NULL, $now
            FROM hw_dispatch_records r JOIN hw_orders o USING (order_id) JOIN hw_products p ON p.sku = r.sku
            WHERE r.batch_id = $batch AND r.outcome = 'DISPATCHED' ORDER BY r.position
            """,
            {"batch": params["batch"], "now": self.now},
        )

    def _settle_orders(self, params: dict) -> None:
        """Orders of this file whose every line is shipped or failed: COMPLETE when all shipped, else ERROR."""
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE hw_settling AS
            SELECT o.order_id,
                   CASE WHEN bool_and(l.error_reason IS NULL) THEN '{COMPLETE}' ELSE '{ERROR}' END AS new_status,
                   string_agg('line ' || l.line_number || ' (' || l.sku || '): ' || l.error_reason, '; '
                              ORDER BY l.line_number) FILTER (l.error_reason IS NOT NULL) AS reason,
                   sum(l.dispatched_quantity * l.unit_price_minor) AS dispatched_minor
            FROM hw_orders o JOIN hw_order_lines l USING (order_id)
            WHERE o.status = 'AWAITING_DISPATCH' AND o.order_id IN (
                SELECT order_id FROM hw_dispatch_records WHERE batch_id = $batch AND outcome IN {ACCEPTED})
            GROUP BY o.order_id
            HAVING bool_and(l.dispatched_quantity >= l.quantity OR l.error_reason IS NOT NULL)
            """,
            {"batch": params["batch"]},
        )
        source = f"{params['warehouse']} ({params['batch']})"
        move_orders(
            self.con, f"SELECT order_id, 'dispatched in full by {source}' AS cause FROM hw_settling "
                      f"WHERE new_status = '{COMPLETE}'",
            COMPLETE, self.now, extra_set=f", completed_at = {sql_literal(self.now.isoformat())}",
        )
        move_orders(
            self.con, f"SELECT order_id, 'warehouse error from {source}: ' || reason AS cause, reason "
                      f"FROM hw_settling WHERE new_status = '{ERROR}'",
            ERROR, self.now,
            extra_set=f", completed_at = {sql_literal(self.now.isoformat())}, error_reason = 'WAREHOUSE_ERROR: ' "
                      "|| s.reason",
        )
        self.con.execute(
            f"""
            INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
            SELECT '{ORDER_ERROR_EVENT[0]}', '{ORDER_ERROR_EVENT[1]}', o.account_number, o.order_id,
                   'order ' || o.order_id || ' failed at the warehouse: ' || s.reason
                   || CASE WHEN s.dispatched_minor > 0 THEN '; the units dispatched are billed' ELSE '' END, $now
            FROM hw_settling s JOIN hw_orders o USING (order_id) WHERE s.new_status = '{ERROR}' ORDER BY o.order_id
            """,
            {"now": self.now},
        )

    def _bill(self, params: dict) -> None:
        """Each settled order, once, for the units dispatched: a ledger charge or a pending charge, never both."""
        settled = "SELECT s.order_id, s.dispatched_minor, o.account_number, o.currency, o.billing " \
                  "FROM hw_settling s JOIN hw_orders o USING (order_id) WHERE s.dispatched_minor > 0"
        post(
            self.con,
            f"""
            SELECT order_id, account_number, NULL AS invoice_number, 'HARDWARE_CHARGE' AS kind,
                   dispatched_minor AS amount_minor, currency, order_id AS source_ref, $now AS effective_at
            FROM ({settled}) b
            WHERE billing = 'IMMEDIATE' AND order_id NOT IN (SELECT order_id FROM hw_pending_charges)
            """,
            source="hw", key=("order_id", lit("CHARGE")), batch_id=params["billing"], now=self.now,
            params={"now": self.now}, order_by="order_id",
        )
        self.con.execute(
            f"""
            INSERT INTO hw_pending_charges (order_id, account_number, amount_minor, currency, description,
                                            dispatch_batch_id, created_at)
            SELECT order_id, account_number, dispatched_minor, currency, 'Hardware order ' || order_id, $batch, $now
            FROM ({settled}) b
            WHERE billing = 'NEXT_INVOICE'
              AND NOT {is_posted_sql("hw", "b.order_id", lit("CHARGE"))}
            ORDER BY order_id
            ON CONFLICT DO NOTHING
            """,
            {"batch": params["batch"], "now": self.now},
        )
        self.con.execute("DROP TABLE hw_settling")

    def applied(self, load: DispatchLoad, applied_now: bool = False) -> DispatchResult:
        pg.refresh(self.mirror, pg.pull_dispatch_applied(load.batch_id))
        billing = child_batch_id(self.con, load.batch_id, "HARDWARE_CHARGE")
        posted = posted_batch(self.con, billing, "sales_order_dispatch")
        completed, failed = self.con.execute(
            """
            SELECT count(DISTINCT order_id) FILTER (new_status = 'COMPLETE'),
                   count(DISTINCT order_id) FILTER (new_status = 'ERROR')
            FROM hw_order_history WHERE cause LIKE '%(' || ? || ')%'
            """,
            [load.batch_id],
        ).fetchone()
        waiting = self.con.execute(
            f"SELECT count(DISTINCT r.order_id) FROM hw_dispatch_records r JOIN hw_orders o USING (order_id) "
            f"WHERE r.batch_id = ? AND r.outcome IN {ACCEPTED} AND o.status = 'AWAITING_DISPATCH'", [load.batch_id]
        ).fetchone()[0]
        devices = self.con.execute("SELECT count(*) FROM hw_devices WHERE dispatch_batch_id = ?",
                                   [load.batch_id]).fetchone()[0]
        pending, pending_minor = self.con.execute(
            "SELECT count(*), coalesce(sum(amount_minor), 0) FROM hw_pending_charges WHERE dispatch_batch_id = ?",
            [load.batch_id],
        ).fetchone()
        return DispatchResult(billing, applied_now, completed, failed, waiting, devices, posted.posting_count,
                              posted.total_minor, pending, pending_minor)

    # ---- files: the ledger posting file and the outcome report ------------------------------------------

    def write_posting_file(self, result: DispatchResult) -> str | None:
        if result.ledger_charges == 0:
            return None
        if self.mirror is None:
            return write_posting_file(self.con, self.files, result.batch_id, f"{FEED}:{JOB}", self.now)[0]
        written = write_posting_file_postgres(self.mirror, self.files, result.batch_id, f"{FEED}:{JOB}", self.now)
        return written or self.mirror.query("SELECT output_path FROM batches WHERE batch_id = $1",
                                            [result.batch_id]).column(0)[0].as_py()

    def write_report(self, load: DispatchLoad, result: DispatchResult) -> str:
        load = self._result(load.file_id, load.status)  # outcomes as matched, not as loaded
        file_name = self.con.execute("SELECT file_name FROM inbound_files WHERE file_id = ?",
                                     [load.file_id]).fetchone()[0]
        header = {
            "file_id": load.file_id, "source_file_name": file_name, "warehouse": load.warehouse,
            "batch_id": load.batch_id, "billing_batch_id": result.batch_id, "processed_at": self.now.isoformat(),
            "record_count": load.record_count, "outcomes": load.outcomes, "problems": load.problems,
            "orders_completed": result.orders_completed, "orders_failed": result.orders_failed,
            "orders_waiting": result.orders_waiting, "ledger_charges": result.ledger_charges,
            "ledger_amount": format_minor(result.ledger_minor), "pending_charges": result.pending_charges,
            "pending_amount": format_minor(result.pending_minor),
        }
        report = write_records_file(
            self.con, self.files, f"outbound/reports/{FEED}/{load.warehouse}/{file_stem(file_name)}.outcomes.json",
            header, "records",
            f"""
            SELECT position AS row, order_id, line_number, sku, status, coalesce(imei, serial_number) AS device,
                   outcome, problem_code, problem
            FROM hw_dispatch_records WHERE batch_id = {sql_literal(load.batch_id)} ORDER BY position
            """,
        )
        self.con.execute("UPDATE batches SET output_path = ? WHERE batch_id = ?", [report, load.batch_id])
        if self.mirror is not None:
            with self.mirror.transaction():
                self.mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": load.batch_id})
        return report
