"""The daemon's warm run launcher (cmp_pipelines/lib/warm_runs.py): under a real `dagster-daemon` the first run
goes the default way and starts the fork server; later runs are forked from it and do the same work (files
acknowledged, ledger exact, a bad file quarantined and its run failed); a forked run is cancelled by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from cmp_pipelines.core import processes
from cmp_pipelines.core.settings import (
    DATABASE_URL_SETTING,
    PROJECT_ROOT,
    RUN_NICE_SETTING,
    StoreSettingError,
    run_nice,
)
from cmp_pipelines.lib.headless import LOCATION_NAME, MODULE_NAME
from cmp_pipelines.lib.instance_config import write_for_home
from cmp_pipelines.lib.recovery import PID_RUN_TAG, PID_TAG
from cmp_pipelines.lib.resources.database import Database
from cmp_pipelines.lib.warm_runs import (
    FORKED,
    LAUNCHER_TAG,
    READY_LOG,
    WarmRunLauncher,
    _same_environment,
    code_fingerprint,
)
from tests.support.platform import document, payment
from tests.support.run_workers import stop

JOB = "non_recurring_payment_job"


def _wait(predicate, seconds: float, what: str, log: Path):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; daemon log:\n{log.read_text(errors='replace')[-4000:]}")


def _finished(instance: dg.DagsterInstance, count: int):
    runs = instance.get_runs(dg.RunsFilter(job_name=JOB))
    return runs if len(runs) >= count and all(run.is_finished for run in runs) else None


@pytest.mark.slow
@pytest.mark.e2e
def test_runs_after_the_first_are_forked_warm_and_do_the_same_work(platform):
    home = platform.root / "dagster_home"
    home.mkdir(exist_ok=True)
    write_for_home(home)
    workspace = platform.root.parent / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: {MODULE_NAME}\n"
                         f"      working_directory: {PROJECT_ROOT}\n      location_name: {LOCATION_NAME}\n")
    dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))).dispose()  # storage created before both open it
    log_path = platform.root.parent / "daemon.log"
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "CMP_RUN_NICE": "7"}
    with log_path.open("wb") as log:
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                                  env=env, cwd=str(platform.root.parent), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
            platform.drop("one.json.enc", document([payment("1", "ACC00000001", "10.25")], file_id="WARM-1"))
            [first] = _wait(lambda: _finished(instance, 1), 240, "the first run", log_path)
            _wait(lambda: READY_LOG in log_path.read_text(errors="replace"), 120, "the fork server", log_path)
            platform.drop("two.json.enc", document([payment("1", "ACC00000002", "20.50"),
                                                    payment("2", "ACC00000003", "0.75")], file_id="WARM-2"))
            platform.drop("bad.json.enc", b"not an encrypted file", raw=True)
            runs = _wait(lambda: _finished(instance, 3), 240, "the forked runs", log_path)
            by_file = {run.tags["dagster/partition"].split("@")[0]: run for run in runs}
            assert first.tags.get(LAUNCHER_TAG) is None  # the daemon's first launch: the default way
            for name in ("PAYPOINT/two.json.enc", "PAYPOINT/bad.json.enc"):
                assert by_file[name].tags.get(LAUNCHER_TAG) == FORKED, name
            assert {name: run.status for name, run in by_file.items()} == {
                "PAYPOINT/one.json.enc": dg.DagsterRunStatus.SUCCESS,
                "PAYPOINT/two.json.enc": dg.DagsterRunStatus.SUCCESS,
                "PAYPOINT/bad.json.enc": dg.DagsterRunStatus.FAILURE}  # quarantined, with its reason
            forked = by_file["PAYPOINT/two.json.enc"]
            messages = [entry.message for entry in instance.all_logs(forked.run_id)]
            assert any("forked from the warm fork server" in message for message in messages)
            for label, run in (("first", first), ("forked", forked)):  # spawned by the code server, or forked
                logged = [entry.message for entry in instance.all_logs(run.run_id)]
                assert "This run's process yields the CPU to interactive work: nice 7 (CMP_RUN_NICE)." in logged, (
                    label, [m for m in logged if "nice" in m or "yield" in m or "process" in m])
            pid = int(forked.tags[PID_TAG].split("-")[0])
            assert pid != daemon.pid and forked.tags[PID_RUN_TAG] == forked.run_id
            checks = {entry.dagster_event.event_specific_data.check_name: entry.dagster_event.event_specific_data.passed
                      for entry in instance.all_logs(forked.run_id) if entry.dagster_event
                      and entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"}
            # the expectation suite (Great Expectations, preloaded by the fork server) and the probes ran in it
            assert checks["nrp_payments_meet_expectations"] is True and all(checks.values()), checks
    finally:
        stop(daemon)
    acks = sorted(p.name for p in (platform.root / "outbound" / "acknowledgements" / "nrp" / "PAYPOINT").iterdir())
    assert acks == ["bad.rejected.ack.json.enc", "one.ack.json.enc", "two.ack.json.enc"]  # the bad file's refusal
    with platform.connect() as con:
        assert con.execute("SELECT count(*), sum(amount_minor) FROM ledger_postings WHERE kind = 'PAYMENT'"
                           ).fetchone() == (3, -(1025 + 2050 + 75))
    assert list((platform.root / "quarantine").rglob("bad.json.enc*"))


@dg.op
def _nothing() -> None:
    pass


@dg.job
def _noop():
    _nothing()


_NOOP = _noop
FORKED_RUN, COPY_RUN = "7b0e6a4c-0000-4000-8000-000000000001", "7b0e6a4c-0000-4000-8000-000000000002"


def test_a_forked_run_is_cancelled_by_sigterm_to_its_own_process_and_a_gone_one_is_left_alone(tmp_path):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        launcher = WarmRunLauncher()
        launcher.register_instance(instance)
        instance.create_run_for_job(_NOOP, run_id=FORKED_RUN, tags={
            LAUNCHER_TAG: FORKED, PID_TAG: processes.token(worker.pid), PID_RUN_TAG: FORKED_RUN})
        assert launcher.terminate(FORKED_RUN) is True
        assert worker.wait(10) == -signal.SIGTERM
        assert instance.get_run_by_id(FORKED_RUN).status == dg.DagsterRunStatus.CANCELING
        assert launcher.terminate(FORKED_RUN) is False  # its process is gone: nothing is signalled twice
        # a token naming another run's process (a copied tag) never gets a signal
        instance.create_run_for_job(_NOOP, run_id=COPY_RUN, tags={
            LAUNCHER_TAG: FORKED, PID_TAG: processes.token(), PID_RUN_TAG: FORKED_RUN})
        assert launcher.terminate(COPY_RUN) is False


def test_a_process_yields_the_cpu_once_and_its_later_threads_inherit_it():
    script = ("import os, threading\n"
              "from cmp_pipelines.core.processes import yield_cpu\n"
              "seen = []\n"
              "first, again = yield_cpu(5), yield_cpu(3)\n"
              "def mine(): seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))\n"
              "t = threading.Thread(target=mine)\n"
              "t.start(); t.join()\n"
              "print(first, again, os.getpriority(os.PRIO_PROCESS, 0), seen[0])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    want = max(base, 5)
    assert out.stdout.split() == [str(want)] * 4  # never lowered again (3), and a thread started later runs at 5


def test_a_run_executed_in_a_process_that_goes_on_keeps_its_priority(monkeypatch, tmp_path):
    """A test's or the CLI's process executes runs in-process and lives on: it is never reniced."""
    monkeypatch.setenv("CMP_RUN_NICE", "9")

    @dg.asset
    def touched(database: Database) -> int:
        with database.connection() as con:
            return con.execute("SELECT 42").fetchone()[0]

    before = os.getpriority(os.PRIO_PROCESS, 0)
    result = dg.materialize([touched], resources={"database": Database(path=str(tmp_path / "cmp.duckdb"))})
    assert result.success and result.output_for_node("touched") == 42
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
    assert not any("yields the CPU" in (event.message or "") for event in result.all_events)


def test_a_runs_cpu_priority_yields_to_the_api_on_postgresql_only_unless_set(monkeypatch):
    monkeypatch.delenv(DATABASE_URL_SETTING, raising=False)
    monkeypatch.delenv(RUN_NICE_SETTING, raising=False)
    assert run_nice() == 0  # the embedded store: the API's set-up requests wait for the run, so it keeps its pace
    monkeypatch.setenv(DATABASE_URL_SETTING, "postgresql://cmp:s3cret@db.example:5432/cmp")
    assert run_nice() == 10
    monkeypatch.setenv(RUN_NICE_SETTING, "0")
    assert run_nice() == 0
    monkeypatch.setenv(RUN_NICE_SETTING, " 19 ")
    assert run_nice() == 19
    for bad in ("20", "-1", "ten", "5.5"):
        monkeypatch.setenv(RUN_NICE_SETTING, bad)
        with pytest.raises(StoreSettingError) as refused:
            run_nice()
        assert str(refused.value) == (f"CMP_RUN_NICE must be a whole number from 0 to 19 (the nice value of a run's "
                                      f"process; 0 leaves it as launched); got {bad!r}")


def test_only_a_code_location_in_the_daemons_own_environment_is_forked():
    assert _same_environment(sys.executable)
    assert _same_environment(str(Path(sys.executable).parent / "python3"))
    assert not _same_environment("/usr/bin/python3")
    assert not _same_environment(None)


def test_a_change_to_the_code_changes_the_fingerprint_that_renews_the_fork_server(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    (package / "sub" / "b.py").write_text("B = 2\n")
    (package / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"compiled")
    (package / "notes.txt").write_text("not code")
    before = code_fingerprint(package)
    assert before[:2] == (2, len("A = 1\n") + len("B = 2\n"))
    (package / "notes.txt").write_text("still not code, another size")
    (package / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"recompiled, longer")
    assert code_fingerprint(package) == before
    os.utime(package / "sub" / "b.py", ns=(before[2] + 1_000_000, before[2] + 1_000_000))
    assert code_fingerprint(package) != before  # an edit that keeps the size
    (package / "c.py").write_text("")
    assert code_fingerprint(package)[0] == 3
