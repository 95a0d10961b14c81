"""The Payments module configuration (payment terms, defaults, mandate revision codes, the direct debit service
user): the shipped files load, and every invalid entry is named by file, entry and field."""

from __future__ import annotations

import shutil

import pytest
import yaml

from cmp_pipelines.core.config import (
    ConfigError,
    load_direct_debit,
    load_mandate_revision_codes,
    load_partners,
    load_payment_terms,
)
from cmp_pipelines.core.settings import PROJECT_ROOT

CONFIG = PROJECT_ROOT / "config"


def test_shipped_payments_module_configuration():
    terms = load_payment_terms(CONFIG)
    assert terms.terms["D14"].days_to_pay == 14
    assert terms.default_for("DIRECT_DEBIT").code == "D14" and terms.default_for("RECURRING_CARD").code == "D7"
    codes = load_mandate_revision_codes(CONFIG)
    assert set(codes) == {"0", "1", "2", "3", "B", "C", "D", "E", "R"}
    assert codes["3"].action == "AMEND" and codes["1"].action == "CANCEL"
    dd = load_direct_debit(CONFIG, load_partners(CONFIG))
    assert (dd.service_user_number, dd.bureau, dd.activation_days) == ("123456", "BACSBUREAU", 10)


def _broken(tmp_path, name: str, mutate):
    shutil.copytree(CONFIG, tmp_path / "config")
    file = tmp_path / "config" / name
    document = yaml.safe_load(file.read_text())
    mutate(document)
    file.write_text(yaml.safe_dump(document))
    return tmp_path / "config"


def _term(index, field, value):
    return lambda d: d["payment_terms"][index].__setitem__(field, value)


def _default(index, field, value):
    return lambda d: d["payment_term_defaults"][index].__setitem__(field, value)


@pytest.mark.parametrize(("mutate", "entry", "field", "fragment"), [
    (_term(0, "code", "imm"), "imm", "code", "1-3 upper-case"),
    (_term(0, "code", "IMME"), "IMME", "code", "1-3 upper-case"),
    (_term(1, "code", "IMM"), "IMM", "code", "defined twice"),
    (_term(0, "description", "x" * 31), "IMM", "description", "1-30 characters, got 31"),
    (_term(0, "days_to_pay", -1), "IMM", "days_to_pay", "between 0 and 365"),
    (_term(0, "days_to_pay", "7"), "IMM", "days_to_pay", "must be an integer"),
    (_default(0, "code", "D99"), "D99", "code", "is not a payment term"),
    (_default(0, "payment_type", "CHEQUE"), "D14", "payment_type", "must be one of"),
    (_default(1, "payment_type", "MANUAL"), "D7", "payment_type", "MANUAL already has a default"),
    (_default(0, "security_levels", []), "D14", "security_levels", "at least one"),
    (_default(0, "security_levels", ["agent"]), "D14", "security_levels", "'agent' is not a security level"),
])
def test_payment_terms_errors(tmp_path, mutate, entry, field, fragment):
    with pytest.raises(ConfigError) as caught:
        load_payment_terms(_broken(tmp_path, "payment_terms.yaml", mutate))
    assert (caught.value.entry, caught.value.field) == (entry, field) and fragment in caught.value.why
    assert "payment_terms.yaml" in str(caught.value)


def _code(index, field, value):
    return lambda d: d["mandate_revision_codes"][index].__setitem__(field, value)


@pytest.mark.parametrize(("mutate", "entry", "field", "fragment"), [
    (_code(0, "code", 0), "mandate_revision_codes[0]", "code", "quoted string"),
    (_code(1, "code", "0"), "0", "code", "defined twice"),
    (_code(0, "action", "DELETE"), "0", "action", "AMEND or CANCEL"),
    (_code(0, "event", None), "0", "event", "is required"),
    (_code(0, "reason_type", "addacs"), "0", "reason_type", "upper-case identifier"),
    (_code(0, "name", ""), "0", "name", "1-60 characters"),
])
def test_mandate_revision_code_errors(tmp_path, mutate, entry, field, fragment):
    with pytest.raises(ConfigError) as caught:
        load_mandate_revision_codes(_broken(tmp_path, "mandate_revision_codes.yaml", mutate))
    assert (caught.value.entry, caught.value.field) == (entry, field) and fragment in caught.value.why


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("service_user_number", 123456, "6 digits in quotes"),
    ("originating_sort_code", "40-00-00", "6 digits"),
    ("originating_account", "1234567", "8 digits"),
    ("service_user_name", "cmp telecom", "A-Z 0-9"),
    ("bureau", "PAYPOINT", "not a partner with feed 'addacs'"),
    ("activation_days", 31, "between 0 and 30"),
])
def test_direct_debit_errors(tmp_path, field, value, fragment):
    config = _broken(tmp_path, "direct_debit.yaml", lambda d: d["direct_debit"].__setitem__(field, value))
    with pytest.raises(ConfigError) as caught:
        load_direct_debit(config, load_partners(config))
    assert (caught.value.entry, caught.value.field) == ("direct_debit", field) and fragment in caught.value.why


# ---- payment term defaults when accounts are created ----------------------------------------------------------


def test_new_accounts_get_their_payment_types_default_term(platform):
    from datetime import UTC, datetime

    from cmp_pipelines.core.config import load_payment_terms
    from cmp_pipelines.core.payment_setup import SetupError, create_account

    terms, now = load_payment_terms(CONFIG), datetime.now(UTC)
    with platform.connect() as con:
        manual = create_account(con, "ACCNEW001", "New Customer", terms=terms, now=now, security_level="AGENT")
        card = create_account(con, "ACCNEW002", "Card Customer", terms=terms, now=now, payment_type="RECURRING_CARD",
                              security_level="AGENT")
        with pytest.raises(SetupError) as refused:
            create_account(con, "ACCNEW003", "DD Customer", terms=terms, now=now, payment_type="DIRECT_DEBIT",
                           security_level="AGENT")
        with pytest.raises(SetupError, match="already exists"):
            create_account(con, "ACCNEW001", "Again", terms=terms, now=now, security_level="AGENT")
        with pytest.raises(SetupError, match="ISO 4217"):
            create_account(con, "ACCNEW004", "Euro", terms=terms, now=now, currency="euro",
                           security_level="AGENT")
        dd = create_account(con, "ACCNEW003", "DD Customer", terms=terms, now=now, payment_type="DIRECT_DEBIT",
                            security_level="SUPERVISOR")
    assert (manual["payment_term"], card["payment_term"], dd["payment_term"]) == ("D14", "D7", "D14")
    assert (refused.value.field, refused.value.status) == ("security_level", 403)
    assert "may not use the DIRECT_DEBIT payment term default 'D14' (allowed: SUPERVISOR, ADMIN)" in str(
        refused.value.message)
    assert platform.query("SELECT payment_term FROM accounts WHERE account_number = 'ACCNEW002'") == [("D7",)]


@pytest.mark.parametrize(("mutate", "entry", "field", "fragment"), [
    (lambda d: d["bacs_return_codes"][0].__setitem__("return_code", 1), "bacs_return_codes[0]", "return_code",
     "quoted string"),
    (lambda d: d["bacs_return_codes"][0].__setitem__("return_code", "12"), "bacs_return_codes[12]", "return_code",
     "four digits"),
    (lambda d: d["bacs_return_codes"][1].__setitem__("return_code", "0128"), "bacs_return_codes[0128]",
     "return_code", "mapped twice"),
    (lambda d: d["bacs_return_codes"][0].__setitem__("rejection_code", "ARUDDZ"), "bacs_return_codes[0128]",
     "rejection_code", "not one of the rejection_codes"),
    (lambda d: d["bacs_return_codes"][0].__setitem__("extra", 1), "bacs_return_codes[0128]", "extra", ""),
    (lambda d: d["arudd_mandate_actions"].pop("ARUDD1"), "bacs_return_codes[1012]", "rejection_code",
     "'ARUDD1' has no entry in arudd_mandate_actions"),
    (lambda d: d["arudd_mandate_actions"].__setitem__("ARUDD1", "STOP"), "arudd_mandate_actions[ARUDD1]", "-",
     "must be one of KEEP, CANCEL, HOLD, got 'STOP'"),
])
def test_bacs_return_code_map_errors(tmp_path, mutate, entry, field, fragment):
    from cmp_pipelines.core.config import load_rejection_codes

    with pytest.raises(ConfigError) as caught:
        load_rejection_codes(_broken(tmp_path, "rejection_codes.yaml", mutate))
    assert (caught.value.entry, caught.value.field) == (entry, field) and fragment in str(caught.value)
