"""The distributed set-up of the run-worker tests (issue 20), one copy for all of them: a `dagster-daemon` "machine"
and `cmp-pipelines worker` "machines", each a process group with a data folder (scratch, dagster.yaml) and a copy
of the partner keys of its own (a mounted secret), sharing only what the environment names: PostgreSQL (store and
Dagster instance), the bucket and the Redis broker. The daemon hands every run to the broker (CeleryRunLauncher,
written by `cmp-pipelines init`); a scheduled run is created and queued on its instance as `dagster job launch`
(or a schedule's tick) queues it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.instance.ref import InstanceRef

from cmp_pipelines.lib.headless import LOCATION_NAME, MODULE_NAME
from cmp_pipelines.lib.recovery import PID_TAG

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[2]
QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG: the run's broker queue
TASK_TAG = "dagster-celery/task_id"  # set by the CeleryRunLauncher when it hands the run to the broker


def start(args: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    """A process in a session (process group) of its own, so that stopping it stops its children too."""
    return subprocess.Popen(args, env=env, cwd=str(cwd), stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def pool(pid: int) -> set[int]:
    """A worker's pool processes (prefork): a run is executed in one of them."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def open_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def failures(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> str:
    """What the failed runs' event logs say, for an assertion's message."""
    return "\n".join(f"{r.job_name} {r.run_id[:8]} {r.status.value}: " + " | ".join(
        (e.message or "") + (str(e.dagster_event.event_specific_data)[:600] if e.dagster_event else "")
        for e in instance.all_logs(r.run_id)
        if e.dagster_event and e.dagster_event.event_type_value in ("STEP_FAILURE", "PIPELINE_FAILURE",
                                                                    "ENGINE_EVENT", "RUN_FAILURE"))[-2500:]
        for r in runs if r.status != dg.DagsterRunStatus.SUCCESS)


def machine(root: Path, keys: Path, env: dict) -> dict:
    """One machine's environment: a data folder of its own and its own copy of the partner keys."""
    shutil.copytree(keys, root / "keys")
    return {**env, "CMP_DATA_DIR": str(root / "data"), "CMP_KEYS_DIR": str(root / "keys"),
            "DAGSTER_HOME": str(root / "data" / "dagster_home")}


def write_workspace(path: Path) -> Path:
    path.write_text(f"load_from:\n  - python_module:\n      module_name: {MODULE_NAME}\n"
                    f"      working_directory: {PROJECT}\n      location_name: {LOCATION_NAME}\n")
    return path


class Cluster:
    """The daemon machine and the worker machines under `root`; `keys` is the partners' key folder each copies.
    Use as a context manager: every process it started is stopped (its whole group, newest first) when the block
    ends."""

    def __init__(self, root: Path, keys: Path, env: dict):
        self.root, self.keys, self.env = root, keys, env
        self.daemon_env = machine(root / "daemon", keys, env)
        self.home = Path(self.daemon_env["DAGSTER_HOME"])
        self.workspace = write_workspace(root / "workspace.yaml")
        self.workers: dict[str, subprocess.Popen] = {}
        self.processes: list[subprocess.Popen] = []
        self._instance: dg.DagsterInstance | None = None
        self._workspace = None

    def init(self) -> str:
        """`cmp-pipelines init` on the daemon's machine; the dagster.yaml it wrote."""
        done = subprocess.run([str(BIN / "cmp-pipelines"), "init"], env=self.daemon_env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        return (self.home / "dagster.yaml").read_text()

    def start_worker(self, name: str, queues: tuple[str, ...] = ()) -> subprocess.Popen:
        env = machine(self.root / name, self.keys, self.env)
        args = [str(BIN / "cmp-pipelines"), "worker", "--name", f"{name}@test"]
        for queue in queues:
            args += ["--queue", queue]
        process = start(args, env, self.root / name, self.root / f"{name}.log")
        self.workers[name] = process
        self.processes.append(process)
        return process

    def start_daemon(self) -> None:
        self.processes.append(start([str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
                                    self.daemon_env, self.root, self.root / "daemon.log"))

    @property
    def instance(self) -> dg.DagsterInstance:
        """The daemon's instance, opened once (an open costs a fraction of a second of CPU, not to pay per poll)."""
        if self._instance is None:
            self._instance = open_instance(self.home)
        return self._instance

    def launch(self, job: str, partition: str, tags: dict | None = None) -> str:
        """A run of `job` for `partition` created on the daemon's instance and submitted to its run queue, as
        `dagster job launch` does it (its own `_create_run`, then `submit_run`; the daemon's queue then hands the run
        to the broker), through one workspace kept open for the cluster's life: a `dagster job launch` process per
        run would load the code location twice a call (CLI and code server), seconds of CPU each on 2 shared cores.
        Returns the run id."""
        from dagster._cli.job import _create_run
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import WorkspaceFileTarget

        if self._workspace is None:
            self._workspace = WorkspaceProcessContext(self.instance, WorkspaceFileTarget(paths=[str(self.workspace)]))
        request = self._workspace.create_request_context()
        location = request.get_code_location(LOCATION_NAME)
        [repository] = location.get_repositories().values()
        run = _create_run(instance=self.instance, code_location=location, remote_repo=repository,
                          remote_job=repository.get_full_job(job), run_config={},
                          tags={"dagster/partition": partition, **(tags or {})}, op_selection=None, run_id=None)
        self.instance.submit_run(run.run_id, request)
        return run.run_id

    def runs(self, job: str | None = None) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(dg.RunsFilter(job_name=job) if job else None))

    def wait(self, done, timeout: float, what: str) -> None:
        """Poll `done()` every 2 s until it is true; on time out, fail saying what and with the logs' tails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(2)
        raise AssertionError(f"timed out waiting for {what}\n{self.failures()}\n{self.logs()}")

    def finished(self, jobs: list[str], count: int) -> bool:
        runs = [r for r in self.runs() if r.job_name in jobs]
        return len(runs) >= count and all(r.is_finished for r in runs)

    def failures(self, runs: list[dg.DagsterRun] | None = None) -> str:
        return failures(self.instance, self.runs() if runs is None else runs)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n" + log.read_text(errors="replace")[-2000:]
                         for log in sorted(self.root.glob("*.log")))

    def executed_by(self, run: dg.DagsterRun) -> str:
        """The worker whose pool process executed `run` (its `cmp/process` tag names the pid)."""
        pid = int(run.tags[PID_TAG].split("-")[0])
        found = [name for name, process in self.workers.items() if pid in pool(process.pid)]
        assert found, f"run {run.run_id} ({run.job_name}) ran in process {pid}, in no worker's pool"
        return found[0]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        # the daemon first: a run the stop interrupts on a worker (a delivery or dispatch run the test does not
        # wait for) is then not judged failed and alerted by a daemon that is itself going away
        for process in reversed(self.processes):
            stop(process)
        if self._workspace is not None:
            self._workspace.__exit__(None, None, None)  # its code server
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None
