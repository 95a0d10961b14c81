"""Demo hardware orders: stock files, a handful of orders (one failing its fraud check), and a warehouse
response file for the orders sent, with a shipped-in-part order, a failed line and a bad IMEI."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.defs.hardware_orders.checks_rules import imei_check_digit
from cmp_pipelines.defs.hardware_orders.config import HardwareConfig
from cmp_pipelines.defs.hardware_orders.orders import Delivery, add_line, create_order, generate_order

HOME = Delivery("Jane Customer", "1 High Street", None, "Leeds", "LS1 4AP")
ORDERS = (  # account index, lines, billing, enrolment, delivery
    (1, (("HS-ACME-X1", 2), ("PR-CASE-X1", 2)), "IMMEDIATE", True, HOME),
    (2, (("LC-MDM-12M", 5),), "NEXT_INVOICE", False, Delivery("Acme Ltd", "Unit 4", "Park Road", "York", "YO1 7HH")),
    (3, (("HS-ORBIT-5", 1), ("PR-CHARGER-65W", 1)), "IMMEDIATE", True, HOME),
    (4, (("HS-ACME-X1", 1),), "IMMEDIATE", False, Delivery("John Fraudster", "2 Main St", None, "Bristol",
                                                          "BS1 4DJ")),
)


def write_stock_files(config: HardwareConfig, stock_dir: Path) -> list[Path]:
    """A stock file per warehouse (sku,available) unless one is there already."""
    written = []
    for warehouse in config.warehouses:
        path = stock_dir / f"{warehouse}.csv"
        if path.exists():
            continue
        stock_dir.mkdir(parents=True, exist_ok=True)
        rows = [f"{p.sku},{20 + 7 * i}" for i, p in enumerate(config.catalogue.values()) if p.warehouse == warehouse]
        path.write_text("\n".join(["sku,available", *rows, ""]))
        written.append(path)
    return written


def create_orders(con: duckdb.DuckDBPyConnection, config: HardwareConfig, now: datetime,
                  orders: tuple = ORDERS) -> list[str]:
    created = []
    for index, lines, billing, enrolment, delivery in orders:
        order_id = create_order(con, f"ACC{index:08d}", billing=billing, fraud_check=True, enrolment=enrolment,
                                delivery=delivery, now=now, cause="demo")["order_id"]
        for sku, quantity in lines:
            add_line(con, order_id, sku, quantity, config=config, now=now)
        generate_order(con, order_id, now=now, cause="demo")
        created.append(order_id)
    return created


def warehouse_response_files(con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring,
                             now: datetime) -> list[str]:
    """One response CSV per warehouse for the orders awaiting dispatch there: every unit shipped, except that
    a licence line fails and the last unit of a multi-unit handset line has a mistyped IMEI (rejected, so the
    order waits, partly dispatched)."""
    rows = con.execute(
        """
        SELECT l.warehouse, l.order_id, l.line_number, l.sku, l.product_type, l.quantity
        FROM hw_order_lines l JOIN hw_orders o USING (order_id)
        WHERE o.status = 'AWAITING_DISPATCH' AND l.dispatched_quantity = 0 AND l.error_reason IS NULL
        ORDER BY l.warehouse, l.order_id, l.line_number
        """
    ).fetchall()
    by_warehouse: dict[str, list[str]] = {}
    serial = 0
    for warehouse, order_id, line, sku, product_type, quantity in rows:
        out = by_warehouse.setdefault(warehouse, [])
        if product_type == "LICENCE":
            out.append(f"{order_id},{line},{sku},FAILED,,,,,Licence server unavailable")
            continue
        for unit in range(quantity):
            serial += 1
            when = now.strftime("%d/%m/%Y %H:%M")
            if product_type == "HANDSET":  # the last of several handsets: a mistyped IMEI, so it waits
                valid = quantity == 1 or unit < quantity - 1
                out.append(f"{order_id},{line},{sku},SHIPPED,{_imei(serial, valid)},,DPD-{serial:06d},{when},")
            else:
                out.append(f"{order_id},{line},{sku},SHIPPED,,SN-{serial:08d},DPD-{serial:06d},{when},")
    written = []
    header = "ORDER_REF,LINE_NO,SKU,STATUS,IMEI,SERIAL_NO,COURIER_REF,DISPATCH_DATE,ERROR_TEXT"
    for warehouse, lines in by_warehouse.items():
        name = f"{warehouse}-DISPATCH-{now:%Y%m%d%H%M%S}.csv.enc"
        data = keyring.encrypt(warehouse, "\n".join([header, *lines, ""]).encode())
        written.append(files.write_bytes(f"inbound/warehouse_dispatch/{warehouse}/{name}", data))
    return written


def _imei(n: int, valid: bool = True) -> str:
    body = f"35209900{n:06d}"
    check = int(imei_check_digit(body))
    return body + str(check if valid else (check + 3) % 10)
