"""Money, card numbers and configuration validation."""

from __future__ import annotations

import shutil

import pytest

from cmp_pipelines.core.cards import find_pan, luhn_valid, mask_pan, mask_pans_in
from cmp_pipelines.core.config import ConfigError, load_partners, load_probes
from cmp_pipelines.core.money import MoneyError, format_minor, parse_amount
from cmp_pipelines.core.settings import PROJECT_ROOT


@pytest.mark.parametrize("text,minor", [("0.01", 1), ("12.34", 1234), ("999999999999.99", 99999999999999)])
def test_parse_amount(text, minor):
    assert parse_amount(text) == minor
    assert format_minor(minor) == text


@pytest.mark.parametrize("text", ["12.345", "12.3", "-1.00", "1e3", "01.00", "", " 1.00", 12.34])
def test_parse_amount_refuses(text):
    with pytest.raises(MoneyError, match="exactly two decimal places"):
        parse_amount(text)


def test_format_negative_minor():
    assert format_minor(-5) == "-0.05" and format_minor(-123456) == "-1234.56"


def test_luhn_and_pan_detection():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert find_pan("card 4111-1111-1111-1111 ok") == "4111111111111111"
    assert find_pan("ref 1234567890123") is None  # 13 digits failing Luhn
    assert find_pan("PP 5521") is None and find_pan(None) is None
    assert mask_pan("5500000000000004") == "************0004"
    assert mask_pans_in("a 5500 0000 0000 0004 b") == "a ************0004 b"


def copy_config(tmp_path):
    target = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", target)
    return target


def test_shipped_configuration_is_valid():
    from cmp_pipelines.core.probes import ALL_PROBES

    assert set(load_probes(PROJECT_ROOT / "config")) == {probe.probe_id for probe in ALL_PROBES}
    assert set(load_partners(PROJECT_ROOT / "config")) == {"PAYPOINT", "LOCKBOX", "CARDPAY", "BACSBUREAU", "WH_NORTH",
                                                           "WH_SOUTH", "ACME_MOBILE", "ORBIT_DEVICES", "SALES_LEDGER",
                                                           "BILLSYS"}


@pytest.mark.parametrize(
    "text,entry,field,why",
    [
        ("partners:\n  - partner_id: paypoint\n    feeds: [nrp]\n", "paypoint", "partner_id", "must be 2-32"),
        ("partners:\n  - partner_id: PAYPOINT\n    feeds: [cash]\n", "PAYPOINT", "feeds", "unknown feed 'cash'"),
        ("partners:\n  - partner_id: PAYPOINT\n", "PAYPOINT", "feeds", "is required"),
        ("partners:\n  - {partner_id: A1, feeds: [nrp]}\n  - {partner_id: A1, feeds: [nrp]}\n", "A1", "partner_id",
         "defined twice"),
        ("partners:\n  - partner_id: PAYPOINT\n    feeds: [nrp]\n    colour: red\n", "PAYPOINT", "colour",
         "unknown field"),
        ("partners: [oops\n", "-", "-", "not valid YAML"),
    ],
)
def test_partner_config_errors_name_file_entry_and_field(tmp_path, text, entry, field, why):
    config = copy_config(tmp_path)
    (config / "partners.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_partners(config)
    assert (caught.value.entry, caught.value.field) == (entry, field)
    assert why in caught.value.why and "partners.yaml" in str(caught.value)


@pytest.mark.parametrize(
    "change,entry,field,why",
    [
        (("threshold: 500", "threshold: -1"), "nrp_verification_account_allocation", "threshold", "zero or more"),
        (("threshold: 500", "threshold: lots"), "nrp_verification_account_allocation", "threshold", "integer"),
        (("window_hours: 6", "window_hours: 0"), "nrp_verification_normal", "window_hours", "between 1 and 744"),
        (("nrp_batch_completed_sla:\n    threshold: 0",
          "nrp_batch_completed_sla:\n    recipients: [a@b.example]\n    threshold: 0"),
         "nrp_batch_completed_sla", "recipients", "never notifies"),
        (("[billing-ops@example.com]\n  nrp_verification_payments_supplied",
          "[not-an-email]\n  nrp_verification_payments_supplied"),
         "nrp_verification_account_allocation", "recipients", "not an e-mail address"),
        (("nrp_load_completed:", "nrp_load_finished:"), "nrp_load_finished", "-", "unknown probe"),
    ],
)
def test_probe_config_errors_name_file_entry_and_field(tmp_path, change, entry, field, why):
    config = copy_config(tmp_path)
    text = (config / "probes.yaml").read_text()
    assert change[0] in text
    (config / "probes.yaml").write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError) as caught:
        load_probes(config)
    assert (caught.value.entry, caught.value.field) == (entry, field)
    assert why in caught.value.why


def test_missing_probe_is_an_error(tmp_path):
    config = copy_config(tmp_path)
    text = (config / "probes.yaml").read_text()
    before, after = text.split("  nrp_load_completed:")
    rest = after.split("  card_extract_produced:")[1]
    (config / "probes.yaml").write_text(before + "  card_extract_produced:" + rest)
    with pytest.raises(ConfigError, match="nrp_load_completed.*not configured"):
        load_probes(config)


def test_a_fourteen_digit_timestamp_is_not_a_card_number():
    from cmp_pipelines.core.cards import find_pan, luhn_valid

    assert luhn_valid("20261122010857"), "this timestamp passes Luhn"
    assert find_pan("CARDPAY-REJ-20261122010857.json.enc") is None
    assert find_pan("ref 30569309025904") == "30569309025904", "a Diners Club number is still found"
    assert find_pan("4111 1111 1111 1111") == "4111111111111111"
