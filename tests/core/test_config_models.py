"""Every configuration file has a typed model: a typical mistake in each file gives one exact message naming the
file, the path of the field inside it and why; the shipped files pass."""

from __future__ import annotations

import shutil

import pytest
import yaml

from cmp_pipelines.core.config import (
    DIRECT_DEBIT_FILE,
    MANDATE_REVISION_CODES_FILE,
    PARTNERS_FILE,
    PAYMENT_TERMS_FILE,
    PROBES_FILE,
    REJECTION_CODES_FILE,
    ConfigError,
    load_direct_debit,
    load_partners,
    load_payment_terms,
)
from cmp_pipelines.core.config_payments import API_CLIENTS_FILE, PAYMENT_PROVIDER_FILE
from cmp_pipelines.core.settings import PROJECT_ROOT

SHIPPED_PARTNERS = load_partners(PROJECT_ROOT / "config")
FILES = {f.name: f for f in (PARTNERS_FILE, PROBES_FILE, REJECTION_CODES_FILE, PAYMENT_TERMS_FILE,
                             MANDATE_REVISION_CODES_FILE, DIRECT_DEBIT_FILE, API_CLIENTS_FILE, PAYMENT_PROVIDER_FILE)}


@pytest.fixture
def config(tmp_path):
    target = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", target)
    return target


def mutate(config, name, change):
    file = config / name
    document = yaml.safe_load(file.read_text())
    change(document)
    file.write_text(yaml.safe_dump(document))


def drop(*path):
    def change(document):
        for key in path[:-1]:
            document = document[key]
        del document[path[-1]]
    return change


def put(*path_and_value):
    *path, value = path_and_value

    def change(document):
        for key in path[:-1]:
            document = document[key]
        document[path[-1]] = value
    return change


@pytest.mark.parametrize("file", sorted(FILES))
def test_the_shipped_files_pass(file):
    assert FILES[file].check(PROJECT_ROOT / "config", SHIPPED_PARTNERS) == []


SFTP = {"type": "sftp", "host": "sftp.bureau.example", "user": "cmp", "key_file": "ssh/bureau_ed25519",
        "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "remote_folder": "/inbound/cmp"}

CASES = [
    # partners.yaml
    ("partners.yaml", drop("partners", 2, "feeds"), "CARDPAY", "feeds", "partners[2].feeds", "is required"),
    ("partners.yaml", put("partners", 1, "duplicate_window_days", "30"), "LOCKBOX", "duplicate_window_days",
     "partners[1].duplicate_window_days", "must be an integer, got '30'"),
    ("partners.yaml", put("partners", 0, "feed", ["nrp"]), "PAYPOINT", "feed", "partners[0].feed",
     "unknown field; allowed: duplicate_window_days, feeds, name, partner_id, settle_seconds, transport, "
     "upload_completion, upload_suffixes"),
    ("partners.yaml", put("partners", 2, "feeds", ["card_rejection"]), "CARDPAY", "feeds", "partners[2].feeds[0]",
     "unknown feed 'card_rejection'; known feeds: nrp, card_rejections, addacs, arudd, warehouse_dispatch, "
     "device_enrolment, delivery_receipts, billing"),
    ("partners.yaml", put("partners", 3, "transport", {**SFTP, "key_file": "-----BEGIN OPENSSH PRIVATE KEY-----"}),
     "BACSBUREAU", "transport.sftp.key_file", "partners[3].transport.sftp.key_file",
     "must be the path of the key file, never the key itself (keys stay out of config and logs)"),
    ("partners.yaml", put("partners", 3, "transport", {k: v for k, v in SFTP.items() if k != "host_key"}),
     "BACSBUREAU", "transport.sftp.host_key", "partners[3].transport.sftp.host_key",
     "give exactly one of host_key or known_hosts_file: the server's key is pinned, never accepted on first sight"),
    ("partners.yaml", put("partners", 3, "transport", {**SFTP, "host_key": "yes"}), "BACSBUREAU",
     "transport.sftp.host_key", "partners[3].transport.sftp.host_key",
     "must be an OpenSSH public key ('ssh-ed25519 AAAA...') or a known_hosts line"),
    ("partners.yaml", put("partners", 3, "transport", {"type": "ftp", "folder": "x"}), "BACSBUREAU",
     "transport", "partners[3].transport", "type must be local or sftp, got 'ftp'"),
    ("partners.yaml", put("partners", 3, "transport", {**SFTP, "pickup": [{"feed": "nrp", "remote_folder": "o"}]}),
     "BACSBUREAU", "transport", "partners[3].transport",
     "picks up feed 'nrp', which is not one of the partner's feeds"),
    # probes.yaml
    ("probes.yaml", drop("probes", "nrp_batch_completed", "window_hours"), "nrp_batch_completed", "window_hours",
     "probes.nrp_batch_completed.window_hours", "is required"),
    ("probes.yaml", put("probes", "nrp_verification_account_allocation", "threshold", "500"),
     "nrp_verification_account_allocation", "threshold", "probes.nrp_verification_account_allocation.threshold",
     "must be an integer, got '500'"),
    ("probes.yaml", put("probes", "card_rejection_rate", "recipient", ["a@b.example"]), "card_rejection_rate",
     "recipient", "probes.card_rejection_rate.recipient",
     "unknown field; allowed: older_than_minutes, recipients, threshold, window_hours"),
    ("probes.yaml", put("probes", "nrp_verification_normal", "window_hours", 0), "nrp_verification_normal",
     "window_hours", "probes.nrp_verification_normal.window_hours", "must be between 1 and 744, got 0"),
    # rejection_codes.yaml
    ("rejection_codes.yaml", drop("rejection_codes", 0, "description"), "05", "description",
     "rejection_codes[0].description", "is required"),
    ("rejection_codes.yaml", put("rejection_codes", 1, "retries", "3"), "51", "retries",
     "rejection_codes[1].retries", "must be an integer, got '3'"),
    ("rejection_codes.yaml", put("default_payment_types", "MANUAL"), "-", "default_payment_types",
     "default_payment_types",
     "unknown field; allowed: arudd_mandate_actions, bacs_return_codes, default_payment_type, rejection_codes"),
    ("rejection_codes.yaml", put("rejection_codes", 6, "decline", "FIRM"), "04", "decline",
     "rejection_codes[6].decline", "must be SOFT or HARD, got 'FIRM'"),
    # payment_terms.yaml: today's headline, it passed `init` and failed later
    ("payment_terms.yaml", drop("payment_terms", 1, "days_to_pay"), "D7", "days_to_pay",
     "payment_terms[1].days_to_pay", "is required"),
    ("payment_terms.yaml", put("payment_terms", 0, "days_to_pay", "0"), "IMM", "days_to_pay",
     "payment_terms[0].days_to_pay", "must be an integer, got '0'"),
    ("payment_terms.yaml", put("payment_term_defaults", 0, "security_level", ["AGENT"]), "D14", "security_level",
     "payment_term_defaults[0].security_level", "unknown field; allowed: code, payment_type, security_levels"),
    ("payment_terms.yaml", put("payment_term_defaults", 2, "code", "D60"), "D60", "code",
     "payment_term_defaults[2].code", "is not a payment term; known: D14, D30, D7, IMM"),
    # mandate_revision_codes.yaml
    ("mandate_revision_codes.yaml", drop("mandate_revision_codes", 3, "event"), "3", "event",
     "mandate_revision_codes[3].event", "is required"),
    ("mandate_revision_codes.yaml", put("mandate_revision_codes", 0, "code", 0), "mandate_revision_codes[0]", "code",
     "mandate_revision_codes[0].code", "must be a quoted string (YAML reads 0 as a number)"),
    ("mandate_revision_codes.yaml", put("mandate_revision_codes", 1, "reason", "X"), "1", "reason",
     "mandate_revision_codes[1].reason",
     "unknown field; allowed: action, code, event, name, reason_code, reason_type"),
    ("mandate_revision_codes.yaml", put("mandate_revision_codes", 4, "action", "DELETE"), "B", "action",
     "mandate_revision_codes[4].action", "must be AMEND or CANCEL, got 'DELETE'"),
    # direct_debit.yaml
    ("direct_debit.yaml", drop("direct_debit", "bureau"), "direct_debit", "bureau", "direct_debit.bureau",
     "is required"),
    ("direct_debit.yaml", put("direct_debit", "activation_days", "10"), "direct_debit", "activation_days",
     "direct_debit.activation_days", "must be an integer, got '10'"),
    ("direct_debit.yaml", put("direct_debit", "advance_notice", 10), "direct_debit", "advance_notice",
     "direct_debit.advance_notice", "unknown field; allowed: activation_days, advance_notice_days, bureau, "
     "originating_account, originating_sort_code, service_user_name, service_user_number"),
    ("direct_debit.yaml", put("direct_debit", "originating_sort_code", "40-00-00"), "direct_debit",
     "originating_sort_code", "direct_debit.originating_sort_code", "must be 6 digits in quotes, got '40-00-00'"),
    ("direct_debit.yaml", put("direct_debit", "bureau", "PAYPOINT"), "direct_debit", "bureau", "direct_debit.bureau",
     "'PAYPOINT' is not a partner with feed 'addacs' in partners.yaml"),
    # api_clients.yaml
    ("api_clients.yaml", drop("api_clients", 0, "channel"), "AGENTVIEW", "channel", "api_clients[0].channel",
     "is required"),
    ("api_clients.yaml", put("api_clients", 1, "name", 5), "SELFCARE_APP", "name", "api_clients[1].name",
     "must be a string, got 5"),
    ("api_clients.yaml", put("api_clients", 2, "key", "cmp_the-key-itself"), "IVR", "key", "api_clients[2].key",
     "unknown field; allowed: channel, client_id, key_sha256, name, security_level"),
    ("api_clients.yaml", put("api_clients", 2, "channel", "PHONE"), "IVR", "channel", "api_clients[2].channel",
     "must be one of AGENT, SELFCARE, IVR, got 'PHONE'"),
    # payment_provider.yaml
    ("payment_provider.yaml", drop("payment_provider", "reconcile_after_seconds"), "payment_provider",
     "reconcile_after_seconds", "payment_provider.reconcile_after_seconds", "is required"),
    ("payment_provider.yaml", put("payment_provider", "hosted_session_minutes", "30"), "payment_provider",
     "hosted_session_minutes", "payment_provider.hosted_session_minutes", "must be an integer, got '30'"),
    ("payment_provider.yaml", put("payment_provider", "timeout_seconds", 5), "payment_provider", "timeout_seconds",
     "payment_provider.timeout_seconds", "unknown field; allowed: callback_tolerance_seconds, failure_event, "
     "hosted_page_url, hosted_session_minutes, provider, public_base_url, reconcile_after_seconds, stripe"),
    ("payment_provider.yaml", put("payment_provider", "failure_event", {"type": "ONE_OFF_PAYMENT"}), "payment_provider",
     "failure_event", "payment_provider.failure_event", "must be a mapping with exactly 'type' and 'code'"),
]


@pytest.mark.parametrize(("file", "change", "entry", "field", "path", "why"), CASES,
                         ids=[f"{c[0]}:{c[4]}" for c in CASES])
def test_a_typical_mistake_in_each_file_gives_one_exact_message(config, file, change, entry, field, path, why):
    mutate(config, file, change)
    errors = FILES[file].check(config, SHIPPED_PARTNERS)
    assert [str(e) for e in errors] == [f"{config / file}: {path}: {why}"]
    assert (errors[0].file, errors[0].entry, errors[0].field, errors[0].path, errors[0].why) == \
        (config / file, entry, field, path, why)
    with pytest.raises(ConfigError) as caught:  # the loader raises the same error
        FILES[file].load(config, SHIPPED_PARTNERS)
    assert str(caught.value) == str(errors[0])


def test_every_mistake_of_a_file_is_listed_not_only_the_first(config):
    mutate(config, "payment_terms.yaml", lambda d: (d["payment_terms"][0].update(days_to_pay=-1, colour="red"),
                                                    d["payment_terms"][3].pop("description"),
                                                    d["payment_term_defaults"][1].update(payment_type="CASH")))
    assert [f"{e.path}: {e.why}" for e in PAYMENT_TERMS_FILE.check(config)] == [
        "payment_terms[0].days_to_pay: must be between 0 and 365, got -1",
        "payment_terms[0].colour: unknown field; allowed: code, days_to_pay, description",
        "payment_terms[3].description: is required",
        "payment_term_defaults[1].payment_type: must be one of MANUAL, RECURRING_CARD, DIRECT_DEBIT, got 'CASH'",
    ]
    with pytest.raises(ConfigError, match=r"payment_terms\[0\]\.days_to_pay: must be between 0 and 365, got -1"):
        load_payment_terms(config)


def test_rules_across_entries_are_all_listed(config):
    mutate(config, "payment_terms.yaml", lambda d: (d["payment_terms"][1].update(code="IMM"),
                                                    d["payment_term_defaults"][1].update(payment_type="MANUAL")))
    assert [f"{e.entry} {e.path}: {e.why}" for e in PAYMENT_TERMS_FILE.check(config)] == [
        "IMM payment_terms[1].code: is defined twice; payment term codes are unique",
        "D7 payment_term_defaults[1].code: is not a payment term; known: D14, D30, IMM",
        "D7 payment_term_defaults[1].payment_type: MANUAL already has a default payment term",
    ]


def test_a_secret_in_the_wrong_place_never_reaches_the_message(config):
    mutate(config, "api_clients.yaml", put("api_clients", 0, "key_sha256", "cmp_the-key-itself"))
    [error] = API_CLIENTS_FILE.check(config)
    assert str(error) == (f"{config / 'api_clients.yaml'}: api_clients[0].key_sha256: must be 64 lower-case hex "
                          "digits: the SHA-256 of the key, never the key itself")


def test_a_file_that_is_not_a_mapping_or_not_yaml_or_missing(config):
    (config / "probes.yaml").write_text("- just\n- a list\n")
    (config / "payment_terms.yaml").write_text("payment_terms: [oops\n")
    (config / "direct_debit.yaml").unlink()
    assert [str(e) for e in PROBES_FILE.check(config)] == [
        f"{config / 'probes.yaml'}: the file must be a mapping of settings, as the shipped file is"]
    assert [str(e) for e in PAYMENT_TERMS_FILE.check(config)] == [
        f"{config / 'payment_terms.yaml'}: not valid YAML at line 2, column 1: while parsing a flow sequence; "
        "expected ',' or ']', but got '<stream end>'"]
    with pytest.raises(ConfigError, match="direct_debit.yaml: file not found$"):
        load_direct_debit(config)


def test_the_top_level_keys_are_checked_too(config):
    (config / "partners.yaml").write_text("partner:\n  - {partner_id: PAYPOINT, feeds: [nrp]}\n")
    assert [f"{e.path}: {e.why}" for e in PARTNERS_FILE.check(config)] == [
        "partners: is required", "partner: unknown field; allowed: partners"]


def test_a_key_written_twice_is_an_error_not_a_silent_override(config):
    text = (config / "direct_debit.yaml").read_text()
    (config / "direct_debit.yaml").write_text(text + "  activation_days: 3\n")
    assert [str(e) for e in DIRECT_DEBIT_FILE.check(config)] == [
        f"{config / 'direct_debit.yaml'}: not valid YAML at line {text.count(chr(10)) + 1}, column 3: "
        "key 'activation_days' appears twice in one mapping"]
