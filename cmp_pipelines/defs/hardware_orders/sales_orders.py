"""Sales Order Request job: orders awaiting generation, fraud-checked when they ask, sent to their warehouses.

Steps, each idempotent for a batch (SOR-<n>: every order generated up to generation number n not yet claimed):
1. `claim`: the batch's orders, chosen once and frozen.
2. `check_fraud`: the fraud check resource judges the deliveries of the orders that ask for it; a failure puts
   the order in ERROR with the reason and raises a workflow event.
3. `send`: one JSON sales order request per warehouse and currency (schema sales_order_request.schema.json),
   encrypted for the warehouse; the orders sent become AWAITING_DISPATCH.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import duckdb
import pyarrow as pa

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.db.mirror import Mirror
from cmp_pipelines.core.delivery import enqueue
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.ledger import json_document
from cmp_pipelines.defs.hardware_orders import pg
from cmp_pipelines.defs.hardware_orders.adaptors import chosen
from cmp_pipelines.defs.hardware_orders.config import HardwareConfig
from cmp_pipelines.defs.hardware_orders.fraud_check import VERDICTS
from cmp_pipelines.defs.hardware_orders.orders import sync_hardware_reference
from cmp_pipelines.defs.hardware_orders.rules import AWAITING_DISPATCH, ERROR, FRAUD_FAILED_EVENT
from cmp_pipelines.defs.hardware_orders.transitions import move_orders

FEED = "hardware_orders"
KIND = "SALES_ORDER_REQUEST"
BATCH_ID = re.compile(r"^SOR-([0-9]{8})$")


class FraudCheckIncomplete(RuntimeError):
    pass


class FraudChecker(Protocol):
    def assess(self, deliveries: pa.Table, config: HardwareConfig) -> pa.Table: ...


def request_batch_id(up_to_generation: int) -> str:
    return f"SOR-{up_to_generation:08d}"


def pending_generation(con: duckdb.DuckDBPyConnection) -> int | None:
    """The newest generation number of an order awaiting generation and not yet claimed (what the sensor asks)."""
    return awaiting_generation(con)[0]


def awaiting_generation(con: duckdb.DuckDBPyConnection) -> tuple[int | None, datetime | None]:
    """(newest generation number, oldest generation time) of the orders awaiting generation, not yet claimed."""
    return con.execute(
        "SELECT max(generation_seq), min(generated_at) FROM hw_orders "
        "WHERE status = 'AWAITING_GENERATION' AND request_batch_id IS NULL"
    ).fetchone()


def unfinished_batches(con: duckdb.DuckDBPyConnection, created_before: datetime | None = None) -> list[str]:
    """Batches claimed but not sent (a run failed, e.g. the fraud service was down): to be run again."""
    return [row[0] for row in con.execute(
        "SELECT batch_id FROM batches WHERE kind = ? AND status <> 'SENT' AND created_at < ? ORDER BY batch_id",
        [KIND, created_before or datetime.now(UTC) + timedelta(days=1)],
    ).fetchall()]


@dataclass
class RequestFile:
    warehouse: str
    currency: str
    path: str
    order_count: int
    total_minor: int


@dataclass
class RequestBatch:
    batch_id: str
    status: str  # CLAIMED, CHECKED, SENT
    order_count: int
    fraud_checked: int
    fraud_failed: int
    sent_count: int
    files: list[RequestFile] = field(default_factory=list)


class SalesOrderRequests:
    def __init__(self, con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                 config: HardwareConfig, fraud: FraudChecker, now: datetime | None = None,
                 mirror: Mirror | None = None):
        """`mirror`: on PostgreSQL, the run's link to the store (each step's pulls, pushes and lock: pg.py)."""
        self.con, self.files, self.keyring, self.config, self.fraud = con, files, keyring, config, fraud
        self.now = now or datetime.now(UTC)
        self.mirror = mirror
        self._pulled: str | None = None  # the batch whose state the scratch holds as this flow last committed it

    def claim(self, batch_id: str) -> RequestBatch:
        match = BATCH_ID.match(batch_id)
        if not match:
            raise ValueError(f"{batch_id!r} is not a sales order request batch (SOR-<8 digits>)")
        with pg.deciding(self.mirror, pg.pull_claimable(batch_id, int(match.group(1)))), transaction(self.con):
            if self.con.execute("SELECT count(*) FROM batches WHERE batch_id = ?", [batch_id]).fetchone()[0]:
                return self.batch(batch_id)
            sync_hardware_reference(self.con, self.config)
            params = {"batch": batch_id, "up_to": int(match.group(1))}
            self.con.execute(
                """
                INSERT INTO hw_request_orders
                SELECT $batch, order_id FROM hw_orders
                WHERE status = 'AWAITING_GENERATION' AND request_batch_id IS NULL AND generation_seq <= $up_to
                """,
                params,
            )
            self.con.execute(
                "UPDATE hw_orders SET request_batch_id = $batch FROM hw_request_orders r "
                "WHERE r.batch_id = $batch AND r.order_id = hw_orders.order_id", {"batch": batch_id})
            self.con.execute(
                "INSERT INTO batches (batch_id, kind, feed, status, record_count, created_at) "
                "SELECT ?, ?, ?, 'CLAIMED', count(*), ? FROM hw_request_orders WHERE batch_id = ?",
                [batch_id, KIND, FEED, self.now, batch_id],
            )
            if self.mirror is not None:
                pg.push_request_batch(self.mirror, batch_id, self.now, reference=True)
        self._pulled = batch_id
        return self.batch(batch_id)

    def _refresh(self, batch_id: str) -> None:
        """On PostgreSQL: the batch's state pulled, unless this flow's own last step left it in the scratch."""
        if self._pulled != batch_id:
            pg.refresh(self.mirror, self._pull(batch_id))
            self._pulled = batch_id if self.mirror is not None else None

    def _pull(self, batch_id: str, *, lock_orders: bool = False):
        return lambda mirror: pg.pull_request_batch(mirror, batch_id, lock_orders=lock_orders)

    def _assess(self, batch_id: str) -> pa.Table | None:
        """Each warehouse's fraud_check adaptor (the fraud_check resource where none is configured) judges the
        deliveries of the orders it ships: an order shipped by warehouses with different adaptors is judged by
        each and passes only if every one passes it (the failures' reasons joined)."""
        warehouses = [w for (w,) in self.con.execute(
            "SELECT DISTINCT l.warehouse FROM hw_request_orders r JOIN hw_orders o USING (order_id) "
            "JOIN hw_order_lines l USING (order_id) WHERE r.batch_id = ? AND o.fraud_check ORDER BY 1",
            [batch_id]).fetchall()]
        by_adaptor: dict[object, list[str]] = {}
        for warehouse in warehouses:
            known = self.config.warehouses.get(warehouse)
            by_adaptor.setdefault(known.fraud_check if known else None, []).append(warehouse)
        parts = []
        for choice, served in by_adaptor.items():
            with self.con.cursor() as cursor:  # its own result stream: Arrow straight from the relation
                deliveries = cursor.sql(
                    """
                    SELECT o.order_id, o.delivery_name, o.address_line1, o.address_line2, o.town, o.postcode
                    FROM hw_request_orders r JOIN hw_orders o USING (order_id)
                    WHERE r.batch_id = $batch AND o.fraud_check AND o.order_id IN
                          (SELECT order_id FROM hw_order_lines WHERE list_contains($served, warehouse))
                    ORDER BY o.order_id
                    """,
                    params={"batch": batch_id, "served": served},
                ).to_arrow_table()
            parts.append(chosen(choice, self.fraud).assess(deliveries, self.config).cast(VERDICTS))
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        with duckdb.connect() as con:
            con.register("verdicts", pa.concat_tables(parts))
            return con.sql("SELECT order_id, bool_and(passed) AS passed, string_agg(reason, '; ' ORDER BY reason) "
                           "FILTER (NOT passed) AS reason FROM verdicts GROUP BY order_id ORDER BY order_id"
                           ).to_arrow_table().cast(VERDICTS)

    def check_fraud(self, batch: RequestBatch) -> RequestBatch:
        if batch.status != "CLAIMED":
            return batch
        verdicts = self._assess(batch.batch_id)  # the fraud service is asked before any lock is taken
        params = {"batch": batch.batch_id, "now": self.now}
        with pg.deciding(self.mirror, self._pull(batch.batch_id, lock_orders=True)), transaction(self.con):
            if self.mirror is not None and self._status(batch.batch_id) != "CLAIMED":
                return self.batch(batch.batch_id)  # another run checked it meanwhile: its verdicts stand
            if verdicts is not None:
                self.con.register("verdicts", verdicts)
                try:
                    self.con.execute(
                        "INSERT INTO hw_fraud_checks SELECT $batch, order_id, passed, reason, $now FROM verdicts "
                        "WHERE order_id IN (SELECT order_id FROM hw_request_orders WHERE batch_id = $batch)",
                        params,
                    )
                finally:
                    self.con.unregister("verdicts")
            unjudged = self.con.execute(
                "SELECT string_agg(order_id, ', ' ORDER BY order_id) FROM hw_request_orders r "
                "JOIN hw_orders o USING (order_id) WHERE r.batch_id = $batch AND o.fraud_check AND NOT EXISTS "
                "(SELECT 1 FROM hw_fraud_checks f WHERE f.batch_id = r.batch_id AND f.order_id = r.order_id)",
                {"batch": batch.batch_id},
            ).fetchone()[0]
            if unjudged:  # never ship an order that asked for a check without its verdict
                raise FraudCheckIncomplete(f"the fraud check gave no verdict for {unjudged}; nothing recorded, "
                                           f"{batch.batch_id} will be checked again")
            move_orders(
                self.con,
                "SELECT order_id, 'fraud check failed (' || batch_id || '): ' || reason AS cause, reason "
                "FROM hw_fraud_checks WHERE batch_id = $batch AND NOT passed",
                ERROR, self.now, {"batch": batch.batch_id},
                extra_set=", error_reason = 'FRAUD_CHECK_FAILED: ' || s.reason",
            )
            self.con.execute(
                f"""
                INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at)
                SELECT '{FRAUD_FAILED_EVENT[0]}', '{FRAUD_FAILED_EVENT[1]}', o.account_number, o.order_id,
                       'order ' || o.order_id || ' failed the fraud check: ' || f.reason, $now
                FROM hw_fraud_checks f JOIN hw_orders o USING (order_id)
                WHERE f.batch_id = $batch AND NOT f.passed ORDER BY o.order_id
                """,
                params,
            )
            self.con.execute("UPDATE batches SET status = 'CHECKED' WHERE batch_id = ?", [batch.batch_id])
            if self.mirror is not None:
                pg.push_request_batch(self.mirror, batch.batch_id, self.now)
        self._pulled = batch.batch_id
        return self.batch(batch.batch_id)

    def _status(self, batch_id: str) -> str | None:
        rows = self.con.execute("SELECT status FROM batches WHERE batch_id = ?", [batch_id]).fetchall()
        return rows[0][0] if rows else None

    def _sendable(self, batch_id: str) -> str:
        """The batch's orders that need no fraud check or passed it."""
        return f"""
            SELECT r.order_id FROM hw_request_orders r JOIN hw_orders o USING (order_id)
            WHERE r.batch_id = {sql_literal(batch_id)}
              AND (NOT o.fraud_check OR EXISTS (SELECT 1 FROM hw_fraud_checks f WHERE f.batch_id = r.batch_id
                                                AND f.order_id = r.order_id AND f.passed))
        """

    def send(self, batch: RequestBatch) -> RequestBatch:
        """Write every warehouse's request (the same bytes on a re-run), then mark the orders sent."""
        if batch.status == "CLAIMED":
            raise LookupError(f"{batch.batch_id} is not fraud-checked yet: materialise sales_order_request_batch")
        self._refresh(batch.batch_id)
        created_at = self.con.execute(
            "SELECT created_at FROM batches WHERE batch_id = ?", [batch.batch_id]
        ).fetchone()[0].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sendable = self._sendable(batch.batch_id)
        groups = self.con.execute(
            f"""
            SELECT l.warehouse, o.currency, count(DISTINCT o.order_id), count(*), sum(l.quantity),
                   sum(l.quantity * l.unit_price_minor)
            FROM ({sendable}) s JOIN hw_orders o USING (order_id) JOIN hw_order_lines l USING (order_id)
            GROUP BY ALL ORDER BY ALL
            """
        ).fetchall()
        paths = []
        for warehouse, currency, orders, lines, units, total in groups:
            file_id = f"{batch.batch_id}-{warehouse}-{currency}"
            header = {"file_id": file_id, "batch_id": batch.batch_id, "sender": "CMP", "recipient": warehouse,
                      "created_at": created_at, "currency": currency, "order_count": orders, "line_count": lines,
                      "unit_count": int(units), "total_amount": _decimal(total)}
            with json_document(self.con, header, "orders", _request_rows_sql(sendable, warehouse, currency)) as doc:
                token = self.keyring.encrypt_parts(warehouse, [doc])
                paths.append(self.files.write_parts(f"outbound/sales_orders/{warehouse}/{file_id}.json.enc", token))
            enqueue(self.con, self.files, "SALES_ORDER_REQUEST", paths[-1], partner=warehouse, reference=file_id,
                    now=self.now)
        with pg.deciding(self.mirror, self._pull(batch.batch_id, lock_orders=True)), transaction(self.con):
            if self._status(batch.batch_id) != "SENT":
                move_orders(
                    self.con,
                    f"""
                    SELECT s.order_id, 'sent to ' || string_agg(DISTINCT l.warehouse, ', ' ORDER BY l.warehouse)
                           || ' in ' || {sql_literal(batch.batch_id)} AS cause
                    FROM ({sendable}) s JOIN hw_order_lines l USING (order_id) GROUP BY s.order_id
                    """,
                    AWAITING_DISPATCH, self.now, extra_set=f", sent_at = {sql_literal(self.now.isoformat())}",
                )
            self.con.execute(
                """
                UPDATE batches SET status = 'SENT', completed_at = ?, output_path = ?,
                    accepted_count = (SELECT count(*) FROM hw_orders WHERE request_batch_id = ? AND status <> 'ERROR'),
                    rejected_count = (SELECT count(*) FROM hw_orders WHERE request_batch_id = ? AND status = 'ERROR'),
                    total_minor = (SELECT coalesce(sum(l.quantity * l.unit_price_minor), 0) FROM hw_orders o
                                   JOIN hw_order_lines l USING (order_id)
                                   WHERE o.request_batch_id = ? AND o.status <> 'ERROR')
                WHERE batch_id = ?
                """,
                [self.now, ", ".join(paths) or None, *[batch.batch_id] * 4],
            )
            if self.mirror is not None:
                pg.push_request_batch(self.mirror, batch.batch_id, self.now)
        self._pulled = batch.batch_id
        return self.batch(batch.batch_id)

    def batch(self, batch_id: str) -> RequestBatch:
        self._refresh(batch_id)
        row = self.con.execute(
            "SELECT status, record_count, output_path FROM batches WHERE batch_id = ? AND kind = ?", [batch_id, KIND]
        ).fetchone()
        if row is None:
            raise LookupError(f"sales order request batch {batch_id} does not exist: materialise "
                              "sales_order_request_batch first")
        checked, failed = self.con.execute(
            "SELECT count(*), count(*) FILTER (NOT passed) FROM hw_fraud_checks WHERE batch_id = ?", [batch_id]
        ).fetchone()
        sent = self.con.execute(
            "SELECT count(*) FROM hw_orders WHERE request_batch_id = ? AND sent_at IS NOT NULL", [batch_id]
        ).fetchone()[0]
        files = []
        if row[0] == "SENT":
            for warehouse, currency, orders, total in self.con.execute(
                """
                SELECT l.warehouse, o.currency, count(DISTINCT o.order_id), sum(l.quantity * l.unit_price_minor)
                FROM hw_orders o JOIN hw_order_lines l USING (order_id)
                WHERE o.request_batch_id = ? AND o.sent_at IS NOT NULL GROUP BY ALL ORDER BY ALL
                """,
                [batch_id],
            ).fetchall():
                path = f"outbound/sales_orders/{warehouse}/{batch_id}-{warehouse}-{currency}.json.enc"
                files.append(RequestFile(warehouse, currency, path, orders, int(total)))
        return RequestBatch(batch_id, row[0], row[1], checked, failed, sent, files)


def _decimal(minor: int) -> str:
    from cmp_pipelines.core.money import format_minor

    return format_minor(int(minor))


def _request_rows_sql(sendable: str, warehouse: str, currency: str) -> str:
    return f"""
        SELECT o.order_id, o.account_number, o.fraud_check,
               CASE WHEN o.fraud_check THEN 'PASSED' ELSE 'NOT_REQUIRED' END AS fraud_check_result,
               {{'name': o.delivery_name, 'address_line1': o.address_line1, 'address_line2': o.address_line2,
                 'town': o.town, 'postcode': o.postcode}} AS delivery,
               list({{'line_number': l.line_number, 'sku': l.sku, 'product_type': l.product_type,
                      'description': coalesce(p.description, l.sku), 'quantity': l.quantity,
                      'unit_price': minor_to_decimal(l.unit_price_minor),
                      'amount': minor_to_decimal(l.quantity * l.unit_price_minor)}} ORDER BY l.line_number) AS lines
        FROM ({sendable}) s JOIN hw_orders o USING (order_id) JOIN hw_order_lines l USING (order_id)
        LEFT JOIN hw_products p ON p.sku = l.sku
        WHERE l.warehouse = {sql_literal(warehouse)} AND o.currency = {sql_literal(currency)}
        GROUP BY ALL ORDER BY o.order_id
    """
