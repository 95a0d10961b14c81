"""Hardware orders at account level: the operations AgentView (the HTTP API) and the CLI call.

An order is created NEW, takes lines while NEW, and is generated (NEW -> AWAITING_GENERATION); the Sales
Order Request and Sales Order Dispatch jobs move it on. Every transition is recorded with its time and cause,
and a refused request raises `OrderError` naming the field at fault and an HTTP-like status.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from cmp_pipelines.core.cards import find_pan, mask_pans_in
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.defs.hardware_orders.config import HardwareConfig
from cmp_pipelines.defs.hardware_orders.rules import (
    AWAITING_GENERATION,
    BILLING_CHOICES,
    NEW,
    TransitionRefused,
    require_transition,
)

MAX_QUANTITY = 100
MAX_TEXT = 100
DELIVERY_FIELDS = ("delivery_name", "address_line1", "address_line2", "town", "postcode")


class OrderError(ValueError):
    """A refused order request; `field` names the input at fault, `status` is what the API answers."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True)
class Delivery:
    delivery_name: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    town: str | None = None
    postcode: str | None = None


def sync_hardware_reference(con: duckdb.DuckDBPyConnection, config: HardwareConfig) -> None:
    """Mirror the YAML into the tables the set-based rules join; call inside the caller's transaction."""
    con.execute("DELETE FROM hw_products")
    con.executemany(
        "INSERT INTO hw_products VALUES (?, ?, ?, ?, ?, ?, ?)",
        [[p.sku, p.product_type, p.description, p.price_minor, p.currency, p.warehouse, p.manufacturer]
         for p in config.catalogue.values()],
    )
    con.execute("DELETE FROM hw_settings")
    con.execute("INSERT INTO hw_settings VALUES (?)", [config.stuck_order_days])
    con.execute("DELETE FROM hw_deny_list")
    rows = [["NAME", n] for n in config.deny_names] + [["POSTCODE", p] for p in config.deny_postcodes]
    if rows:
        con.executemany("INSERT INTO hw_deny_list VALUES (?, ?) ON CONFLICT DO NOTHING", rows)


def _order_row(con: duckdb.DuckDBPyConnection, order_id: str) -> tuple:
    row = con.execute(
        "SELECT status, account_number, currency FROM hw_orders WHERE order_id = ?", [order_id]
    ).fetchone()
    if row is None:
        raise OrderError("order_id", f"order {order_id!r} does not exist", status=404)
    return row


def move_order(con: duckdb.DuckDBPyConnection, order_id: str, new_status: str, *, cause: str, now: datetime,
               **columns: object) -> None:
    """One order's transition, refused unless the rules allow it; recorded in its history."""
    old_status = _order_row(con, order_id)[0]
    try:
        require_transition(order_id, old_status, new_status)
    except TransitionRefused as exc:
        raise OrderError("status", str(exc), status=409) from exc
    assignments = "".join(f", {name} = ?" for name in columns)
    con.execute(f"UPDATE hw_orders SET status = ?, updated_at = ?{assignments} WHERE order_id = ?",
                [new_status, now, *columns.values(), order_id])
    con.execute("INSERT INTO hw_order_history (order_id, old_status, new_status, cause, changed_at) "
                "VALUES (?, ?, ?, ?, ?)", [order_id, old_status, new_status, cause, now])


def _text(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OrderError(field, f"must be a string, got {type(value).__name__}")
    value = " ".join(value.split())
    if find_pan(value):
        raise OrderError(field, f"{mask_pans_in(value)!r} holds a card number; never type one into an order")
    if len(value) > MAX_TEXT:
        raise OrderError(field, f"must be at most {MAX_TEXT} characters")
    return value or None


def create_order(
    con: duckdb.DuckDBPyConnection, account_number: str, *, billing: str, fraud_check: bool, enrolment: bool,
    delivery: Delivery, now: datetime, cause: str = "agent",
) -> dict:
    """A NEW order for the account. The delivery address is checked by the fraud check, when the order asks."""
    if billing not in BILLING_CHOICES:
        raise OrderError("billing", f"{billing!r} is not a billing choice; use one of {', '.join(BILLING_CHOICES)}")
    texts = {name: _text(name, getattr(delivery, name)) for name in DELIVERY_FIELDS}
    with transaction(con):
        account = con.execute(
            "SELECT currency, status FROM accounts WHERE account_number = ? AND NOT is_suspense", [account_number]
        ).fetchone()
        if account is None:
            raise OrderError("account_number", f"account {account_number!r} does not exist", status=404)
        if account[1] != "ACTIVE":
            raise OrderError("account_number", f"account {account_number} is {account[1]}; orders need an ACTIVE "
                                               "account", status=409)
        order_id = con.execute("SELECT 'HO' || lpad(nextval('hw_order_seq')::VARCHAR, 8, '0')").fetchone()[0]
        con.execute(
            """
            INSERT INTO hw_orders (order_id, account_number, status, billing, fraud_check, enrolment, currency,
                delivery_name, address_line1, address_line2, town, postcode, created_at, updated_at)
            VALUES (?, ?, 'NEW', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [order_id, account_number, billing, bool(fraud_check), bool(enrolment), account[0],
             *texts.values(), now, now],
        )
        con.execute("INSERT INTO hw_order_history (order_id, old_status, new_status, cause, changed_at) "
                    "VALUES (?, NULL, 'NEW', ?, ?)", [order_id, cause, now])
    return order_view(con, order_id)


def add_line(
    con: duckdb.DuckDBPyConnection, order_id: str, sku: str, quantity: int, *, config: HardwareConfig,
    now: datetime,
) -> dict:
    """Add `quantity` of a catalogue product to a NEW order, at today's catalogue price."""
    product = config.catalogue.get(sku)
    if product is None:
        raise OrderError("sku", f"{sku!r} is not in the catalogue; known: {', '.join(sorted(config.catalogue))}")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
        raise OrderError("quantity", f"must be a whole number from 1 to {MAX_QUANTITY}, got {quantity!r}")
    with transaction(con):
        status, _, currency = _order_row(con, order_id)
        if status != NEW:
            raise OrderError("order_id", f"order {order_id} is {status}: lines can only be added while it is NEW",
                             status=409)
        if product.currency != currency:
            raise OrderError("sku", f"{sku} is priced in {product.currency}; the account pays in {currency}")
        con.execute(
            """
            INSERT INTO hw_order_lines (order_id, line_number, sku, product_type, warehouse, quantity,
                                        unit_price_minor)
            SELECT ?, coalesce(max(line_number), 0) + 1, ?, ?, ?, ?, ? FROM hw_order_lines WHERE order_id = ?
            """,
            [order_id, sku, product.product_type, product.warehouse, quantity, product.price_minor, order_id],
        )
        con.execute("UPDATE hw_orders SET updated_at = ? WHERE order_id = ?", [now, order_id])
    return order_view(con, order_id)


def generate_order(con: duckdb.DuckDBPyConnection, order_id: str, *, now: datetime, cause: str = "agent") -> dict:
    """NEW -> AWAITING_GENERATION: the Sales Order Request job picks it up next."""
    with transaction(con):
        status = _order_row(con, order_id)[0]
        if status == NEW and not con.execute(
            "SELECT count(*) FROM hw_order_lines WHERE order_id = ?", [order_id]
        ).fetchone()[0]:
            raise OrderError("order_id", f"order {order_id} has no lines: add a product before generating it")
        seq = con.execute("SELECT nextval('hw_generation_seq')").fetchone()[0]
        move_order(con, order_id, AWAITING_GENERATION, cause=cause, now=now, generated_at=now, generation_seq=seq)
    return order_view(con, order_id)


def order_view(con: duckdb.DuckDBPyConnection, order_id: str) -> dict:
    """The order, its lines and its history, money as decimal strings."""
    row = con.execute(
        """
        SELECT order_id, account_number, status, billing, fraud_check, enrolment, currency, delivery_name,
               address_line1, address_line2, town, postcode, request_batch_id, error_reason,
               created_at, generated_at, sent_at, completed_at
        FROM hw_orders WHERE order_id = ?
        """,
        [order_id],
    ).fetchone()
    if row is None:
        raise OrderError("order_id", f"order {order_id!r} does not exist", status=404)
    lines = con.execute(
        """
        SELECT line_number, sku, product_type, warehouse, quantity, minor_to_decimal(unit_price_minor),
               minor_to_decimal(quantity * unit_price_minor), dispatched_quantity, error_reason
        FROM hw_order_lines WHERE order_id = ? ORDER BY line_number
        """,
        [order_id],
    ).fetchall()
    history = con.execute(  # ties on the time in insertion order: history_seq, drawn as each row is written
        "SELECT old_status, new_status, cause, changed_at FROM hw_order_history WHERE order_id = ? "
        "ORDER BY changed_at, history_seq", [order_id]
    ).fetchall()
    total = con.execute(
        "SELECT minor_to_decimal(coalesce(sum(quantity * unit_price_minor), 0)::BIGINT) FROM hw_order_lines "
        "WHERE order_id = ?", [order_id]
    ).fetchone()[0]
    billed = con.execute(
        """
        SELECT 'LEDGER_CHARGE', minor_to_decimal(amount_minor) FROM ledger_postings
        WHERE idempotency_key = 'hw:' || $order || ':CHARGE' AND invoice_number IS NULL
        UNION ALL  -- a next-invoice charge: pending, then on the invoice the billing feed attached it to
        SELECT CASE WHEN invoice_number IS NULL THEN 'PENDING_CHARGE' ELSE 'INVOICED ' || invoice_number END,
               minor_to_decimal(amount_minor) FROM hw_pending_charges WHERE order_id = $order
        """,
        {"order": order_id},
    ).fetchall()
    stamp = [None if t is None else t.isoformat() for t in row[14:18]]
    return {
        "order_id": row[0], "account_number": row[1], "status": row[2], "billing": row[3],
        "fraud_check": row[4], "enrolment": row[5], "currency": row[6],
        "delivery": dict(zip(DELIVERY_FIELDS, row[7:12], strict=True)),
        "request_batch_id": row[12], "error_reason": row[13], "total_amount": total,
        "created_at": stamp[0], "generated_at": stamp[1], "sent_at": stamp[2], "completed_at": stamp[3],
        "lines": [
            {"line_number": r[0], "sku": r[1], "product_type": r[2], "warehouse": r[3], "quantity": r[4],
             "unit_price": r[5], "amount": r[6], "dispatched_quantity": r[7], "error_reason": r[8]}
            for r in lines
        ],
        "billed": [{"kind": kind, "amount": amount} for kind, amount in billed],
        "history": [
            {"from": h[0], "to": h[1], "cause": h[2], "at": h[3].isoformat()} for h in history
        ],
    }


def account_orders(con: duckdb.DuckDBPyConnection, account_number: str) -> list[dict]:
    """The account's orders, newest first: id, status, billing and total (the API's order list)."""
    rows = con.execute(
        """
        SELECT o.order_id, o.status, o.billing,
               minor_to_decimal(coalesce(sum(l.quantity * l.unit_price_minor), 0)::BIGINT),
               o.created_at
        FROM hw_orders o LEFT JOIN hw_order_lines l USING (order_id)
        WHERE o.account_number = ? GROUP BY ALL ORDER BY o.created_at DESC, o.order_id DESC
        """,
        [account_number],
    ).fetchall()
    return [{"order_id": r[0], "status": r[1], "billing": r[2], "total_amount": r[3], "created_at": r[4].isoformat()}
            for r in rows]
