"""The daemon's service sensors and jobs with PostgreSQL as the store (issue 19/20): the delivery sensor sees the
documents a flow registered in PostgreSQL and the delivery run sends them, the workflow dispatcher sends each
event's e-mail once even with two dispatchers at once (real loopback SMTP), and the probes read and record in
PostgreSQL, not in a run's scratch."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import dagster as dg
import pytest

from cmp_pipelines.core import delivery
from cmp_pipelines.core.db.pg_duck import pg_duck
from cmp_pipelines.core.dispatcher import run_dispatcher
from cmp_pipelines.core.outbox import SmtpSettings
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import build_definitions
from cmp_pipelines.defs.platform.delivery import delivery_sensor
from cmp_pipelines.defs.platform.notifications import workflow_dispatch_sensor
from tests.support.platform import SAMPLE_RECORDS, document

pytestmark = pytest.mark.postgres
CONFIG = PROJECT_ROOT / "config"


def sensor(evaluate, instance):
    with dg.build_sensor_context(instance=instance) as context:
        return evaluate(context)


def test_an_nrp_file_on_postgres_gets_its_documents_delivered_by_the_delivery_sensor_and_run(pg_platform, instance):
    assert sensor(delivery_sensor, instance).skip_message == "nothing to deliver"
    pg_platform.process(pg_platform.drop("PAYPOINT-20261121-001.json.enc", document(SAMPLE_RECORDS)))

    asked = sensor(delivery_sensor, instance)
    assert isinstance(asked, dg.SensorResult) and len(asked.run_requests) == 1, asked
    assert asked.run_requests[0].run_key.startswith("deliver:2-")  # the acknowledgement and the posting file
    job = build_definitions().resolve_job_def("deliver_documents_job")
    result = job.execute_in_process(instance=instance)
    assert result.success

    rows = pg_platform.query("SELECT partner, document_kind, remote_name, status, attempts, transport "
                             "FROM delivery_register ORDER BY document_kind")
    [(_, _, posting_name, *_), _] = rows
    assert rows == [("SALES_LEDGER", "LEDGER_POSTING", posting_name, "SENT", 1, "local"),
                    ("PAYPOINT", "NRP_ACKNOWLEDGEMENT", "PAYPOINT-20261121-001.ack.json.enc", "SENT", 1, "local")]
    delivered = pg_platform.root / "delivered"
    ack = (delivered / "PAYPOINT/PAYPOINT-20261121-001.ack.json.enc").read_bytes()
    assert ack == pg_platform.files.read_bytes("outbound/acknowledgements/nrp/PAYPOINT/"
                                               "PAYPOINT-20261121-001.ack.json.enc")
    assert (delivered / "SALES_LEDGER" / posting_name).read_bytes() == pg_platform.files.read_bytes(
        f"outbound/ledger/{posting_name}")
    # the delivery probes ran in the run and recorded their results in PostgreSQL
    assert pg_platform.query("SELECT probe_id, value, tripped FROM probe_results ORDER BY probe_id") == [
        ("deliveries_unconfirmed", 0, False), ("deliveries_undelivered", 0, False),
        ("ledger_posting_files_missing", 0, False)]
    # nothing due any more: the sensor asks for nothing, and the embedded file was never created
    assert sensor(delivery_sensor, instance).skip_message == "nothing to deliver"
    assert not (pg_platform.root / "cmp.duckdb").exists()


def test_two_deliverers_at_once_on_postgres_claim_each_document_once(pg_platform):
    pg_platform.process(pg_platform.drop("PAYPOINT-20261121-001.json.enc", document(SAMPLE_RECORDS)))
    start, claims = threading.Barrier(4), []

    def claim(worker: str) -> None:
        with pg_duck() as con:
            start.wait()
            claims.append((worker, [d.delivery_id for d in delivery.claim_due(con, worker, datetime.now(UTC))]))

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = sorted(i for _, ids in claims for i in ids)
    registered = [i for (i,) in pg_platform.query("SELECT delivery_id FROM delivery_register ORDER BY 1")]
    assert len(registered) == 2 and claimed == registered, claims
    holders = dict(pg_platform.query("SELECT delivery_id, claimed_by FROM delivery_register"))
    assert {holders[i] for _, ids in claims for i in ids} == {w for w, ids in claims if ids}


def raise_events(pg_platform, count: int) -> list[str]:
    """`count` card soft declines (an e-mail each) for accounts with an e-mail address; returns the accounts."""
    accounts = [a for (a,) in pg_platform.query(
        "SELECT account_number FROM accounts WHERE email IS NOT NULL AND account_number <> 'SUSPENSE' "
        "ORDER BY account_number LIMIT ?", [count])]
    for number, account in enumerate(accounts):
        pg_platform.execute("INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail) "
                            "VALUES ('RECURRING_PAYMENT', 'CARD_SOFT_DECLINE', ?, ?, 'declined')",
                            [account, f"TX-{number}"])
    return accounts


def test_two_dispatchers_at_once_on_postgres_send_each_events_email_once(pg_platform, smtp_server):
    accounts = raise_events(pg_platform, 6)
    assert len(accounts) == 6
    smtp_server.slow_seconds = 0.3  # the first dispatcher is still sending when the second starts
    start, summaries, errors = threading.Barrier(2), [], []
    now = datetime.now(UTC)  # one clock for both: what the first registers is due for the second too

    def dispatch() -> None:
        try:
            with pg_duck() as con:
                start.wait()
                summaries.append(run_dispatcher(con, CONFIG, SmtpSettings.from_env(), now))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=dispatch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(s["messages_sent"] for s in summaries) == [0, 6]
    assert sorted(s["events_registered"] for s in summaries) == [0, 6]
    assert sorted(r[0] for r, _ in smtp_server.messages) == sorted(
        e for (e,) in pg_platform.query("SELECT email FROM accounts WHERE account_number = ANY(?)", [accounts]))
    assert len({m["Message-ID"] for _, m in smtp_server.messages}) == 6
    assert pg_platform.query("SELECT status, count(*) FROM workflow_dispatch GROUP BY 1") == [("DONE", 6)]
    assert pg_platform.query("SELECT status, count(*), sum(attempts) FROM email_outbox GROUP BY 1") == [
        ("SENT", 6, 6)]


def test_the_dispatch_sensor_and_job_on_postgres(pg_platform, smtp_server, instance):
    assert sensor(workflow_dispatch_sensor, instance).skip_message == "nothing to dispatch"
    raise_events(pg_platform, 2)
    request = sensor(workflow_dispatch_sensor, instance)
    assert isinstance(request, dg.RunRequest) and request.tags["cmp/waiting"] == "2"
    job = build_definitions().resolve_job_def("workflow_dispatch_job")
    assert job.execute_in_process(instance=instance).success
    assert len(smtp_server.messages) == 2
    assert sensor(workflow_dispatch_sensor, instance).skip_message == "nothing to dispatch"
    assert not (pg_platform.root / "cmp.duckdb").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_probes_of_a_run_on_postgres_read_and_record_the_store_and_the_cli_shows_them(pg_platform, instance):
    from click.testing import CliRunner

    from cmp_pipelines.cli.main import main
    from cmp_pipelines.definitions import defs
    from cmp_pipelines.lib.headless import run_pending_sensors
    from tests.support.dagster import flow_runs

    # an earlier file, processed outside this run: a probe reading the run's scratch would not see it
    pg_platform.process(pg_platform.drop("earlier.json.enc", document(SAMPLE_RECORDS[:1], file_id="PP-000")))
    pg_platform.drop("PAYPOINT-20261121-001.json.enc", document(SAMPLE_RECORDS))
    assert [o.success for o in flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))] == [True]

    latest = dict(pg_platform.query(
        "SELECT DISTINCT ON (probe_id) probe_id, value FROM probe_results WHERE left(probe_id, 4) = 'nrp_' "
        "ORDER BY probe_id, evaluated_at DESC"))
    assert latest["nrp_load_completed"] == 2  # both files received today, as PostgreSQL holds them
    assert latest["nrp_batch_completed"] == 2  # the job ran twice today (the earlier file's posting included)
    assert latest["nrp_verification_normal"] == 6  # every record of both files within the window
    # the latest batch is the run's file: record 2 allocated to its account (4 went to suspense, 5 was rejected),
    # 1 and 3 to an invoice
    assert (latest["nrp_verification_account_allocation"], latest["nrp_verification_invoice_allocation"]) == (1, 2)
    assert pg_platform.query(
        "SELECT count(*) FILTER (WHERE allocation = 'ACCOUNT'), count(*) FILTER (WHERE allocation = 'INVOICE') "
        "FROM nrp_records r JOIN inbound_files f ON f.batch_id = r.batch_id "
        "WHERE f.file_name = 'PAYPOINT-20261121-001.json.enc'") == [(1, 2)]
    assert latest["nrp_verification_no_payment_dates"] == 1

    runner = CliRunner()
    shown = runner.invoke(main, ["probes", "--json"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    listed = {p["probe"]: p for p in json.loads(shown.output)}
    assert listed["nrp_load_completed"]["value"] == 2 and listed["nrp_load_completed"]["status"] == "OK"
    summary = runner.invoke(main, ["summary"], catch_exceptions=False)
    assert summary.exit_code == 0, summary.output
    assert "NRP_LOAD" in summary.output and "Probes:" in summary.output
    assert "Non Recurring Payments Load Completed" in summary.output


def test_a_refused_inbound_entry_on_postgres_is_a_job_error_there_and_trips_its_probe(pg_platform, instance):
    from cmp_pipelines.lib.inbound_refusals import ENTRY_TAG, FEED_TAG, REFUSED_TAG

    job = build_definitions().resolve_job_def("inbound_refusals_job")
    tags = {FEED_TAG: "nrp", ENTRY_TAG: "inbound/nrp/PAYPOINT/evil-link", REFUSED_TAG: "a symbolic link"}
    result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert pg_platform.query("SELECT job, category, source_ref, detail FROM job_errors") == [
        ("nrp", "INBOUND_REFUSED", "inbound/nrp/PAYPOINT/evil-link", "a symbolic link")]
    assert pg_platform.query("SELECT probe_id, value, tripped, notified FROM probe_results") == [
        ("inbound_entries_refused", 1, True, True)]
    [alert] = pg_platform.query("SELECT kind, source_ref, status FROM email_outbox")
    assert alert == ("ALERT", "inbound_entries_refused", "SENT")  # written as an .eml (no SMTP host configured)
    assert result.success


def test_sftp_pickup_on_postgres_records_each_file_in_the_store_and_takes_it_once(pg_platform, sftp_server,
                                                                                   tmp_path):
    import shutil

    import yaml

    from cmp_pipelines.core.config import load_partners
    from cmp_pipelines.core.transports import pickup_inbound

    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    partners_file = config / "partners.yaml"
    document_ = yaml.safe_load(partners_file.read_text())
    [paypoint] = [p for p in document_["partners"] if p["partner_id"] == "PAYPOINT"]
    paypoint["transport"] = sftp_server.transport(remote_folder="pg-to-paypoint",
                                                  pickup=[{"feed": "nrp", "remote_folder": "pg-from-paypoint"}])
    partners_file.write_text(yaml.safe_dump(document_))
    (sftp_server.root / "pg-from-paypoint").mkdir()
    (sftp_server.root / "pg-from-paypoint/PAYPOINT-1.json.enc").write_bytes(b"ciphertext as the partner sent it")
    partner = load_partners(config)["PAYPOINT"]

    for _ in range(2):  # the second poll finds nothing left to take
        with pg_duck() as con:
            outcomes = pickup_inbound(con, partner, pg_platform.root, pg_platform.root / "keys", datetime.now(UTC),
                                      store=pg_platform.files)
        assert all(o.error is None for o in outcomes), outcomes
    assert pg_platform.files.read_bytes("inbound/nrp/PAYPOINT/PAYPOINT-1.json.enc") == (
        b"ciphertext as the partner sent it")
    assert sftp_server.files("pg-from-paypoint") == {}
    assert pg_platform.query("SELECT feed, remote_path, local_path, removed_at IS NOT NULL FROM sftp_pickups") == [
        ("nrp", "pg-from-paypoint/PAYPOINT-1.json.enc", "inbound/nrp/PAYPOINT/PAYPOINT-1.json.enc", True)]


def test_the_sales_order_sensor_on_postgres_reads_postgres(pg_platform, instance):
    """On PostgreSQL the sales-order sensor asks PostgreSQL (never a DuckDB file left on disk, which would be
    stale): nothing awaiting generation, it says so; an order generated there becomes a request batch."""
    from tests.support.hardware import _hardware

    definitions = build_definitions()
    evaluate = definitions.get_sensor_def("sales_order_request_sensor")
    (pg_platform.root / "cmp.duckdb").touch()  # a stale file on disk is not read
    result = sensor(evaluate, instance)
    assert result.skip_reason.skip_message == "no order awaiting generation"
    assert not result.run_requests
    _hardware(pg_platform).order("ACC00000007", [("PR-CASE-X1", 1)])
    pg_platform.execute("UPDATE hw_orders SET generated_at = now()")  # by the sensor's clock: not a retry
    result = sensor(evaluate, instance)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [("SOR-00000001", "SOR-00000001")]


def test_the_recovery_sensor_records_a_partition_it_gives_up_on_in_postgres_once(pg_platform, instance):
    """A partition whose runs keep dying (every recovery run died too) is not retried again: the recovery sensor
    records a RECOVERY job error in PostgreSQL naming the job, the partition and the last run, once however many
    ticks see it."""
    from cmp_pipelines.lib.recovery import MAX_RECOVERIES, RECOVERY_OF_TAG, RECOVERY_SENSOR

    job = "sales_order_request_job"
    previous = None
    for _ in range(MAX_RECOVERIES + 1):  # the first run, then each recovery of the one before: all died
        tags = {"dagster/partition": "SOR-00000001", **({RECOVERY_OF_TAG: previous} if previous else {})}
        run = instance.create_run_for_job(build_definitions().resolve_job_def(job), tags=tags)
        instance.report_run_failed(run)  # ended with no step failure: a process that died
        previous = run.run_id
    evaluate = build_definitions().get_sensor_def(RECOVERY_SENSOR)
    for _ in range(2):
        result = sensor(evaluate, instance)
        assert not result.run_requests  # given up: no further run
    rows = pg_platform.query("SELECT job, category, source_ref, detail FROM job_errors WHERE category = 'RECOVERY'")
    assert rows == [(job, "RECOVERY", previous, f"{job} partition SOR-00000001: runs keep dying (last {previous}); "
                                                "not retried again - look at the run's logs and re-execute it "
                                                "from the UI")]


def test_events_retry_on_postgres_puts_a_failed_event_back_and_refuses_a_done_one(pg_platform):
    """`cmp-pipelines events retry` with CMP_DATABASE_URL changes PostgreSQL's dispatch rows: a FAILED event is
    PENDING again with its attempts reset and the configured action; a DONE one and an unknown id are refused."""
    from click.testing import CliRunner

    from cmp_pipelines.cli import main

    pg_platform.execute(
        "INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail) VALUES "
        "('DEVICE_ENROLMENT', 'ENROLMENT_FAILED', 'ACC00000001', 'DEV-1', 'refused'), "
        "('DEVICE_ENROLMENT', 'ENROLMENT_FAILED', 'ACC00000002', 'DEV-2', 'refused')")
    failed, done = [r[0] for r in pg_platform.query("SELECT event_id FROM workflow_events ORDER BY 1")]
    pg_platform.execute(
        "INSERT INTO workflow_dispatch (event_id, action, target, status, attempts, last_error, next_attempt_at, "
        "created_at, updated_at) VALUES (?, 'COMMUNICATION', 'old', 'FAILED', 5, 'SMTP refused', now(), now(), now()), "
        "(?, 'COMMUNICATION', 'old', 'DONE', 1, NULL, now(), now(), now())", [failed, done])
    runner = CliRunner()

    retried = runner.invoke(main, ["events", "retry", str(failed)])
    assert retried.exit_code == 0 and "1 event(s) will be dispatched again" in retried.output, retried.output
    [(status, attempts, last_error, action)] = pg_platform.query(
        "SELECT status, attempts, last_error, action FROM workflow_dispatch WHERE event_id = ?", [failed])
    assert (status, attempts, last_error, action) == ("PENDING", 0, None, "COMMUNICATION")
    refused = runner.invoke(main, ["events", "retry", str(done)])
    assert refused.exit_code == 1 and f"event {done} is DONE; its action is not repeated" in refused.output
    missing = runner.invoke(main, ["events", "retry", "999999"])
    assert missing.exit_code == 1 and "event 999999 does not exist" in missing.output
    assert pg_platform.query("SELECT status FROM workflow_dispatch ORDER BY event_id") == [("PENDING",), ("DONE",)]
