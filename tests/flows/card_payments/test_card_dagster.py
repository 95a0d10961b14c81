"""The card flows through Dagster: the daily schedule's partition, the job run, the rejection-file sensor,
the probe checks, and the metadata an operator sees in the UI."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from cmp_pipelines.core import payment_setup
from cmp_pipelines.core.config import load_partners
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import build_definitions
from cmp_pipelines.defs.card_payments.defs import card_payments_daily_schedule
from cmp_pipelines.lib.headless import run_partition, run_pending_sensors
from tests.support.dagster import check_results, flow_runs, materialization
from tests.support.notices import give_notices
from tests.support.platform import NOW, rejection, rejections_document

# Whole runs through Dagster (sensors, jobs, run-pending): left out of `make test-fast`.
pytestmark = pytest.mark.e2e


def test_the_schedule_runs_todays_partition():
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 3, 2, 0, tzinfo=UTC))
    [request] = list(card_payments_daily_schedule.evaluate_tick(context).run_requests)
    assert request.partition_key == "2026-12-03"


def test_card_day_then_rejection_file_through_dagster(platform, instance):
    day = NOW.date()
    with platform.connect() as con:
        payment_setup.set_payment_type(con, "ACC00000004", "RECURRING_CARD",
                                       partners=load_partners(PROJECT_ROOT / "config"), now=NOW, cause="test",
                                       card_token="tok_dagster_4", last_four="0004", expiry="2031-01")
        con.execute("UPDATE invoices SET due_on = ? WHERE account_number = 'ACC00000004'", [day])
        owed = con.execute("SELECT sum(amount_minor) FROM invoices WHERE account_number = 'ACC00000004'").fetchone()[0]
    give_notices(platform, "RECURRING_CARD", day)  # sent when the invoices were issued, weeks ago
    definitions = build_definitions()

    outcome = run_partition("recurring_payments_card_job", day.isoformat(), definitions, instance)

    assert outcome.success, outcome.error
    assert platform.balance("ACC00000004") == 0
    due = materialization(instance, outcome.run_id, "card_payments_due")
    assert due["record_count"] == len(platform.read_extract(day)["transactions"]) >= 1
    assert due["payment_amount"] == platform.read_extract(day)["header"]["payment_amount"]
    checks = check_results(instance, outcome.run_id)
    assert checks["card_extract_produced_within_threshold"].passed
    assert checks["card_extract_totals_mismatch_within_threshold"].passed

    [(transaction, amount)] = platform.query(
        "SELECT transaction_id, minor_to_decimal(amount_minor) FROM card_transactions "
        "WHERE account_number = 'ACC00000004' ORDER BY 1 LIMIT 1")
    platform.drop_rejections("CARDPAY-REJ-1.json.enc", rejections_document(
        [rejection("1", transaction, "ACC00000004", amount, "43")]))
    [run] = flow_runs(run_pending_sensors(definitions, instance, echo=lambda _: None))

    assert run.success, run.error
    assert platform.balance("ACC00000004") == platform.query(
        "SELECT amount_minor FROM card_transactions WHERE transaction_id = ?", [transaction])[0][0]
    assert platform.query("SELECT payment_type FROM accounts WHERE account_number = 'ACC00000004'") == [("MANUAL",)]
    applied = materialization(instance, run.run_id, "card_reversal_batch")
    assert (applied["posting_count"], applied["accounts_reverted_to_default"], applied["workflow_events"]) == (1, 1, 1)
    checks = check_results(instance, run.run_id)
    assert checks["card_rejections_completed_sla_within_threshold"].passed
    suite = checks["card_rejections_meet_expectations"]
    assert suite.passed and suite.metadata["records"].value == 1, suite.description
    assert suite.description == "8 of 8 expectations met over 1 records"
    assert platform.files.exists(f"outbound/ledger/{applied['batch_id']}.json")
    assert not platform.files.list_files("inbound/card_rejections")
    assert owed > 0
    assert flow_runs(run_pending_sensors(definitions, instance, echo=lambda _: None)) == []


def test_a_quarantined_rejection_file_fails_its_run_with_the_reason(platform, instance):
    platform.drop_rejections("bad.json.enc", b"not json at all")
    [run] = flow_runs(run_pending_sensors(build_definitions(), instance, echo=lambda _: None))
    assert not run.success
    assert run.error.startswith("File quarantined (NOT_JSON)")
    assert platform.files.exists("quarantine/card_rejections/CARDPAY/bad.json.enc.error.json")
