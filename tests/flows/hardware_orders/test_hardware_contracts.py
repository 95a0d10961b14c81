"""Hardware order file contracts (a schema and a sample each; the adaptor turns the sample CSV into the sample
batch), the live warehouse and external fraud-check interfaces against a local HTTP service, and the probes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from cmp_pipelines.core import probe_queries as probe_service
from cmp_pipelines.core.config import load_probes
from cmp_pipelines.core.files.schemas import first_error
from cmp_pipelines.core.probes import HARDWARE_PROBES
from cmp_pipelines.defs.hardware_orders.dispatch_csv import convert
from cmp_pipelines.defs.hardware_orders.fraud_check import ExternalFraudCheck
from cmp_pipelines.defs.hardware_orders.orders import Delivery
from cmp_pipelines.defs.hardware_orders.warehouse import StockUnavailable, WarehouseStockApi
from tests.support.hardware import CONFIG, gotham_verdicts, json_service
from tests.support.platform import NOW

SAMPLES = Path(__file__).parents[2] / "samples"


@pytest.mark.parametrize("name", ["sales_order_request", "warehouse_dispatch_batch", "device_enrolment_request",
                                  "device_enrolment_response"])
def test_hardware_samples_match_their_schemas(name):
    assert first_error(name, orjson.loads((SAMPLES / f"{name}.sample.json").read_bytes())) is None


def test_the_adaptor_turns_the_sample_csv_into_the_sample_batch():
    batch = orjson.loads((SAMPLES / "warehouse_dispatch_batch.sample.json").read_bytes())
    assert convert((SAMPLES / "warehouse_dispatch.sample.csv").read_bytes()).to_pylist() == batch["dispatches"]


@pytest.fixture
def service():
    """A local HTTP service standing in for a live warehouse API and an external fraud service."""
    seen: list = []

    def answer(method, path, query, headers, body):
        if method == "GET":
            seen.append(query)
            return {sku: 3 for sku in query.get("sku", []) if sku != "PR-CASE-X1"}
        seen.append(body["deliveries"])
        return gotham_verdicts(body["deliveries"])

    with json_service(answer) as url:
        yield url, seen


def test_a_live_warehouse_api_answers_the_stock_check(service, hardware):
    from cmp_pipelines.defs.hardware_orders.stock_check import check_stock

    url, seen = service
    rows = check_stock(WarehouseStockApi(base_url=url), hardware.config, skus=["HS-ACME-X1", "PR-CASE-X1"])
    assert [(r["sku"], r["available"], r["in_stock"]) for r in rows] == [("HS-ACME-X1", 3, True),
                                                                         ("PR-CASE-X1", 0, False)]
    assert seen[0]["warehouse"] == ["WH_NORTH"]
    with pytest.raises(StockUnavailable, match="did not answer"):
        WarehouseStockApi(base_url="http://127.0.0.1:9", timeout_seconds=0.5).stock_levels("WH_NORTH", ["X"])


def test_an_external_fraud_service_judges_the_orders(service, hardware):
    from cmp_pipelines.defs.hardware_orders.sales_orders import SalesOrderRequests

    url, seen = service
    good = hardware.order("ACC00000008", [("PR-CASE-X1", 1)])
    risky = hardware.order("ACC00000009", [("PR-CASE-X1", 1)],
                           delivery=Delivery("Bruce Wayne", "1 Manor Lane", None, "Gotham", "GT1 1AA"))
    with hardware.platform.connect() as con:
        flow = SalesOrderRequests(con, hardware.platform.files, hardware.platform.keyring, hardware.config,
                                  ExternalFraudCheck(url=url), NOW)
        batch = flow.send(flow.check_fraud(flow.claim("SOR-00000002")))
    assert (batch.fraud_checked, batch.fraud_failed, batch.sent_count) == (2, 1, 1)
    assert hardware.status(good) == "AWAITING_DISPATCH"
    assert hardware.view(risky)["error_reason"] == "FRAUD_CHECK_FAILED: SCORE: high risk"
    assert [d["order_id"] for d in seen[0]] == [good, risky]
    assert isinstance(ExternalFraudCheck(url=url).assess(pa.table({"order_id": pa.array([], pa.string())}),
                                                         hardware.config), pa.Table)


def test_the_hardware_probes_count_what_they_say(hardware):
    from datetime import timedelta

    stuck = hardware.order("ACC00000010", [("PR-CASE-X1", 1)])
    hardware.request(now=NOW - timedelta(days=6))  # sent six days ago; stuck after five
    hardware.order("ACC00000011", [("PR-CASE-X1", 1)], delivery=Delivery(None, None, None, None, None))
    hardware.order("ACC00000012", [("PR-CASE-X1", 1)])
    hardware.request()  # one fraud failure today, one order sent today (not stuck)
    with hardware.platform.connect() as con:
        values = {o.probe.probe_id: (o.value, o.tripped) for o in probe_service.evaluate(
            con, load_probes(CONFIG), NOW, probes=HARDWARE_PROBES)}
    assert values == {"hw_orders_stuck_awaiting_dispatch": (1, True), "hw_fraud_check_failures_today": (1, False),
                      "hw_enrolment_failures_latest_response": (0, False)}
    assert hardware.status(stuck) == "AWAITING_DISPATCH"
