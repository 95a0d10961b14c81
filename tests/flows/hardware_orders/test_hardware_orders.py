"""Hardware orders: creation, lines, generation, every transition recorded and invalid ones refused; the stock
check with and without an order; the hardware configuration's errors by file, entry and field."""

from __future__ import annotations

import shutil

import pytest
import yaml

from cmp_pipelines.core.config import ConfigError, load_partners
from cmp_pipelines.defs.hardware_orders.checks_rules import (
    imei_valid,
    imei_valid_sql,
    uk_postcode_valid,
    uk_postcode_valid_sql,
)
from cmp_pipelines.defs.hardware_orders.config import load_hardware_orders
from cmp_pipelines.defs.hardware_orders.orders import (
    Delivery,
    OrderError,
    add_line,
    create_order,
    generate_order,
    move_order,
)
from cmp_pipelines.defs.hardware_orders.rules import TRANSITIONS, TransitionRefused, require_transition
from cmp_pipelines.defs.hardware_orders.stock_check import check_stock
from cmp_pipelines.defs.hardware_orders.warehouse import StockFileWarehouse
from tests.support.hardware import CONFIG, HOME
from tests.support.platform import NOW


def test_an_order_is_created_new_takes_lines_and_is_generated(hardware):
    order_id = hardware.order("ACC00000001", [("HS-ACME-X1", 2), ("PR-CASE-X1", 1)], generate=False)
    view = hardware.view(order_id)
    assert (view["status"], view["total_amount"], view["billing"], view["fraud_check"]) == (
        "NEW", "1017.99", "IMMEDIATE", True)
    assert [(line["line_number"], line["sku"], line["quantity"], line["unit_price"], line["warehouse"])
            for line in view["lines"]] == [(1, "HS-ACME-X1", 2, "499.00", "WH_NORTH"),
                                            (2, "PR-CASE-X1", 1, "19.99", "WH_NORTH")]
    with hardware.platform.connect() as con:
        generate_order(con, order_id, now=NOW, cause="agent jsmith")
    history = hardware.view(order_id)["history"]
    assert [(h["from"], h["to"], h["cause"]) for h in history] == [
        (None, "NEW", "agent"), ("NEW", "AWAITING_GENERATION", "agent jsmith")]
    assert all(h["at"] for h in history)


def test_invalid_requests_are_refused_naming_the_field(hardware):
    order_id = hardware.order("ACC00000002", [("LC-MDM-12M", 1)])  # generated
    with hardware.platform.connect() as con:
        cases = [
            (lambda: add_line(con, order_id, "PR-CASE-X1", 1, config=hardware.config, now=NOW), "order_id", 409,
             "is AWAITING_GENERATION: lines can only be added while it is NEW"),
            (lambda: generate_order(con, order_id, now=NOW), "status", 409,
             "cannot become AWAITING_GENERATION"),
            (lambda: move_order(con, order_id, "COMPLETE", cause="test", now=NOW), "status", 409,
             "allowed from AWAITING_GENERATION: AWAITING_DISPATCH, ERROR"),
            (lambda: add_line(con, "HO99999999", "PR-CASE-X1", 1, config=hardware.config, now=NOW), "order_id",
             404, "does not exist"),
            (lambda: create_order(con, "ACC99999999", billing="IMMEDIATE", fraud_check=True, enrolment=False,
                                  delivery=HOME, now=NOW), "account_number", 404, "does not exist"),
            (lambda: create_order(con, "ACC00000002", billing="LATER", fraud_check=True, enrolment=False,
                                  delivery=HOME, now=NOW), "billing", 422, "'LATER' is not a billing choice"),
            (lambda: create_order(con, "ACC00000002", billing="IMMEDIATE", fraud_check=True, enrolment=False,
                                  delivery=Delivery("x" * 101), now=NOW), "delivery_name", 422, "at most 100"),
            (lambda: create_order(con, "ACC00000002", billing="IMMEDIATE", fraud_check=True, enrolment=False,
                                  delivery=Delivery("J Smith", "4111 1111 1111 1111"), now=NOW), "address_line1", 422,
             "'************1111' holds a card number"),
        ]
        fresh = create_order(con, "ACC00000002", billing="NEXT_INVOICE", fraud_check=False, enrolment=False,
                             delivery=HOME, now=NOW)["order_id"]
        cases += [
            (lambda: add_line(con, fresh, "HS-NOPE", 1, config=hardware.config, now=NOW), "sku", 422,
             "'HS-NOPE' is not in the catalogue"),
            (lambda: add_line(con, fresh, "PR-CASE-X1", 0, config=hardware.config, now=NOW), "quantity", 422,
             "from 1 to 100"),
            (lambda: generate_order(con, fresh, now=NOW), "order_id", 422, "has no lines"),
        ]
        for action, field, status, text in cases:
            with pytest.raises(OrderError) as refused:
                action()
            assert (refused.value.field, refused.value.status) == (field, status)
            assert text in refused.value.message
    assert hardware.status(order_id) == "AWAITING_GENERATION"
    assert len(hardware.view(order_id)["history"]) == 2  # refusals leave no trace


def test_transition_rules():
    assert TRANSITIONS["COMPLETE"] == () and TRANSITIONS["ERROR"] == ()
    require_transition("HO1", "AWAITING_DISPATCH", "COMPLETE")
    with pytest.raises(TransitionRefused, match="order HO1 is COMPLETE: it cannot become ERROR"):
        require_transition("HO1", "COMPLETE", "ERROR")


@pytest.mark.parametrize("imei,valid", [("356938035643809", True), ("490154203237518", True),
                                        ("356938035643808", False), ("35693803564380", False),
                                        ("35693803564380A", False), (None, False)])
def test_imei_check_digit_in_python_and_sql(platform, imei, valid):
    assert imei_valid(imei) is valid
    assert platform.query(f"SELECT {imei_valid_sql('x')} FROM (SELECT ?::VARCHAR AS x)", [imei]) == [(valid,)]


@pytest.mark.parametrize("postcode,valid", [("SW1A 1AA", True), ("ls14ap", True), ("GIR 0AA", True),
                                            ("M1 1AE", True), ("12345", False), ("LS1", False), ("", False)])
def test_uk_postcode_in_python_and_sql(platform, postcode, valid):
    assert uk_postcode_valid(postcode) is valid
    assert platform.query(f"SELECT {uk_postcode_valid_sql('x')} FROM (SELECT ?::VARCHAR AS x)", [postcode]) == [
        (valid,)]


def test_stock_check_for_an_order_and_without_one(hardware, tmp_path):
    stock = tmp_path / "stock"
    stock.mkdir()
    (stock / "WH_NORTH.csv").write_text("sku,available\nHS-ACME-X1,1\nPR-CASE-X1,40\n")
    source = StockFileWarehouse(stock_dir=str(stock))
    order_id = hardware.order("ACC00000003", [("HS-ACME-X1", 2), ("PR-CASE-X1", 1), ("HS-ORBIT-5", 1)],
                              generate=False)
    with hardware.platform.connect() as con:
        rows = check_stock(source, hardware.config, con=con, order_id=order_id)
    assert [(r["sku"], r["warehouse"], r["wanted"], r["available"], r["in_stock"]) for r in rows] == [
        ("HS-ACME-X1", "WH_NORTH", 2, 1, False), ("PR-CASE-X1", "WH_NORTH", 1, 40, True),
        ("HS-ORBIT-5", "WH_SOUTH", 1, None, None)]
    assert "warehouse WH_SOUTH has no stock file" in rows[2]["problem"]
    [alone] = check_stock(source, hardware.config, skus=["LC-MDM-12M"])
    assert (alone["available"], alone["in_stock"], alone["problem"]) == (0, False, None)
    with pytest.raises(OrderError, match="'XX' is not in the catalogue"):
        check_stock(source, hardware.config, skus=["XX"])


def _broken(tmp_path, mutate):
    shutil.copytree(CONFIG, tmp_path / "config")
    file = tmp_path / "config" / "hardware_orders.yaml"
    document = yaml.safe_load(file.read_text())
    mutate(document)
    file.write_text(yaml.safe_dump(document))
    return tmp_path / "config"


@pytest.mark.parametrize(
    "mutate,entry,field,why",
    [
        (lambda d: d["catalogue"][0].update(price=499.0), "HS-ACME-X1", "price", "quoted decimal string"),
        (lambda d: d["catalogue"][0].update(price="499.5"), "HS-ACME-X1", "price", "exactly two decimal places"),
        (lambda d: d["catalogue"][1].update(type="PHONE"), "HS-ORBIT-5", "type", "HANDSET, PERIPHERAL, LICENCE"),
        (lambda d: d["catalogue"][2].update(warehouse="WH_EAST"), "PR-CASE-X1", "warehouse",
         "'WH_EAST' is not a configured warehouse"),
        (lambda d: d["catalogue"][0].pop("manufacturer"), "HS-ACME-X1", "manufacturer",
         "a handset needs a configured manufacturer"),
        (lambda d: d["catalogue"].append(dict(d["catalogue"][0])), "HS-ACME-X1", "sku", "defined twice"),
        (lambda d: d["warehouses"].append({"warehouse": "WH_EAST"}), "WH_EAST", "warehouse",
         "not a partner with feed 'warehouse_dispatch'"),
        (lambda d: d["manufacturers"].append({"manufacturer": "WH_NORTH"}), "WH_NORTH", "manufacturer",
         "not a partner with feed 'device_enrolment'"),
        (lambda d: d["fraud_deny_list"].update(postcodes=["NOWHERE"]), "fraud_deny_list", "postcodes",
         "'NOWHERE' is not a UK postcode"),
        (lambda d: d.update(stuck_order_days=0), "-", "stuck_order_days", "between 1 and 90"),
        (lambda d: d.update(colour="red"), "-", "colour", "unknown field"),
    ],
)
def test_hardware_configuration_errors_name_file_entry_and_field(tmp_path, mutate, entry, field, why):
    config = _broken(tmp_path, mutate)
    with pytest.raises(ConfigError) as error:
        load_hardware_orders(config, load_partners(config))
    assert error.value.file.name == "hardware_orders.yaml"
    assert (error.value.entry, error.value.field) == (entry, field)
    assert why in error.value.why
