"""Direct debit through Dagster: AUDDIS and DD-mode days as partitions, the bureau's ADDACS and ARUDD reports picked
up by their sensors, and the four direct debit probes as asset checks."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from cmp_pipelines.definitions import build_definitions
from cmp_pipelines.defs.direct_debit.calendar import cycle
from cmp_pipelines.defs.direct_debit.defs import dd_collections_daily_schedule
from cmp_pipelines.demo import data as demo
from cmp_pipelines.lib.headless import run_partition, run_pending_sensors
from tests.support.dagster import check_results, flow_runs, instance, materialization  # noqa: F401 - fixture
from tests.support.direct_debit import BUREAU, SUN
from tests.support.platform import NOW

# Whole runs through Dagster (sensors, jobs, run-pending): left out of `make test-fast`.
pytestmark = pytest.mark.e2e


def test_the_dd_schedule_runs_todays_partition():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 3, 2, 15, tzinfo=UTC))
    [request] = list(dd_collections_daily_schedule.evaluate_tick(context).run_requests)
    assert request.partition_key == "2026-12-03"


def test_direct_debit_day_and_bureau_reports_through_dagster(platform, instance):  # noqa: F811
    platform.keyring.init_keys(BUREAU)
    with platform.connect() as con:
        active, pending = demo.seed_direct_debit_accounts(con, SUN, NOW, every=5, offset=1)
    assert (active, pending) == (3, 1)  # ACC00000001 waits for AUDDIS; 06, 11, 16 collect
    definitions = build_definitions()
    day = NOW.date().isoformat()

    auddis = run_partition("auddis_extract_job", day, definitions, instance)
    assert auddis.success, auddis.error
    assert materialization(instance, auddis.run_id, "auddis_instructions_batch")["by_transaction_code"] == {"0N": 1}
    assert check_results(instance, auddis.run_id)["auddis_file_produced_within_threshold"].passed

    collections = run_partition("recurring_payments_dd_job", day, definitions, instance)
    assert collections.success, collections.error
    due = materialization(instance, collections.run_id, "dd_collections_due")
    owed = platform.query("SELECT sum(amount_minor) FROM invoices WHERE invoice_number LIKE 'INV%D'")[0][0]
    assert (due["collection_count"], due["by_transaction_code"]) == (3, {"01": 3})
    assert due["total_amount"] == f"{owed // 100}.{owed % 100:02d}"
    assert check_results(instance, collections.run_id)["dd_collection_totals_mismatch_within_threshold"].passed
    written = materialization(instance, collections.run_id, "dd_collection_file")
    dates = cycle(NOW.date())
    assert (written["input_day"], written["processing_day"]) == (dates.input_day.isoformat(),
                                                                 dates.processing_day.isoformat())
    assert written["moved_to_working_day"] == (dates.moved or "no")

    quiet = run_partition("auddis_extract_job", "2026-11-28", definitions, instance)  # a Saturday, nothing pending
    assert quiet.success, quiet.error
    quiet_file = materialization(instance, quiet.run_id, "auddis_file")
    assert quiet_file["files_written"].startswith("none: no instruction pending")
    assert quiet_file["moved_to_working_day"] == ("2026-11-28 is not a Bacs working day (a Saturday): the submission "
                                                  "is input on 2026-11-30")
    assert check_results(instance, quiet.run_id)["auddis_file_produced_within_threshold"].passed
    assert sum(platform.balance(f"ACC000000{n:02d}") for n in (6, 11, 16)) == sum(
        r[0] for r in platform.query("SELECT amount_minor FROM invoices WHERE account_number IN "
                                     "('ACC00000006', 'ACC00000011', 'ACC00000016') AND invoice_number NOT LIKE "
                                     "'INV%D'"))

    with platform.connect() as con:
        written = demo.bacs_report_files(con, platform.files, platform.keyring, BUREAU, SUN, NOW)
    assert len(written) == 2
    runs = flow_runs(run_pending_sensors(definitions, instance, echo=lambda _: None))
    assert len(runs) == 2 and all(run.success for run in runs), [run.error for run in runs]
    by_job = {instance.get_run_by_id(run.run_id).job_name: run for run in runs}

    addacs = by_job["addacs_job"]
    updates = materialization(instance, addacs.run_id, "addacs_mandate_updates")
    assert updates["outcomes"] == {"MANDATE_AMENDED": 1, "MANDATE_CANCELLED": 1, "REJECTED": 1}
    unknown = check_results(instance, addacs.run_id)["addacs_unknown_references_within_threshold"]
    assert not unknown.passed and unknown.metadata["value"].value == 1
    suite = check_results(instance, addacs.run_id)["addacs_advices_meet_expectations"]  # the same advice, seen by GX
    assert not suite.passed and suite.severity == dg.AssetCheckSeverity.WARN
    assert suite.description == ("6 of 7 expectations met over 3 records: "
                                 "expect_column_values_to_not_be_null(mandate_id)"), suite.description

    arudd = by_job["recurring_payments_rejections_dd_job"]
    returns = materialization(instance, arudd.run_id, "dd_returns_batch")
    assert returns["outcomes"] == {"HARD_DECLINE": 1, "RETRY_SCHEDULED": 1}
    rate = check_results(instance, arudd.run_id)["arudd_return_rate_within_threshold"]
    assert rate.metadata["value"].value == 66  # 2 of the 3 debits returned
    assert check_results(instance, arudd.run_id)["arudd_unmapped_return_codes_within_threshold"].passed
    suite = check_results(instance, arudd.run_id)["arudd_returns_meet_expectations"]
    assert suite.passed and suite.metadata["records"].value == 2, suite.description
    reports = materialization(instance, arudd.run_id, "dd_return_reports")
    assert any(path.startswith(f"outbound/reports/arudd/{BUREAU}/") for path in reports["files_written"])
