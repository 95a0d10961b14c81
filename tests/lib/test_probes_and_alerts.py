"""Probes as asset checks; alerts over a real SMTP exchange on loopback; the SLA probe never e-mails."""

from __future__ import annotations

import email

import dagster as dg
import pytest
from aiosmtpd.controller import Controller

from cmp_pipelines.core import probe_queries as probe_service
from cmp_pipelines.core.config import load_probes
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import build_definitions
from tests.support.platform import NOW, document, payment
from tests.support.smtp import free_port


@pytest.fixture
def smtp(smtp_server):
    """The shared loopback SMTP server (tests/support/smtp.py) under the name these tests use."""
    return smtp_server


def run_probes(instance):
    result = build_definitions().resolve_job_def("non_recurring_payment_probes_job").execute_in_process(
        instance=instance
    )
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_end_of_day_probes_alert_by_smtp_when_nothing_arrived(platform, smtp, tmp_path, instance):
    evaluations = run_probes(instance)
    assert len(evaluations) == 9, "the eight CMP probes and the suspected-duplicates probe (issue 18)"
    assert evaluations["nrp_suspected_duplicates_held_within_threshold"].passed
    load = evaluations["nrp_load_completed_within_threshold"]
    assert not load.passed and load.severity == dg.AssetCheckSeverity.WARN
    assert load.metadata["value"].value == 0 and load.metadata["threshold"].value == 0
    assert load.metadata["cmp_probe"].value == "Non Recurring Payments Load Completed"
    subjects = sorted(message["Subject"] for _, message in smtp.messages)
    assert subjects == [
        "[CMP ALERT] Non Recurring Payments Batch Completed",
        "[CMP ALERT] Non Recurring Payments Load Completed",
    ]
    recipients = {message["Subject"]: rcpt for rcpt, message in smtp.messages}
    assert recipients["[CMP ALERT] Non Recurring Payments Load Completed"] == [
        "billing-ops@example.com", "payments-partners@example.com"
    ]
    body = next(m for _, m in smtp.messages if "Load Completed" in m["Subject"]).get_payload()
    assert "value 0, threshold 0" in body


def test_sla_probe_breach_is_recorded_without_email(platform, smtp, tmp_path, instance):
    platform.keyring.init_keys("ACME")
    key = platform.drop("acme.json.enc", document([payment("1", "ACC00000001", "1.00")], sender="ACME"),
                        partner="ACME")
    platform.quarantine(key)
    evaluations = run_probes(instance)
    sla = evaluations["nrp_batch_completed_sla_within_threshold"]
    assert not sla.passed and sla.severity == dg.AssetCheckSeverity.ERROR
    assert sla.metadata["value"].value == 1
    assert not any("SLA" in message["Subject"] for _, message in smtp.messages)
    with platform.connect() as con:
        latest = {row[0]: row for row in probe_service.latest(con)}
    assert latest["nrp_batch_completed_sla"][3:7] == (1, 0, True, False)


def test_batch_probes_count_the_latest_batch(platform):
    records = [payment("1", "ACC00000001", "1.00", "INV000000011"), payment("2", "ACC00000002", "2.00"),
               payment("3", "ACC00000003", "3.00", payment_date=None)]
    platform.process(platform.drop("probe.json.enc", document(records)))
    platform.process(platform.drop("empty.json.enc", document([], file_id="EMPTY")))
    with platform.connect() as con:
        values = {o.probe.probe_id: o.value for o in probe_service.evaluate(
            con, load_probes(PROJECT_ROOT / "config"), NOW)}
    assert values["nrp_load_completed"] == 2
    assert values["nrp_batch_completed"] == 2
    assert values["nrp_verification_payments_supplied"] == 1
    assert values["nrp_verification_normal"] == 3
    # the most recent batch is the empty one
    assert values["nrp_verification_invoice_allocation"] == 0


def test_alert_without_smtp_writes_an_eml_file(platform, tmp_path, instance):
    run_probes(instance)
    alerts = sorted((tmp_path / "outbound" / "alerts").glob("*.eml"))
    assert len(alerts) == 2
    message = email.message_from_bytes(alerts[0].read_bytes())
    assert message["Subject"].startswith("[CMP ALERT] Non Recurring Payments")
    assert "billing-ops@example.com" in message["To"]


def test_a_tripped_probe_alerts_once_a_day_not_on_every_run(platform, smtp, tmp_path, instance):
    run_probes(instance)
    assert len(smtp.messages) == 2
    run_probes(instance)
    assert len(smtp.messages) == 2, "still tripped the same day: no second e-mail"


def test_alert_is_queued_not_notified_when_smtp_is_down_and_sent_once_later(platform, monkeypatch, instance):
    """Issue 17: an SMTP failure was recorded as notified and never retried."""
    from datetime import timedelta

    from cmp_pipelines.core import outbox
    from tests.support.smtp import Inbox

    port = free_port()
    monkeypatch.setenv("CMP_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CMP_SMTP_PORT", str(port))  # nothing listens there yet
    evaluations = run_probes(instance)
    notified = evaluations["nrp_load_completed_within_threshold"].metadata["notified"].value
    assert notified.startswith("queued <cmp-alert-nrp_load_completed-") and "(retried)" in notified
    assert not (platform.root / "outbound" / "alerts").exists(), "no .eml stands in for an undelivered alert"
    with platform.connect() as con:
        latest = {row[0]: row for row in probe_service.latest(con)}
        assert latest["nrp_load_completed"][5:7] == (True, False), "tripped, NOT notified"
        queued = con.execute("SELECT status, attempts, last_error FROM email_outbox ORDER BY message_id").fetchall()
    assert [(s, a) for s, a, _ in queued] == [("PENDING", 1), ("PENDING", 1)]
    assert queued[0][2].startswith(f"cannot reach smtp://127.0.0.1:{port}: ConnectionRefusedError")
    run_probes(instance)  # still tripped today: the queued alert counts, no second one
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with platform.connect() as con:
            settings = outbox.SmtpSettings.from_env()
            from datetime import UTC, datetime

            queued_at = con.execute("SELECT max(created_at) FROM email_outbox").fetchone()[0]
            assert outbox.deliver(con, settings, queued_at).sent == {}, "not due yet: the backoff holds it"
            later = max(queued_at, datetime.now(UTC)) + timedelta(minutes=2)
            assert len(outbox.deliver(con, settings, later).sent) == 2
            assert outbox.deliver(con, settings, later + timedelta(hours=2)).sent == {}
    finally:
        controller.stop()
    assert sorted(m["Subject"] for _, m in inbox.messages) == [
        "[CMP ALERT] Non Recurring Payments Batch Completed", "[CMP ALERT] Non Recurring Payments Load Completed"]


def test_every_batch_kind_is_known_to_have_a_posting_file_or_not():
    """A new batch kind must be placed: the probe ledger_posting_files_missing counts only the kinds written to the
    sales ledger as a posting file (a kind left out is never flagged; one put in wrongly is flagged for ever)."""
    from cmp_pipelines.core.ledger import BATCH_PREFIXES, POSTING_FILE_KINDS

    without_file = {"NRP_LOAD", "CARD_EXTRACT", "CARD_REJECTIONS", "DD_COLLECTION", "DD_RETURNS",
                    "WAREHOUSE_DISPATCH", "BILLING_LOAD", "INVOICES"}
    assert set(POSTING_FILE_KINDS) | without_file == set(BATCH_PREFIXES)
    assert not set(POSTING_FILE_KINDS) & without_file
