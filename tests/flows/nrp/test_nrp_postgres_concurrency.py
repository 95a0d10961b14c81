"""The NRP flow on PostgreSQL under real concurrency (issue 19): four partner files from two partners processed by
four processes at once over the same accounts, and runs killed (kill -9) at every commit of the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.platform import document, payment

pytestmark = pytest.mark.postgres

PROJECT = Path(__file__).resolve().parents[3]
RECORDS = 1500
REPEATED = 10  # PAYPOINT's second file resends the first file's first records under a new file id


def _file(partner: str, name: str) -> list[dict]:
    return [payment(f"{name}-{i}", f"ACC{(i % 20) + 1:08d}" if i % 50 else "ACC99999999",
                    f"{i % 997 + 1}.{i % 100:02d}") for i in range(RECORDS)]


def _files() -> dict[tuple[str, str], list[dict]]:
    files = {(p, f"{p}-2026120{n}-00{n}"): _file(p, f"{p}{n}") for p in ("PAYPOINT", "LOCKBOX") for n in (1, 2)}
    files[("PAYPOINT", "PAYPOINT-20261202-002")][:REPEATED] = files[("PAYPOINT", "PAYPOINT-20261201-001")][:REPEATED]
    return files


def _expected(files) -> tuple[int, int, dict[str, int]]:
    """Postings, their total and every account's change: each distinct (record id, account, amount) once."""
    seen, balances = set(), {}
    for records in files.values():
        for r in records:
            if (r["record_id"], r["account_number"], r["amount"]) in seen:
                continue
            seen.add((r["record_id"], r["account_number"], r["amount"]))
            account = r["account_number"] if r["account_number"] != "ACC99999999" else "SUSPENSE"
            balances[account] = balances.get(account, 0) - int(r["amount"].replace(".", ""))
    return len(seen), sum(balances.values()), balances


def _drop_all(platform, files) -> list[str]:
    return [platform.drop(f"{name}.json.enc", document(records, sender=partner, file_id=name), partner=partner)
            for (partner, name), records in files.items()]


def _workers(platform, keys: list[str], tmp_path: Path, env: dict | None = None) -> list[tuple]:
    start = tmp_path / f"start-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.flows.nrp.pg_nrp_worker", platform.url, str(platform.root),
                               key, str(start)], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **(env or {})}) for key in keys]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob(f"{start.name}.ready.*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    start.touch()
    return [(p, *p.communicate(timeout=300)) for p in procs]


def _ledger(platform) -> tuple[int, int, int, dict[str, int]]:
    count, distinct, total = platform.query(
        "SELECT count(*), count(DISTINCT idempotency_key), coalesce(sum(amount_minor), 0) FROM ledger_postings")[0]
    balances = dict(platform.query("SELECT account_number, sum(amount_minor) FROM ledger_postings GROUP BY 1"))
    return count, distinct, total, balances


@pytest.mark.slow
def test_four_files_from_two_partners_at_once_post_exactly_once(pg_platform, tmp_path):
    files = _files()
    before = dict(pg_platform.query("SELECT account_number, sum(amount_minor) FROM ledger_postings GROUP BY 1"))
    before_count = pg_platform.query("SELECT count(*) FROM ledger_postings")[0][0]
    keys = _drop_all(pg_platform, files)

    results = _workers(pg_platform, keys, tmp_path)

    for proc, _out, err in results:
        assert proc.returncode == 0, err
        assert "deadlock" not in err.lower()
    outcomes = [json.loads(out) for _, out, _ in results]
    assert [o["status"] for o in outcomes] == ["LOADED"] * 4
    assert sum(o["held"] for o in outcomes) == REPEATED  # the resend is held in whichever file committed second
    count, total, changes = _expected(files)
    assert sum(o["posted_now"] for o in outcomes) == count
    posted, distinct, ledger_total, balances = _ledger(pg_platform)
    assert (posted - before_count, distinct) == (count, posted)
    assert ledger_total - sum(before.values()) == total
    assert {a: balances[a] - before.get(a, 0) for a in changes} == changes
    assert pg_platform.query("SELECT kind, status, count(*) FROM batches GROUP BY 1, 2 ORDER BY 1") == [
        ("NRP_LOAD", "ACKNOWLEDGED", 4), ("NRP_POSTING", "POSTED", 4)]

    # the same four again at once (re-dropped under new names): all refused as duplicates, nothing posted twice
    for (partner, name), records in files.items():
        pg_platform.drop(f"{name}-again.json.enc", document(records, sender=partner, file_id=name), partner=partner)
    again = [k for k in (pg_platform.files.list_files("inbound/nrp"))]
    assert len(again) == 4
    from cmp_pipelines.core.intake import partition_key, sha256_hex

    keys = [partition_key(f.path.split("/")[2], f.path.split("/")[3], sha256_hex(pg_platform.files.read_bytes(f.path)))
            for f in again]
    results = _workers(pg_platform, keys, tmp_path)
    assert [json.loads(out)["code"] for _, out, _ in results] == ["DUPLICATE_FILE"] * 4, [e for *_, e in results]
    assert _ledger(pg_platform)[2] == ledger_total


def _crash_points(platform, key: str, tmp_path: Path) -> list[int]:
    log = tmp_path / "points.log"
    [(proc, _, err)] = _workers(platform, [key], tmp_path, {"CMP_CRASHPOINT": "0", "CMP_CRASHPOINT_LOG": str(log)})
    assert proc.returncode == 0, err
    return [int(line.split()[0]) for line in log.read_text().splitlines() if line.endswith("before commit")]


@pytest.mark.slow
def test_a_run_killed_at_any_commit_leaves_nothing_half_written_and_a_rerun_completes_it(pg_platform, tmp_path):
    def drop(n: int) -> tuple[str, list[dict]]:
        name = f"LOCKBOX-2026120{n % 10}-K{n:02d}"
        records = _file("LOCKBOX", f"K{n}")[:300]
        return pg_platform.drop(f"{name}.json.enc", document(records, sender="LOCKBOX", file_id=name),
                                partner="LOCKBOX"), records

    key, records = drop(0)
    processed = {("LOCKBOX", "K0"): records}
    points = _crash_points(pg_platform, key, tmp_path)  # a first file processed whole, listing its commits
    assert len(points) >= 4
    for n, point in enumerate(points, start=1):
        key, records = drop(n)
        [(proc, _, err)] = _workers(pg_platform, [key], tmp_path, {"CMP_CRASHPOINT": str(point)})
        assert proc.returncode == -signal.SIGKILL, (point, err)
        # whatever committed is whole: every posting batch has all its postings, every load all its records
        assert pg_platform.query(
            "SELECT b.batch_id FROM batches b WHERE b.kind = 'NRP_POSTING' AND b.record_count <> "
            "(SELECT count(*) FROM ledger_postings p WHERE p.batch_id = b.batch_id)") == [], point
        assert pg_platform.query(
            "SELECT count(*) FROM ledger_postings p WHERE left(p.batch_id, 3) = 'NRP' AND NOT EXISTS "
            "(SELECT 1 FROM batches b WHERE b.batch_id = p.batch_id)") == [(0,)], point
        assert pg_platform.query(
            "SELECT b.batch_id FROM batches b WHERE b.kind = 'NRP_LOAD' AND b.record_count <> "
            "(SELECT count(*) FROM nrp_records r WHERE r.batch_id = b.batch_id)") == [], point
        [(proc, out, err)] = _workers(pg_platform, [key], tmp_path)  # the re-run completes it
        assert proc.returncode == 0, (point, err)
        processed[("LOCKBOX", f"K{n}")] = records
        count, total, _ = _expected(processed)
        posted, distinct, ledger_total = pg_platform.query(
            "SELECT count(*), count(DISTINCT idempotency_key), coalesce(sum(amount_minor), 0) FROM ledger_postings "
            "WHERE kind = 'PAYMENT'")[0]
        assert (posted, distinct, ledger_total) == (count, count, total), point
        assert pg_platform.query("SELECT count(*) FROM batches WHERE status = 'ACKNOWLEDGED'") == [(n + 1,)], point


@pytest.mark.slow
def test_a_partners_two_files_serialise_at_the_window_while_another_partner_runs_on(pg_platform, tmp_path):
    """Deterministic, no timing: the test holds PAYPOINT's window lock. LOCKBOX's file goes through meanwhile (the
    partners never wait for each other); both PAYPOINT files are decrypted, parsed and matched at once and wait at
    the lock (seen in pg_locks); released, they commit one after the other, so the resend is held exactly once."""
    import psycopg

    from cmp_pipelines.core.db.mirror import advisory_key

    files = _files()
    keys = dict(zip(files, _drop_all(pg_platform, files), strict=True))
    paypoint = [keys[("PAYPOINT", "PAYPOINT-20261201-001")], keys[("PAYPOINT", "PAYPOINT-20261202-002")]]
    lockbox = keys[("LOCKBOX", "LOCKBOX-20261201-001")]
    with psycopg.connect(pg_platform.url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [advisory_key("nrp:window:PAYPOINT")])
        start = tmp_path / "start"
        start.touch()
        spawn = [sys.executable, "-m", "tests.flows.nrp.pg_nrp_worker", pg_platform.url, str(pg_platform.root)]
        waiting = [subprocess.Popen([*spawn, key, str(start)], cwd=PROJECT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for key in paypoint]
        out, err = subprocess.Popen([*spawn, lockbox, str(start)], cwd=PROJECT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True).communicate(timeout=300)
        assert json.loads(out)["status"] == "LOADED", err  # another partner is not held up by PAYPOINT's lock
        deadline = time.monotonic() + 300
        blocked = 0
        while blocked < 2 and time.monotonic() < deadline and all(p.poll() is None for p in waiting):
            blocked = holder.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                     ).fetchone()[0]
            time.sleep(0.05)
        assert blocked == 2, "both PAYPOINT files must reach the window lock together, parsed in parallel"
        assert pg_platform.query("SELECT count(*) FROM batches WHERE partner = 'PAYPOINT'") == [(0,)]
        holder.execute("SELECT pg_advisory_unlock(%s)", [advisory_key("nrp:window:PAYPOINT")])
    outcomes = []
    for proc in waiting:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out))
    assert sorted(o["held"] for o in outcomes) == [0, REPEATED]
    count, total, changes = _expected(files)
    posted, distinct, ledger_total = pg_platform.query(
        "SELECT count(*), count(DISTINCT idempotency_key), sum(amount_minor) FROM ledger_postings "
        "WHERE kind = 'PAYMENT'")[0]
    assert (posted, distinct, ledger_total) == (count - RECORDS, count - RECORDS, total - sum(
        -int(r["amount"].replace(".", "")) for r in files[("LOCKBOX", "LOCKBOX-20261202-002")]))
