"""`cmp-pipelines worker` refuses what it cannot start with, before it replaces itself with a Celery worker (the
worker itself is exercised by tests/platform/test_run_workers*.py)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from cmp_pipelines.cli import main
from cmp_pipelines.lib.run_workers import BROKER_SETTING


def test_a_worker_needs_the_broker_and_queue_names_celery_can_take(monkeypatch):
    monkeypatch.setattr(os, "execv", lambda *args: pytest.fail(f"started a worker: {args}"))  # never replace pytest
    monkeypatch.delenv(BROKER_SETTING, raising=False)
    missing = CliRunner().invoke(main, ["worker"])
    assert missing.exit_code != 0 and f"{BROKER_SETTING} is not set" in missing.output

    monkeypatch.setenv(BROKER_SETTING, "redis://127.0.0.1:1/0")
    bad = CliRunner().invoke(main, ["worker", "--queue", "scheduled", "--queue", "a,b"])
    assert bad.exit_code != 0
    assert "--queue 'a,b': a queue name is letters, digits, '_', '.' or '-'" in bad.output
