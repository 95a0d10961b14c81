"""The warehouse resource: how much of each SKU a warehouse can ship now (the agent's stock check).

`WarehouseStock` is the interface. The default reads the stock file each warehouse drops
(`$CMP_DATA_DIR/stock/<WAREHOUSE>.csv`, columns `sku,available`); `WarehouseStockApi` asks a live
warehouse API instead. Both answer for many SKUs in one call.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import dagster as dg
import duckdb

from cmp_pipelines.core.settings import paths


class StockUnavailable(RuntimeError):
    """The warehouse could not say (no stock file, API down): the agent is told, nothing is guessed."""


class WarehouseStock(dg.ConfigurableResource):
    def stock_levels(self, warehouse: str, skus: list[str]) -> dict[str, int]:
        """{sku: units available} for the SKUs the warehouse knows; an SKU it does not list has none."""
        raise NotImplementedError


class StockFileWarehouse(WarehouseStock):
    stock_dir: str | None = None

    def stock_file(self, warehouse: str) -> Path:
        return (Path(self.stock_dir) if self.stock_dir else paths().data_dir / "stock") / f"{warehouse}.csv"

    def stock_levels(self, warehouse: str, skus: list[str]) -> dict[str, int]:
        file = self.stock_file(warehouse)
        if not file.is_file():
            raise StockUnavailable(f"warehouse {warehouse} has no stock file ({file})")
        try:
            with duckdb.connect() as con:
                rows = con.execute(
                    "SELECT sku, sum(available)::BIGINT FROM read_csv(?, header = true, "
                    "columns = {'sku': 'VARCHAR', 'available': 'BIGINT'}) WHERE list_contains(?, sku) GROUP BY sku",
                    [str(file), skus],
                ).fetchall()
        except duckdb.Error as exc:
            raise StockUnavailable(f"the stock file of warehouse {warehouse} ({file}) is unreadable: {exc}") from exc
        return {sku: max(0, int(available)) for sku, available in rows}


class WarehouseStockApi(WarehouseStock):
    """A live warehouse API: GET <base_url>/stock?sku=A&sku=B answers {"A": 3, "B": 0}."""

    base_url: str
    timeout_seconds: float = 5.0

    def stock_levels(self, warehouse: str, skus: list[str]) -> dict[str, int]:
        query = urllib.parse.urlencode([("warehouse", warehouse), *(("sku", s) for s in skus)])
        url = f"{self.base_url.rstrip('/')}/stock?{query}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_seconds) as response:  # noqa: S310
                answer = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise StockUnavailable(f"warehouse API {self.base_url} did not answer for {warehouse}: {exc}") from exc
        if not isinstance(answer, dict) or not all(isinstance(v, int) for v in answer.values()):
            raise StockUnavailable(f"warehouse API {self.base_url} answered something other than {{sku: units}}")
        return {sku: max(0, answer[sku]) for sku in skus if sku in answer}
