"""`run-pending` and the CLI's daily runs keep Dagster's own semantics: a sensor's cursor and ticks live in the
instance, a run key is launched once, and every run names the code location, so the UI files it under its job."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import orjson
import pytest
from click.testing import CliRunner
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
from dagster._core.workspace.load_target import WorkspaceFileTarget

from cmp_pipelines.cli import main
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.definitions import defs
from cmp_pipelines.lib.headless import LOCATION_NAME, MODULE_NAME, location_origin, run_pending_sensors
from cmp_pipelines.lib.instance_config import write_for_home
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.dagster import SERVICE_SENSORS, flow_runs
from tests.support.platform import document, payment

NRP_SENSOR = "nrp_inbound_files_sensor"
LABEL = f"__repository__@{LOCATION_NAME}"  # what the UI's job page filters runs by


def _sensor_state(instance: dg.DagsterInstance, name: str):
    [state] = [s for s in instance.all_instigator_state() if s.name == name]
    return state


def test_the_location_is_the_one_workspace_yaml_and_pyproject_name():
    [declared] = WorkspaceFileTarget([str(PROJECT_ROOT / "workspace.yaml")]).create_origins()
    assert declared == location_origin()
    tool = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert (tool["module_name"], tool["code_location_name"]) == (MODULE_NAME, LOCATION_NAME)


def test_the_cursor_persists_in_the_instance_and_a_run_key_is_launched_once(platform, instance):
    platform.drop("first.json.enc", document([payment("1", "ACC00000001", "10.00")]))
    [first] = flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))
    assert first.success
    run = instance.get_run_by_id(first.run_id)
    cursor = _sensor_state(instance, NRP_SENSOR).instigator_data.cursor
    assert orjson.loads(cursor)["path"] == "inbound/nrp/PAYPOINT/first.json.enc"
    [tick] = [t for t in instance.get_ticks(run.remote_job_origin.repository_origin.get_instigator_origin(
        NRP_SENSOR).get_id(), _sensor_state(instance, NRP_SENSOR).selector_id) if t.run_ids]
    assert tick.run_ids == [first.run_id] and tick.run_keys == [run.tags["dagster/run_key"]]
    assert run.tags["dagster/sensor_name"] == NRP_SENSOR and run.tags["dagster/tick"] == str(tick.tick_id)

    # a later file: the sensor starts from the stored cursor; a third call finds nothing new and launches nothing
    platform.drop("second.json.enc", document([payment("1", "ACC00000002", "5.00")], file_id="PAYPOINT-2"))
    [second] = flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))
    assert second.success and second.partition_key.startswith("PAYPOINT/second.json.enc@")
    assert orjson.loads(_sensor_state(instance, NRP_SENSOR).instigator_data.cursor)["path"] == \
        "inbound/nrp/PAYPOINT/second.json.enc"
    assert flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None)) == []
    assert platform.payment_postings() == 2


def test_a_sensor_stopped_in_the_ui_is_left_alone(platform, instance):
    from dagster._core.scheduler.instigation import InstigatorStatus

    flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))
    state = _sensor_state(instance, NRP_SENSOR)
    instance.update_instigator_state(state.with_status(InstigatorStatus.STOPPED))
    platform.drop("waiting.json.enc", document([payment("1", "ACC00000001", "10.00")]))
    assert flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None)) == []
    instance.update_instigator_state(state.with_status(InstigatorStatus.RUNNING))
    [run] = flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))
    assert run.success and platform.payment_postings() == 1


def test_a_sensor_that_raises_fails_its_tick_and_the_others_still_run(platform, instance, monkeypatch):
    from dagster._core.scheduler.instigation import TickStatus

    listed = LocalFileStore.list_entries

    def share_down(self, prefix: str):  # the inbound sensors list the local store directly (no resources)
        if prefix.startswith("inbound/card_rejections"):
            raise OSError("injected: the rejections share is unreachable")
        return listed(self, prefix)

    monkeypatch.setattr(LocalFileStore, "list_entries", share_down)
    platform.drop("fine.json.enc", document([payment("1", "ACC00000001", "10.00")]))
    outcomes = flow_runs(run_pending_sensors(defs, instance, echo=lambda _: None))
    assert [(o.sensor, o.success) for o in outcomes] == [(NRP_SENSOR, True)]
    assert outcomes.errors == ["card_rejection_files_sensor: OSError: injected: the rejections share is unreachable"]
    state = _sensor_state(instance, "card_rejection_files_sensor")
    [tick] = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    assert tick.status == TickStatus.FAILURE and "rejections share is unreachable" in tick.error.to_string()


def test_cli_runs_are_on_their_jobs_page_tied_to_the_code_location(platform):
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(exist_ok=True)
    day = datetime.now(UTC).date().isoformat()
    result = CliRunner().invoke(main, ["run-auddis", "--date", day])
    assert result.exit_code == 0, result.output
    platform.drop("tied.json.enc", document([payment("1", "ACC00000001", "10.00")]))
    assert CliRunner().invoke(main, ["run-pending"]).exit_code == 0

    with dg.DagsterInstance.get() as instance:
        # the query the UI's job page makes (dagster_graphql GraphenePipeline.resolve_runs)
        [cli_run] = instance.get_runs(filters=dg.RunsFilter(job_name="auddis_extract_job",
                                                            tags={REPOSITORY_LABEL_TAG: LABEL}))
        [sensor_run] = instance.get_runs(filters=dg.RunsFilter(job_name="non_recurring_payment_job",
                                                               tags={REPOSITORY_LABEL_TAG: LABEL}))
    origin = cli_run.remote_job_origin
    assert origin.job_name == "auddis_extract_job" and origin.repository_origin.repository_name == "__repository__"
    assert origin.repository_origin.code_location_origin.location_name == LOCATION_NAME
    assert origin.repository_origin.code_location_origin.loadable_target_origin.module_name == MODULE_NAME
    assert origin.repository_origin == sensor_run.remote_job_origin.repository_origin
    assert cli_run.job_code_origin.repository_origin.code_pointer.module == MODULE_NAME
    assert cli_run.status == dg.DagsterRunStatus.SUCCESS
    assert (cli_run.tags["dagster/partition"], cli_run.tags["cmp/trigger"]) == (day, "cli")
    assert cli_run.tags["cmp/process_run"] == cli_run.run_id  # tagged with its process (crash recovery)


# -- the same file drops under run-pending and under the real daemon -----------------------------------------------

def _runs(instance: dg.DagsterInstance) -> list[tuple]:
    """What must be equal: sensor, job, partition, run key (its file-change time, which differs between two
    copies of a file, replaced) and status. The delivery and dispatch sensors' runs are left out: each takes
    whatever is due when it ticks, so how many there are depends on timing, not on the files."""
    return sorted(
        (run.tags.get("dagster/sensor_name"), run.job_name, run.tags.get("dagster/partition"),
         re.sub(r"#\d+", "#<changed_ns>", run.tags.get("dagster/run_key", "")), run.status.value)
        for run in instance.get_runs()
        if "dagster/sensor_name" in run.tags and run.tags["dagster/sensor_name"] not in SERVICE_SENSORS)


def _postings(root: Path) -> list[tuple]:
    with duckdb.connect(str(root / "cmp.duckdb"), read_only=True) as con:
        return con.execute("SELECT kind, count(*), sum(amount_minor) FROM ledger_postings WHERE kind <> 'INVOICE' "
                           "GROUP BY 1 ORDER BY 1").fetchall()


def _settled(instance: dg.DagsterInstance, expected: int, ticks: int, deadline: float) -> None:
    """Wait for `expected` runs (as `_runs` counts them: not the service sensors') and every sensor run finished,
    then for `ticks` more ticks of the NRP sensor that started after that, completed and asked for nothing (the
    daemon's tick history, not a fixed quiet time: a starved daemon ticks late, and a timer would then end the wait
    before any tick had looked). A tick that failed is not one that looked."""
    from dagster._core.scheduler.instigation import TickStatus

    since, seen, looked = None, None, []
    while time.monotonic() < deadline:
        runs = [r for r in instance.get_runs() if "dagster/sensor_name" in r.tags]
        state = (len(_runs(instance)), all(r.is_finished for r in runs))
        if state[0] >= expected and state[1]:
            since = since if state == seen else time.time()
            sensor = _sensor_state(instance, NRP_SENSOR)
            looked = instance.get_ticks(sensor.instigator_origin_id, sensor.selector_id, after=since,
                                        statuses=[TickStatus.SKIPPED, TickStatus.SUCCESS])
            launched = [t.run_ids for t in looked if t.run_ids]
            assert not launched, f"a tick after the runs settled launched {launched}"
            if len(looked) >= ticks:
                return
        seen = state
        time.sleep(0.5)
    raise AssertionError(f"the daemon did not settle: {seen} (flow runs, all finished), {len(looked)} quiet NRP "
                         f"ticks since; expected {expected} runs and {ticks} ticks")


@pytest.mark.slow
def test_the_same_file_drops_give_the_same_runs_under_run_pending_and_under_the_daemon(platform):
    headless_home = Path(os.environ["DAGSTER_HOME"])
    headless_home.mkdir(exist_ok=True)
    write_for_home(headless_home)
    twin = Path(tempfile.mkdtemp(prefix="cmp-daemon-twin-")) / "data"
    shutil.copytree(platform.root, twin, ignore=shutil.ignore_patterns("dagster_home"))
    (twin / "dagster_home").mkdir()
    write_for_home(twin / "dagster_home")
    workspace = twin.parent / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: {MODULE_NAME}\n"
                         f"      working_directory: {PROJECT_ROOT}\n      location_name: {LOCATION_NAME}\n")
    env = {**os.environ, "CMP_DATA_DIR": str(twin), "CMP_KEYS_DIR": str(twin / "keys"),
           "DAGSTER_HOME": str(twin / "dagster_home"), "GX_ANALYTICS_ENABLED": "false"}
    # the twin's instance storage exists before the daemon and this test open it at once (each would create its
    # SQLite schema, and the loser of that race fails on alembic_version)
    dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(twin / "dagster_home"))).dispose()
    log = (twin.parent / "daemon.log").open("wb")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                              env=env, cwd=str(twin.parent), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)

    def drop(name: str, content: bytes) -> None:  # the same bytes on both sides, so the same partition keys
        for root in (platform.root, twin):
            target = root / "inbound" / "nrp" / "PAYPOINT" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)

    good = [platform.keyring.encrypt("PAYPOINT", orjson.dumps(document(
        [payment("1", f"ACC0000000{n}", f"{n}.25")], file_id=f"PAYPOINT-{n}"))) for n in (1, 2, 3)]
    steps = [[("one.json.enc", good[0]), ("two.json.enc", good[1]), ("bad.json.enc", b"not encrypted")],
             [("three.json.enc", good[2]), ("one-again.json.enc", good[0])]]  # a new file and a duplicate
    try:
        with dg.DagsterInstance.get() as headless, \
                dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(twin / "dagster_home"))) as daemon_side:
            for step in steps:
                for name, content in step:
                    drop(name, content)
                flow_runs(run_pending_sensors(defs, headless, echo=lambda _: None))
                assert flow_runs(run_pending_sensors(defs, headless, echo=lambda _: None)) == []
                expected = _runs(headless)
                # the daemon: its inbound sensors tick every 5 s, its runs are queued (pool cmp_db, dequeued every
                # second) and launched each in a process by its code server; two more ticks must ask for nothing
                _settled(daemon_side, len(expected), ticks=2, deadline=time.monotonic() + 420)
                assert _runs(daemon_side) == expected, (twin.parent / "daemon.log").read_text()[-3000:]
            assert [r[1:] for r in expected if r[0] == NRP_SENSOR] == [
                ("non_recurring_payment_job", p, f"{p}#<changed_ns>", s) for p, s in sorted(
                    (r[2], r[4]) for r in expected if r[0] == NRP_SENSOR)]
            assert {r[2].split("@")[0]: r[4] for r in expected if r[0] == NRP_SENSOR} == {  # quarantined
                "PAYPOINT/one.json.enc": "SUCCESS", "PAYPOINT/two.json.enc": "SUCCESS",
                "PAYPOINT/three.json.enc": "SUCCESS", "PAYPOINT/bad.json.enc": "FAILURE",
                "PAYPOINT/one-again.json.enc": "FAILURE"}
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
        log.close()
    assert _postings(twin) == _postings(platform.root) != []
    shutil.rmtree(twin.parent, ignore_errors=True)
