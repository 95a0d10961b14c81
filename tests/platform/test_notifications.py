"""The Dagster side of issue 17's alerts and dispatcher, against a real loopback SMTP server: a failed run alerts
its feed's recipients once (card numbers masked), a quarantined file alerts once, the dispatcher job and its
sensor, the events CLI and GET /v1/accounts/{acc}/events."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest
from click.testing import CliRunner

from cmp_pipelines.cli.main import main
from cmp_pipelines.core import alerts
from cmp_pipelines.core.dispatcher import run_dispatcher
from cmp_pipelines.core.outbox import SmtpSettings
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import build_definitions
from cmp_pipelines.defs.platform.notifications import run_failure_alert_sensor, workflow_dispatch_sensor
from cmp_pipelines.lib.resources.database import Database
from tests.support.platform import NOW, document, payment
from tests.support.smtp import text_of

PAN = "4111111111111111"
CONFIG = PROJECT_ROOT / "config"


@dg.op
def explode():
    raise RuntimeError(f"the provider answered garbage for card {PAN}")


@dg.job(tags={"cmp/feed": "arudd"})
def arudd_like_job():
    explode()


def failure_context(instance, platform, result):
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor", dagster_event=result.get_run_failure_event(),
        dagster_instance=instance, dagster_run=result.dagster_run,
    ).for_run_failure()


def test_a_failed_run_alerts_its_feeds_recipients_once(platform, smtp_server, instance):
    result = arudd_like_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = failure_context(instance, platform, result)
    run_failure_alert_sensor(context)
    run_failure_alert_sensor(context)  # the sensor sees the same failure again: one alert
    assert smtp_server.messages == [], "the sensor only spools: it never waits on the store"
    [spooled] = alerts.spooled_failures()
    assert PAN not in spooled.read_text()
    with platform.connect() as con:
        assert run_dispatcher(con, CONFIG, SmtpSettings.from_env(), NOW)["run_failure_alerts_queued"] == 1
        assert alerts.spooled_failures() == []
        assert run_dispatcher(con, CONFIG, SmtpSettings.from_env(), NOW)["messages_sent"] == 0
    [(recipients, message)] = smtp_server.messages
    assert recipients == ["billing-ops@example.com", "direct-debit@example.com"]
    assert message["Subject"] == "[CMP ALERT] run failed: arudd_like_job"
    assert message["Message-ID"] == f"<cmp-alert-run-failure-{result.run_id}@cmp-pipelines.local>"
    body = text_of(message)
    assert f"Run {result.run_id} of job arudd_like_job failed at 20" in body
    assert "explode: RuntimeError: the provider answered garbage for card ************1111" in body
    assert PAN not in body
    assert platform.query("SELECT status, source_ref FROM email_outbox") == [("SENT", f"run:{result.run_id}")]


@pytest.mark.postgres
def test_on_postgres_a_failed_run_is_alerted_through_the_store_not_a_spool_on_the_daemons_disk(
        pg_platform, smtp_server, instance):
    """Runs execute on other machines there (Celery workers): a spool on the daemon's disk would never be drained by
    the dispatcher's run, which executes elsewhere (the run-worker test found failures spooled and never sent)."""
    result = arudd_like_job.execute_in_process(instance=instance, raise_on_error=False)
    context = failure_context(instance, pg_platform, result)
    run_failure_alert_sensor(context)
    run_failure_alert_sensor(context)  # the same failure seen again: one alert
    assert alerts.spooled_failures() == [] and not (pg_platform.root / "spool").exists()
    assert pg_platform.query("SELECT kind, status, source_ref FROM email_outbox") == [
        ("ALERT", "PENDING", f"run:{result.run_id}")]
    with Database().service() as con:  # the dispatcher's run, on whichever machine
        assert run_dispatcher(con, CONFIG, SmtpSettings.from_env(), datetime.now(UTC))["messages_sent"] == 1
    [(recipients, message)] = smtp_server.messages
    assert recipients == ["billing-ops@example.com", "direct-debit@example.com"]
    assert message["Subject"] == "[CMP ALERT] run failed: arudd_like_job"
    body = text_of(message)
    assert "explode: RuntimeError: the provider answered garbage for card ************1111" in body
    assert PAN not in body


def test_a_quarantined_file_alerts_once_and_its_failed_run_does_not_alert_twice(platform, smtp_server, instance):
    platform.keyring.init_keys("ACME")
    key = platform.drop("acme.json.enc", document([payment("1", "ACC00000001", "1.00")], sender="ACME"),
                        partner="ACME")
    quarantined = platform.quarantine(key)
    job = build_definitions().resolve_job_def("workflow_dispatch_job")
    assert job.execute_in_process(instance=instance).success
    assert job.execute_in_process(instance=instance).success
    [(recipients, message)] = smtp_server.messages
    assert recipients == ["billing-ops@example.com", "payments-partners@example.com"]
    assert message["Subject"] == "[CMP ALERT] nrp file quarantined: ACME/acme.json.enc"
    body = text_of(message)
    assert f"Reason: {quarantined.code} - {quarantined.message}" in body
    assert "nothing in it was processed" in body

    @dg.op
    def quarantining():
        raise dg.Failure(description=f"File quarantined ({quarantined.code}): {quarantined.message}")

    @dg.job(tags={"cmp/feed": "nrp"})
    def nrp_like_job():
        quarantining()

    failed = nrp_like_job.execute_in_process(instance=instance, raise_on_error=False)
    skipped = run_failure_alert_sensor(failure_context(instance, platform, failed))
    assert isinstance(skipped, dg.SkipReason) and "the quarantine alert covers it" in skipped.skip_message
    assert len(smtp_server.messages) == 1


def test_the_dispatch_sensor_asks_for_a_run_only_when_work_waits(platform, instance):
    with dg.build_sensor_context(instance=instance,  # entered, as the daemon enters it (the resource tears down)
                                 resources={"database": Database(path=str(platform.database))}) as context:
        assert workflow_dispatch_sensor(context).skip_message == "nothing to dispatch"
        with platform.connect() as con:
            con.execute("INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail) "
                        "VALUES ('DEVICE_ENROLMENT', 'ENROLMENT_FAILED', 'ACC00000001', 'DEV-1', 'refused')")
        request = workflow_dispatch_sensor(context)
    assert isinstance(request, dg.RunRequest) and request.tags["cmp/waiting"] == "1"


@pytest.fixture
def cli(platform):
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def test_events_cli_lists_shows_retries_and_dispatches(platform, smtp_server, cli):
    with platform.connect() as con:
        con.execute("INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail) VALUES "
                    "('DEVICE_ENROLMENT', 'ENROLMENT_FAILED', 'ACC00000001', 'DEV-1', 'refused'), "
                    "('ODD', 'THING', 'ACC00000002', 'X', 'no action for me')")
        first, second = [r[0] for r in con.execute("SELECT event_id FROM workflow_events ORDER BY 1").fetchall()]
    listed = cli("events", "list")
    assert listed.exit_code == 0 and listed.output.count(" NEW ") == 2
    dispatched = cli("events", "dispatch")
    assert '"messages_sent": 1' in dispatched.output and '"actions_failed": 0' in dispatched.output
    [(recipients, message)] = smtp_server.messages
    assert recipients == ["customer1@example.com"]
    assert message["Subject"] == "We could not register your device DEV-1"
    shown = cli("events", "show", str(first))
    assert "status: DONE" in shown.output and "action: COMMUNICATION" in shown.output
    assert f"e-mail: <cmp-communication-event-{first}@cmp-pipelines.local> SENT to customer1@example.com" \
        in shown.output
    failed = cli("events", "list", "--status", "FAILED")
    assert f"{second:>6}  FAILED" in failed.output and "ODD/THING" in failed.output
    refused = cli("events", "retry", str(first))
    assert refused.exit_code == 1 and f"event {first} is DONE; its action is not repeated" in refused.output
    missing = cli("events", "show", "999999")
    assert missing.exit_code == 1 and "event 999999 not found" in missing.output
    cli("events", "dispatch")
    assert len(smtp_server.messages) == 1, "a second dispatch sends nothing twice"


def test_account_events_over_the_api(api, platform):
    with platform.connect() as con:
        con.execute("INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail) VALUES "
                    "('HARDWARE_ORDER', 'FRAUD_CHECK_FAILED', 'ACC00000005', 'ORD-5', 'fraud check failed')")
        con.execute("INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, "
                    "reason_type, reason_code, new_payment_type) VALUES ('RECURRING_PAYMENT', "
                    "'CARD_HARD_DECLINE_REFUND', 'ACC00000007', 'TX-7', 'HARD_DECLINE: reason 41', 'CARD_DECLINE', "
                    "'LOST_CARD', 'DIRECT_DEBIT')")
        run_dispatcher(con, CONFIG, SmtpSettings(None), NOW)
    api.publish()
    with api.client() as client:
        answer = client.get("/v1/accounts/ACC00000005/events")
        assert answer.status_code == 200
        body = answer.json()
        [event] = body["events"]
        assert (event["event_type"], event["event_code"], event["source_ref"], event["status"], event["action"],
                event["target"], event["result"]) == ("HARDWARE_ORDER", "FRAUD_CHECK_FAILED", "ORD-5", "DONE",
                                                      "OPERATOR_TASK", "FRAUD_REVIEW",
                                                      "operator task opened in queue FRAUD_REVIEW")
        assert (event["reason_type"], event["reason_code"], event["new_payment_type"]) == (None, None, None)
        [declined] = client.get("/v1/accounts/ACC00000007/events").json()["events"]
        assert (declined["event_code"], declined["reason_type"], declined["reason_code"],
                declined["new_payment_type"]) == ("CARD_HARD_DECLINE_REFUND", "CARD_DECLINE", "LOST_CARD",
                                                  "DIRECT_DEBIT")
        assert client.get("/v1/accounts/ACC00000006/events").json()["events"] == []
        assert client.get("/v1/accounts/ACC00000005/events", params={"status": "FAILED"}).json()["events"] == []
        missing = client.get("/v1/accounts/ACC99999999/events")
        assert missing.status_code == 404 and missing.json()["detail"] == "account ACC99999999 does not exist"
    with api.client(key="") as anonymous:
        assert anonymous.get("/v1/accounts/ACC00000005/events").status_code == 401
