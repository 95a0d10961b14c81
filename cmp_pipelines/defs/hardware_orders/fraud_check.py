"""The fraud check resource: is a delivery name and address safe to ship to?

`FraudCheck` is the interface: a batch of deliveries in, one verdict per order out (`order_id`, `passed`,
`reason`). The default applies the CMP rules (name present, address lines, UK postcode format, the deny list of
config/hardware_orders.yaml) in set-based SQL; `ExternalFraudCheck` asks an external service instead.
"""

from __future__ import annotations

import json
import urllib.request

import dagster as dg
import duckdb
import pyarrow as pa

from cmp_pipelines.core.db.connection import SQL_MACROS
from cmp_pipelines.defs.hardware_orders.config import HardwareConfig
from cmp_pipelines.defs.hardware_orders.fraud_rules import FRAUD_SQL

VERDICTS = pa.schema([("order_id", pa.string()), ("passed", pa.bool_()), ("reason", pa.string())])


class FraudCheckUnavailable(RuntimeError):
    """The check could not be made: the orders wait (never shipped unchecked, never failed for it)."""


class FraudCheck(dg.ConfigurableResource):
    def assess(self, deliveries: pa.Table, config: HardwareConfig) -> pa.Table:
        """Verdicts (VERDICTS schema) for every order of `deliveries`."""
        raise NotImplementedError


class RuleBasedFraudCheck(FraudCheck):
    def assess(self, deliveries: pa.Table, config: HardwareConfig) -> pa.Table:
        deny = pa.table({"kind": ["NAME"] * len(config.deny_names) + ["POSTCODE"] * len(config.deny_postcodes),
                         "value": [*config.deny_names, *config.deny_postcodes]},
                        schema=pa.schema([("kind", pa.string()), ("value", pa.string())]))
        with duckdb.connect() as con:
            con.execute(SQL_MACROS)
            con.register("deliveries", deliveries)
            con.register("deny", deny)
            return con.sql(FRAUD_SQL).to_arrow_table().cast(VERDICTS)


class ExternalFraudCheck(FraudCheck):
    """POST <url> with {"deliveries": [...]}; the service answers {"verdicts": [{order_id, passed, reason}]}."""

    url: str
    timeout_seconds: float = 10.0

    def assess(self, deliveries: pa.Table, config: HardwareConfig) -> pa.Table:
        body = json.dumps({"deliveries": deliveries.to_pylist()}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                verdicts = json.loads(response.read())["verdicts"]
            table = pa.Table.from_pylist(verdicts, schema=VERDICTS)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            raise FraudCheckUnavailable(f"fraud check service {self.url} failed: {exc}") from exc
        asked = set(deliveries.column("order_id").to_pylist())
        if set(table.column("order_id").to_pylist()) != asked:
            raise FraudCheckUnavailable(f"fraud check service {self.url} did not answer for every order")
        return table
