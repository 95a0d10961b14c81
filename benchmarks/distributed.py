"""NRP files through the distributed set-up (issue 20): a real `dagster-daemon` hands every run to Celery run workers
(`cmp-pipelines worker`) through Redis; daemon and workers share only PostgreSQL (store and Dagster instance), an S3
bucket (moto) and the broker, each with a data folder and a copy of the keys of its own. The same files are run
with ONE worker and with TWO, and the throughput of each is printed with the ratio.

    .venv/bin/python benchmarks/distributed.py [--files 8] [--records 25000] [--accounts 20000] [--repeat 1]
    BENCH_DISTRIBUTED=1 make bench        (run.py --distributed runs this after its other sections)

Per trial: a fresh database (CREATE DATABASE ... TEMPLATE of one `db copy` filled from a seeded DuckDB store), a
fresh bucket and a fresh Redis database; workers and daemon started, the daemon's NRP sensor seen ticking, then all
files uploaded into `inbound/nrp/<partner>/` (the clock starts when the upload is done: the partner's upload is not
the platform's time). Measured until the last run has ended: records/s and files/min over that window, the window
from the first run's start (no pickup), and each run's own time. Verified after each trial (stops the harness on a
miss): every run succeeded and went through the broker, every accepted record posted once, every acknowledgement
published. Servers: benchmarks/servers.py. Figures only, never asserts a target: on a 2-core machine the daemon,
PostgreSQL, moto and both workers share two cores, so two workers cannot double anything here; the ratio says how
much of a second machine's worth the design can use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(HERE))

BIN = Path(sys.executable).parent
PARTNERS = ("PAYPOINT", "LOCKBOX")
NRP_JOB = "non_recurring_payment_job"
SENSOR = "nrp_inbound_files_sensor"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "cmp-bench-key-id", "AWS_SECRET_ACCESS_KEY": "cmp-bench-secret",
               "AWS_DEFAULT_REGION": "eu-west-2"}


def setup(workdir: Path, files: int, records: int, accounts: int, seed: int) -> list[dict]:
    """The seeded DuckDB store (copied into PostgreSQL by the caller), the partners' keys and `files` encrypted
    files of `records` records, alternating PAYPOINT and LOCKBOX, record ids unique across files."""
    import orjson
    from run import _payments

    from cmp_pipelines.core.config import load_partners, load_probes
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.db.connection import connect
    from cmp_pipelines.core.reference import sync_reference_data
    from cmp_pipelines.core.settings import PROJECT_ROOT
    from cmp_pipelines.demo.data import nrp_document, seed_accounts

    os.environ["CMP_DATA_DIR"] = str(workdir / "template")
    os.environ["CMP_KEYS_DIR"] = str(workdir / "keys")
    now = datetime.now(UTC)
    config = PROJECT_ROOT / "config"
    with connect(workdir / "template" / "cmp.duckdb") as con:
        sync_reference_data(con, load_partners(config), load_probes(config))
        seed_accounts(con, accounts, seed, now)
        con.execute("CHECKPOINT")
    keyring = PartnerKeyring(workdir / "keys")
    for partner in PARTNERS:
        keyring.init_keys(partner)
    made = []
    for n in range(files):
        partner = PARTNERS[n % len(PARTNERS)]
        file_id = f"{partner}-DIST-{n:03d}"
        payments = _payments(records, accounts, seed + n, now)
        for p in payments:
            if isinstance(p.get("record_id"), str):
                p["record_id"] = f"F{n}-{p['record_id']}"
        name = f"{file_id}.json.enc"
        (workdir / "files").mkdir(exist_ok=True)
        (workdir / "files" / name).write_bytes(
            keyring.encrypt(partner, orjson.dumps(nrp_document(partner, file_id, payments, now))))
        made.append({"partner": partner, "name": name, "records": records})
    return made


def _start(args: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
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


def _machine(root: Path, keys: Path, env: dict) -> dict:
    """One machine: a data folder and instance home of its own, its own copy of the keys (a mounted secret)."""
    shutil.copytree(keys, root / "keys")
    return {**env, "CMP_DATA_DIR": str(root / "data"), "CMP_KEYS_DIR": str(root / "keys"),
            "DAGSTER_HOME": str(root / "data" / "dagster_home")}


def _wait(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def trial(workdir: Path, name: str, workers: int, files: list[dict], admin: str, endpoint: str, broker: str,
          timeout: float) -> dict:
    import boto3
    import dagster as dg
    import psycopg
    from dagster._core.instance.ref import InstanceRef

    from cmp_pipelines.lib.headless import LOCATION_NAME, MODULE_NAME

    root = workdir / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    database = f"dist_{name}"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {database}")
        con.execute(f"CREATE DATABASE {database} TEMPLATE dist_template")
    url = admin.rsplit("/", 1)[0] + f"/{database}"
    bucket = f"cmp-bench-{name.replace('_', '-')}-{os.getpid()}"
    s3 = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in CREDENTIALS.items()
                                                        if k != "AWS_DEFAULT_REGION"},
                      region_name=CREDENTIALS["AWS_DEFAULT_REGION"])
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    env = {**os.environ, **CREDENTIALS, "CMP_DATABASE_URL": url, "CMP_FILES_URL": f"s3://{bucket}/cmp",
           "CMP_S3_ENDPOINT_URL": endpoint, "CMP_CELERY_BROKER_URL": broker, "GX_ANALYTICS_ENABLED": "false"}
    daemon_env = _machine(root / "daemon", workdir / "keys", env)
    done = subprocess.run([str(BIN / "cmp-pipelines"), "init"], env=daemon_env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"cmp-pipelines init failed: {done.stderr[-2000:]}")
    home = Path(daemon_env["DAGSTER_HOME"])
    workspace = root / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: {MODULE_NAME}\n"
                         f"      working_directory: {PROJECT}\n      location_name: {LOCATION_NAME}\n")
    processes = []
    try:
        for n in range(1, workers + 1):
            processes.append(_start([str(BIN / "cmp-pipelines"), "worker", "--name", f"w{n}@bench"],
                                    _machine(root / f"w{n}", workdir / "keys", env), root / f"w{n}",
                                    root / f"w{n}.log"))
        for n in range(1, workers + 1):
            _wait(lambda n=n: b"ready." in (root / f"w{n}.log").read_bytes(), 120, f"worker {n} to be ready")
        processes.append(_start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], daemon_env, root,
                                root / "daemon.log"))
        _wait(lambda: f"for sensor: {SENSOR}".encode() in (root / "daemon.log").read_bytes(), 180,
              "the daemon's NRP sensor to tick")
        upload_started = time.monotonic()
        for f in files:
            s3.put_object(Bucket=bucket, Key=f"cmp/inbound/nrp/{f['partner']}/{f['name']}",
                          Body=(workdir / "files" / f["name"]).read_bytes())
        upload_s = time.monotonic() - upload_started
        dropped = time.time()
        os.environ["CMP_DATABASE_URL"] = url  # the instance's dagster.yaml names it (as every machine's does)
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
            def finished():
                records = instance.get_run_records(dg.RunsFilter(job_name=NRP_JOB))
                return records if len(records) >= len(files) and all(
                    r.dagster_run.is_finished for r in records) else None
            try:
                records = _wait(finished, timeout, f"{len(files)} NRP runs to finish", poll=1.0)
            except TimeoutError as exc:
                tails = "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-1500:]
                                  for p in sorted(root.glob("*.log")))
                raise SystemExit(f"{exc}\n{tails}") from None
            failed = [r.dagster_run.run_id[:8] for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
            if failed:
                raise SystemExit(f"distributed benchmark: runs {failed} did not succeed (logs under {root})")
            if not all(r.dagster_run.tags.get("dagster-celery/task_id") for r in records):
                raise SystemExit("distributed benchmark: a run was not executed through the broker")
            starts = [r.start_time for r in records]
            ends = [r.end_time for r in records]
            run_s = sorted(e - s for s, e in zip(starts, ends, strict=True))
    finally:
        for process in reversed(processes):
            _stop(process)
    total = sum(f["records"] for f in files)
    with psycopg.connect(url) as con:
        accepted = con.execute("SELECT count(*) FROM nrp_records WHERE outcome = 'ACCEPTED'").fetchone()[0]
        loaded = con.execute("SELECT count(*) FROM nrp_records").fetchone()[0]
        postings = con.execute("SELECT count(*) FROM ledger_postings WHERE kind = 'PAYMENT'").fetchone()[0]
    acks = s3.list_objects_v2(Bucket=bucket, Prefix="cmp/outbound/acknowledgements/nrp/").get("KeyCount", 0)
    sizes = _sizes(url, s3, bucket)
    if loaded != total or postings != accepted or acks != len(files):
        raise SystemExit(f"distributed benchmark verification failed ({workers} worker(s)): records loaded "
                         f"{loaded:,} of {total:,}, payment postings {postings:,} for {accepted:,} accepted records, "
                         f"{acks} acknowledgements for {len(files)} files")
    window = max(ends) - dropped
    return {"workers": workers, "files": len(files), "records": total, "postings": postings, "upload_s": upload_s,
            "window_s": window, "processing_s": max(ends) - min(starts), "first_start_s": min(starts) - dropped,
            "records_per_s": total / window, "files_per_min": len(files) / window * 60,
            "run_s_median": statistics.median(run_s), "run_s": run_s, "sizes": sizes}


SIZED_TABLES = ("nrp_records", "ledger_postings", "inbound_files", "batches", "delivery_register", "job_runs",
                "event_logs", "runs", "run_tags", "job_ticks", "asset_keys", "asset_event_tags")


def _sizes(url: str, s3, bucket: str) -> dict:
    """What the trial left, for the capacity plan: each table's rows and bytes (heap + indexes + TOAST, after
    ANALYZE) in PostgreSQL, and the bucket's bytes by top folder. The seeded accounts and invoices are the same
    in every trial, so these are the files' own rows (the ledger's less the seeded charges: see the report)."""
    import psycopg

    tables = {}
    with psycopg.connect(url, autocommit=True) as con:
        for table in SIZED_TABLES:
            if con.execute("SELECT to_regclass(%s)", [table]).fetchone()[0] is None:
                continue
            con.execute(f"ANALYZE {table}")
            rows, size = con.execute(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}").fetchone()
            tables[table] = {"rows": rows, "bytes": size}
        tables["_database"] = {"bytes": con.execute("SELECT pg_database_size(current_database())").fetchone()[0]}
    folders: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="cmp/"):
        for item in page.get("Contents", []):
            folder = item["Key"].split("/")[1]
            folders[folder] = folders.get(folder, 0) + item["Size"]
    return {"tables": tables, "bucket": folders}


def bench(args: argparse.Namespace, workdir: Path) -> dict:
    import psycopg
    from servers import postgres, redis, s3

    from cmp_pipelines.core.db.copy_store import copy_to_postgres

    print(f"  distributed: seeding {args.accounts:,} accounts, {args.files} files of {args.records:,} records ...",
          file=sys.stderr, flush=True)
    files = setup(workdir, args.files, args.records, args.accounts, args.seed)
    trials: dict[int, list[dict]] = {1: [], 2: []}
    with postgres(args.url) as admin, redis() as broker, s3() as endpoint:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute("DROP DATABASE IF EXISTS dist_template")
            con.execute("CREATE DATABASE dist_template")
        copy_to_postgres(workdir / "template" / "cmp.duckdb", admin.rsplit("/", 1)[0] + "/dist_template")
        number = 0
        for attempt in range(max(1, args.repeat)):  # interleaved: drift in a loaded machine hits both alike
            for workers in (1, 2):
                number += 1
                print(f"  distributed: {workers} worker(s), run {attempt + 1} ...", file=sys.stderr, flush=True)
                trials[workers].append(trial(workdir, f"t{number}_{workers}w", workers, files, admin, endpoint,
                                             broker.rsplit("/", 1)[0] + f"/{number % 16}", args.timeout))
    return {"trials": trials, "files": args.files, "records_per_file": args.records, "accounts": args.accounts}


def _load() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def report(figures: dict) -> None:
    def median(workers: int) -> dict:
        runs = sorted(figures["trials"][workers], key=lambda r: r["records_per_s"])
        return runs[(len(runs) - 1) // 2]

    one, two = median(1), median(2)
    print()
    print(f"NRP distributed (daemon + Celery run workers on PostgreSQL + S3 (moto) + Redis; {figures['files']} "
          f"files of {figures['records_per_file']:,} records, {os.cpu_count()} CPUs shared by every process, "
          f"load average {_load()} at the end)")
    print(f"  {'':<34} {'1 worker':>12} {'2 workers':>12} {'ratio':>8}")
    rows = [("records/s (upload done -> last run end)", "records_per_s", "{:12,.0f}"),
            ("files/min", "files_per_min", "{:12.1f}"),
            ("window s (upload done -> last end)", "window_s", "{:12.1f}"),
            ("processing s (first start -> last end)", "processing_s", "{:12.1f}"),
            ("pickup s (upload done -> first start)", "first_start_s", "{:12.1f}"),
            ("one run's time, median s", "run_s_median", "{:12.1f}")]
    for label, key, fmt in rows:
        ratio = two[key] / one[key] if one[key] else 0
        print(f"  {label:<34} {fmt.format(one[key])} {fmt.format(two[key])} {ratio:7.2f}x")
    for workers in (1, 2):
        print(f"  {workers} worker(s), every trial: records/s "
              + ", ".join(f"{t['records_per_s']:,.0f}" for t in figures["trials"][workers]))
    print(f"  verified: {one['postings']:,} payment postings per trial, one acknowledgement per file")
    sizes = two.get("sizes")
    if sizes:
        print("  left in PostgreSQL after the 2-worker trial (rows, bytes with indexes, bytes/row):")
        for table, size in sizes["tables"].items():
            if "rows" in size:
                per = size["bytes"] / size["rows"] if size["rows"] else 0
                print(f"    {table:<18} {size['rows']:>10,} {size['bytes']:>14,} {per:>9,.0f}")
        print(f"    whole database {sizes['tables']['_database']['bytes']:,} bytes; bucket: "
              + ", ".join(f"{k}/ {v:,} B" for k, v in sorted(sizes["bucket"].items())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--records", type=int, default=25_000, help="records per file")
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=1, help="trials of each worker count, interleaved")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a trial may take")
    parser.add_argument("--url", help="an admin URL of a PostgreSQL server to use (default: start one)")
    parser.add_argument("--workdir", help="default: a temporary folder, removed afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    from servers import MissingServer

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cmp-dist-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        figures = bench(args, workdir)
        report(figures)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    except MissingServer as exc:
        print(exc)
        return 2
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
