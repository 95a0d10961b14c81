"""`config changes`: the console's audit as the CLI shows it (who, when, what, before and after)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.core import config_edit
from cmp_pipelines.core.settings import PROJECT_ROOT


def test_config_changes_lists_the_console_audit(tmp_path, monkeypatch):
    config_dir, data_dir = tmp_path / "config", tmp_path / "data"
    shutil.copytree(PROJECT_ROOT / "config", config_dir)
    monkeypatch.setenv("CMP_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("CMP_DATA_DIR", str(data_dir))
    assert CliRunner().invoke(main, ["config", "changes"]).output == "no changes made through the console\n"

    data_dir.mkdir()
    audit = config_edit.ConfigAudit(config_edit.audit_path(data_dir))
    screen = config_edit.SCREENS["payment-terms"]
    before = config_edit.find(config_dir, screen, "IMM")
    at = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    config_edit.save(config_dir, audit, screen, {**before, "days_to_pay": 1}, actor="API client BACKOFFICE",
                     security_level="SUPERVISOR", entry_id="IMM", expected_etag=config_edit.etag(before), now=at)
    config_edit.save(config_dir, audit, screen, {"code": "D45", "description": "Within 45 days", "days_to_pay": 45},
                     actor="API client BACKOFFICE", security_level="SUPERVISOR", now=at)

    shown = CliRunner().invoke(main, ["config", "changes"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines() == [
        '#2 2026-12-02T09:30:00+00:00 API client BACKOFFICE (SUPERVISOR) ADD payment_terms.yaml payment_terms[D45]: '
        'code: null -> "D45", days_to_pay: null -> 45, description: null -> "Within 45 days"',
        '#1 2026-12-02T09:30:00+00:00 API client BACKOFFICE (SUPERVISOR) EDIT payment_terms.yaml payment_terms[IMM]: '
        'days_to_pay: 0 -> 1']
    only = json.loads(CliRunner().invoke(main, ["config", "changes", "--entry", "IMM", "--json"]).output)
    assert [(c["change_id"], c["before"]["days_to_pay"], c["after"]["days_to_pay"]) for c in only["changes"]] == [
        (1, 0, 1)]
