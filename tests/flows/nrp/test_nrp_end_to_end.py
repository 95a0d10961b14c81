"""From an encrypted file in the inbound folder, through the sensor and the Dagster run, to the ledger."""

from __future__ import annotations

import shutil
from datetime import timedelta

import dagster as dg
import orjson
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from cmp_pipelines.core import probe_queries
from cmp_pipelines.core.config import load_payment_terms, load_probes
from cmp_pipelines.core.invoicing import issue_invoice
from cmp_pipelines.core.probes import PROBES_BY_ID
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import build_definitions, defs
from cmp_pipelines.defs.nrp.defs import nrp_inbound_files_sensor
from cmp_pipelines.defs.platform.delivery import delivery_sensor
from cmp_pipelines.lib.headless import MODULE_NAME, run_pending_sensors
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.dagster import flow_runs
from tests.support.platform import SAMPLE_RECORDS, document

# Whole runs through Dagster (sensors, jobs, run-pending): left out of `make test-fast`.
pytestmark = pytest.mark.e2e

RECORDS = SAMPLE_RECORDS


def run_sensor(instance, definitions=None):
    definitions = defs if definitions is None else definitions
    return flow_runs(run_pending_sensors(definitions, instance, echo=lambda _: None))


def test_file_to_ledger_and_acknowledgement(platform, instance):
    charges = {a: platform.balance(a) for a in ("ACC00000001", "ACC00000002", "ACC00000003")}
    platform.drop("PAYPOINT-20261121-001.json.enc", document(RECORDS))

    outcomes = run_sensor(instance)

    assert [o.success for o in outcomes] == [True]
    # the run's one connection closed with the run, and its close checkpointed: nothing left in the store's log
    wal = platform.database.with_name(platform.database.name + ".wal")
    assert not wal.exists() or wal.stat().st_size == 0, wal.stat().st_size
    assert platform.balance("ACC00000001") == charges["ACC00000001"] - 1000
    assert platform.balance("ACC00000002") == charges["ACC00000002"] - 550
    assert platform.balance("ACC00000003") == charges["ACC00000003"] - 1
    assert platform.balance("SUSPENSE") == -2000
    assert not platform.files.list_files("inbound/nrp")
    assert platform.files.exists("archive/nrp/PAYPOINT/" + _today() + "/PAYPOINT-20261121-001.json.enc")

    ack = platform.read_ack("PAYPOINT", "PAYPOINT-20261121-001")
    assert ack["header"]["status"] == "PROCESSED"
    assert (ack["header"]["accepted_count"], ack["header"]["rejected_count"]) == (4, 1)
    assert ack["header"]["accepted_amount"] == "35.51"
    assert [(r["record_id"], r["outcome"], r["allocation"], r["amount"]) for r in ack["records"]] == [
        ("1", "ACCEPTED", "INVOICE", "10.00"),
        ("2", "ACCEPTED", "ACCOUNT", "5.50"),
        ("3", "ACCEPTED", "INVOICE", "0.01"),
        ("4", "ACCEPTED", "SUSPENSE", "20.00"),
        ("5", "REJECTED", None, None),
    ]
    assert ack["records"][4]["reason_code"] == "AMOUNT_NEGATIVE"

    posting_files = platform.files.list_files("outbound/ledger")
    assert len(posting_files) == 1
    posting_file = orjson.loads(platform.files.read_bytes(posting_files[0].path))
    assert posting_file["header"]["record_count"] == 4 and posting_file["header"]["total_amount"] == "-35.51"
    assert sorted(p["amount"] for p in posting_file["postings"]) == ["-0.01", "-10.00", "-20.00", "-5.50"]

    run = instance.get_run_by_id(outcomes[0].run_id)
    assert run.tags["dagster/partition"] == outcomes[0].partition_key
    checks = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("nrp_posting_batch"), "nrp_verification_no_payment_dates_within_threshold"),
        limit=1,
    )
    assert checks, "the probes run as asset checks in the same run"

    # the acknowledgement and the posting file never wait for the probes or the expectation suite (issue 16); the
    # partner's acknowledgement goes as soon as the payments are posted, before our posting file
    started = [r.event_log_entry.dagster_event.step_key for r in instance.get_records_for_run(
        outcomes[0].run_id, of_type=dg.DagsterEventType.STEP_START).records]
    assets = ["nrp_payments_batch", "nrp_posting_batch", "nrp_acknowledgement", "nrp_ledger_posting_file"]
    assert started[:4] == assets and started[-1] == "nrp_payments_batch_nrp_payments_meet_expectations", started
    assert set(started[4:]) == {"nrp_probes", "nrp_duplicate_probes",
                                "nrp_payments_batch_nrp_payments_meet_expectations"}


def _today():
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%d")


def test_sensor_requests_one_run_per_file_and_keeps_a_high_water_mark(platform, instance):
    platform.drop("a.json.enc", document(RECORDS[:1], file_id="A"))
    platform.drop("b.json.enc", document(RECORDS[1:2], file_id="B"), partner="LOCKBOX", encrypt_for="LOCKBOX")
    definitions = build_definitions()
    context = dg.build_sensor_context(instance=instance, resources={"file_store": LocalFileStore()})
    result = nrp_inbound_files_sensor(context)
    assert sorted(r.partition_key.split("@")[0] for r in result.run_requests) == [
        "LOCKBOX/b.json.enc", "PAYPOINT/a.json.enc"
    ]
    assert all(r.run_key.startswith(r.partition_key) for r in result.run_requests)
    again = nrp_inbound_files_sensor(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"file_store": LocalFileStore()})
    )
    assert again.run_requests == [], "a file already requested is not requested again"
    assert definitions.get_sensor_def("nrp_inbound_files_sensor").default_status == dg.DefaultSensorStatus.RUNNING


def test_rerunning_a_partition_posts_nothing_twice(platform, instance):
    platform.drop("rerun.json.enc", document(RECORDS))
    [first] = run_sensor(instance)
    balance = platform.balance("ACC00000001")
    postings = platform.payment_postings()
    job = build_definitions().resolve_job_def("non_recurring_payment_job")
    result = job.execute_in_process(instance=instance, partition_key=first.partition_key)
    assert result.success
    assert platform.balance("ACC00000001") == balance
    assert platform.payment_postings() == postings == 4
    assert platform.read_ack("PAYPOINT", "rerun")["header"]["accepted_count"] == 4


def test_redropping_a_processed_file_is_reported_as_duplicate(platform, instance):
    doc = document(RECORDS)
    platform.drop("one.json.enc", doc)
    run_sensor(instance)
    balance = platform.balance("ACC00000002")
    platform.drop("one-again.json.enc", doc)
    [outcome] = run_sensor(instance)
    assert not outcome.success and "DUPLICATE_FILE" in outcome.error
    assert platform.balance("ACC00000002") == balance
    assert platform.files.exists("quarantine/nrp/PAYPOINT/one-again.json.enc.error.json")


class AckFailsOnce(LocalFileStore):
    """A disk that fails when the acknowledgement is written: the crash between posting and acknowledging."""

    def write_bytes(self, path: str, data: bytes) -> str:
        if "acknowledgements" in path:
            raise OSError("injected failure: disk full while writing the acknowledgement")
        return super().write_bytes(path, data)

    def write_parts(self, path: str, parts) -> str:
        if "acknowledgements" in path:
            raise OSError("injected failure: disk full while writing the acknowledgement")
        return super().write_parts(path, parts)


def test_resume_after_failure_between_posting_and_acknowledgement(platform, instance):
    charges = platform.balance("ACC00000001")
    platform.drop("crash.json.enc", document(RECORDS))
    [failed] = run_sensor(instance, build_definitions({"file_store": AckFailsOnce()}))
    assert not failed.success and "injected failure" in failed.error
    assert platform.balance("ACC00000001") == charges - 1000, "postings were committed before the crash"
    assert not platform.files.list_files("outbound/acknowledgements")

    job = build_definitions().resolve_job_def("non_recurring_payment_job")
    assert job.execute_in_process(instance=instance, partition_key=failed.partition_key).success
    assert platform.balance("ACC00000001") == charges - 1000
    assert platform.payment_postings() == 4
    assert platform.read_ack("PAYPOINT", "crash")["header"]["accepted_count"] == 4


def test_quarantined_file_fails_its_run_with_the_reason_and_other_files_go_on(platform, instance):
    platform.drop("bad.json.enc", b"not encrypted at all", raw=True)
    platform.drop("good.json.enc", document(RECORDS[:1]))
    outcomes = run_sensor(instance)
    by_file = {o.partition_key.split("@")[0]: o for o in outcomes}
    assert not by_file["PAYPOINT/bad.json.enc"].success
    assert "NOT_ENCRYPTED" in by_file["PAYPOINT/bad.json.enc"].error
    assert by_file["PAYPOINT/good.json.enc"].success
    assert platform.payment_postings() == 1


class PostingFileFails(LocalFileStore):
    """A disk that fails when the posting file for the sales ledger is written, after the acknowledgement went."""

    def _refuse(self, path: str) -> None:
        if path.startswith("outbound/ledger/"):
            raise OSError("injected failure: disk full while writing the posting file")

    def write_bytes(self, path: str, data: bytes) -> str:
        self._refuse(path)
        return super().write_bytes(path, data)

    def write_parts(self, path: str, parts) -> str:
        self._refuse(path)
        return super().write_parts(path, parts)

    def write_from(self, path: str, produce) -> str:
        self._refuse(path)
        return super().write_from(path, produce)


def test_a_posting_batch_left_without_its_file_trips_the_probe_until_the_run_is_reexecuted(platform, instance,
                                                                                            tmp_path, monkeypatch):
    """The acknowledgement goes before the posting file (the partner never sees our file): a run that fails
    between them has posted and acknowledged, and only this probe says the sales ledger is still waiting."""
    platform.drop("nofile.json.enc", document(RECORDS))
    [failed] = run_sensor(instance, build_definitions({"file_store": PostingFileFails(base_dir=str(platform.root))}))
    assert not failed.success and "while writing the posting file" in failed.error
    assert platform.read_ack("PAYPOINT", "nofile")["header"]["accepted_count"] == 4
    assert platform.payment_postings() == 4 and not platform.files.list_files("outbound/ledger")

    configs = load_probes(PROJECT_ROOT / "config")
    probe = (PROBES_BY_ID["ledger_posting_files_missing"],)
    minutes = configs["ledger_posting_files_missing"].older_than_minutes
    (created,) = platform.query("SELECT created_at FROM batches WHERE kind = 'NRP_POSTING'")[0]

    def missing(after: timedelta) -> tuple[int, bool]:
        with platform.connect() as con:
            [outcome] = probe_queries.evaluate(con, configs, created + after, probes=probe)
        return outcome.value, outcome.tripped

    assert missing(timedelta(minutes=minutes - 1)) == (0, False)  # a run still writing it is not flagged
    assert missing(timedelta(minutes=minutes + 1)) == (1, True)
    with platform.connect() as con:  # the API's invoices of the day post in a batch that never has a file
        issue_invoice(con, "ACC00000002", {"invoice_number": "INV-API-1", "amount": "12.00",
                                           "issue_date": created.date().isoformat()},
                      terms=load_payment_terms(PROJECT_ROOT / "config"), client_id="BILLING",
                      idempotency_key="probe-1", now=created)
    assert platform.query("SELECT count(*) FROM batches b JOIN ledger_postings l USING (batch_id) "
                          "WHERE b.kind = 'INVOICES' AND b.output_path IS NULL") == [(1,)]
    assert missing(timedelta(minutes=minutes + 1)) == (1, True), "the invoice batch is not counted"

    # nothing left to deliver, yet the delivery sensor asks for a run an hour (the run evaluates the probe) while
    # the batch has waited longer than the probe's age
    run_pending_sensors(defs, instance, echo=lambda _: None)  # the acknowledgement delivered
    with dg.build_sensor_context(instance=instance) as context:
        asked = delivery_sensor(context)
    assert isinstance(asked, dg.SkipReason) and asked.skip_message == "nothing to deliver", asked
    platform.query("UPDATE batches SET created_at = created_at - INTERVAL 2 HOUR WHERE kind = 'NRP_POSTING'")
    with dg.build_sensor_context(instance=instance) as context:
        asked = delivery_sensor(context)
    [request] = asked.run_requests
    assert request.run_key.startswith("unfiled:1:")
    # a probes.yaml that does not load never stops deliveries: the check is skipped, the sensor goes on
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    probes_yaml = config / "probes.yaml"
    probes_yaml.write_text(probes_yaml.read_text().replace("ledger_posting_files_missing:", "unknown_probe:"))
    monkeypatch.setenv("CMP_CONFIG_DIR", str(config))
    with dg.build_sensor_context(instance=instance) as context:
        asked = delivery_sensor(context)
    assert isinstance(asked, dg.SkipReason) and asked.skip_message == "nothing to deliver", asked
    monkeypatch.delenv("CMP_CONFIG_DIR")

    job = ReconstructableRepository.for_module(MODULE_NAME, "defs", str(PROJECT_ROOT)).get_reconstructable_job(
        instance.get_run_by_id(failed.run_id).job_name)
    with dg.execute_job(job, instance, tags={"dagster/partition": failed.partition_key},
                        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance)) as again:
        assert again.success
    [posting_file] = platform.files.list_files("outbound/ledger")
    assert orjson.loads(platform.files.read_bytes(posting_file.path))["header"]["record_count"] == 4
    assert platform.payment_postings() == 4
    assert missing(timedelta(minutes=minutes + 1)) == (0, False)


class InboundUnreadable(LocalFileStore):
    """A share that fails while the run works (the sensor could still list and hash the file)."""

    def exists(self, path: str) -> bool:
        if path.startswith("inbound/"):
            raise OSError("injected failure: the inbound share went away")
        return super().exists(path)


def test_a_run_that_failed_on_a_transient_error_is_not_relaunched_and_a_reexecution_loses_nothing(platform, instance):
    """As under the daemon: the failed run's key is spent (the next run-pending asks for nothing), the file waits in
    the inbound folder, and the operator's re-execution of the failed run (the UI's "Re-execute from failure")
    posts it once. (The sensor itself asks again for a file left 15 minutes, test_sensor_requests_a_stuck_file...)"""
    platform.drop("flaky.json.enc", document(RECORDS))
    broken = build_definitions({"file_store": InboundUnreadable(base_dir=str(platform.root))})
    [failed] = flow_runs(run_pending_sensors(broken, instance, echo=lambda _: None))
    assert not failed.success and "the inbound share went away" in failed.error
    assert platform.files.exists("inbound/nrp/PAYPOINT/flaky.json.enc"), "the file waits in the inbound folder"
    assert run_sensor(instance) == [], "a run key is launched once, even when its run failed"
    assert platform.payment_postings() == 0

    job = ReconstructableRepository.for_module(MODULE_NAME, "defs", str(PROJECT_ROOT)).get_reconstructable_job(
        instance.get_run_by_id(failed.run_id).job_name)
    with dg.execute_job(job, instance, tags={"dagster/partition": failed.partition_key},  # the UI copies them
                        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance)) as again:
        assert again.success and again.dagster_run.tags["dagster/partition"] == failed.partition_key
    assert platform.payment_postings() == 4
    assert not platform.files.exists("inbound/nrp/PAYPOINT/flaky.json.enc")
    assert run_sensor(instance) == []


def test_sensor_requests_a_stuck_file_again_after_a_while(platform):
    from cmp_pipelines.core.inbound import STALE_AFTER_SECONDS, scan

    platform.drop("stuck.json.enc", document(RECORDS[:1]))
    first, _, cursor = scan(platform.files, "nrp", None)
    assert len(first) == 1
    assert scan(platform.files, "nrp", cursor)[0] == []
    changed = platform.files.list_files("inbound/nrp")[0].changed_ns
    later = changed + (STALE_AFTER_SECONDS + 1) * 10**9
    [again], _, same_cursor = scan(platform.files, "nrp", cursor, now_ns=later)
    assert again.partition_key == first[0].partition_key and again.run_key != first[0].run_key
    assert "#retry-" in again.run_key and same_cursor == cursor
