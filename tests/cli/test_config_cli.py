"""`config validate` and `init` check every configuration file (hardware_orders.yaml too, registered by its flow)
and list every mistake; CLI friction: `keys init` refuses an unknown partner, one "not found" wording, labelled
probe columns."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
import yaml
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core.settings import PROJECT_ROOT

KNOWN = ("alerts.yaml, api_clients.yaml, card_payments.yaml, direct_debit.yaml, hardware_orders.yaml, "
         "mandate_revision_codes.yaml, "
         "operators.yaml, partners.yaml, payment_provider.yaml, payment_terms.yaml, probes.yaml, rejection_codes.yaml, "
         "security.yaml, workflow_actions.yaml")


@pytest.fixture
def env(tmp_path, monkeypatch):
    shutil.copytree(PROJECT_ROOT / "config", tmp_path / "config")
    monkeypatch.setenv("CMP_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CMP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CMP_KEYS_DIR", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster_home"))
    return tmp_path


def cli(*args):
    return CliRunner().invoke(main, list(args))


def edit(config, name, change):
    file = config / name
    document = yaml.safe_load(file.read_text())
    change(document)
    file.write_text(yaml.safe_dump(document))


def test_every_shipped_yaml_file_has_a_registered_model():
    from cmp_pipelines.cli.config import config_errors
    from cmp_pipelines.core.config import CONFIG_FILES

    assert config_errors(PROJECT_ROOT / "config") == []
    assert set(CONFIG_FILES) == {f.name for f in (PROJECT_ROOT / "config").glob("*.yaml")}


def test_config_validate_passes_the_shipped_files(env):
    result = cli("config", "validate")
    assert (result.exit_code, result.stdout) == (0, f"{env / 'config'}: 14 configuration files valid ({KNOWN})\n")
    assert not (env / "data").exists()


def test_config_validate_lists_every_error_and_never_opens_the_store(env):
    config = env / "config"
    edit(config, "payment_terms.yaml", lambda d: d["payment_terms"][1].update(days_to_pay="7"))
    edit(config, "partners.yaml", lambda d: d["partners"][2].update(feeds=["card_rejection"]))
    edit(config, "hardware_orders.yaml", lambda d: d["catalogue"][2].update(price=19.99))
    edit(config, "probes.yaml", lambda d: d["probes"]["nrp_verification_normal"].update(window_hours=0,
                                                                                       recipient=["a@b.example"]))
    (config / "partner.yaml").write_text("partners: []\n")
    result = cli("config", "validate")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{config}: 6 configuration error(s) in 5 file(s)",
        "  partners.yaml: partners[2].feeds[0]: unknown feed 'card_rejection'; known feeds: nrp, card_rejections, "
        "addacs, arudd, warehouse_dispatch, device_enrolment, delivery_receipts, billing",
        "  hardware_orders.yaml: catalogue[2].price: must be a quoted decimal string like '499.00', got 19.99",
        "  payment_terms.yaml: payment_terms[1].days_to_pay: must be an integer, got '7'",
        "  probes.yaml: probes.nrp_verification_normal.window_hours: must be between 1 and 744, got 0",
        "  probes.yaml: probes.nrp_verification_normal.recipient: unknown field; allowed: older_than_minutes, "
        "recipients, threshold, window_hours",
        f"  partner.yaml: no configuration model reads this file; known files: {KNOWN}",
    ]
    assert not (env / "data").exists()


def test_init_refuses_a_broken_payment_terms_file_and_creates_nothing(env):
    config = env / "config"
    edit(config, "payment_terms.yaml", lambda d: d["payment_term_defaults"][0].pop("payment_type"))
    result = cli("init")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {config}: 1 configuration error(s) in 1 file(s)\n"
                             "  payment_terms.yaml: payment_term_defaults[0].payment_type: is required\n")
    assert not (env / "data").exists()
    shutil.copy(PROJECT_ROOT / "config" / "payment_terms.yaml", config / "payment_terms.yaml")
    assert cli("init").exit_code == 0 and (env / "data" / "cmp.duckdb").exists()


@pytest.mark.parametrize(("change", "path", "why"), [
    (lambda d: d["catalogue"][3].pop("price"), "catalogue[3].price", "is required"),
    (lambda d: d.update(stuck_order_days="5"), "stuck_order_days", "must be an integer, got '5'"),
    (lambda d: d["warehouses"][0].update(site="Leeds"), "warehouses[0].site",
     "unknown field; allowed: fraud_check, name, stock_check, warehouse"),
    (lambda d: d["catalogue"][1].update(price="329.9"), "catalogue[1].price",
     "amount '329.9' is not a decimal string with exactly two decimal places"),
    (lambda d: d["manufacturers"].append({"manufacturer": "WH_SOUTH"}), "manufacturers[2].manufacturer",
     "'WH_SOUTH' is not a partner with feed 'device_enrolment' in partners.yaml (its files need keys)"),
])
def test_a_typical_mistake_in_hardware_orders_yaml_gives_one_exact_message(env, change, path, why):
    from cmp_pipelines.cli.config import config_errors

    edit(env / "config", "hardware_orders.yaml", change)
    file = env / "config" / "hardware_orders.yaml"
    assert [str(e) for e in config_errors(env / "config")] == [f"{file}: {path}: {why}"]


def test_keys_init_refuses_a_partner_that_is_not_configured(env):
    result = cli("keys", "init", "--partner", "PAYPOINT", "--partner", "PAYPONT")
    assert result.exit_code == 1
    assert result.stderr == ("Error: partner PAYPONT is not configured; configured partners (partners.yaml): PAYPOINT, "
                             "LOCKBOX, CARDPAY, BACSBUREAU, WH_NORTH, WH_SOUTH, ACME_MOBILE, ORBIT_DEVICES, "
                             "SALES_LEDGER, BILLSYS\n")
    assert not (env / "data" / "keys" / "PAYPOINT.keys").exists(), "no key is made for the configured one either"
    two = cli("keys", "init", "--partner", "X1", "--partner", "X2")
    assert two.stderr.startswith("Error: partners X1, X2 are not configured; ")
    assert cli("keys", "init", "--partner", "PAYPOINT").stdout.startswith("PAYPOINT: created ")


NOT_FOUND = [
    (["accounts", "show", "ACC09999999"], "account ACC09999999 not found"),
    (["accounts", "show", "4111111111111111"], "account ************1111 not found"),
    (["accounts", "set-payment-type", "ACC09999999", "MANUAL"], "account ACC09999999 not found"),
    (["accounts", "approve-refund", "ACC09999999", "1.00"], "account ACC09999999 not found"),
    (["mandates", "create", "ACC09999999", "--sort-code", "400000", "--bank-account", "12345678",
      "--account-name", "A PAYER"], "account ACC09999999 not found"),
    (["mandates", "cancel", "MD09999999"], "mandate MD09999999 not found"),
    (["mandates", "resume", "MD09999999", "--reason", "x"], "mandate MD09999999 not found"),
    (["orders", "create", "ACC09999999"], "account ACC09999999 not found"),
    (["orders", "show", "HO09999999"], "order HO09999999 not found"),
    (["orders", "generate", "HO09999999"], "order HO09999999 not found"),
    (["orders", "add-line", "HO09999999", "HS-ACME-X1"], "order HO09999999 not found"),
]


def test_one_wording_for_not_found_across_commands(env):
    assert cli("init").exit_code == 0
    answers = [(args, cli(*args)) for args, _ in NOT_FOUND]
    assert [(args, r.exit_code, r.stderr) for args, r in answers] == \
        [(args, 1, f"Error: {message}\n") for args, message in NOT_FOUND]


def _evaluate(probe_ids, thresholds):
    """Probe results written by the real evaluation on the (empty) store."""
    import dataclasses

    from cmp_pipelines.core.config import load_probes
    from cmp_pipelines.core.db.connection import connect
    from cmp_pipelines.core.probe_queries import evaluate, record
    from cmp_pipelines.core.probes import PROBES_BY_ID
    from cmp_pipelines.core.settings import paths

    configs = load_probes(paths().config_dir)
    configs.update({p: dataclasses.replace(configs[p], threshold=t) for p, t in thresholds.items()})
    with connect(paths().database) as con:
        for outcome in evaluate(con, configs, datetime(2026, 12, 1, 12, tzinfo=UTC),
                                tuple(PROBES_BY_ID[p] for p in probe_ids)):
            record(con, outcome, False)


def test_probes_and_summary_label_their_columns_and_keep_them_aligned(env):
    assert cli("init").exit_code == 0
    assert cli("probes").stdout == "no probe has been evaluated yet\n"
    assert cli("summary").stdout.endswith("Probes:\n  (none yet)\n")
    _evaluate(["nrp_load_completed", "nrp_verification_normal", "nrp_batch_completed_sla", "card_rejection_rate"],
              {"nrp_verification_normal": 12_345_678})
    table = [
        "STATUS   TYPE   VALUE  THRESHOLD  PROBE",
        "OK       alert      0         10  Recurring Card Payments Rejection Rate",
        "OK       sla        0          0  Non Recurring Payments Batch Completed SLA",
        "TRIPPED  alert      0          0  Non Recurring Payments Load Completed",
        "OK       alert      0   12345678  Non Recurring Payments Verification Normal",
    ]
    assert cli("probes").stdout.splitlines() == table
    assert cli("summary").stdout.splitlines() == [
        "Batches:", "Ledger: 0 payment posting(s), net 0.00", "Quarantined files: 0", "Probes:",
        *(f"  {line}" for line in table)]
