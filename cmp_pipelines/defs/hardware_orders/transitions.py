"""Moving many orders at once: the same rules as `move_order`, as set-based SQL, each move in the history."""

from __future__ import annotations

from datetime import datetime

import duckdb

from cmp_pipelines.defs.hardware_orders.rules import STATUSES, TRANSITIONS_SQL


def move_orders(con: duckdb.DuckDBPyConnection, selection: str, new_status: str, now: datetime,
                params: dict | None = None, extra_set: str = "") -> int:
    """Move the orders `selection` yields (columns `order_id`, `cause`, and any that `extra_set` reads as `s.x`)
    to `new_status`, where the transition rules allow it; call inside the caller's transaction.

    Orders whose status does not allow the move are left as they are; returns how many moved."""
    if new_status not in STATUSES:
        raise ValueError(f"{new_status!r} is not an order status")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE hw_moving AS
        SELECT s.*, o.status AS old_status
        FROM ({selection}) s JOIN hw_orders o USING (order_id)
        JOIN {TRANSITIONS_SQL} ON allowed.old_status = o.status AND allowed.new_status = '{new_status}'
        """,
        params or {},
    )
    try:
        con.execute("INSERT INTO hw_order_history (order_id, old_status, new_status, cause, changed_at) "
                    "SELECT order_id, old_status, ?, cause, ? FROM hw_moving ORDER BY 1", [new_status, now])
        con.execute(f"UPDATE hw_orders o SET status = ?, updated_at = ?{extra_set} FROM hw_moving s "
                    "WHERE o.order_id = s.order_id", [new_status, now])
        return con.execute("SELECT count(*) FROM hw_moving").fetchone()[0]
    finally:
        con.execute("DROP TABLE hw_moving")
