"""The `cmp-pipelines` command, run as a user would (a real subprocess for the headless path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main

COMMANDS = [
    [], ["init"], ["keys"], ["keys", "init"], ["demo"], ["demo", "seed"], ["demo", "files"], ["files"],
    ["files", "encrypt"], ["files", "decrypt"], ["run-pending"], ["accounts"], ["accounts", "show"], ["probes"],
    ["summary"], ["run-card-payments"], ["demo", "cards"], ["demo", "card-rejections"],
    ["accounts", "set-payment-type"], ["accounts", "approve-refund"], ["run-auddis"], ["mandates"],
    ["mandates", "create"], ["mandates", "amend"], ["mandates", "cancel"], ["nrp"], ["nrp", "release-held"],
    ["deliveries"], ["deliveries", "list"], ["deliveries", "retry"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "main" for c in COMMANDS])
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CMP_KEYS_DIR", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster_home"))
    return tmp_path


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_setup_seed_and_account_view(cli_env):
    assert invoke("init").exit_code == 0
    assert (cli_env / "data" / "dagster_home" / "dagster.yaml").exists()
    keys = invoke("keys", "init")
    assert "PAYPOINT: created" in keys.output
    assert not any(line.strip() and "gAAAA" in line for line in keys.output.splitlines())
    assert invoke("demo", "seed", "--accounts", "5", "--seed", "3").exit_code == 0
    shown = invoke("accounts", "show", "ACC00000005", "--json")
    view = json.loads(shown.output)
    assert view["account_number"] == "ACC00000005" and view["open_invoices"]
    total = sum(int(i["outstanding"].replace(".", "")) for i in view["open_invoices"])
    assert view["balance"] == f"{total // 100}.{total % 100:02d}"
    again = json.loads(invoke("accounts", "show", "ACC00000005", "--json").output)
    assert again == view, "seeding is deterministic and idempotent"
    missing = CliRunner().invoke(main, ["accounts", "show", "ACC09999999"])
    assert missing.exit_code == 1 and "account ACC09999999 not found" in missing.output


def test_seed_is_deterministic(cli_env, tmp_path, monkeypatch):
    views = []
    for run in ("a", "b"):
        monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / run))
        invoke("demo", "seed", "--accounts", "30", "--seed", "9")
        views.append(invoke("accounts", "show", "ACC00000030", "--json").output)
    assert views[0] == views[1]


def test_files_encrypt_decrypt_round_trip_and_errors(cli_env, tmp_path):
    invoke("init")
    invoke("keys", "init")
    source = tmp_path / "plain.json"
    source.write_text('{"hello": "world"}')
    assert invoke("files", "encrypt", "--partner", "PAYPOINT", str(source), str(tmp_path / "x.enc")).exit_code == 0
    assert (tmp_path / "x.enc").read_bytes().startswith(b"gAAAAA")
    invoke("files", "decrypt", "--partner", "PAYPOINT", str(tmp_path / "x.enc"), str(tmp_path / "back.json"))
    assert (tmp_path / "back.json").read_text() == '{"hello": "world"}'
    wrong = CliRunner().invoke(main, ["files", "decrypt", "--partner", "LOCKBOX", str(tmp_path / "x.enc"),
                                      str(tmp_path / "y.json")])
    assert wrong.exit_code == 1 and "cannot be decrypted with partner LOCKBOX's keys" in wrong.output
    unknown = CliRunner().invoke(main, ["files", "encrypt", "--partner", "NOBODY", str(source), str(tmp_path / "z")])
    assert unknown.exit_code == 1 and "no key file for partner NOBODY" in unknown.output


def test_key_rotation_keeps_old_files_readable(cli_env, tmp_path):
    invoke("keys", "init", "--partner", "PAYPOINT")
    source = tmp_path / "p.txt"
    source.write_text("before rotation")
    invoke("files", "encrypt", "--partner", "PAYPOINT", str(source), str(tmp_path / "old.enc"))
    assert "rotated" in invoke("keys", "init", "--partner", "PAYPOINT", "--rotate").output
    keyfile = cli_env / "data" / "keys" / "PAYPOINT.keys"
    assert len(keyfile.read_text().split()) == 2
    invoke("files", "decrypt", "--partner", "PAYPOINT", str(tmp_path / "old.enc"), str(tmp_path / "old.txt"))
    assert (tmp_path / "old.txt").read_text() == "before rotation"


@pytest.mark.e2e  # the demo in real processes
def test_headless_demo_run_pending_in_a_real_process(cli_env):
    day = datetime.now(UTC).date()
    env = {**os.environ, "CMP_DATA_DIR": str(cli_env / "data"),
           "DAGSTER_HOME": str(cli_env / "data" / "dagster_home")}
    exe = [sys.executable, "-m", "cmp_pipelines.cli"]
    # the set-up in this process (its subject is not the process boundary: ~1-3 s of imports each saved); the
    # run-pendings, summary and probes below are real processes
    for args in (["init"], ["keys", "init"], ["demo", "seed", "--accounts", "40", "--seed", "1"], ["demo", "files"]):
        assert invoke(*args).exit_code == 0, args
    result = subprocess.run([*exe, "run-pending"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 run(s), 0 failed" in result.stdout
    # the documents those runs published go out at the delivery sensor's next tick, once
    again = subprocess.run([*exe, "run-pending"], env=env, capture_output=True, text=True, timeout=300)
    assert again.stdout.splitlines() == ["ok     delivery_sensor None", "1 run(s), 0 failed"]
    delivered = sorted(p.relative_to(cli_env / "data" / "delivered").as_posix()
                       for p in (cli_env / "data" / "delivered").rglob("*") if p.is_file())
    assert [d for d in delivered if d.startswith("PAYPOINT/")] == [
        f"PAYPOINT/PAYPOINT-{day:%Y%m%d}-00{n}.ack.json.enc" for n in (1, 2, 3)]
    assert len([d for d in delivered if d.startswith("SALES_LEDGER/NRPP-")]) == 4
    third = subprocess.run([*exe, "run-pending"], env=env, capture_output=True, text=True, timeout=300)
    assert "0 run(s), 0 failed" in third.stdout
    summary = subprocess.run([*exe, "summary"], env=env, capture_output=True, text=True, check=True).stdout
    assert "NRP_LOAD         ACKNOWLEDGED      4 batch(es)" in summary
    assert "Quarantined files: 0" in summary
    probes = json.loads(subprocess.run([*exe, "probes", "--json"], env=env, capture_output=True, text=True,
                                       check=True).stdout)
    assert len(probes) == 12  # the eight CMP NRP probes, nrp_suspected_duplicates_held and the three delivery probes
    assert {(p["probe"], p["value"]) for p in probes if p["probe"].startswith(("deliveries_", "ledger_"))} == {
        ("deliveries_undelivered", 0), ("deliveries_unconfirmed", 0), ("ledger_posting_files_missing", 0)}
    by_id = {p["probe"]: p for p in probes}
    if datetime.now(UTC).date() == day:  # "today" probes restart at midnight UTC
        assert by_id["nrp_load_completed"]["value"] == 4 and by_id["nrp_load_completed"]["status"] == "OK"
    assert by_id["nrp_verification_payments_supplied"]["status"] == "TRIPPED"
    acks = sorted((cli_env / "data" / "outbound" / "acknowledgements" / "nrp").rglob("*.ack.json.enc"))
    assert len(acks) == 4
