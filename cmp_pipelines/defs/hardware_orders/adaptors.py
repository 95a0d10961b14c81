"""The adaptors a warehouse or manufacturer can be given in config/hardware_orders.yaml, by name.

The hardware-orders seed has the fraud check, the warehouse stock check and the device manufacturers reached
through adaptors; which one serves a warehouse or manufacturer is configuration, not code:

    warehouses:
      - warehouse: WH_SOUTH
        stock_check: {adaptor: http, settings: {base_url: "https://stock.example/api"}}
        fraud_check: {adaptor: http, settings: {url: "https://fraud.example/check"}}
    manufacturers:
      - manufacturer: ORBIT_DEVICES
        enrolment: {adaptor: http, settings: {url: "https://enrol.example/batches"}}

`ADAPTORS` maps each kind to its names and implementations; the names and `settings` (the implementation's
fields) are checked by `init` and `config validate` against config.ADAPTOR_SETTINGS, which must stay in step.
A warehouse or manufacturer without an entry uses the Dagster resource of that kind (the built-in one unless a
deployment overrides it), so nothing changes by default.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from cmp_pipelines.defs.hardware_orders.config import AdaptorChoice
from cmp_pipelines.defs.hardware_orders.fraud_check import ExternalFraudCheck, RuleBasedFraudCheck
from cmp_pipelines.defs.hardware_orders.manufacturer import FileDropManufacturer, HttpManufacturer
from cmp_pipelines.defs.hardware_orders.warehouse import StockFileWarehouse, WarehouseStockApi

ADAPTORS: dict[str, dict[str, type[dg.ConfigurableResource]]] = {
    "fraud_check": {"rules": RuleBasedFraudCheck, "http": ExternalFraudCheck},
    "stock_check": {"stock_file": StockFileWarehouse, "http": WarehouseStockApi},
    "enrolment": {"file_drop": FileDropManufacturer, "http": HttpManufacturer},
}


def chosen(choice: AdaptorChoice | None, default: Any) -> Any:
    """The configured adaptor, or `default` (the resource of that kind) where none is configured."""
    return default if choice is None else ADAPTORS[choice.kind][choice.name](**dict(choice.settings))
