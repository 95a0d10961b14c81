"""Runs on Celery workers (issue 20): the real daemon hands each run to one of two `cmp-pipelines worker` processes
through a real Redis broker on loopback. The machines share only PostgreSQL (store and Dagster instance), the S3
bucket (moto on loopback) and the broker; every partner file is run once, by a worker, and the ledger is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import dagster as dg
import pytest

from cmp_pipelines.lib.recovery import HEARTBEAT_TAG, HOST_TAG, LEASE_SETTING, PID_TAG, RECOVERY_OF_TAG
from cmp_pipelines.lib.resources.s3_store import S3FileStore
from cmp_pipelines.lib.run_workers import BROKER_SETTING
from tests.support.platform import Platform, document, payment
from tests.support.run_workers import BIN, TASK_TAG, Cluster, open_instance, start, stop, write_workspace

# marked postgres: they run in `make test-pg`, which CI calls with its servers installed
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

NRP_JOB = "non_recurring_payment_job"


def test_partner_files_in_a_bucket_are_run_once_each_by_two_workers_sharing_only_postgres(
        pg_platform, s3_bucket, redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("CMP_FILES_URL", s3_bucket.url)
    platform = Platform(pg_platform.root, S3FileStore(url=s3_bucket.url), pg_platform.keyring)
    env = {**os.environ, BROKER_SETTING: redis_url, "GX_ANALYTICS_ENABLED": "false"}
    with Cluster(tmp_path, pg_platform.root / "keys", env) as cluster:
        written = cluster.init()
        assert "class: CeleryRunLauncher" in written and f"env: {BROKER_SETTING}" in written
        assert "postgres_url" in written and "default_limit: 4" in written  # instance in PostgreSQL, runs in parallel
        assert redis_url not in written and pg_platform.url not in written  # referenced by name, never written
        cluster.start_worker("w1")
        cluster.start_worker("w2")
        cluster.start_daemon()
        amounts = {f"ACC000000{n:02d}": f"{n}.{n:02d}" for n in range(1, 9)}
        before = {account: pg_platform.balance(account) for account in amounts}
        for n, (account, amount) in enumerate(amounts.items(), 1):
            platform.drop(f"PAYPOINT-{n}.json.enc", document([payment("1", account, amount)],
                                                             file_id=f"PAYPOINT-CELERY-{n}"))
        cluster.wait(lambda: cluster.finished([NRP_JOB], 8), 300, "eight NRP runs")
        runs = cluster.runs(NRP_JOB)
        assert len(runs) == 8 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), \
            cluster.failures(runs) + cluster.logs()
        # each run went through the broker and was executed in a pool process of one of the two workers
        for run in runs:
            assert run.tags.get(TASK_TAG), run.tags
            # a pool process of a worker executes runs only: it yields the CPU (CMP_RUN_NICE, 10 on PostgreSQL)
            assert "This run's process yields the CPU to interactive work: nice 10 (CMP_RUN_NICE)." in [
                entry.message for entry in cluster.instance.all_logs(run.run_id)], run.run_id
        assert {cluster.executed_by(run) for run in runs} <= {"w1", "w2"}
    assert pg_platform.payment_postings() == 8
    for account, amount in amounts.items():
        assert pg_platform.balance(account) == before[account] - int(amount.replace(".", ""))
    assert s3_bucket.keys("cmp/outbound/acknowledgements/nrp/PAYPOINT/") == sorted(
        f"cmp/outbound/acknowledgements/nrp/PAYPOINT/PAYPOINT-{n}.ack.json.enc" for n in range(1, 9))
    assert {platform.read_ack("PAYPOINT", f"PAYPOINT-{n}")["header"]["status"] for n in range(1, 9)} == {"PROCESSED"}
    assert s3_bucket.keys("cmp/inbound/") == []  # every file archived
    # no machine kept a partner file, a document or a store on its own disk: PAYPOINT has no transport configured,
    # and its default folder, delivered/PAYPOINT, is a prefix of the bucket, whichever worker ran the delivery
    for name in ("daemon", "w1", "w2"):
        data = tmp_path / name / "data"
        assert [f for f in data.rglob("*") if f.is_file() and f.relative_to(data).parts[0] != "dagster_home"] == []
    published = {k.rsplit("/", 1)[1] for k in s3_bucket.keys("cmp/outbound/")}
    assert {k.rsplit("/", 1)[1] for k in s3_bucket.keys("cmp/delivered/")} <= published  # those delivered so far


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
    workspace = write_workspace(tmp_path / "workspace.yaml")
    records = [payment(str(n), f"ACC000000{n % 20 + 1:02d}", "1.00") for n in range(1, 100_001)]
    processes = []
    instance = open_instance(home)

    def nrp_runs() -> list[dg.DagsterRun]:
        return list(instance.get_runs(dg.RunsFilter(job_name=NRP_JOB)))

    try:
        (tmp_path / "w1").mkdir()
        lost = start(_as_host("cmp-worker-1", [str(BIN / "cmp-pipelines"), "worker", "--name", "w1@test"]), env,
                     tmp_path / "w1", tmp_path / "w1.log")
        processes.append(lost)
        processes.append(start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, tmp_path,
                               tmp_path / "daemon.log"))
        platform.drop("PAYPOINT-BIG.json.enc", document(records, file_id="PAYPOINT-CELERY-BIG"))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # the run has started on the first worker's machine: that machine dies
            runs = nrp_runs()
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
        processes.append(start(_as_host("cmp-worker-2", [str(BIN / "cmp-pipelines"), "worker", "--name",
                                                         "w2@test"]), env, tmp_path / "w2", tmp_path / "w2.log"))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = nrp_runs()
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
            stop(process)
        instance.dispose()
    assert platform.payment_postings() == 100_000  # every record once, whatever the lost run had committed
    with platform.connect() as con:
        assert con.execute("SELECT sum(amount_minor) FROM ledger_postings WHERE kind = 'PAYMENT'").fetchone()[0] \
            == -100_000 * 100
    assert [p.name for p in (platform.root / "outbound/acknowledgements/nrp/PAYPOINT").iterdir()] \
        == ["PAYPOINT-BIG.ack.json.enc"]
