"""`orders`: hardware orders, stock and device enrolment."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from cmp_pipelines.cli.common import _hardware, _refusals_as_errors, _service_connect


@click.group()
def orders() -> None:
    """Hardware orders: create, add lines, check stock, generate; devices and enrolment."""


def _order_action(action):
    """Run an order operation on the store (with CMP_DATABASE_URL, PostgreSQL itself: core/db/pg_duck.py); its
    refusals become a clear CLI error naming the field."""
    from cmp_pipelines.defs.hardware_orders.orders import OrderError

    return _refusals_as_errors(action, _hardware(), OrderError, connect=_service_connect)


@orders.command("catalogue")
def orders_catalogue() -> None:
    """The products that can be ordered: SKU, type, price and warehouse."""
    from cmp_pipelines.core.money import format_minor

    for p in _hardware().catalogue.values():
        click.echo(f"{p.sku:16} {p.product_type:10} {format_minor(p.price_minor):>8} {p.currency} "
                   f"{p.warehouse:10} {p.description}")


@orders.command("create")
@click.argument("account_number")
@click.option("--billing", type=click.Choice(["IMMEDIATE", "NEXT_INVOICE"]), default="NEXT_INVOICE",
              show_default=True, help="Charge the ledger on completion, or a pending charge for the next invoice.")
@click.option("--fraud-check/--no-fraud-check", default=True, show_default=True,
              help="Check the delivery name and address before the order goes to the warehouse.")
@click.option("--enrol/--no-enrol", default=False, show_default=True,
              help="Enrol the dispatched handsets with their manufacturer.")
@click.option("--name", "delivery_name", help="Delivery name.")
@click.option("--line1", "address_line1", help="Delivery address, first line.")
@click.option("--line2", "address_line2", help="Delivery address, second line.")
@click.option("--town", help="Delivery town.")
@click.option("--postcode", help="Delivery postcode (UK).")
def orders_create(account_number: str, billing: str, fraud_check: bool, enrol: bool, delivery_name: str | None,
                  address_line1: str | None, address_line2: str | None, town: str | None,
                  postcode: str | None) -> None:
    """Create a NEW hardware order for ACCOUNT_NUMBER."""
    from cmp_pipelines.defs.hardware_orders.orders import Delivery, create_order

    delivery = Delivery(delivery_name, address_line1, address_line2, town, postcode)
    view = _order_action(lambda con, _: create_order(con, account_number, billing=billing, fraud_check=fraud_check,
                                                     enrolment=enrol, delivery=delivery, now=datetime.now(UTC),
                                                     cause="cli"))
    click.echo(json.dumps(view, indent=2))


@orders.command("add-line")
@click.argument("order_id")
@click.argument("sku")
@click.option("--quantity", default=1, show_default=True, type=int)
def orders_add_line(order_id: str, sku: str, quantity: int) -> None:
    """Add QUANTITY of catalogue product SKU to the NEW order ORDER_ID."""
    from cmp_pipelines.defs.hardware_orders.orders import add_line

    view = _order_action(lambda con, config: add_line(con, order_id, sku, quantity, config=config,
                                                      now=datetime.now(UTC)))
    click.echo(json.dumps(view, indent=2))


@orders.command("generate")
@click.argument("order_id")
def orders_generate(order_id: str) -> None:
    """Generate ORDER_ID (NEW -> AWAITING_GENERATION): the Sales Order Request job sends it to the warehouse."""
    from cmp_pipelines.defs.hardware_orders.orders import generate_order

    view = _order_action(lambda con, _: generate_order(con, order_id, now=datetime.now(UTC), cause="cli"))
    click.echo(f"{view['order_id']}: {view['status']}")


@orders.command("show")
@click.argument("order_id")
def orders_show(order_id: str) -> None:
    """ORDER_ID with its lines, billing and status history (JSON)."""
    from cmp_pipelines.defs.hardware_orders.orders import order_view

    click.echo(json.dumps(_order_action(lambda con, _: order_view(con, order_id)), indent=2))


@orders.command("stock")
@click.option("--order", "order_id", default=None, help="Check every line of this order.")
@click.option("--sku", "skus", multiple=True, help="Check this SKU (repeatable); default: the whole catalogue.")
def orders_stock(order_id: str | None, skus: tuple[str, ...]) -> None:
    """Stock check against each product's warehouse, for an order or independently of one."""
    from cmp_pipelines.defs.hardware_orders.stock_check import check_stock
    from cmp_pipelines.defs.hardware_orders.warehouse import StockFileWarehouse

    rows = _order_action(lambda con, config: check_stock(StockFileWarehouse(), config, skus=list(skus), con=con,
                                                         order_id=order_id))
    for r in rows:
        state = "UNKNOWN" if r["in_stock"] is None else ("IN STOCK" if r["in_stock"] else "SHORT")
        available = "?" if r["available"] is None else r["available"]
        click.echo(f"{state:9} {r['sku']:16} {r['warehouse']:10} wanted {r['wanted']:>3} available {available:>5}"
                   + (f"  ({r['problem']})" if r["problem"] else ""))


@orders.command("enrol")
@click.argument("device_id")
def orders_enrol(device_id: str) -> None:
    """Ask for DEVICE_ID (a dispatched handset's IMEI) to be enrolled on the next enrolment batch."""
    from cmp_pipelines.defs.hardware_orders.enrolment import request_enrolment

    view = _order_action(lambda con, _: request_enrolment(con, device_id, now=datetime.now(UTC)))
    click.echo(f"{view['device_id']}: {view['enrolment_status']}")


@orders.command("unenrol")
@click.argument("device_id")
def orders_unenrol(device_id: str) -> None:
    """Ask for the enrolled handset DEVICE_ID to be unenrolled on the next enrolment batch."""
    from cmp_pipelines.defs.hardware_orders.enrolment import request_unenrolment

    view = _order_action(lambda con, _: request_unenrolment(con, device_id, now=datetime.now(UTC)))
    click.echo(f"{view['device_id']}: {view['enrolment_status']}")


@orders.command("device")
@click.argument("device_id")
def orders_device(device_id: str) -> None:
    """A dispatched device, its enrolment status and its enrolment requests (JSON)."""
    from cmp_pipelines.defs.hardware_orders.enrolment import device_view

    click.echo(json.dumps(_order_action(lambda con, _: device_view(con, device_id)), indent=2))
