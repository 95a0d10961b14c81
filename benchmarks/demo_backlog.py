"""The `make run` demo's backlog (issue 16): what a new user waits for after `make run` before every sample file is
processed. A fresh data folder is prepared exactly as `make prepare` does it (untimed), then `dg dev` starts the
UI and the daemon over it as `make run` does (with the local SMTP catcher the demo's e-mails go to), and the clock
runs from that start until the backlog is drained: every inbound sample file consumed, no run queued or under way,
and no new run for `--quiet` seconds (three sensor loops by default). The runs `make prepare` itself executes
(the card and direct-debit days) are before the clock and not counted. Printed: the drain time, the first run's
pickup, every run's job, wait in the queue and duration. Figures only; it exits 0 when the backlog drained with
every run a success, 1 otherwise.

    .venv/bin/python benchmarks/demo_backlog.py [--workdir DIR] [--keep] [--timeout 600] [--store postgres [--url URL]]

`--store postgres`: the same with CMP_DATABASE_URL set (`make run` on PostgreSQL: the store, and the Dagster
instance in the same server), on a fresh database of a server it starts (or of `--url`, an admin URL).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# what `make prepare` leaves for the sensors: every file in these is a sample the daemon must process
INBOUND_FEEDS = ("nrp", "card_rejections", "arudd", "addacs", "warehouse_dispatch", "device_enrolment", "billing",
                 "delivery_receipts")
TARGET_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pending_files(data: Path) -> list[Path]:
    return [p for feed in INBOUND_FEEDS for p in (data / "inbound" / feed).rglob("*") if p.is_file()]


def _instance(home: Path):
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def measure(root: Path, timeout: float, quiet: float, database_url: str | None = None) -> dict:
    """Prepare a demo folder under `root`, start `dg dev` over it, and time the backlog's drain."""
    from cmp_pipelines.lib.inbound_sensor import CODE_SERVER_THREADS, SERVER_THREAD_SETTINGS

    data = root / "data"
    env = {**os.environ, "CMP_DATA_DIR": str(data), "DAGSTER_HOME": str(data / "dagster_home"),
           "GX_ANALYTICS_ENABLED": "false", "VIRTUAL_ENV": str(PROJECT / ".venv"),
           **dict.fromkeys(SERVER_THREAD_SETTINGS, str(CODE_SERVER_THREADS))}  # as `make run` starts `dg dev`
    if database_url:  # the instance's storage block reads it too, here as well as in `dg dev`
        env["CMP_DATABASE_URL"] = os.environ["CMP_DATABASE_URL"] = database_url
    env.pop("CMP_KEYS_DIR", None)
    started = time.monotonic()
    with (root / "prepare.log").open("wb") as log:
        subprocess.run(["make", "-s", "prepare"], cwd=PROJECT, env=env, check=True, stdout=log,
                       stderr=subprocess.STDOUT)
    prepare_s = time.monotonic() - started
    pending = _pending_files(data)
    smtp_port, ui_port = _free_port(), _free_port()
    env |= {"CMP_SMTP_HOST": "127.0.0.1", "CMP_SMTP_PORT": str(smtp_port)}
    logs = (root / "smtp.log").open("wb"), (root / "dg_dev.log").open("wb")
    smtp = subprocess.Popen([str(BIN / "cmp-pipelines"), "smtp-catcher", "--host", "127.0.0.1", "--port",
                             str(smtp_port)], env=env, cwd=PROJECT, stdout=logs[0], stderr=subprocess.STDOUT,
                            start_new_session=True)
    origin = time.time()
    dev = subprocess.Popen([str(BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(ui_port)], env=env,
                           cwd=PROJECT, stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)
    instance = None
    try:
        deadline = time.monotonic() + timeout
        while not (data / "dagster_home" / "dagster.yaml").exists():
            time.sleep(0.2)
        instance = _instance(data / "dagster_home")
        last_change, seen = time.monotonic(), 0
        while time.monotonic() < deadline:
            records = [r for r in instance.get_run_records() if r.create_timestamp.timestamp() >= origin]
            busy = [r for r in records if not r.dagster_run.is_finished]
            if busy or _pending_files(data) or len(records) != seen:
                last_change, seen = time.monotonic(), len(records)
            elif records and time.monotonic() - last_change >= quiet:
                break
            if dev.poll() is not None:
                raise RuntimeError(f"dg dev exited with {dev.returncode} (see {root / 'dg_dev.log'})")
            time.sleep(0.5)
        else:
            raise TimeoutError(f"the demo backlog did not drain in {timeout:.0f} s: "
                               f"{len(_pending_files(data))} files still inbound (see {root / 'dg_dev.log'})")
        records = [r for r in instance.get_run_records() if r.create_timestamp.timestamp() >= origin]
    finally:
        for process in (dev, smtp):
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)
        for log in logs:
            log.close()
        if instance is not None:
            instance.dispose()
    runs = sorted(records, key=lambda r: r.create_timestamp)
    return {
        "prepare_s": prepare_s,
        "files": len(pending),
        "first_created_s": runs[0].create_timestamp.timestamp() - origin,
        "drained_s": max(r.end_time for r in runs if r.end_time) - origin,
        "runs": [{"job": r.dagster_run.job_name, "status": r.dagster_run.status.value,
                  "created_s": r.create_timestamp.timestamp() - origin,
                  "queued_s": (r.start_time or 0) - r.create_timestamp.timestamp() if r.start_time else None,
                  "run_s": (r.end_time - r.start_time) if r.start_time and r.end_time else None} for r in runs],
    }


def report(result: dict) -> bool:
    ok = all(run["status"] == "SUCCESS" for run in result["runs"])
    print()
    print("`make run` demo backlog: `make prepare` (untimed), then `dg dev` and the SMTP catcher as `make run` starts "
          "them; from that start until every sample file is processed and the run queue is quiet")
    print(f"  prepare (untimed): {result['prepare_s']:.1f} s; sample files waiting: {result['files']}")
    print(f"  {'figure':<50} {'value':>14} {'target':>14} {'value/target':>13}")
    target = f"<= {TARGET_S:.0f} s"
    print(f"  {'backlog drained (start -> last run ended)':<50} {result['drained_s']:>12.1f} s {target:>14}"
          f" {result['drained_s'] / TARGET_S:>13.2f}")
    print(f"  {'start -> first run created':<50} {result['first_created_s']:>12.1f} s")
    counts = Counter(run["job"] for run in result["runs"])
    print(f"  runs: {len(result['runs'])} ({', '.join(f'{job} {n}' for job, n in counts.most_common())})")
    print(f"    {'job':<46} {'status':>8} {'created':>9} {'queued':>8} {'run':>7}")
    for run in result["runs"]:
        queued = "" if run["queued_s"] is None else f"{run['queued_s']:.1f}"
        took = "" if run["run_s"] is None else f"{run['run_s']:.1f}"
        print(f"    {run['job']:<46} {run['status']:>8} {run['created_s']:>9.1f} {queued:>8} {took:>7}")
    if not ok:
        print("  NOT every run succeeded: the drain time above is not a valid figure")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="default: a fresh temporary folder, removed afterwards")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--quiet", type=float, default=15.0, help="seconds without a new run that end the backlog")
    parser.add_argument("--store", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--url", help="with --store postgres: an admin URL of a server to use (default: start one)")
    args = parser.parse_args()
    (PROJECT / "benchmarks" / "out").mkdir(exist_ok=True)  # absent in a fresh clone
    root = Path(args.workdir or tempfile.mkdtemp(prefix="demo-backlog-", dir=PROJECT / "benchmarks" / "out"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.store == "duckdb":
            return 0 if report(measure(root, args.timeout, args.quiet)) else 1
        sys.path.insert(0, str(PROJECT))
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import psycopg
        from servers import postgres

        with postgres(args.url) as admin:
            database = f"cmp_demo_{os.getpid()}"
            with psycopg.connect(admin, autocommit=True) as con:
                con.execute(f"CREATE DATABASE {database}")
            url = admin.rsplit("/", 1)[0] + "/" + database
            return 0 if report(measure(root, args.timeout, args.quiet, url)) else 1
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
