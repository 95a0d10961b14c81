"""The NRP flow on PostgreSQL against the same flow on the embedded DuckDB store (issue 19, phase 2b).

    .venv/bin/python benchmarks/pg_nrp.py [--records 1000000] [--accounts 200000] [--repeat 3] [--url ...]
    BENCH_STORE=postgres make bench        (run.py --store postgres calls this after its own sections)

Function level, exactly the calls the four assets make (load, post, posting file, acknowledge), each store in a
fresh process on a fresh copy of the same seeded store (DuckDB: a copy of the file; PostgreSQL: CREATE DATABASE
... TEMPLATE of a database `db copy` filled from that file). Runs interleaved, the median shown, with the ratio
PostgreSQL / DuckDB (target <= 1.5x). Then two files of records/2 from two partners (PAYPOINT, LOCKBOX) on
PostgreSQL: both at once (two processes) against one after the other, on fresh databases. Prints figures, never
asserts; a run that did not post every accepted record stops the harness. Without --url it starts its own server
from the local PostgreSQL binaries (tests/support/postgres.py) on a free loopback port. BENCH_PROFILE=1: each run
under cProfile, its stats beside its figures (<workdir>/pg.prof, duck.prof, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

PARTNERS = ("PAYPOINT", "LOCKBOX")


def _env(workdir: Path, data: Path) -> None:
    os.environ["CMP_DATA_DIR"] = str(data)
    os.environ["CMP_KEYS_DIR"] = str(workdir / "keys")
    os.environ["DAGSTER_HOME"] = str(workdir / "dagster_home")


def setup(workdir: Path, records: int, accounts: int, seed: int) -> dict:
    """The seeded DuckDB store and three encrypted files: one of `records` (PAYPOINT) and two of records/2."""
    import orjson
    from run import _payments

    from cmp_pipelines.core.config import load_partners, load_probes
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.db.connection import connect
    from cmp_pipelines.core.intake import partition_key, sha256_hex
    from cmp_pipelines.core.reference import sync_reference_data
    from cmp_pipelines.core.settings import PROJECT_ROOT
    from cmp_pipelines.demo.data import nrp_document, seed_accounts

    _env(workdir, workdir / "template")
    now = datetime.now(UTC)
    config = PROJECT_ROOT / "config"
    with connect(workdir / "template" / "cmp.duckdb") as con:
        sync_reference_data(con, load_partners(config), load_probes(config))
        seed_accounts(con, accounts, seed, now)
        con.execute("CHECKPOINT")
    keyring = PartnerKeyring(workdir / "keys")
    files = {}
    for label, partner, count, file_seed in (("one", "PAYPOINT", records, seed), ("half_a", "PAYPOINT", records // 2,
                                             seed + 1), ("half_b", "LOCKBOX", records // 2, seed + 2)):
        keyring.init_keys(partner)
        file_id = f"{partner}-PGBENCH-{label}-{count}"
        payments = _payments(count, accounts, file_seed, now)
        for p in payments:  # record ids unique across the two halves: the partners' own numbering
            if isinstance(p, dict) and isinstance(p.get("record_id"), str):
                p["record_id"] = f"{label}-{p['record_id']}"
        token = keyring.encrypt(partner, orjson.dumps(nrp_document(partner, file_id, payments, now)))
        name = f"{file_id}.json.enc"
        (workdir / name).write_bytes(token)
        files[label] = {"partner": partner, "name": name, "key": partition_key(partner, name, sha256_hex(token)),
                        "records": count}
    return files


def stage(workdir: Path, data: Path, files: list[dict], duckdb_copy: bool) -> None:
    shutil.rmtree(data, ignore_errors=True)
    for f in files:
        inbound = data / "inbound" / "nrp" / f["partner"]
        inbound.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(workdir / f["name"], inbound / f["name"])
    if duckdb_copy:
        shutil.copyfile(workdir / "template" / "cmp.duckdb", data / "cmp.duckdb")


def worker(workdir: Path, data: Path, key: str, url: str | None) -> dict:
    """One file through the four steps, timed, in this process (the phase run.py's flow phase times), at the CPU
    priority a run's own process takes on this store (`CMP_RUN_NICE`; 10 on PostgreSQL unless set)."""
    _env(workdir, data)
    from cmp_pipelines.core.processes import yield_cpu
    from cmp_pipelines.core.settings import DATABASE_URL_SETTING, run_nice

    if url is not None:
        os.environ[DATABASE_URL_SETTING] = url
    yield_cpu(run_nice())
    from contextlib import contextmanager

    from cmp_pipelines.core.config import load_partners
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.db.connection import connect
    from cmp_pipelines.core.db.mirror import mirrored
    from cmp_pipelines.core.settings import PROJECT_ROOT
    from cmp_pipelines.defs.nrp.flow import NonRecurringPayments
    from cmp_pipelines.lib.resources.file_store import LocalFileStore

    @contextmanager
    def store():
        if url is None:
            with connect(data / "cmp.duckdb") as con:
                yield con, None
        else:
            with mirrored(url) as mirror:
                yield mirror.con, mirror

    with store() as (con, mirror):
        flow = NonRecurringPayments(con, LocalFileStore(base_dir=str(data)), PartnerKeyring(workdir / "keys"),
                                    load_partners(PROJECT_ROOT / "config"), mirror=mirror)
        t0 = time.perf_counter()
        load = flow.load(key)
        t1 = time.perf_counter()
        posted = flow.post(load)
        t2 = time.perf_counter()
        flow.write_posting_file(posted)
        t3 = time.perf_counter()
        flow.acknowledge(load)
        t4 = time.perf_counter()
    return {"total_s": t4 - t0, "steps": {"load": t1 - t0, "post": t2 - t1, "posting file": t3 - t2,
                                          "acknowledge": t4 - t3},
            "records": load.record_count, "accepted": load.accepted_count, "postings": posted.posting_count,
            "posted_now": posted.posted_now, "nice": os.getpriority(os.PRIO_PROCESS, 0)}


def _spawn(workdir: Path, data: Path, key: str, url: str | None, out: Path) -> subprocess.Popen:
    profile = ["-m", "cProfile", "-o", str(out.with_suffix(".prof"))] if os.environ.get("BENCH_PROFILE") else []
    return subprocess.Popen([sys.executable, *profile, __file__, "--worker", "--workdir", str(workdir), "--data",
                             str(data), "--key", key, "--out", str(out), *(["--url", url] if url else [])],
                            cwd=PROJECT)


def _result(proc: subprocess.Popen, out: Path) -> dict:
    if proc.wait() != 0:
        raise SystemExit(f"benchmark worker failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    if result["posted_now"] != result["postings"] or result["postings"] == 0:
        raise SystemExit(f"benchmark verification failed: posted {result['posted_now']:,} of {result['postings']:,}")
    return result


def _fresh_database(admin: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name}")
        con.execute(f"CREATE DATABASE {name} TEMPLATE pg_nrp_template")
    return admin.rsplit("/", 1)[0] + f"/{name}"


def _median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["total_s"])[(len(runs) - 1) // 2]


def bench(args: argparse.Namespace, workdir: Path, admin: str) -> dict:
    import psycopg

    from cmp_pipelines.core.db.copy_store import copy_to_postgres

    print(f"  PostgreSQL NRP: seeding {args.accounts:,} accounts, generating files ...", file=sys.stderr, flush=True)
    files = setup(workdir, args.records, args.accounts, args.seed)
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS pg_nrp_template")
        con.execute("CREATE DATABASE pg_nrp_template")
    copy_to_postgres(workdir / "template" / "cmp.duckdb", admin.rsplit("/", 1)[0] + "/pg_nrp_template")
    if args.api_only:
        return {"files": files}

    duck_runs, pg_runs = [], []
    for attempt in range(max(1, args.repeat)):  # interleaved: drift in a loaded machine hits both alike
        data = workdir / "duck"
        stage(workdir, data, [files["one"]], duckdb_copy=True)
        duck_runs.append(_result(_spawn(workdir, data, files["one"]["key"], None, workdir / "duck.json"),
                                 workdir / "duck.json"))
        data = workdir / "pg"
        stage(workdir, data, [files["one"]], duckdb_copy=False)
        url = _fresh_database(admin, f"pg_nrp_one_{attempt}")
        pg_runs.append(_result(_spawn(workdir, data, files["one"]["key"], url, workdir / "pg.json"),
                               workdir / "pg.json"))
    halves = [files["half_a"], files["half_b"]]
    data = workdir / "sequential"
    stage(workdir, data, halves, duckdb_copy=False)
    url = _fresh_database(admin, "pg_nrp_sequential")
    started = time.perf_counter()
    sequential = [_result(_spawn(workdir, data, f["key"], url, workdir / f"seq{i}.json"), workdir / f"seq{i}.json")
                  for i, f in enumerate(halves)]
    sequential_s = time.perf_counter() - started
    data = workdir / "parallel"
    stage(workdir, data, halves, duckdb_copy=False)
    url = _fresh_database(admin, "pg_nrp_parallel")
    started = time.perf_counter()
    procs = [(_spawn(workdir, data, f["key"], url, workdir / f"par{i}.json"), workdir / f"par{i}.json")
             for i, f in enumerate(halves)]
    parallel = [_result(p, out) for p, out in procs]
    parallel_s = time.perf_counter() - started
    with psycopg.connect(url) as con:
        postings = con.execute("SELECT count(*) FROM ledger_postings WHERE kind = 'PAYMENT'").fetchone()[0]
    if postings != sum(r["postings"] for r in parallel):
        raise SystemExit(f"benchmark verification failed: {postings:,} postings after the two files at once")
    return {"duckdb": duck_runs, "postgres": pg_runs, "sequential_s": sequential_s, "parallel_s": parallel_s,
            "sequential": sequential, "parallel": parallel, "records": args.records, "files": files}


def api_under_load(args: argparse.Namespace, workdir: Path, admin: str, files: dict) -> dict:
    """The HTTP API on PostgreSQL (`api serve` with CMP_DATABASE_URL: payments, keys and the ledger in the store
    itself), create-payment from `--api-clients` keep-alive clients (benchmarks/api_bench.py's client), alone and
    while the 1M-record file runs through the four steps against the same database in another process."""
    import api_bench
    import psycopg

    from cmp_pipelines.core.config_payments import hash_key, write_key_hash

    url = _fresh_database(admin, "pg_nrp_api")
    data = workdir / "api"
    stage(workdir, data, [files["one"]], duckdb_copy=False)
    write_key_hash(workdir / "keys", "AGENTVIEW", hash_key(api_bench.API_KEY))
    with psycopg.connect(url) as con:
        con.execute("INSERT INTO payment_cards SELECT account_number, 'CARDPAY', 'tok_bench_' || account_number, "
                    "'4242', '2030-01', now() FROM accounts WHERE NOT is_suspense ORDER BY account_number "
                    "LIMIT %s ON CONFLICT DO NOTHING", [api_bench.CARD_ACCOUNTS])
    server, port = api_bench.start_server(data, workdir, args.api_workers, {"CMP_DATABASE_URL": url})
    accounts, info = api_bench.accounts_and_info(args)
    try:
        print("  PostgreSQL API: alone ...", file=sys.stderr, flush=True)
        alone = api_bench.load(port, accounts, args.api_clients, seconds=args.api_seconds)
        print("  PostgreSQL API: while the NRP file posts ...", file=sys.stderr, flush=True)
        flow = _spawn(workdir, data, files["one"]["key"], url, workdir / "api-flow.json")
        during = api_bench.load(port, accounts, args.api_clients, while_running=flow, warmup_s=0)
        flow_result = _result(flow, workdir / "api-flow.json")
        info["nrp_total_s"], info["nrp_nice"] = flow_result["total_s"], flow_result["nice"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    with psycopg.connect(url) as con:
        payments = con.execute("SELECT count(*) FROM api_payments").fetchone()[0]
    if payments < alone["requests"] + during["requests"]:
        raise SystemExit(f"benchmark verification failed: {payments:,} payments in the store for "
                         f"{alone['requests'] + during['requests']:,} answered requests")
    return {"alone": alone, "during": during, "info": info, "payments": payments}


def report_api(figures: dict) -> None:
    alone, during, info = figures["alone"], figures["during"], figures["info"]
    print()
    print(f"HTTP API on PostgreSQL: create payment, {info['clients']} keep-alive clients, {info['workers']} uvicorn "
          f"worker(s) ({info['cpus']} CPUs; load average before: {info['loadavg']}); "
          f"{figures['payments']:,} payments stored")
    print(f"  the file's process at nice {info.get('nrp_nice', 0)} (CMP_RUN_NICE, a run's own process on this "
          "store; CMP_RUN_NICE=0 measures it unyielding)")
    for name, run in (("alone", alone), (f"while the NRP file posts ({info['nrp_total_s']:.1f} s)", during)):
        print(f"  {name:<42} {run['requests']:>7,} requests {run['rps']:8.0f}/s  p50 {run['p50_ms']:6.1f} ms  "
              f"p99 {run['p99_ms']:6.1f} ms  max {run['max_ms']:7.1f} ms  errors {run['errors']} "
              f"{' '.join(run['error_kinds'])}")
    print(f"  p99 while the file posts: {during['p99_ms']:.1f} ms (target <= 100 ms, "
          f"{during['p99_ms'] / 100:.2f}x); errors {during['errors']} (target 0)")


def report(figures: dict) -> None:
    duck, pg = _median(figures["duckdb"]), _median(figures["postgres"])
    n = figures["records"]
    ratio = pg["total_s"] / duck["total_s"]
    print()
    print(f"NRP on PostgreSQL (function level, {n:,} records, {os.cpu_count()} CPUs; ratios are the comparable "
          "figures on a loaded machine)")
    runs = {store: " ".join(f"{r['total_s']:.2f}" for r in figures[store]) for store in ("duckdb", "postgres")}
    print(f"  runs (s), median shown: duckdb {runs['duckdb']}; postgres {runs['postgres']}")
    print(f"  {'step':<22} {'duckdb':>10} {'postgres':>10} {'ratio':>8}")
    for step in duck["steps"]:
        a, b = duck["steps"][step], pg["steps"][step]
        print(f"  {step:<22} {a:9.2f}s {b:9.2f}s {b / a if a else 0:7.2f}x")
    print(f"  {'total':<22} {duck['total_s']:9.2f}s {pg['total_s']:9.2f}s {ratio:7.2f}x   (target <= 1.50x; "
          f"processes at nice {duck.get('nice', 0)} / {pg.get('nice', 0)}: CMP_RUN_NICE)")
    print(f"  postings: duckdb {duck['postings']:,}, postgres {pg['postings']:,}")
    seq, par = figures["sequential_s"], figures["parallel_s"]
    print(f"  two files of {n // 2:,} records, PAYPOINT and LOCKBOX, on PostgreSQL: one after the other "
          f"{seq:.2f} s, both at once {par:.2f} s, ratio {par / seq:.2f} (target < 1: at once finishes sooner)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", help="an admin URL of a server to use (default: start one)")
    parser.add_argument("--workdir", help="default: a temporary folder, removed afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--api-clients", type=int, default=50, help="the API section's clients (0: no API section)")
    parser.add_argument("--api-workers", type=int, default=1, help="the API section's uvicorn workers")
    parser.add_argument("--api-seconds", type=float, default=10.0, help="the API section's load alone, seconds")
    parser.add_argument("--api-only", action="store_true", help="only the API section (after the untimed set-up)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.out).write_text(json.dumps(worker(Path(args.workdir), Path(args.data), args.key, args.url)))
        return 0

    from servers import MissingServer, postgres

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cmp-pg-nrp-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with postgres(args.url) as admin:
            figures = bench(args, workdir, admin)
            if args.api_clients:
                figures["api"] = api_under_load(args, workdir, admin, figures["files"])
        if not args.api_only:
            report(figures)
        if "api" in figures:
            report_api(figures["api"])
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
