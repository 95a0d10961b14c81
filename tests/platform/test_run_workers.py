"""Runs on Celery workers (issue 20): the real daemon hands each run to one of two `cmp-pipelines worker` processes
through a real Redis broker on loopback; every partner file is run once, by a worker, and the ledger is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import orjson
import pytest
from dagster._core.instance.ref import InstanceRef

from cmp_pipelines.lib.headless import LOCATION_NAME, MODULE_NAME
from cmp_pipelines.lib.recovery import HEARTBEAT_TAG, HOST_TAG, LEASE_SETTING, PID_TAG, RECOVERY_OF_TAG
from cmp_pipelines.lib.run_workers import BROKER_SETTING
from tests.support.platform import document, payment

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


def _nrp_runs(home: Path) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        return [r for r in instance.get_runs() if r.job_name == NRP_JOB]


def test_each_partner_file_is_run_once_by_one_of_two_celery_workers(platform, redis_url, tmp_path):
    home = tmp_path / "dagster_home"
    env = {**os.environ, "CMP_DATA_DIR": str(platform.root), "CMP_KEYS_DIR": str(platform.root / "keys"),
           "DAGSTER_HOME": str(home), BROKER_SETTING: redis_url, "GX_ANALYTICS_ENABLED": "false"}
    init = subprocess.run([str(BIN / "cmp-pipelines"), "init"], env=env, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    written = (home / "dagster.yaml").read_text()
    assert "class: CeleryRunLauncher" in written and f"env: {BROKER_SETTING}" in written
    assert redis_url not in written  # the URL is referenced by name, never written
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: {MODULE_NAME}\n"
                         f"      working_directory: {Path(__file__).resolve().parents[2]}\n"
                         f"      location_name: {LOCATION_NAME}\n")
    processes = []
    try:
        workers = []
        for name in ("w1", "w2"):
            folder = tmp_path / name  # each worker its own working folder
            folder.mkdir()
            workers.append(_start([str(BIN / "cmp-pipelines"), "worker", "--name", f"{name}@test"], env, folder,
                                  tmp_path / f"{name}.log"))
        processes += workers
        processes.append(_start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, tmp_path,
                                tmp_path / "daemon.log"))
        amounts = {f"ACC000000{n:02d}": f"{n}.{n:02d}" for n in range(1, 9)}
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
        assert len(runs) == 8 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), logs
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
    assert platform.payment_postings() == 8
    total = sum(int(a.replace(".", "")) for a in amounts.values())
    with platform.connect() as con:
        assert con.execute("SELECT sum(amount_minor) FROM ledger_postings WHERE kind = 'PAYMENT'"
                           ).fetchone()[0] == -total
    acks = sorted(p.name for p in (platform.root / "outbound/acknowledgements/nrp/PAYPOINT").iterdir())
    assert acks == sorted(f"PAYPOINT-{n}.ack.json.enc" for n in range(1, 9))
    assert {orjson.loads(platform.keyring.decrypt("PAYPOINT", (platform.root / "outbound/acknowledgements/nrp/PAYPOINT"
                                                               / a).read_bytes()))["header"]["status"] for a in acks} \
        == {"PROCESSED"}


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
