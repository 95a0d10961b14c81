"""Helpers of the Dagster-level tests: a temporary instance, what a run materialised and checked."""

from __future__ import annotations

import dagster as dg
import pytest


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as test_instance:
        yield test_instance


def materialization(instance, run_id: str, asset: str) -> dict:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    [event] = [r.event_log_entry for r in records
               if r.event_log_entry.dagster_event.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def check_results(instance, run_id: str) -> dict:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {r.event_log_entry.dagster_event.event_specific_data.check_name:
            r.event_log_entry.dagster_event.event_specific_data for r in records}
