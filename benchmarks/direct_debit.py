"""Direct debit benchmark (part of `make bench`): the AUDDIS file and the collection file for N mandates, each against
a raw-library floor. Prints figures and ratios, never asserts.

Two seeded stores (made once, copied fresh for every timed run):
  auddis       N mandates pending submission (0N each); timed: AuddisExtract.select + write_file.
  collections  N active mandates of direct-debit accounts, each with one invoice due; timed: select, write_file,
               post, write_posting_file of DirectDebitCollections.
The floors do the least raw-library work that yields the same outputs, over their own copy of the store:
  auddis       one INSERT..SELECT each of the instructions, the mandates' history and the customers' confirmation
               events (the flow's other outputs; the events were left out until 2026-12-03),
               the Standard 18 records written by one DuckDB COPY (fixed labels and trailers of the right width,
               as the flows write theirs since 2026-11-30), Fernet encrypt a chunk at a time + durable write,
               one UPDATE of the mandates.
  collections  one INSERT..SELECT of the due debits, the Standard 18 records by one COPY, Fernet encrypt a chunk
               at a time + durable write, one INSERT..SELECT of the postings into the ledger (UNIQUE key),
               DuckDB's JSON COPY of the posting file.
Each timed run is a fresh interpreter (imports not timed), so peak RSS is per run.

    python benchmarks/direct_debit.py --mandates 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The floors write label and trailer lines of the right width but fixed text: the least work for the same bytes.
LABELS = "".join(name.ljust(80) + "\n" for name in ("VOL1", "HDR1", "HDR2", "UHL1"))
TRAILERS = "".join(name.ljust(80) + "\n" for name in ("EOF1", "EOF2", "UTL1"))
DAY = date(2026, 12, 4)
NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
TARGET_S, TARGET_RATIO = 10.0, 1.5
EVENTS_SQL = "SELECT count(*) FROM workflow_events WHERE event_code = 'MANDATE_SETUP_CONFIRMED'"  # flow = floor
CLEAN = "rpad(left(regexp_replace(upper(regexp_replace(coalesce({0}, ''), '[^\\x00-\\x7f]', ' ', 'g')), " \
        "'[^A-Z0-9 ./&-]', ' ', 'g'), 18), 18, ' ')"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _env(workdir: Path) -> None:
    os.environ["CMP_DATA_DIR"] = str(workdir / "data")
    os.environ["CMP_KEYS_DIR"] = str(workdir / "keys")
    os.environ["DAGSTER_HOME"] = str(workdir / "dagster_home")


def setup(workdir: Path, mandates: int) -> None:
    """The two template stores and the bureau's keys."""
    _env(workdir)
    from seeding import seed_dd_store

    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.db.connection import connect

    PartnerKeyring(workdir / "keys").init_keys("BACSBUREAU")
    for kind in ("auddis", "collections"):
        with connect(workdir / f"{kind}.duckdb") as con:
            seed_dd_store(con, mandates, kind, DAY)


def _flow(workdir: Path, kind: str) -> dict:
    _env(workdir)
    from cmp_pipelines.core.config import load_direct_debit, load_partners
    from cmp_pipelines.core.crypto.keyring import PartnerKeyring
    from cmp_pipelines.core.db.connection import connect
    from cmp_pipelines.core.settings import PROJECT_ROOT
    from cmp_pipelines.defs.direct_debit.auddis import AuddisExtract
    from cmp_pipelines.defs.direct_debit.collections import DirectDebitCollections
    from cmp_pipelines.lib.resources.file_store import LocalFileStore

    config = load_direct_debit(PROJECT_ROOT / "config", load_partners(PROJECT_ROOT / "config"))
    files, keyring = LocalFileStore(base_dir=str(workdir / "data")), PartnerKeyring(workdir / "keys")
    steps: dict[str, float] = {}
    if kind == "collections":  # the job's first step, on its own connection as each asset opens its own; not in
        # the timed total (select -> posting file). Every seeded invoice has its SENT notice: nothing to notice.
        with connect(workdir / "run.duckdb") as con:
            clock = time.perf_counter()
            notices = DirectDebitCollections(con, files, keyring, config, NOW)
            raised, waiting = notices.raise_notices(DAY), notices.waiting(DAY)
            steps["notices"] = time.perf_counter() - clock
        _verify("DD notices raised on a store where every invoice has one", 0, raised.count)
        _verify("DD invoices waiting for a notice", 0, waiting.count)
    with connect(workdir / "run.duckdb") as con:
        clock = started = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            steps[name] = time.perf_counter() - clock
            clock = time.perf_counter()

        if kind == "auddis":
            extract = AuddisExtract(con, files, keyring, config, NOW)
            batch = extract.select(DAY)
            lap("select")
            path = extract.write_file(batch)
            lap("write_file")
            count, total = batch.record_count, 0
        else:
            flow = DirectDebitCollections(con, files, keyring, config, NOW)
            batch = flow.select(DAY)
            lap("select")
            path = flow.write_file(batch)
            lap("write_file")
            posted = flow.post(batch)
            lap("post")
            flow.write_posting_file(posted)
            lap("write_posting_file")
            count, total = batch.collection_count, batch.total_minor
        seconds = time.perf_counter() - started
        events = con.execute(EVENTS_SQL).fetchone()[0]
    return {"seconds": seconds, "steps": steps, "records": count, "total_minor": total, "events": events,
            "bytes": os.path.getsize(workdir / "data" / path), "rss_mb": _peak_mb()}


def _floor(workdir: Path, kind: str) -> dict:
    import duckdb
    from floor_documents import SCRATCH, copy_text
    from floor_fernet import FloorFernet

    keys = (workdir / "keys" / "BACSBUREAU.keys").read_text().split()
    fernet = FloorFernet(keys)
    con = duckdb.connect(str(workdir / "run.duckdb"))
    con.execute("SET preserve_insertion_order = false")  # what the flow allows itself for its bulk inserts
    out = workdir / "floor-out"
    out.mkdir(exist_ok=True)
    staged = (SCRATCH or out) / f"floor-{os.getpid()}-{kind}.std18"
    started = time.perf_counter()
    record = ("{sort} || {account} || '0' || {code} || '400000' || '12345678' || '    ' || lpad(({amount})::VARCHAR, "
              "11, '0') || rpad('CMP TELECOM', 18, ' ') || " + CLEAN.format("reference") + " || "
              + CLEAN.format("account_name"))
    if kind == "auddis":
        con.execute(  # the flow's outputs besides the file: the instructions sent and each mandate's history
            "INSERT INTO auddis_instructions SELECT 'FLOOR', rowid, mandate_id, '0N', sort_code, bank_account, "
            "account_name, reference FROM mandates WHERE pending_instruction = 'NEW'")
        con.execute("INSERT INTO mandate_history SELECT mandate_id, status, 'SUBMITTED', 'AUDDIS FLOOR', ? "
                    "FROM mandates WHERE pending_instruction = 'NEW'", [NOW])
        con.execute(  # each new instruction's confirmation event, ids in mandate order (as the flow)
            "INSERT INTO workflow_events (event_type, event_code, account_number, source_ref, detail, raised_at) "
            "SELECT 'DIRECT_DEBIT', 'MANDATE_SETUP_CONFIRMED', account_number, mandate_id, "
            "'new Direct Debit Instruction ' || reference || ' lodged with the bank in AUD-' || strftime(?, '%Y%m%d'), "
            "? FROM mandates WHERE pending_instruction = 'NEW' ORDER BY mandate_id", [DAY, NOW])
        count = con.execute("SELECT count(*) FROM mandates WHERE pending_instruction = 'NEW'").fetchone()[0]
        copy_text(con, "SELECT " + record.format(sort="sort_code", account="bank_account", code="'0N'", amount="0")
                  + " FROM mandates WHERE pending_instruction = 'NEW' ORDER BY reference", staged, LABELS,
                  "\n" + TRAILERS, "\n")
        con.execute("UPDATE mandates SET status = 'SUBMITTED', pending_instruction = NULL, submitted_on = ? "
                    "WHERE pending_instruction = 'NEW'", [DAY])
        total = 0
    else:
        con.execute(
            "CREATE TABLE due AS SELECT m.mandate_id, m.account_number, m.reference, m.sort_code, m.bank_account, "
            "m.account_name, i.invoice_number, i.amount_minor FROM mandates m JOIN accounts a USING (account_number) "
            "JOIN invoices i USING (account_number) WHERE m.status = 'ACTIVE' AND a.payment_type = 'DIRECT_DEBIT' "
            "AND i.due_on <= $day AND NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.invoice_number = "
            "i.invoice_number AND p.kind <> 'INVOICE')", {"day": DAY})
        count, total = con.execute("SELECT count(*), sum(amount_minor) FROM due").fetchone()
        copy_text(con, "SELECT " + record.format(sort="sort_code", account="bank_account", code="'01'",
                                                 amount="amount_minor") + " FROM due ORDER BY reference",
                  staged, LABELS, "\n" + TRAILERS, "\n")
        con.execute(  # the same keys and rows as the flow's postings
            "INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, "
            "currency, batch_id, source_ref, effective_at, posted_at) SELECT 'dd:DD' || strftime($day, '%Y%m%d') "
            "|| '-' || reference || ':' || invoice_number || ':COLLECTION', account_number, invoice_number, "
            "'DD_COLLECTION', -amount_minor, 'GBP', 'FLOOR', reference, $now, $now FROM due",
            {"now": NOW, "day": DAY})
        con.execute(  # the same posting file as core/ledger.write_posting_file (header aside)
            "COPY (SELECT idempotency_key, account_number, invoice_number, kind, "
            "CAST(CAST(amount_minor AS DECIMAL(18, 0)) / 100 AS DECIMAL(18, 2))::VARCHAR AS amount, currency, "
            "strftime(effective_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS effective_at "
            f"FROM ledger_postings WHERE batch_id = 'FLOOR' ORDER BY posting_id) TO '{out / 'postings.json'}' "
            "(FORMAT json, ARRAY true)")
    fernet.encrypt_file(staged, out / "file.std18.enc")
    staged.unlink()
    seconds = time.perf_counter() - started
    events = con.execute(EVENTS_SQL).fetchone()[0]
    con.close()
    return {"seconds": seconds, "records": count, "total_minor": total or 0, "events": events,
            "bytes": os.path.getsize(out / "file.std18.enc"), "rss_mb": _peak_mb()}


def _verify(what: str, expected: int, actual: int) -> None:
    """A run that did not do the whole work has no figure worth printing: stop the harness, loudly."""
    if actual != expected:
        raise SystemExit(f"benchmark verification failed: {what} is {actual:,}, expected {expected:,}")


# ---- orchestrated: each job's run of a business day through a real dagster-daemon (orchestrated.py) ----------

JOBS = {  # kind: job, the published Standard 18 file (a glob under data/, {day} = yyyymmdd), batch counted
    "auddis": ("auddis_extract_job", "outbound/auddis/BACSBUREAU/AUD-{day}*.std18.enc",
               "SELECT count(*) FROM auddis_instructions WHERE batch_id = ?", "AUD-{day}"),
    "collections": ("recurring_payments_dd_job", "outbound/dd_collections/BACSBUREAU/DDX-{day}*.std18.enc",
                    "SELECT count(*) FROM dd_collections WHERE batch_id = ?", "DDX-{day}"),
}


RUN_STEPS = {"dd_collection_notices": "notices",
             "auddis_instructions_batch": "select", "auddis_file": "write_file", "dd_collections_due": "select",
             "dd_collection_file": "write_file", "dd_collection_posting_batch": "post",
             "dd_collection_ledger_posting_file": "write_posting_file"}


def _orchestrated_day() -> date:
    """The latest Bacs working day up to today: a daemon's run takes a partition that exists (daily partitions
    end today), and a working day is processed as itself (no move to the next one)."""
    from cmp_pipelines.defs.direct_debit.calendar import is_working_day

    day = datetime.now(UTC).date()
    while not is_working_day(day):
        day = date.fromordinal(day.toordinal() - 1)
    return day


def _orchestrated_setup(workdir: Path, mandates: int) -> dict:
    """The two stores again, seeded for the orchestrated day, with the reference data `cmp-pipelines init` loads."""
    _env(workdir)
    from seeding import seed_dd_store

    from cmp_pipelines.core.config import load_partners, load_probes, load_rejection_codes
    from cmp_pipelines.core.db.connection import connect
    from cmp_pipelines.core.reference import sync_reference_data
    from cmp_pipelines.core.settings import PROJECT_ROOT

    day, config = _orchestrated_day(), PROJECT_ROOT / "config"
    started = time.perf_counter()
    for kind in JOBS:
        with connect(workdir / f"orch-{kind}.duckdb") as con:
            sync_reference_data(con, load_partners(config), load_probes(config), load_rejection_codes(config))
            seed_dd_store(con, mandates, kind, day)
    return {"day": day.isoformat(), "seeded_s": time.perf_counter() - started}


def _orchestrated(workdir: Path, args: argparse.Namespace, results: dict[str, tuple]) -> None:
    """Each job as its schedule starts it: a run of the day's partition created on the daemon's instance and queued
    by `dagster job launch` (orchestrated.Session.launch), timed to the published Standard 18 file and the run's
    end; then a run of the partition a week earlier, with nothing left to select, for the run's fixed cost."""
    import duckdb
    import orchestrated

    result = workdir / "orch_setup.json"
    subprocess.run([sys.executable, __file__, "--phase", "orch_setup", "--mandates", str(args.mandates),
                    "--workdir", str(workdir), "--result", str(result)], check=True)
    meta = json.loads(result.read_text())
    day = date.fromisoformat(meta["day"])
    empty_day = date.fromordinal(day.toordinal() - 7)
    for kind, (job, published, count_sql, batch) in JOBS.items():
        runs, empties = [], []
        for index in range(max(1, args.repeat)):
            print(f"  orchestrated {kind}, run {index + 1} ...", file=sys.stderr, flush=True)
            root = workdir / f"orchestrated-{kind}"
            with orchestrated.daemon(root, workdir / f"orch-{kind}.duckdb", workdir / "keys") as session:
                runs.append(session.launch(job, day.isoformat(), published.format(day=f"{day:%Y%m%d}")))
                empties.append(session.launch(job, empty_day.isoformat(), None))
            with duckdb.connect(str(root / "data" / "cmp.duckdb"), read_only=True) as con:
                selected = con.execute(count_sql, [batch.format(day=f"{day:%Y%m%d}")]).fetchone()[0]
                empty = con.execute(count_sql, [batch.format(day=f"{empty_day:%Y%m%d}")]).fetchone()[0]
                posted = con.execute("SELECT count(*) FROM ledger_postings WHERE kind = 'DD_COLLECTION'").fetchone()[0]
            _verify(f"orchestrated {kind} run status", 1, int(runs[-1]["status"] == "SUCCESS"))
            _verify(f"orchestrated empty {kind} run status", 1, int(empties[-1]["status"] == "SUCCESS"))
            _verify(f"orchestrated {kind}: records of the day's batch", args.mandates, selected)
            _verify(f"orchestrated {kind}: records of the empty run's batch", 0, empty)
            if kind == "collections":
                _verify("orchestrated collections: DD collection postings", args.mandates, posted)
            shutil.rmtree(root, ignore_errors=True)
        flow_s, floor_s, steps = results[kind]
        orchestrated.report(
            f"{'AUDDIS' if kind == 'auddis' else 'DD collections'} orchestrated: {job} for partition {day} (store "
            f"seeded for that day, untimed) created and queued on a dagster-daemon's instance, launched in its own "
            f"process; median of {len(runs)}", "published Standard 18 file", args.mandates, runs, empties,
            flow_s, floor_s, steps, RUN_STEPS, f"empty run {empty_day}")


def _timed(workdir: Path, kind: str, mode: str) -> dict:
    run = workdir / f"{mode}-{kind}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    shutil.copytree(workdir / "keys", run / "keys")
    shutil.copy(workdir / f"{kind}.duckdb", run / "run.duckdb")
    os.sync()  # the copy's writeback is setup, not the timed run's (as in run.py)
    result = run / "result.json"
    subprocess.run([sys.executable, __file__, "--phase", mode, "--kind", kind, "--workdir", str(run),
                    "--result", str(result)], check=True)
    figures = json.loads(result.read_text())
    shutil.rmtree(run, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mandates", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir")
    parser.add_argument("--orchestrated", action="store_true",
                        help="also run both jobs through a real dagster-daemon (benchmarks/orchestrated.py)")
    parser.add_argument("--phase", choices=["flow", "floor", "orch_setup"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["auddis", "collections"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "orch_setup":
        Path(args.result).write_text(json.dumps(_orchestrated_setup(Path(args.workdir), args.mandates)))
        return
    if args.phase:
        figures = (_flow if args.phase == "flow" else _floor)(Path(args.workdir), args.kind)
        Path(args.result).write_text(json.dumps(figures))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-dd-", dir=HERE / "out"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        setup(workdir, args.mandates)
        print(f"direct debit: {args.mandates:,} mandates seeded in {time.perf_counter() - started:.1f} s",
              flush=True)
        results: dict[str, tuple] = {}
        for kind in ("auddis", "collections"):
            flows, floors = [], []
            for _ in range(max(1, args.repeat)):  # interleaved, so drift in the machine hits both alike
                flows.append(_timed(workdir, kind, "flow"))
                floors.append(_timed(workdir, kind, "floor"))
            for run in flows + floors:
                _verify(f"{kind} records", args.mandates, run["records"])
            flow = sorted(flows, key=lambda f: f["seconds"])[len(flows) // 2]
            floor = sorted(floors, key=lambda f: f["seconds"])[len(floors) // 2]
            results[kind] = (flow["seconds"], floor["seconds"], flow["steps"])
            if (flow["records"], flow["total_minor"], flow["events"]) != (floor["records"], floor["total_minor"],
                                                                          floor["events"]):
                print(f"  WARNING: {kind} flow and floor disagree: {flow} vs {floor}")
            ratio = flow["seconds"] / floor["seconds"]
            print(f"  {kind:<12} {flow['records']:>9,} records  {flow['seconds']:6.2f} s (target <= {TARGET_S:.0f} s"
                  f" {'ok' if flow['seconds'] <= TARGET_S else 'MISSED'})  floor {floor['seconds']:6.2f} s  "
                  f"ratio {ratio:4.2f}x (target <= {TARGET_RATIO}x {'ok' if ratio <= TARGET_RATIO else 'MISSED'})  "
                  f"peak RSS {flow['rss_mb']:,.0f} MB (floor {floor['rss_mb']:,.0f} MB)  "
                  f"runs {', '.join(format(f['seconds'], '.2f') for f in flows)} s", flush=True)
            if "notices" in flow["steps"]:  # the job's notice step, apart from the timed total
                runs = sorted(f["steps"]["notices"] for f in flows)
                print(f"  {'':<12} notice step (raise_notices + waiting, every invoice noticed): median "
                      f"{runs[len(runs) // 2]:.2f} s, runs {', '.join(format(r, '.2f') for r in runs)} s", flush=True)
        if args.orchestrated:
            _orchestrated(workdir, args, results)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
