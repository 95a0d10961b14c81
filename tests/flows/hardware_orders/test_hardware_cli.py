"""The hardware order commands, as an agent would use them: help everywhere, an order's creation to its
generation, refusals naming the field, the stock check, and the demo orders through the request job."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main

COMMANDS = [["orders"], ["orders", "catalogue"], ["orders", "create"], ["orders", "add-line"], ["orders", "stock"],
            ["orders", "generate"], ["orders", "show"], ["orders", "enrol"], ["orders", "unenrol"],
            ["orders", "device"], ["run-enrolment-requests"], ["demo", "orders"], ["demo", "warehouse-dispatch"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_hardware_command_has_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CMP_KEYS_DIR", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster_home"))

    def invoke(*args, ok: bool = True):
        result = CliRunner().invoke(main, list(args))
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    for args in (["init"], ["keys", "init"], ["demo", "seed", "--accounts", "10"]):
        invoke(*args)
    return invoke


def test_an_order_from_the_command_line(cli, tmp_path):
    created = json.loads(cli("orders", "create", "ACC00000003", "--billing", "IMMEDIATE", "--enrol", "--name",
                             "Jane Customer", "--line1", "1 High Street", "--town", "Leeds", "--postcode", "LS1 4AP"))
    order_id = created["order_id"]
    assert (created["status"], created["billing"], created["enrolment"]) == ("NEW", "IMMEDIATE", True)
    assert json.loads(cli("orders", "add-line", order_id, "HS-ORBIT-5", "--quantity", "2"))["total_amount"] == "659.98"
    assert "Error: sku: 'HS-NOPE' is not in the catalogue" in cli("orders", "add-line", order_id, "HS-NOPE", ok=False)
    (tmp_path / "data" / "stock").mkdir()
    (tmp_path / "data" / "stock" / "WH_SOUTH.csv").write_text("sku,available\nHS-ORBIT-5,1\n")
    assert cli("orders", "stock", "--order", order_id).split()[:2] == ["SHORT", "HS-ORBIT-5"]
    assert cli("orders", "generate", order_id).strip() == f"{order_id}: AWAITING_GENERATION"
    assert "Error: status: order HO00000001 is AWAITING_GENERATION: it cannot become AWAITING_GENERATION" in cli(
        "orders", "generate", order_id, ok=False)
    history = json.loads(cli("orders", "show", order_id))["history"]
    assert [(h["to"], h["cause"]) for h in history] == [("NEW", "cli"), ("AWAITING_GENERATION", "cli")]


@pytest.mark.e2e  # whole job runs from the CLI
def test_demo_orders_are_sent_and_a_response_file_follows(cli, tmp_path):
    output = cli("demo", "orders")
    assert "HO00000004: ERROR FRAUD_CHECK_FAILED: DENIED_NAME" in output
    assert "HO00000005: AWAITING_GENERATION" in output
    assert "demo orders exist already" in cli("demo", "orders")
    written = cli("demo", "warehouse-dispatch").split()
    assert sorted(w.split("/")[2] for w in written) == ["WH_NORTH", "WH_SOUTH"]
    assert (tmp_path / "data" / "outbound" / "sales_orders" / "WH_NORTH").is_dir()
