"""The agent's stock check, for an order's lines or for SKUs alone, against each product's warehouse."""

from __future__ import annotations

from typing import Protocol

import duckdb

from cmp_pipelines.defs.hardware_orders.config import HardwareConfig
from cmp_pipelines.defs.hardware_orders.orders import OrderError


class StockSource(Protocol):
    def stock_levels(self, warehouse: str, skus: list[str]) -> dict[str, int]: ...


def check_stock(
    source: StockSource, config: HardwareConfig, *, skus: list[str] | None = None,
    con: duckdb.DuckDBPyConnection | None = None, order_id: str | None = None,
) -> list[dict]:
    """One row per SKU asked (or per order line): warehouse, units wanted, units available, in stock or not.

    A warehouse that cannot answer is reported as such (`available` None) rather than guessed. Each warehouse is
    asked through its configured stock_check adaptor, `source` where none is configured."""
    from cmp_pipelines.defs.hardware_orders.adaptors import chosen
    from cmp_pipelines.defs.hardware_orders.warehouse import StockUnavailable

    wanted: dict[str, int] = {}
    if order_id is not None:
        if con is None:
            raise ValueError("an order's stock check needs the store")
        if not con.execute("SELECT count(*) FROM hw_orders WHERE order_id = ?", [order_id]).fetchone()[0]:
            raise OrderError("order_id", f"order {order_id!r} does not exist", status=404)
        for sku, quantity in con.execute(
            "SELECT sku, sum(quantity) FROM hw_order_lines WHERE order_id = ? GROUP BY sku ORDER BY sku", [order_id]
        ).fetchall():
            wanted[sku] = int(quantity)
    for sku in skus or []:
        if sku not in config.catalogue:
            raise OrderError("sku", f"{sku!r} is not in the catalogue; known: {', '.join(sorted(config.catalogue))}")
        wanted.setdefault(sku, 1)
    if order_id is None and not skus:
        wanted = dict.fromkeys(config.catalogue, 1)
    by_warehouse: dict[str, list[str]] = {}
    for sku in wanted:
        by_warehouse.setdefault(config.catalogue[sku].warehouse, []).append(sku)
    rows = []
    for warehouse, warehouse_skus in sorted(by_warehouse.items()):
        try:
            adaptor = chosen(config.warehouses[warehouse].stock_check, source)
            levels, problem = adaptor.stock_levels(warehouse, warehouse_skus), None
        except StockUnavailable as exc:
            levels, problem = None, str(exc)
        for sku in sorted(warehouse_skus):
            available = None if levels is None else levels.get(sku, 0)
            rows.append({
                "sku": sku, "description": config.catalogue[sku].description, "warehouse": warehouse,
                "wanted": wanted[sku], "available": available,
                "in_stock": None if available is None else available >= wanted[sku],
                "problem": problem,
            })
    return rows
