"""`cmp-pipelines smtp-catcher` (what `make run` starts) keeps what the platform sends; `messages list|show`
read it back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from cmp_pipelines.cli.main import main
from cmp_pipelines.core.dispatcher import run_dispatcher
from cmp_pipelines.core.outbox import SmtpSettings
from cmp_pipelines.core.settings import PROJECT_ROOT
from tests.support.platform import NOW
from tests.support.smtp import free_port


@pytest.mark.e2e
def test_the_catcher_keeps_alerts_and_communications_and_messages_lists_them(platform):
    port = free_port()
    catcher = subprocess.Popen([sys.executable, "-m", "cmp_pipelines.cli", "smtp-catcher", "--port", str(port)],
                               env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert catcher.poll() is None and time.monotonic() < deadline, "the catcher did not start"
                time.sleep(0.2)
        with platform.connect() as con:
            con.execute("INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail) "
                        "VALUES ('HARDWARE_ORDER', 'ORDER_DISPATCH_ERROR', 'ACC00000007', 'ORD-7', 'lost')")
            summary = run_dispatcher(con, PROJECT_ROOT / "config", SmtpSettings("127.0.0.1", port), NOW)
        assert summary["messages_sent"] == 1
    finally:
        catcher.terminate()
        catcher.wait(timeout=10)
    runner = CliRunner()
    listed = runner.invoke(main, ["messages", "list"], catch_exceptions=False)
    assert listed.exit_code == 0
    [line] = listed.output.splitlines()
    assert line.startswith("   1  ") and "customer7@example.com" in line
    assert line.endswith("A problem with your order ORD-7")
    shown = runner.invoke(main, ["messages", "show", "1"], catch_exceptions=False)
    assert "Subject: A problem with your order ORD-7" in shown.output
    assert "Dear Demo customer 7," in shown.output and "your order ORD-7" in shown.output
    assert runner.invoke(main, ["messages", "show", "2"]).output.strip().endswith("message 2 not found")
    outbox = runner.invoke(main, ["messages", "outbox"], catch_exceptions=False)
    assert outbox.output.startswith("SENT     COMMUNICATION   1  customer7@example.com")


def test_the_catcher_listens_on_loopback_only(platform):
    result = CliRunner().invoke(main, ["smtp-catcher", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "the catcher keeps customer e-mail; it only listens on loopback" in result.output
