"""Adaptors chosen per warehouse and manufacturer in config/hardware_orders.yaml (hardware-orders seed: the
fraud check, the warehouse stock check and the device manufacturers are reached through adaptors): an unknown
adaptor or a wrong setting refused by `config validate` naming the file and field; a warehouse configured with
the HTTP stock check or fraud check uses it while the others keep the built-in ones; a manufacturer with an
enrolment API gets its batch posted there."""

from __future__ import annotations

import shutil

import pytest
import yaml
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.hardware_orders.adaptors import ADAPTORS
from cmp_pipelines.defs.hardware_orders.config import ADAPTOR_SETTINGS, load_hardware_orders
from cmp_pipelines.defs.hardware_orders.enrolment import EnrolmentRequests
from cmp_pipelines.defs.hardware_orders.fraud_check import RuleBasedFraudCheck
from cmp_pipelines.defs.hardware_orders.manufacturer import FileDropManufacturer
from cmp_pipelines.defs.hardware_orders.orders import Delivery
from cmp_pipelines.defs.hardware_orders.sales_orders import SalesOrderRequests, pending_generation, request_batch_id
from tests.support.hardware import gotham_verdicts, imei, json_service, shipped
from tests.support.platform import NOW

GOTHAM = Delivery("Bruce Wayne", "1 Manor Lane", None, "Gotham", "GT1 1AA")


def cli(*args):
    return CliRunner().invoke(main, list(args))


def edit(config, change):
    file = config / "hardware_orders.yaml"
    document = yaml.safe_load(file.read_text())
    change(document)
    file.write_text(yaml.safe_dump(document, sort_keys=False))


def warehouse(document, name):
    return next(w for w in document["warehouses"] if w["warehouse"] == name)


@pytest.fixture
def config(tmp_path, monkeypatch):
    folder = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", folder)
    monkeypatch.setenv("CMP_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def service():
    """A loopback HTTP service answering as a warehouse stock API, a fraud service and an enrolment API."""
    seen: dict[str, list] = {"stock": [], "fraud": [], "enrolment": []}

    def answer(method, path, query, headers, body):
        if method == "GET":
            seen["stock"].append(query)
            return {sku: 7 for sku in query.get("sku", [])}
        if path == "/enrol":
            seen["enrolment"].append((headers["Idempotency-Key"], body))
            return {"received": body["header"]["record_count"]}
        seen["fraud"].append(body["deliveries"])
        return gotham_verdicts(body["deliveries"])

    with json_service(answer) as url:
        yield url, seen


def test_the_registry_and_the_validated_settings_agree():
    """config.ADAPTOR_SETTINGS (read without Dagster) names every implementation's settings, required or not."""
    assert {k: set(v) for k, v in ADAPTORS.items()} == {k: set(v) for k, v in ADAPTOR_SETTINGS.items()}
    for kind, names in ADAPTORS.items():
        for name, implementation in names.items():
            fields = implementation.model_fields
            assert {f: info.is_required() for f, info in fields.items()} == {
                f: required for f, (_, required) in ADAPTOR_SETTINGS[kind][name].items()}, (kind, name)


def test_config_validate_refuses_an_unknown_adaptor_and_a_wrong_setting(config):
    file = config / "hardware_orders.yaml"
    edit(config, lambda d: warehouse(d, "WH_SOUTH").update(stock_check={"adaptor": "ftp"}))
    edit(config, lambda d: warehouse(d, "WH_NORTH").update(fraud_check={"adaptor": "http"}))
    edit(config, lambda d: d["manufacturers"][0].update(
        enrolment={"adaptor": "http", "settings": {"url": "https://x.example", "timeout_seconds": "fast",
                                                   "token": "t"}}))
    result = cli("config", "validate")
    assert result.exit_code == 1
    lines = [line.strip() for line in result.output.splitlines()[1:]]
    assert lines == [
        f"{file.name}: warehouses[0].fraud_check.settings.url: is required; the http fraud_check adaptor's settings: "
        "timeout_seconds, url",
        f"{file.name}: warehouses[1].stock_check.adaptor: unknown stock_check adaptor 'ftp'; known: http, stock_file",
        f"{file.name}: manufacturers[0].enrolment.settings.timeout_seconds: must be a number, got 'fast'",
        f"{file.name}: manufacturers[0].enrolment.settings.token: is not a setting of this adaptor; the http "
        "enrolment adaptor's settings: timeout_seconds, url",
    ]


def test_config_validate_accepts_configured_adaptors_and_the_default_stays_built_in(config):
    edit(config, lambda d: warehouse(d, "WH_SOUTH").update(
        stock_check={"adaptor": "http", "settings": {"base_url": "https://stock.example", "timeout_seconds": 2}}))
    assert cli("config", "validate").exit_code == 0
    hardware = load_hardware_orders(config, load_partners(config))
    assert hardware.warehouses["WH_NORTH"].stock_check is None
    assert hardware.warehouses["WH_SOUTH"].stock_check.name == "http"


def test_a_warehouse_configured_with_the_http_stock_check_uses_it(config, service, tmp_path, monkeypatch):
    url, seen = service
    edit(config, lambda d: warehouse(d, "WH_SOUTH").update(stock_check={"adaptor": "http",
                                                                          "settings": {"base_url": url}}))
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CMP_KEYS_DIR", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster_home"))
    for args in (["init"], ["keys", "init"], ["demo", "seed", "--accounts", "5"]):
        assert cli(*args).exit_code == 0
    (tmp_path / "data" / "stock").mkdir(exist_ok=True)
    (tmp_path / "data" / "stock" / "WH_NORTH.csv").write_text("sku,available\nHS-ACME-X1,2\n")
    result = cli("orders", "stock", "--sku", "HS-ACME-X1", "--sku", "HS-ORBIT-5")
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.output.splitlines()] == [
        ["IN", "STOCK", "HS-ACME-X1", "WH_NORTH", "wanted", "1", "available", "2"],  # the stock file, as before
        ["IN", "STOCK", "HS-ORBIT-5", "WH_SOUTH", "wanted", "1", "available", "7"],  # the warehouse's API
    ]
    assert seen["stock"] == [{"warehouse": ["WH_SOUTH"], "sku": ["HS-ORBIT-5"]}]


def test_each_warehouse_fraud_checks_with_its_own_adaptor(config, service, hardware):
    url, seen = service
    edit(config, lambda d: warehouse(d, "WH_SOUTH").update(fraud_check={"adaptor": "http", "settings": {"url": url}}))
    hardware.config = load_hardware_orders(config, load_partners(config))
    north = hardware.order("ACC00000001", [("PR-CASE-X1", 1)], delivery=GOTHAM)  # the CMP rules: Gotham is fine
    south = hardware.order("ACC00000002", [("PR-CHARGER-65W", 1)], delivery=GOTHAM)  # the service refuses it
    both = hardware.order("ACC00000003", [("PR-CASE-X1", 1), ("PR-CHARGER-65W", 1)], delivery=GOTHAM)
    home = hardware.order("ACC00000004", [("PR-CHARGER-65W", 1)])
    with hardware.platform.connect() as con:
        flow = SalesOrderRequests(con, hardware.platform.files, hardware.platform.keyring, hardware.config,
                                  RuleBasedFraudCheck(), NOW)
        batch = flow.send(flow.check_fraud(flow.claim(request_batch_id(pending_generation(con)))))
    assert (batch.fraud_checked, batch.fraud_failed) == (4, 2)
    assert {o: hardware.status(o) for o in (north, south, both, home)} == {
        north: "AWAITING_DISPATCH", south: "ERROR", both: "ERROR", home: "AWAITING_DISPATCH"}
    assert [sorted(d["order_id"] for d in call) for call in seen["fraud"]] == [sorted([south, both, home])]
    assert hardware.platform.query("SELECT order_id, passed, reason FROM hw_fraud_checks ORDER BY 1") == [
        (north, True, None), (south, False, "SCORE: high risk"), (both, False, "SCORE: high risk"),
        (home, True, None)]


def test_a_manufacturer_with_an_enrolment_api_gets_its_batch_posted(config, service, hardware):
    url, seen = service
    edit(config, lambda d: next(m for m in d["manufacturers"] if m["manufacturer"] == "ORBIT_DEVICES").update(
        enrolment={"adaptor": "http", "settings": {"url": f"{url}/enrol"}}))
    hardware.config = load_hardware_orders(config, load_partners(config))
    acme = hardware.order("ACC00000001", [("HS-ACME-X1", 1)], enrolment=True)
    orbit = hardware.order("ACC00000002", [("HS-ORBIT-5", 1)], enrolment=True)
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [shipped(acme, 1, "HS-ACME-X1", imei(1))]))
    hardware.dispatch(hardware.drop_dispatch("WH_SOUTH", "s.csv.enc", [shipped(orbit, 1, "HS-ORBIT-5", imei(2))]))
    with hardware.platform.connect() as con:
        flow = EnrolmentRequests(con, hardware.platform.files, hardware.platform.keyring, FileDropManufacturer(), NOW,
                                 config=hardware.config)
        batch = flow.select(NOW.date())
        sent = flow.send(batch)
    [(key, document)] = seen["enrolment"]
    assert key == f"{batch.batch_id}-ORBIT_DEVICES"
    assert [(r["action"], r["device_id"]) for r in document["requests"]] == [("ENROL", imei(2))]
    assert sorted(sent) == sorted([f"outbound/device_enrolment/ACME_MOBILE/{batch.batch_id}-ACME_MOBILE.json.enc",
                                   f"{url}/enrol (HTTP 200)"])
    assert hardware.read_enrolment("ACME_MOBILE", batch.batch_id)["requests"][0]["device_id"] == imei(1)
