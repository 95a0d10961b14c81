"""The orchestrated path, as a user meets it (issue 16): an encrypted file dropped into the partner's inbound
folder, picked up by the sensor of a real `dagster-daemon`, its run queued, launched by the daemon's run launcher
through the code server in a process of its own, until the acknowledgement is published. Scheduled jobs (CARD
extract, AUDDIS, DD collections) have no file to drop: `Session.launch` creates a run of a day's partition on the
daemon's instance and submits it to its queue with `dagster job launch`, as a schedule tick's run is queued.
`daemon` starts a daemon over a fresh copy of a store; `measure` (NRP), `Session.drop` and `Session.launch` time
one run each; `report` prints a section beside the function-level phases and the floor (run.py, direct_debit.py).

The timeline is read back from the instance (run record, event log), so every phase of the wait is named:
  pickup   drop -> the sensor created the run (sensor interval + tick)
  queue    run created -> launched (the run queue's dequeue interval, the `cmp_db` pool)
  start    launched -> RUN_START (process spawn, imports, definitions, instance) = the run's fixed cost, with
  setup    RUN_START -> first step (resources)
  steps    each step's STEP_START -> STEP_SUCCESS/FAILURE
  ack      drop (or run created) -> the published file exists (the headline), and -> run finished
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MODULE = "cmp_pipelines.definitions"
LOCATION = "cmp_pipelines"


def _environment(root: Path, keys: Path) -> dict[str, str]:
    from cmp_pipelines.lib.inbound_sensor import CODE_SERVER_THREADS, SERVER_THREAD_SETTINGS

    return {**os.environ, "CMP_DATA_DIR": str(root / "data"), "CMP_KEYS_DIR": str(keys),
            "DAGSTER_HOME": str(root / "dagster_home"), "GX_ANALYTICS_ENABLED": "false",
            # the code server's threads as `make run` gives them (a waiting inbound tick holds one)
            **dict.fromkeys(SERVER_THREAD_SETTINGS, str(CODE_SERVER_THREADS))}


def prepare(root: Path, store: Path, keys: Path) -> dict[str, str]:
    """A fresh data folder with a copy of the seeded store, and an instance configured as `make run`'s."""
    from cmp_pipelines.lib.instance_config import write_for_home

    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    (root / "dagster_home").mkdir()
    shutil.copyfile(store, root / "data" / "cmp.duckdb")
    write_for_home(root / "dagster_home")
    (root / "workspace.yaml").write_text(
        f"load_from:\n  - python_module:\n      module_name: {MODULE}\n      working_directory: {PROJECT}\n"
        f"      location_name: {LOCATION}\n")
    os.sync()
    return _environment(root, keys)


class ProcessCpu:
    """CPU seconds (user + system) of every process in the daemon's session while a block runs, by role: the daemon,
    its code server, the run fork server, and the run (its worker, forked from the fork server, and the helpers it
    starts: the compute logs' `tail`, multiprocessing's resource tracker; a helper of the code server's would count
    here too). Sampled from /proc every 0.1 s; a process that ends between samples loses at most its last 0.1 s. A
    process keeps the role it had when first seen (an exiting one has no command line) and is known by its pid and
    start time (pids are reused). The sampling itself is the harness's. Says what the orchestrator takes of the
    machine while a run runs."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, session_id: int):
        self.session_id = session_id
        self.first: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], float] = {}
        self.roles: dict[tuple[int, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self._baseline = True

    def _sample(self) -> None:
        seen: dict[int, tuple[int, int, str]] = {}  # pid -> (ppid, start time, command)
        cpu: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if int(fields[3]) != self.session_id:
                    continue
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue
            pid = int(entry.name)
            seen[pid] = (int(fields[1]), int(fields[19]), command)
            cpu[pid] = (int(fields[11]) + int(fields[12])) / self.TICK
        for pid, (ppid, started, command) in seen.items():
            key = (pid, started)
            if key not in self.roles:
                parent = seen.get(ppid, (0, 0, ""))[2]
                self.roles[key] = ("daemon" if "dagster-daemon" in command else "code server" if (
                    "api grpc" in command or "code-server" in command) else "fork server" if (
                    "warm_runs" in command and "dagster-daemon" in parent) else "run")
                self.first[key] = cpu[pid] if self._baseline else 0.0  # a process new since the start: all of it
            self.last[key] = cpu[pid]

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self) -> ProcessCpu:
        self._sample()
        self._baseline = False
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for key, role in self.roles.items():
            totals[role] = totals.get(role, 0.0) + self.last[key] - self.first[key]
        return totals


def _wait(predicate, deadline: float, what: str, poll: float = 0.05):
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out waiting for {what}")


class Session:
    """A running `dagster-daemon` over a fresh data folder: drop files into it or submit runs to its queue."""

    def __init__(self, root: Path, env: dict[str, str], deadline: float, session_id: int | None = None):
        self.root, self.env, self.deadline, self.session_id = root, env, deadline, session_id
        self.data = root / "data"
        self.home = Path(env["DAGSTER_HOME"])
        self._instance = None

    @property
    def instance(self):
        """The daemon's instance, opened once (an open costs ~0.1-0.5 s of CPU: not to be paid every poll)."""
        if self._instance is None:
            import dagster as dg
            from dagster._core.instance.ref import InstanceRef

            self._instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home)))
        return self._instance

    def close(self) -> None:
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None

    def warm(self) -> None:
        """Untimed: one run of a job with nothing to do, so the daemon's run launcher has started its fork server
        (cmp_pipelines/lib/warm_runs.py: started by the first launch, ready a few seconds later) before anything is
        timed - a daemon that has been up for more than its first run, which is what a user meets."""
        from cmp_pipelines.lib.warm_runs import READY_LOG

        log = self.root / "daemon.log"
        if READY_LOG in log.read_text(errors="replace"):
            return
        self.launch("deliver_documents_job", None, None)
        _wait(lambda: READY_LOG in log.read_text(errors="replace"), self.deadline, "the run fork server", poll=0.2)

    def _published(self, pattern: str):
        return next((p for p in self.data.glob(pattern) if not p.name.endswith(".part")), None)

    def drop(self, file: Path, feed: str, partner: str, published: str, job: str) -> dict:
        """The partner's upload of `file` (as `.part`, then renamed); the timeline in seconds from the rename to
        the published file (`published`, a glob under data/) and to the end of the sensor's run of `job`."""
        inbound = self.data / "inbound" / feed / partner
        inbound.mkdir(parents=True, exist_ok=True)
        partial = inbound / (file.name + ".part")
        shutil.copyfile(file, partial)
        os.sync()  # the copy's writeback is the partner's upload, not the platform's time
        with ProcessCpu(self.session_id) if self.session_id else nullcontext() as cpu:
            harness = os.times()
            dropped = time.time()
            partial.rename(inbound / file.name)  # the partner's completion convention (upload_completion: rename)
            started = time.monotonic()

            def run():
                return [r for r in _records(self.instance, job) if r.create_timestamp.timestamp() >= dropped - 1
                        and "dagster/sensor_name" in r.dagster_run.tags]
            out = self._until_published(published, lambda: _ended(run()))
            ack_s = time.monotonic() - started
            timeline = _timeline(self.instance, run, dropped, self.deadline)
            harness_s = sum(os.times()[:2]) - sum(harness[:2])
        timeline["cpu"] = {**cpu.by_role(), "harness": harness_s} if cpu else {}
        if out is None:
            raise RuntimeError(f"the run of {job} for {file.name} ended {timeline['status']} without {published} "
                               f"(see {self.root / 'daemon.log'})")
        return {"ack_s": ack_s, "ack_bytes": out.stat().st_size, **timeline}

    def _until_published(self, pattern: str, ended) -> Path | None:
        """The published file as soon as it exists (polled every 50 ms), or None once `ended()` (asked every
        second) says the run is over without it."""
        last = time.monotonic()
        while time.monotonic() < self.deadline:
            found = self._published(pattern)
            if found:
                return found
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                if ended():
                    return self._published(pattern)
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for the published {pattern}")

    def launch(self, job: str, partition: str | None, published: str | None) -> dict:
        """A run of `job` for `partition` created on the daemon's instance and submitted to its run queue by
        `dagster job launch` (a process of its own, as the scheduler's tick is not this harness); timed from the
        run's creation to the published file (`published`, a glob under data/) and to the run's end."""
        run_id = str(uuid.uuid4())
        tags = {"cmp/trigger": "bench", **({"dagster/partition": partition} if partition else {})}
        command = [str(Path(sys.executable).parent / "dagster"), "job", "launch", "-w",
                   str(self.root / "workspace.yaml"), "-j", job, "--run-id", run_id, "--tags", json.dumps(tags)]
        launcher = subprocess.Popen(command, env=self.env, cwd=str(self.root), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        out, seen = None, None
        if published:
            out = self._until_published(published, lambda: launcher.poll() not in (None, 0) or _ended(
                _records(self.instance, None, run_id)))
            seen = time.time()
        output = launcher.communicate(timeout=max(1.0, self.deadline - time.monotonic()))[0]
        if launcher.returncode != 0:
            raise RuntimeError(f"dagster job launch {job} {partition} failed: {output.decode(errors='replace')}")
        timeline = _timeline(self.instance, lambda: _records(self.instance, None, run_id), None, self.deadline)
        if published and out is None:
            raise RuntimeError(f"the run of {job} for {partition} ended {timeline['status']} without {published} "
                               f"(run {run_id}; see {self.root / 'daemon.log'})")
        if published:
            timeline |= {"ack_s": seen - timeline["created"], "ack_bytes": out.stat().st_size}
        return timeline


@contextmanager
def daemon(root: Path, store: Path, keys: Path, timeout: float = 900, ready_sensor: str = "nrp_inbound_files_sensor"):
    """A fresh data folder with a copy of `store`, and a `dagster-daemon run` over it until the block ends."""
    env = prepare(root, store, keys)
    log = (root / "daemon.log").open("wb")
    process = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                                str(root / "workspace.yaml")], env=env, cwd=str(root), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        # the daemon is ready when a sensor has ticked once (its code server loaded the definitions)
        _wait(lambda: ready_sensor in (root / "daemon.log").read_text(errors="replace"), deadline,
              "the first sensor tick", poll=0.2)
        session = Session(root, env, deadline, process.pid)
        try:
            session.warm()
            yield session
        finally:
            session.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


def measure(root: Path, store: Path, keys: Path, file: Path, partner: str = "PAYPOINT", feed: str = "nrp",
            timeout: float = 600) -> dict:
    """One drop of an NRP file through a daemon of its own; the timeline in seconds from the drop."""
    with daemon(root, store, keys, timeout, f"{feed}_inbound_files_sensor") as session:
        return session.drop(file, feed, partner, f"outbound/acknowledgements/{feed}/{partner}/*.ack.*",
                            "non_recurring_payment_job")


def _records(instance, job: str | None, run_id: str | None = None):
    import dagster as dg

    if run_id:
        return next(iter(instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))), None)
    return instance.get_run_records(dg.RunsFilter(job_name=job))


def _ended(found) -> bool:
    record = (found[0] if found else None) if isinstance(found, list) else found
    return record is not None and record.dagster_run.is_finished


def _timeline(instance, find, origin: float | None, deadline: float) -> dict:
    """The run `find()` returns (a record, or a list of them, newest first), once finished: its timeline in seconds
    (pickup from `origin` when given, queue, process start, resources, each step, run end)."""
    import dagster as dg

    def finished_run():
        found = find()
        record = (found[0] if found else None) if isinstance(found, list) else found
        return record if record is not None and record.dagster_run.is_finished else None

    record = _wait(finished_run, deadline, "the run to finish", poll=0.2)
    run = record.dagster_run
    events = {}
    steps: dict[str, list[float]] = {}
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        events.setdefault(kind, entry.timestamp)
        if event.step_key and kind in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            steps.setdefault(event.step_key, []).append(entry.timestamp)
    kinds = dg.DagsterEventType
    created = record.create_timestamp.timestamp()
    run_start = events[kinds.RUN_START.value]
    launched = events.get(kinds.RUN_STARTING.value, run_start)
    first_step = min(times[0] for times in steps.values())
    end = events.get(kinds.RUN_SUCCESS.value) or events.get(kinds.RUN_FAILURE.value) or max(
        t for times in steps.values() for t in times)
    return {
        "run_id": run.run_id,
        "status": run.status.value,
        "created": created,
        "pickup_s": created - origin if origin is not None else 0.0,
        "queue_s": launched - created,
        "start_s": run_start - launched,
        "setup_s": first_step - run_start,
        "steps": {key: times[-1] - times[0] for key, times in steps.items()},
        "step_done_s": {key: times[-1] - (origin if origin is not None else created) for key, times in steps.items()},
        "run_s": end - launched,
        "done_s": end - (origin if origin is not None else created),
    }


def cpu_line(run: dict, seconds_key: str = "done_s") -> str:
    """What each role took of the machine between the drop and the run's end (a run dict from `Session.drop`)."""
    cpu = run.get("cpu") or {}
    if not cpu:
        return ""
    wall = run[seconds_key]
    parts = ", ".join(f"{role} {cpu[role]:.2f}" for role in ("run", "daemon", "code server", "fork server",
                                                                "harness") if role in cpu)
    others = sum(v for k, v in cpu.items() if k not in ("run", "harness"))
    return (f"  CPU seconds from the drop to the run's end ({wall:.2f} s on {os.cpu_count()} cores): {parts}; "
            f"the orchestrator (daemon, code server, fork server) {others:.2f} s = {others / wall:.2f} of a core")


FLOOR_RATIO = 1.6  # issue 16: orchestrated, at most 1.6 x the floor's time plus a run's fixed cost


def median(runs: list[dict], key: str = "ack_s") -> dict:
    return sorted(runs, key=lambda run: run[key])[(len(runs) - 1) // 2]


def report(title: str, what: str, records: int, runs: list[dict], empties: list[dict], flow_s: float,
           floor_s: float | None, bench_steps: dict[str, float] | None = None,
           step_phases: dict[str, str] | None = None, empty_label: str = "empty run",
           full_floor_s: float | None = None) -> None:
    """One orchestrated section, as the NRP one: the published file's time against 1.6 x floor + a run's fixed cost
    (launch -> first step of `empties`, a run of the same job with nothing or almost nothing to do), the timeline
    of the median run beside the empty one, and each step beside its function-level phase. `full_floor_s`, a floor
    that writes everything the flow writes (the lean one leaves outputs out), gives a second bound."""
    big, empty = median(runs), median(empties, "done_s")
    fixed = empty["start_s"] + empty["setup_s"]
    print()
    print(title)
    print(f"  timed runs (s to {what}): {records:,} records "
          + " ".join(f"{run['ack_s']:.1f}" for run in runs) + f"; {empty_label} "
          + " ".join(f"{run['done_s']:.1f}" for run in empties) + " (to run end)")
    header = f"  {'figure':<50} {'value':>14} {'target':>14} {'value/target':>13}"
    print(header)
    print("  " + "-" * (len(header) - 2))

    def row(label: str, value: str, target: str = "", ratio: float | None = None) -> None:
        print(f"  {label:<50} {value:>14} {target:>14} {'' if ratio is None else f'{ratio:.2f}':>13}")

    row(f"{records:,} records: -> {what}", f"{big['ack_s']:.2f} s")
    row("    records/s", f"{records / big['ack_s']:,.0f}")
    row("    function-level flow (median)", f"{flow_s:.2f} s")
    if floor_s:
        bound = FLOOR_RATIO * floor_s + fixed
        row(f"    vs {FLOOR_RATIO} x floor ({floor_s:.2f} s) + fixed cost", f"{big['ack_s']:.2f} s",
            f"<= {bound:.2f} s", big["ack_s"] / bound)
    if full_floor_s:
        bound = FLOOR_RATIO * full_floor_s + fixed
        row(f"    vs {FLOOR_RATIO} x same-outputs floor ({full_floor_s:.2f} s) + fixed", f"{big['ack_s']:.2f} s",
            f"<= {bound:.2f} s", big["ack_s"] / bound)
    row("    a run's fixed cost (launch -> first step)", f"{fixed:.2f} s", f"({empty_label})")
    print()
    print(f"  {'timeline, seconds':<44} {f'{records:,} rec.':>12} {empty_label:>12}")
    keys = (("pickup_s", "drop -> run created (sensor)"),) if any(run["pickup_s"] for run in runs) else ()
    for key, label in (*keys, ("queue_s", "created -> launched (queue)"),
                       ("start_s", "launched -> run start (process, imports)"),
                       ("setup_s", "run start -> first step (resources)"), ("ack_s", f"-> {what}"),
                       ("run_s", "launched -> run end (checks included)"), ("done_s", "-> run end")):
        cell = f"{empty[key]:>12.2f}" if key in empty else f"{'':>12}"
        print(f"    {label:<42} {big[key]:>12.2f} {cell}")
    print()
    print(f"  {f'step ({records:,} records)':<50} {'in the run':>12} {'bench phase':>12} {'ratio':>8}")
    for step, seconds in big["steps"].items():
        phase = (step_phases or {}).get(step)
        bench = (bench_steps or {}).get(phase) if phase else None
        ratio = f"{seconds / bench:.2f}" if bench else ""
        print(f"    {step:<48} {seconds:>10.2f} s {f'{bench:.2f} s' if bench else '':>12} {ratio:>8}")
    if big.get("cpu"):
        print(cpu_line(big))
