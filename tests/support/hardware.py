"""The hardware orders test platform: the `platform` fixture plus warehouse and manufacturer keys, the hardware
configuration, and helpers that run each job's steps as its assets do."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.intake import partition_key, sha256_hex
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.hardware_orders.checks_rules import imei_check_digit
from cmp_pipelines.defs.hardware_orders.config import HardwareConfig, load_hardware_orders
from cmp_pipelines.defs.hardware_orders.dispatch import DispatchLoad, DispatchResult, WarehouseDispatch
from cmp_pipelines.defs.hardware_orders.enrolment import (
    EnrolmentBatch,
    EnrolmentRequests,
    EnrolmentResponses,
    ResponseLoad,
)
from cmp_pipelines.defs.hardware_orders.fraud_check import RuleBasedFraudCheck
from cmp_pipelines.defs.hardware_orders.manufacturer import FileDropManufacturer
from cmp_pipelines.defs.hardware_orders.orders import Delivery, add_line, create_order, generate_order, order_view
from cmp_pipelines.defs.hardware_orders.sales_orders import (
    RequestBatch,
    SalesOrderRequests,
    pending_generation,
    request_batch_id,
)
from tests.support.pg_platform import PgPlatform
from tests.support.platform import NOW, Platform

CONFIG = PROJECT_ROOT / "config"
HOME = Delivery("Jane Customer", "1 High Street", None, "Leeds", "LS1 4AP")
CSV_HEADER = "ORDER_REF,LINE_NO,SKU,STATUS,IMEI,SERIAL_NO,COURIER_REF,DISPATCH_DATE,ERROR_TEXT"
PARTNERS = ("WH_NORTH", "WH_SOUTH", "ACME_MOBILE", "ORBIT_DEVICES")


def imei(n: int, valid: bool = True) -> str:
    """A 15-digit IMEI with its Luhn check digit (or a wrong one)."""
    body = f"35693803{n:06d}"
    check = int(imei_check_digit(body))
    return body + str(check if valid else (check + 1) % 10)


def shipped(order_id: str, line: int, sku: str, device: str, courier: str = "DPD-100",
            when: str = "21/11/2026 14:05") -> str:
    """A SHIPPED row: `device` is the IMEI of a handset, else the serial number."""
    is_imei = device.isdigit() and len(device) == 15
    return f"{order_id},{line},{sku},SHIPPED,{device if is_imei else ''},{'' if is_imei else device},{courier},{when},"


def failed(order_id: str, line: int, sku: str, reason: str) -> str:
    return f"{order_id},{line},{sku},FAILED,,,,,{reason}"


@dataclass
class Hardware:
    """On either store: with a `PgPlatform`, order commands go to PostgreSQL itself (core/db/pg_duck.py, as the
    service reads do) and each job's steps run on a scratch linked to it (core/db/mirror.py), as a run does."""

    platform: Platform
    config: HardwareConfig

    @property
    def on_postgres(self) -> bool:
        return isinstance(self.platform, PgPlatform)

    @contextmanager
    def store(self):
        """What the agent's order commands run on: the DuckDB file, or PostgreSQL."""
        if not self.on_postgres:
            with self.platform.connect() as con:
                yield con
            return
        from cmp_pipelines.core.db.pg_duck import pg_duck

        with pg_duck(self.platform.url) as con:
            yield con

    @contextmanager
    def run(self):
        """(con, mirror) a job's steps run on: the DuckDB file and no mirror, or one run's scratch and its link."""
        if not self.on_postgres:
            with self.platform.connect() as con:
                yield con, None
            return
        from cmp_pipelines.core.db.mirror import mirrored

        with mirrored(self.platform.url) as mirror:
            yield mirror.con, mirror

    def order(self, account: str, lines: list[tuple[str, int]], *, billing: str = "IMMEDIATE",
              fraud_check: bool = True, enrolment: bool = False, delivery: Delivery = HOME,
              generate: bool = True) -> str:
        with self.store() as con:
            order_id = create_order(con, account, billing=billing, fraud_check=fraud_check, enrolment=enrolment,
                                    delivery=delivery, now=NOW)["order_id"]
            for sku, quantity in lines:
                add_line(con, order_id, sku, quantity, config=self.config, now=NOW)
            if generate:
                generate_order(con, order_id, now=NOW)
        return order_id

    def view(self, order_id: str) -> dict:
        with self.store() as con:
            return order_view(con, order_id)

    def status(self, order_id: str) -> str:
        return self.view(order_id)["status"]

    def request(self, now: datetime = NOW) -> RequestBatch | None:
        """The Sales Order Request job for what the sensor would see now: claim, fraud check, send."""
        with self.store() as con:
            up_to = pending_generation(con)
        if up_to is None:
            return None
        with self.run() as (con, mirror):
            flow = SalesOrderRequests(con, self.platform.files, self.platform.keyring, self.config,
                                      RuleBasedFraudCheck(), now, mirror)
            return flow.send(flow.check_fraud(flow.claim(request_batch_id(up_to))))

    def read_request(self, warehouse: str, batch_id: str, currency: str = "GBP") -> dict:
        path = f"outbound/sales_orders/{warehouse}/{batch_id}-{warehouse}-{currency}.json.enc"
        return orjson.loads(self.platform.keyring.decrypt(warehouse, self.platform.files.read_bytes(path)))

    # ---- the warehouse's response and Sales Order Dispatch ------------------------------------------

    def drop_dispatch(self, warehouse: str, name: str, rows: list[str] | bytes, encrypt_for: str | None = None,
                      raw: bool = False) -> str:
        """A warehouse CSV (header added to `rows`), encrypted and placed in inbound/warehouse_dispatch/."""
        plaintext = rows if isinstance(rows, bytes) else "\n".join([CSV_HEADER, *rows, ""]).encode()
        data = plaintext if raw else self.platform.keyring.encrypt(encrypt_for or warehouse, plaintext)
        path = self.platform.files.write_bytes(f"inbound/warehouse_dispatch/{warehouse}/{name}", data)
        return partition_key(warehouse, name, sha256_hex(self.platform.files.read_bytes(path)))

    def dispatch(self, key: str, now: datetime = NOW) -> tuple[DispatchLoad, DispatchResult]:
        """The Sales Order Dispatch steps for one file, as its job runs them."""
        with self.run() as (con, mirror):
            flow = WarehouseDispatch(con, self.platform.files, self.platform.keyring, load_partners(CONFIG),
                                     self.config, now, mirror)
            load = flow.load(key)
            flow.write_converted(load)
            result = flow.apply(load)
            flow.write_posting_file(result)
            flow.write_report(load, result)
            return load, result

    def outcomes(self, load: DispatchLoad) -> dict[int, tuple]:
        return {row[0]: row[1:] for row in self.platform.query(
            "SELECT position, outcome, problem_code, problem FROM hw_dispatch_records WHERE batch_id = ? "
            "ORDER BY position", [load.batch_id])}

    def hardware_charges(self, account: str) -> int:
        return self.platform.query(
            "SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE account_number = ? "
            "AND kind = 'HARDWARE_CHARGE'", [account])[0][0]

    def pending(self, account: str) -> list[tuple]:
        return self.platform.query("SELECT order_id, amount_minor FROM hw_pending_charges WHERE account_number = ? "
                                   "ORDER BY order_id", [account])

    # ---- device enrolment --------------------------------------------------------------------------

    def enrolment_day(self, day, now: datetime = NOW) -> EnrolmentBatch:
        with self.run() as (con, mirror):
            flow = EnrolmentRequests(con, self.platform.files, self.platform.keyring, FileDropManufacturer(), now,
                                     mirror=mirror)
            batch = flow.select(day)
            flow.send(batch)
            return flow.batch(day)

    def read_enrolment(self, manufacturer: str, batch_id: str) -> dict:
        path = f"outbound/device_enrolment/{manufacturer}/{batch_id}-{manufacturer}.json.enc"
        return orjson.loads(self.platform.keyring.decrypt(manufacturer, self.platform.files.read_bytes(path)))

    def drop_response(self, manufacturer: str, name: str, results: list[dict] | bytes, file_id: str | None = None,
                      **header) -> str:
        if isinstance(results, bytes):
            plaintext = results
        else:
            document = {"header": {"file_id": file_id or name.split(".")[0], "sender": manufacturer,
                                   "created_at": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), "record_count": len(results),
                                   **header}, "results": results}
            plaintext = orjson.dumps(document)
        path = self.platform.files.write_bytes(f"inbound/device_enrolment/{manufacturer}/{name}",
                                               self.platform.keyring.encrypt(manufacturer, plaintext))
        return partition_key(manufacturer, name, sha256_hex(self.platform.files.read_bytes(path)))

    def process_response(self, key: str, now: datetime = NOW) -> ResponseLoad:
        with self.run() as (con, mirror):
            flow = EnrolmentResponses(con, self.platform.files, self.platform.keyring, load_partners(CONFIG), now,
                                      mirror)
            load = flow.load(key)
            flow.write_report(load)
            return load

    def device(self, device_id: str) -> tuple:
        return self.platform.query("SELECT enrolment_status, enrolment_reason FROM hw_devices WHERE device_id = ?",
                                   [device_id])[0]


def answer(record_id: str, request_id: str, device_id: str, result: str, reason: str | None = None) -> dict:
    return {"record_id": record_id, "request_id": request_id, "device_id": device_id, "result": result,
            "reason": reason}


def _hardware(platform: Platform) -> Hardware:
    for partner in PARTNERS:
        platform.keyring.init_keys(partner)
    return Hardware(platform, load_hardware_orders(CONFIG, load_partners(CONFIG)))


@pytest.fixture
def hardware(platform) -> Hardware:
    return _hardware(platform)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_hardware(request) -> Hardware:
    """The same test body on both stores (the PostgreSQL one under the `postgres` marker: `make test-pg`)."""
    return _hardware(request.getfixturevalue("platform" if request.param == "duckdb" else "pg_platform"))


def gotham_verdicts(deliveries: list[dict]) -> dict:
    """An external fraud service's answer: every delivery to Gotham is high risk."""
    return {"verdicts": [{"order_id": d["order_id"], "passed": d["town"] != "Gotham",
                          "reason": "SCORE: high risk" if d["town"] == "Gotham" else None} for d in deliveries]}


@contextmanager
def json_service(answer: Callable[[str, str, dict, object, object], object]) -> Iterator[str]:
    """A loopback HTTP service standing in for a partner's JSON API (warehouse stock, fraud, enrolment):
    `answer(method, path, query, headers, body)` gives the JSON it answers with (200). Yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str, body: object) -> None:
            url = urlparse(self.path)
            data = json.dumps(answer(method, url.path, parse_qs(url.query), self.headers, body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            self._serve("GET", None)

        def do_POST(self):  # noqa: N802
            self._serve("POST", json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
