"""The orchestrated path, as a user meets it (issue 16): an encrypted file dropped into the partner's inbound
folder, picked up by the sensor of a real `dagster-daemon`, its run queued, launched by the daemon's run launcher
through the code server in a process of its own, until the acknowledgement is published. Prints nothing itself;
`benchmarks/run.py` calls `measure` and reports the figures beside the function-level phases.

The timeline is read back from the instance (run record, event log), so every phase of the wait is named:
  pickup   drop -> the sensor created the run (sensor interval + tick)
  queue    run created -> launched (the run queue's dequeue interval, the `cmp_db` pool)
  start    launched -> RUN_START (process spawn, imports, definitions, instance) = the run's fixed cost, with
  setup    RUN_START -> first step (resources)
  steps    each step's STEP_START -> STEP_SUCCESS/FAILURE
  ack      drop -> the acknowledgement file exists (the headline), and drop -> run finished
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MODULE = "cmp_pipelines.definitions"
LOCATION = "cmp_pipelines"


def _environment(root: Path, keys: Path) -> dict[str, str]:
    return {**os.environ, "CMP_DATA_DIR": str(root / "data"), "CMP_KEYS_DIR": str(keys),
            "DAGSTER_HOME": str(root / "dagster_home"), "GX_ANALYTICS_ENABLED": "false"}


def prepare(root: Path, store: Path, keys: Path) -> dict[str, str]:
    """A fresh data folder with a copy of the seeded store, and an instance configured as `make run`'s."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    (root / "dagster_home").mkdir()
    shutil.copyfile(store, root / "data" / "cmp.duckdb")
    shutil.copyfile(PROJECT / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    (root / "workspace.yaml").write_text(
        f"load_from:\n  - python_module:\n      module_name: {MODULE}\n      working_directory: {PROJECT}\n"
        f"      location_name: {LOCATION}\n")
    os.sync()
    return _environment(root, keys)


def _wait(predicate, deadline: float, what: str, poll: float = 0.05):
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out waiting for {what}")


def measure(root: Path, store: Path, keys: Path, file: Path, partner: str = "PAYPOINT", feed: str = "nrp",
            timeout: float = 600) -> dict:
    """One drop of `file` through a daemon of its own; the timeline in seconds from the drop."""
    env = prepare(root, store, keys)
    log = (root / "daemon.log").open("wb")
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                               str(root / "workspace.yaml")], env=env, cwd=str(root), stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        sensor = f"{feed}_inbound_files_sensor"
        deadline = time.monotonic() + timeout
        # the daemon is ready when the feed's sensor has ticked once (its code server loaded the definitions)
        _wait(lambda: sensor in (root / "daemon.log").read_text(errors="replace"), deadline, "the first sensor tick",
              poll=0.2)
        inbound = root / "data" / "inbound" / feed / partner
        inbound.mkdir(parents=True, exist_ok=True)
        partial = inbound / (file.name + ".part")
        shutil.copyfile(file, partial)
        os.sync()  # the copy's writeback is the partner's upload, not the platform's time
        dropped = time.time()
        partial.rename(inbound / file.name)  # the partner's completion convention (upload_completion: rename)
        started = time.monotonic()
        acks = root / "data" / "outbound" / "acknowledgements" / feed / partner
        ack = _wait(lambda: next(iter(acks.glob("*.ack.*")), None) if acks.exists() else None, deadline,
                    "the acknowledgement")
        ack_s = time.monotonic() - started
        return {"ack_s": ack_s, "ack_bytes": ack.stat().st_size,
                **_timeline(Path(env["DAGSTER_HOME"]), dropped, deadline)}
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
        log.close()


def _timeline(home: Path, dropped: float, deadline: float) -> dict:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        def finished_run():
            runs = [r for r in instance.get_run_records() if "dagster/sensor_name" in r.dagster_run.tags]
            return runs[0] if runs and runs[0].dagster_run.is_finished else None

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
            "status": run.status.value,
            "pickup_s": created - dropped,
            "queue_s": launched - created,
            "start_s": run_start - launched,
            "setup_s": first_step - run_start,
            "steps": {key: times[-1] - times[0] for key, times in steps.items()},
            "run_s": end - launched,
            "done_s": end - dropped,
        }
