"""core/config_edit.py: an entry changed in place (comments and other entries byte for byte), the loaders' words
for a bad entry, rules across files, the version check, and the audit row of every save."""

from __future__ import annotations

import shutil

import pytest

from cmp_pipelines.core import config_edit
from cmp_pipelines.core.config import load_rejection_codes
from cmp_pipelines.core.settings import PROJECT_ROOT

SCREENS = config_edit.SCREENS


@pytest.fixture
def config_dir(tmp_path):
    shutil.copytree(PROJECT_ROOT / "config", tmp_path / "config")
    return tmp_path / "config"


@pytest.fixture
def audit(tmp_path):
    return config_edit.ConfigAudit(tmp_path / "audit.sqlite")


def test_an_edit_changes_only_its_entry_and_is_audited(config_dir, audit):
    screen = SCREENS["rejection-codes"]
    shipped = (config_dir / "rejection_codes.yaml").read_text()
    before = config_edit.find(config_dir, screen, "ARUDD5")
    changed = {**before, "description": "No account, or a wrong account type: see the bank's advice"}
    saved = config_edit.save(config_dir, audit, screen, changed, actor="API client BACKOFFICE",
                             security_level="SUPERVISOR", entry_id="ARUDD5", expected_etag=config_edit.etag(before))
    old = ('  - {code: "ARUDD5", description: No account, reason_type: DD_RETURN, reason_code: NO_ACCOUNT,\n'
           '     decline: HARD, refund_event: {type: RECURRING_PAYMENT, code: DD_HARD_RETURN}}')
    new = ('  - {code: "ARUDD5", description: \'No account, or a wrong account type: see the bank\'\'s advice\',\n'
           '     reason_type: DD_RETURN, reason_code: NO_ACCOUNT, decline: HARD,\n'
           '     refund_event: {type: RECURRING_PAYMENT, code: DD_HARD_RETURN}}')  # wrapped between pairs
    assert old in shipped
    assert (config_dir / "rejection_codes.yaml").read_text() == shipped.replace(old, new)
    assert load_rejection_codes(config_dir).codes["ARUDD5"].description == changed["description"]
    [row] = audit.changes()
    assert (row["change_id"], row["actor"], row["security_level"], row["entry_id"], row["action"],
            row["changed_fields"], row["before"], row["after"]) == (
        saved.change_id, "API client BACKOFFICE", "SUPERVISOR", "ARUDD5", "EDIT", ["description"], before, changed)


def test_refused_changes_write_nothing(config_dir, audit):
    shipped = {p.name: p.read_bytes() for p in config_dir.glob("*.yaml")}
    terms = SCREENS["payment-terms"]
    with pytest.raises(config_edit.Rejected) as bad:
        config_edit.save(config_dir, audit, terms, config_edit.entry_from_form(terms, {
            "code": ["0"], "description": [""], "days_to_pay": ["400"]}), actor="a", security_level=None)
    assert bad.value.fields == {"description": "must be 1-30 characters, got 0",
                                "days_to_pay": "must be between 0 and 365, got 400"}
    # The model's rule of a whole entry, placed on its field.
    codes = SCREENS["rejection-codes"]
    before = config_edit.find(config_dir, codes, "51")
    with pytest.raises(config_edit.Rejected) as soft:
        config_edit.save(config_dir, audit, codes, {**before, "decline": "HARD"}, actor="a", security_level=None,
                         entry_id="51", expected_etag=config_edit.etag(before))
    assert soft.value.fields["retries"] == "a hard decline is never retried; remove this field"
    with pytest.raises(config_edit.Conflict) as stale:
        config_edit.save(config_dir, audit, codes, before, actor="a", security_level=None, entry_id="51",
                         expected_etag="0" * 16)
    assert stale.value.current == before
    assert {p.name: p.read_bytes() for p in config_dir.glob("*.yaml")} == shipped
    assert audit.changes() == []


def test_entry_text_quotes_what_a_flow_mapping_needs():
    entry = {"code": "05", "description": "a, b: c # d", "days": 7, "levels": ["AGENT", "ADMIN"],
             "event": {"type": "X", "code": "Y"}}
    assert config_edit.entry_text(entry, 4) == ('{code: "05", description: \'a, b: c # d\', days: 7, '
                                               'levels: [AGENT, ADMIN], event: {type: X, code: Y}}')


def test_two_saves_of_one_version_at_once_one_wins(config_dir, audit, tmp_path):
    """Both read the same version; the write lock makes check-and-write one step, so the second is a Conflict."""
    import threading

    screen = SCREENS["mandate-revision-codes"]
    before = config_edit.find(config_dir, screen, "B")
    outcomes, start = [], threading.Barrier(2)

    def edit(name: str) -> None:
        other = config_edit.ConfigAudit(tmp_path / "audit.sqlite")  # its own connection, as another worker has
        start.wait()
        try:
            config_edit.save(config_dir, other, screen, {**before, "name": name}, actor=name, security_level=None,
                             entry_id="B", expected_etag=config_edit.etag(before))
            outcomes.append(("saved", name))
        except config_edit.Conflict:
            outcomes.append(("conflict", name))

    threads = [threading.Thread(target=edit, args=(n,)) for n in ("Account closed (first)", "Account closed (2nd)")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(kind for kind, _ in outcomes) == ["conflict", "saved"]
    [winner] = [name for kind, name in outcomes if kind == "saved"]
    assert config_edit.find(config_dir, screen, "B")["name"] == winner
    assert [(c["actor"], c["after"]["name"]) for c in audit.changes()] == [(winner, winner)]


def test_a_default_names_only_configured_security_levels(config_dir, audit):
    screen = SCREENS["payment-term-defaults"]
    before = config_edit.find(config_dir, screen, "MANUAL")
    with pytest.raises(config_edit.Rejected) as typo:
        config_edit.save(config_dir, audit, screen, {**before, "security_levels": ["AGENT", "SUPERVSIOR"]}, actor="a",
                         security_level=None, entry_id="MANUAL", expected_etag=config_edit.etag(before))
    assert typo.value.fields == {"security_levels": "'SUPERVSIOR' is not one of security.yaml's security_levels "
                                                    "(CUSTOMER, AGENT, SUPERVISOR, ADMIN)"}
