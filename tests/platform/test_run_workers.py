"""Runs on Celery workers (issue 20): the real daemon hands each run to one of two `cmp-pipelines worker` processes
through a real Redis broker on loopback. The machines share only PostgreSQL (store and Dagster instance), the S3
bucket (moto on loopback) and the broker; every partner file is run once, by a worker, and the ledger is exact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from cmp_pipelines.lib.headless import LOCATION_NAME, MODULE_NAME
from cmp_pipelines.lib.recovery import HEARTBEAT_TAG, HOST_TAG, LEASE_SETTING, PID_TAG, RECOVERY_OF_TAG
from cmp_pipelines.lib.resources.s3_store import S3FileStore
from cmp_pipelines.lib.run_workers import BROKER_SETTING
from tests.support.platform import Platform, document, payment

# marked postgres: they run in `make test-pg`, which CI calls with its servers installed
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

BIN = Path(sys.executable).parent
NRP_JOB = "non_recurring_payment_job"


def _start(args: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=str(cwd), stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _children(pid: int) -> set[int]:
    """The worker's pool processes (prefork): a run is executed in one of them."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found.update(int(c) for c in children)
    return found


def _failures(home: Path, runs: list[dg.DagsterRun]) -> str:
    """What the failed runs' event logs say, for an assertion's message."""
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        return "\n".join(f"{r.run_id[:8]} {r.status.value}: " + " | ".join(
            (e.message or "") + (str(e.dagster_event.event_specific_data)[:600] if e.dagster_event else "")
            for e in instance.all_logs(r.run_id)
            if e.dagster_event and e.dagster_event.event_type_value in ("STEP_FAILURE", "PIPELINE_FAILURE",
                                                                        "ENGINE_EVENT", "RUN_FAILURE"))[-2500:]
            for r in runs if r.status != dg.DagsterRunStatus.SUCCESS)


def _nrp_runs(home: Path) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        return [r for r in instance.get_runs() if r.job_name == NRP_JOB]


def _machine(tmp_path: Path, name: str, platform, env: dict) -> dict:
    """One machine's environment: a data folder of its own (scratch, dagster.yaml) and its own copy of the partner
    keys (a mounted secret); what it shares with the others is PostgreSQL, the bucket and the broker."""
    root = tmp_path / name
    shutil.copytree(platform.root / "keys", root / "keys")
    return {**env, "CMP_DATA_DIR": str(root / "data"), "CMP_KEYS_DIR": str(root / "keys"),
            "DAGSTER_HOME": str(root / "data" / "dagster_home")}


def test_partner_files_in_a_bucket_are_run_once_each_by_two_workers_sharing_only_postgres(
        pg_platform, s3_bucket, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("CMP_FILES_URL", s3_bucket.url)
    platform = Platform(pg_platform.root, S3FileStore(url=s3_bucket.url), pg_platform.keyring)
    env = {**os.environ, BROKER_SETTING: redis_url, "GX_ANALYTICS_ENABLED": "false"}
    daemon_env = _machine(tmp_path, "daemon", pg_platform, env)
    init = subprocess.run([str(BIN / "cmp-pipelines"), "init"], env=daemon_env, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    home = Path(daemon_env["DAGSTER_HOME"])
    written = (home / "dagster.yaml").read_text()
    assert "class: CeleryRunLauncher" in written and f"env: {BROKER_SETTING}" in written
    assert "postgres_url" in written and "default_limit: 4" in written  # the instance in PostgreSQL, runs in parallel
    assert redis_url not in written and pg_platform.url not in written  # referenced by name, never written
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: {MODULE_NAME}\n"
                         f"      working_directory: {Path(__file__).resolve().parents[2]}\n"
                         f"      location_name: {LOCATION_NAME}\n")
    processes = []
    try:
        workers = []
        for name in ("w1", "w2"):
            worker_env = _machine(tmp_path, name, pg_platform, env)
            workers.append(_start([str(BIN / "cmp-pipelines"), "worker", "--name", f"{name}@test"], worker_env,
                                  tmp_path / name, tmp_path / f"{name}.log"))
        processes += workers
        processes.append(_start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], daemon_env, tmp_path,
                                tmp_path / "daemon.log"))
        amounts = {f"ACC000000{n:02d}": f"{n}.{n:02d}" for n in range(1, 9)}
        before = {account: pg_platform.balance(account) for account in amounts}
        for n, (account, amount) in enumerate(amounts.items(), 1):
            platform.drop(f"PAYPOINT-{n}.json.enc", document([payment("1", account, amount)],
                                                             file_id=f"PAYPOINT-CELERY-{n}"))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = _nrp_runs(home)
            if len(runs) >= 8 and all(r.is_finished for r in runs):
                break
            time.sleep(2)
        logs = "\n".join((tmp_path / f).read_text(errors="replace")[-2000:] for f in ("daemon.log", "w1.log", "w2.log"))
        assert len(runs) == 8 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), \
            _failures(home, runs) + logs
        # each run went through the broker and was executed in a pool process of one of the two workers
        pools = [_children(w.pid) for w in workers]
        executed_by = []
        for run in runs:
            assert run.tags.get("dagster-celery/task_id"), run.tags
            pid = int(run.tags[PID_TAG].split("-")[0])
            executed_by.append(next(i for i, pool in enumerate(pools) if pid in pool))
        assert len(executed_by) == 8
    finally:
        for process in processes:
            _stop(process)
    assert pg_platform.payment_postings() == 8
    for account, amount in amounts.items():
        assert pg_platform.balance(account) == before[account] - int(amount.replace(".", ""))
    assert s3_bucket.keys("cmp/outbound/acknowledgements/nrp/PAYPOINT/") == sorted(
        f"cmp/outbound/acknowledgements/nrp/PAYPOINT/PAYPOINT-{n}.ack.json.enc" for n in range(1, 9))
    assert {platform.read_ack("PAYPOINT", f"PAYPOINT-{n}")["header"]["status"] for n in range(1, 9)} == {"PROCESSED"}
    assert s3_bucket.keys("cmp/inbound/") == []  # every file archived
    # no machine kept a partner file or a document of the platform on its own disk; what is there is the partner's
    # side: PAYPOINT has no transport configured, so the delivery run (on PostgreSQL it now sees the deliveries the
    # runs registered) copied each acknowledgement into the default local folder, delivered/PAYPOINT/, of the worker
    # that ran it, never twice (those delivered before the workers stopped; docs/deploy.md: give every partner an
    # SFTP transport or a shared absolute folder)
    delivered = []
    for name in ("daemon", "w1", "w2"):
        data = tmp_path / name / "data"
        assert not [f for f in data.rglob("*.json.enc") if f.relative_to(data).parts[0] != "delivered"]
        delivered += [f.name for f in (data / "delivered" / "PAYPOINT").glob("*.ack.json.enc")]
    assert len(delivered) == len(set(delivered))
    assert set(delivered) <= {f"PAYPOINT-{n}.ack.json.enc" for n in range(1, 9)}
    for name in ("w1", "w2"):  # nor a store: the runs' writes are all in PostgreSQL
        assert not list((tmp_path / name / "data").rglob("*.duckdb"))


def _as_host(hostname: str, args: list[str]) -> list[str]:
    """`args` in a UTS namespace of its own named `hostname`: to this machine's processes it is another machine, so
    its runs are judged by their heartbeat, never by a process lookup."""
    return ["unshare", "--uts", "--fork", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *args]


def test_a_worker_machine_lost_mid_run_has_its_file_finished_by_another_worker_once(platform, redis_url, tmp_path):
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        pytest.fail("this test needs `unshare --uts` (root, util-linux) to give each worker a host name of its own")
    home = tmp_path / "dagster_home"
    env = {**os.environ, "CMP_DATA_DIR": str(platform.root), "CMP_KEYS_DIR": str(platform.root / "keys"),
           "DAGSTER_HOME": str(home), BROKER_SETTING: redis_url, "GX_ANALYTICS_ENABLED": "false",
           LEASE_SETTING: "12"}
    assert subprocess.run([str(BIN / "cmp-pipelines"), "init"], env=env, capture_output=True).returncode == 0
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: {MODULE_NAME}\n"
                         f"      working_directory: {Path(__file__).resolve().parents[2]}\n"
                         f"      location_name: {LOCATION_NAME}\n")
    records = [payment(str(n), f"ACC000000{n % 20 + 1:02d}", "1.00") for n in range(1, 100_001)]
    processes = []
    try:
        (tmp_path / "w1").mkdir()
        lost = _start(_as_host("cmp-worker-1", [str(BIN / "cmp-pipelines"), "worker", "--name", "w1@test"]), env,
                      tmp_path / "w1", tmp_path / "w1.log")
        processes.append(lost)
        processes.append(_start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, tmp_path,
                                tmp_path / "daemon.log"))
        platform.drop("PAYPOINT-BIG.json.enc", document(records, file_id="PAYPOINT-CELERY-BIG"))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # the run has started on the first worker's machine: that machine dies
            runs = _nrp_runs(home)
            if runs and PID_TAG in runs[0].tags:
                break
            time.sleep(0.1)
        assert runs and PID_TAG in runs[0].tags and not runs[0].is_finished, \
            (tmp_path / "w1.log").read_text(errors="replace")[-3000:]
        first = runs[0]
        assert first.tags[HOST_TAG].startswith("cmp-worker-1/") and HEARTBEAT_TAG in first.tags
        os.killpg(lost.pid, signal.SIGKILL)
        lost.wait(10)
        (tmp_path / "w2").mkdir()
        processes.append(_start(_as_host("cmp-worker-2", [str(BIN / "cmp-pipelines"), "worker", "--name",
                                                          "w2@test"]), env, tmp_path / "w2", tmp_path / "w2.log"))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = _nrp_runs(home)
            if len(runs) >= 2 and all(r.is_finished for r in runs):
                break
            time.sleep(2)
        logs = "\n".join((tmp_path / f).read_text(errors="replace")[-2000:] for f in ("daemon.log", "w2.log"))
        by_id = {r.run_id: r for r in runs}
        assert by_id[first.run_id].status == dg.DagsterRunStatus.FAILURE, logs
        [again] = [r for r in runs if r.run_id != first.run_id]
        assert again.status == dg.DagsterRunStatus.SUCCESS and again.tags[RECOVERY_OF_TAG] == first.run_id, logs
        assert again.tags[HOST_TAG].startswith("cmp-worker-2/")
    finally:
        for process in processes:
            _stop(process)
    assert platform.payment_postings() == 100_000  # every record once, whatever the lost run had committed
    with platform.connect() as con:
        assert con.execute("SELECT sum(amount_minor) FROM ledger_postings WHERE kind = 'PAYMENT'").fetchone()[0] \
            == -100_000 * 100
    assert [p.name for p in (platform.root / "outbound/acknowledgements/nrp/PAYPOINT").iterdir()] \
        == ["PAYPOINT-BIG.ack.json.enc"]
