"""The billing feed in Dagster: the sensor asks for one run per file, the run materialises the four assets with the
metadata an operator reads, a bad file fails its run with the reason, and a failed run re-executed posts once."""

from __future__ import annotations

import dagster as dg
import pytest

from cmp_pipelines.definitions import build_definitions, defs
from cmp_pipelines.defs.billing.defs import billing_inbound_files_sensor
from cmp_pipelines.lib.headless import run_pending_sensors
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.billing import PARTNER, account, billing_document, invoice
from tests.support.dagster import check_results, flow_runs, materialization
from tests.support.hardware import shipped

pytestmark = pytest.mark.e2e

RECORDS = [
    account("1", "ACC00000951", "Grace Hopper", payment_term="D7"),
    invoice("2", "ACC00000951", "INV-DG-1", "40.00", "2026-12-01"),
    invoice("3", "ACC00000020", "INV-DG-2", "2.50", "2026-12-01"),
    invoice("4", "ACC00000020", "INV-DG-3", "abc"),
]


def run_pending(instance, definitions=None):
    definitions = defs if definitions is None else definitions
    return flow_runs(run_pending_sensors(definitions, instance, echo=lambda _: None))


def test_the_sensor_asks_for_one_run_per_file_and_keeps_a_high_water_mark(billing, instance):
    key = billing.drop("BILLSYS-1.json.enc", billing_document(RECORDS))
    result = billing_inbound_files_sensor(dg.build_sensor_context(instance=instance))
    [request] = result.run_requests
    assert (request.job_name, request.partition_key) == ("billing_run_job", key)
    assert request.tags["cmp/feed"] == "billing" and request.tags["cmp/partner"] == PARTNER
    again = billing_inbound_files_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert again.run_requests == []
    assert build_definitions().get_sensor_def("billing_inbound_files_sensor").default_status == \
        dg.DefaultSensorStatus.RUNNING


def test_a_billing_file_through_the_sensor_and_its_run(billing, hardware, instance):
    pending = hardware.order("ACC00000020", [("LC-MDM-12M", 1)], billing="NEXT_INVOICE")
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [shipped(pending, 1, "LC-MDM-12M", "L-1")]))
    before = billing.ledger("ACC00000020")
    billing.drop("BILLSYS-1.json.enc", billing_document(RECORDS))

    [run] = run_pending(instance)

    assert run.success, run.error
    load = materialization(instance, run.run_id, "billing_run_batch")
    assert (load["record_count"], load["accepted_count"], load["rejected_count"]) == (4, 3, 1)
    assert (load["accounts_created"], load["invoices_issued"], load["invoiced_amount"]) == (1, 2, "42.50 GBP")
    assert load["rejections_by_reason"] == {"SCHEMA_VIOLATION": 1}
    assert "| 4 | 4 | INVOICE | REJECTED |" in load["preview"]
    suite = check_results(instance, run.run_id)["billing_run_meets_expectations"]  # the unparsable amount is null
    assert suite.passed and suite.metadata["records"].value == 4, suite.description
    posted = materialization(instance, run.run_id, "billing_posting_batch")
    assert (posted["posting_count"], posted["posted_now"], posted["total_amount"]) == (3, 3, "102.50 GBP")
    assert (posted["hardware_charges_invoiced"], posted["hardware_charges_amount"]) == (1, "60.00 GBP")
    assert materialization(instance, run.run_id, "billing_ledger_posting_file")["files_written"].startswith(
        "outbound/ledger/BLP-")
    assert billing.ledger("ACC00000951") == 4000
    assert billing.ledger("ACC00000020") == before + 250 + 6000
    assert billing.read_ack("BILLSYS-1")["header"]["invoices_issued"] == 2
    assert billing.platform.query("SELECT due_on::VARCHAR FROM invoices WHERE invoice_number = 'INV-DG-1'") == [
        ("2026-12-08",)]


def test_a_bad_file_fails_its_run_with_the_reason_and_the_next_file_goes_on(billing, instance):
    billing.drop("bad.json.enc", billing_document(RECORDS, total_amount="1.00"))
    billing.drop("good.json.enc", billing_document(RECORDS[:2], file_id="BILLSYS-GOOD"))
    runs = {r.partition_key.split("@")[0]: r for r in run_pending(instance)}
    assert not runs[f"{PARTNER}/bad.json.enc"].success
    assert "CONTROL_TOTALS" in runs[f"{PARTNER}/bad.json.enc"].error
    assert runs[f"{PARTNER}/good.json.enc"].success
    assert billing.platform.files.exists(f"quarantine/billing/{PARTNER}/bad.json.enc.error.json")
    assert billing.ledger("ACC00000951") == 4000


class AckFailsOnce(LocalFileStore):
    def write_parts(self, path: str, parts) -> str:
        if "acknowledgements/billing" in path:
            raise OSError("injected failure: disk full while writing the acknowledgement")
        return super().write_parts(path, parts)


def test_a_run_that_failed_after_posting_re_executed_posts_once(billing, hardware, instance):
    pending = hardware.order("ACC00000020", [("LC-MDM-12M", 1)], billing="NEXT_INVOICE")
    hardware.request()
    hardware.dispatch(hardware.drop_dispatch("WH_NORTH", "n.csv.enc", [shipped(pending, 1, "LC-MDM-12M", "L-1")]))
    before = billing.ledger("ACC00000020")
    billing.drop("crash.json.enc", billing_document(RECORDS))
    [failed] = run_pending(instance, build_definitions({"file_store": AckFailsOnce()}))
    assert not failed.success and "injected failure" in failed.error
    assert billing.ledger("ACC00000020") == before + 250 + 6000, "the postings were committed before the failure"

    job = build_definitions().resolve_job_def("billing_run_job")
    assert job.execute_in_process(instance=instance, partition_key=failed.partition_key).success
    assert billing.ledger("ACC00000020") == before + 250 + 6000
    assert billing.platform.query("SELECT count(*) FROM ledger_postings WHERE kind = 'HARDWARE_CHARGE' "
                                  "AND invoice_number = 'INV-DG-2'") == [(1,)]
    assert billing.read_ack("crash")["header"]["accepted_count"] == 3
