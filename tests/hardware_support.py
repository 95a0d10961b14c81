"""The hardware orders test platform: the `platform` fixture plus warehouse and manufacturer keys, the hardware
configuration, and helpers that run each job's steps as its assets do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson
import pytest

from cmp_pipelines.configuration import load_partners
from cmp_pipelines.configuration_hardware import HardwareConfig, load_hardware_orders
from cmp_pipelines.resources.fraud_check import RuleBasedFraudCheck
from cmp_pipelines.services.hardware_orders import Delivery, add_line, create_order, generate_order, order_view
from cmp_pipelines.services.sales_orders import RequestBatch, SalesOrderRequests, pending_generation, request_batch_id
from cmp_pipelines.settings import PROJECT_ROOT
from tests.conftest import NOW, Platform

CONFIG = PROJECT_ROOT / "config"
HOME = Delivery("Jane Customer", "1 High Street", None, "Leeds", "LS1 4AP")
PARTNERS = ("WH_NORTH", "WH_SOUTH", "ACME_MOBILE", "ORBIT_DEVICES")


@dataclass
class Hardware:
    platform: Platform
    config: HardwareConfig

    def order(self, account: str, lines: list[tuple[str, int]], *, billing: str = "IMMEDIATE",
              fraud_check: bool = True, enrolment: bool = False, delivery: Delivery = HOME,
              generate: bool = True) -> str:
        with self.platform.connect() as con:
            order_id = create_order(con, account, billing=billing, fraud_check=fraud_check, enrolment=enrolment,
                                    delivery=delivery, now=NOW)["order_id"]
            for sku, quantity in lines:
                add_line(con, order_id, sku, quantity, config=self.config, now=NOW)
            if generate:
                generate_order(con, order_id, now=NOW)
        return order_id

    def view(self, order_id: str) -> dict:
        with self.platform.connect() as con:
            return order_view(con, order_id)

    def status(self, order_id: str) -> str:
        return self.view(order_id)["status"]

    def request(self, now: datetime = NOW) -> RequestBatch | None:
        """The Sales Order Request job for what the sensor would see now: claim, fraud check, send."""
        with self.platform.connect() as con:
            up_to = pending_generation(con)
            if up_to is None:
                return None
            flow = SalesOrderRequests(con, self.platform.files, self.platform.keyring, self.config,
                                      RuleBasedFraudCheck(), now)
            return flow.send(flow.check_fraud(flow.claim(request_batch_id(up_to))))

    def read_request(self, warehouse: str, batch_id: str, currency: str = "GBP") -> dict:
        path = f"outbound/sales_orders/{warehouse}/{batch_id}-{warehouse}-{currency}.json.enc"
        return orjson.loads(self.platform.keyring.decrypt(warehouse, self.platform.files.read_bytes(path)))


@pytest.fixture
def hardware(platform) -> Hardware:
    for partner in PARTNERS:
        platform.keyring.init_keys(partner)
    return Hardware(platform, load_hardware_orders(CONFIG, load_partners(CONFIG)))
