"""Helpers of the Dagster-level tests: a temporary instance, what a run materialised and checked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest


@pytest.fixture(scope="session")
def dagster_home_template(tmp_path_factory) -> Path:
    """A test instance's folder with its SQLite storages created, once per test process: creating them (the
    schema of the run, event-log index and schedule databases) costs seconds, copying them milliseconds."""
    home = tmp_path_factory.mktemp("dagster-home-template")
    with dg.instance_for_test(temp_dir=str(home)):
        pass
    return home


@contextmanager
def fresh_instance(home: Path, template: Path) -> Iterator[dg.DagsterInstance]:
    """A fresh test instance in `home` (the folder DAGSTER_HOME names), from a copy of the template."""
    shutil.copytree(template, home, dirs_exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def instance(tmp_path, dagster_home_template):
    with fresh_instance(tmp_path / "dagster_home", dagster_home_template) as created:
        yield created


def materialization(instance, run_id: str, asset: str) -> dict:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    [event] = [r.event_log_entry for r in records
               if r.event_log_entry.dagster_event.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def check_results(instance, run_id: str) -> dict:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {r.event_log_entry.dagster_event.event_specific_data.check_name:
            r.event_log_entry.dagster_event.event_specific_data for r in records}


def real_resources(platform) -> dict:
    """The code location's own resources pointed at a test platform's store, files and keys: no stand-ins."""
    from cmp_pipelines.lib.resources.cipher import PartnerCipher
    from cmp_pipelines.lib.resources.database import Database
    from cmp_pipelines.lib.resources.file_store import LocalFileStore

    return {"database": Database(path=str(platform.database)),
            "file_store": LocalFileStore(base_dir=str(platform.root)),
            "cipher": PartnerCipher(keys_dir=str(platform.root / "keys"))}


DISPATCHER_SENSOR = "workflow_dispatch_sensor"
SERVICE_SENSORS = {"delivery_sensor", DISPATCHER_SENSOR}


def flow_runs(outcomes):
    """The runs of a `run_pending_sensors` call that a flow's own sensors asked for: every published document also
    makes the delivery sensor ask for a run, and every event the dispatcher's (communications, alerts); those are
    left out once they are known to have succeeded."""
    from cmp_pipelines.lib.headless import Outcomes

    dispatched = [o for o in outcomes if o.sensor == DISPATCHER_SENSOR]
    assert all(o.success for o in dispatched), [o.error for o in dispatched]
    kept = Outcomes()
    kept.extend(o for o in outcomes if o.sensor not in SERVICE_SENSORS)
    kept.errors = outcomes.errors
    return kept
