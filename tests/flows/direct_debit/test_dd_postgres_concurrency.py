"""The direct debit flows on PostgreSQL under real concurrency (issue 19, phase 3b): a collections day run twice at
once, an AUDDIS extract and two ARUDD reports returning overlapping debits of the same mandates, five processes
started together; and each job killed (kill -9) before its commits, then run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from tests.support.direct_debit import SUN, arudd, drop_report, returned
from tests.support.direct_debit_pg import at, auddis_day, collection_day, notices_day, seed_payers, send_notices
from tests.support.pg_platform import moved_to_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[3]
N = 30
PAYERS = {f"ACCDD{n:04d}": (f"CMPDD{n:04d}", f"INVDD{n:04d}", 1000 + n * 37) for n in range(1, N + 1)}
SECOND = {f"ACCDD{n:04d}": f"INVDE{n:04d}" for n in range(1, N + 1)}  # due 22 Dec: the 18 Dec day's debits
D0, ACTIVE_ON, FIRST_DAY, SECOND_DAY = date(2026, 12, 1), date(2026, 12, 11), date(2026, 12, 17), date(2026, 12, 18)


def _workers(platform, jobs: list[list[str]], tmp_path: Path, env: dict | None = None) -> list[tuple]:
    start = tmp_path / f"start-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.flows.direct_debit.pg_dd_worker", platform.url,
                               str(platform.root), str(start), *job], cwd=PROJECT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}) for job in jobs]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob(f"{start.name}.ready.*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    start.touch()
    return [(p, *p.communicate(timeout=300)) for p in procs]


@pytest.fixture
def dd_pg(platform, pg_url, monkeypatch):
    """Thirty payers lodged, active, noticed and collected on 17 Dec on PostgreSQL; each has a second invoice due on
    the 18 Dec day's entry day (22 Dec), noticed too."""
    from tests.support.direct_debit import add_invoice

    seed_payers(platform, PAYERS)
    for account, invoice in SECOND.items():
        add_invoice(platform, account, invoice, 500, date(2026, 12, 5), date(2026, 12, 22))
    pg = moved_to_postgres(platform, pg_url, monkeypatch)
    auddis_day(pg, D0)
    auddis_day(pg, ACTIVE_ON)
    notices_day(pg, date(2026, 12, 5))
    send_notices(pg, at(date(2026, 12, 5), 9))
    batch, _, _, _ = collection_day(pg, FIRST_DAY)
    assert batch.collection_count == N
    return pg


def _consistent(pg) -> None:
    """The ledger agrees with the debits and returns to the penny, and nothing happened twice."""
    q = pg.query
    assert q("SELECT count(*) - count(DISTINCT idempotency_key) FROM ledger_postings") == [(0,)]
    # every debit of a posted day is in the ledger once per invoice, and nothing else is
    assert q("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE kind = 'DD_COLLECTION'") == q(
        "SELECT -coalesce(sum(i.amount_minor), 0) FROM dd_collection_items i JOIN dd_collections c "
        "USING (collection_id) WHERE c.batch_id IN (SELECT parent_batch_id FROM batches WHERE kind = 'DD_POSTING')")
    # every returned debit reversed once, in full, and no debit that was not returned
    assert q("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings WHERE kind = 'DD_REVERSAL'") == q(
        "SELECT coalesce(sum(i.amount_minor), 0) FROM dd_collection_items i JOIN dd_collections c "
        "USING (collection_id) WHERE c.rejection_batch_id IS NOT NULL")
    assert q("SELECT collection_id FROM dd_returns WHERE outcome NOT IN ('REJECTED') GROUP BY 1 "
             "HAVING count(*) > 1") == []
    # an invoice is taken by one first or regular debit at most
    assert q("SELECT i.invoice_number FROM dd_collection_items i JOIN dd_collections c USING (collection_id) "
             "WHERE c.transaction_code <> '18' GROUP BY 1 HAVING count(*) > 1") == []
    # every committed batch is whole: a posting batch's row counts what the ledger holds under it
    assert q("SELECT b.batch_id FROM batches b WHERE b.kind IN ('DD_POSTING', 'DD_REVERSAL') AND b.record_count <> "
             "(SELECT count(*) FROM ledger_postings p WHERE p.batch_id = b.batch_id)") == []
    assert q("SELECT b.batch_id FROM batches b WHERE b.kind = 'DD_COLLECTION' AND b.record_count <> "
             "(SELECT count(*) FROM dd_collections c WHERE c.batch_id = b.batch_id)") == []
    assert q("SELECT count(*) FROM ledger_postings p WHERE p.kind IN ('DD_COLLECTION', 'DD_REVERSAL') AND NOT EXISTS "
             "(SELECT 1 FROM batches b WHERE b.batch_id = p.batch_id)") == [(0,)]
    # the serial register: one serial per submission, one file number per submission on an input day
    assert q("SELECT count(*), count(DISTINCT serial), count(DISTINCT (input_day, file_number)) FROM bacs_submissions"
             ) == [(q("SELECT count(*) FROM bacs_submissions")[0][0],) * 3]


def test_collections_auddis_and_two_overlapping_return_reports_at_once(dd_pg, tmp_path):
    pg = dd_pg
    # five mandates cancelled by the customer (as the API records it): the 18 Dec AUDDIS lodges their 0C
    pg.execute("UPDATE mandates SET status = 'CANCELLED', pending_instruction = 'CANCEL', cancelled_on = ? "
               "WHERE reference >= 'CMPDD0026'", [SECOND_DAY])
    codes = {n: ("0128" if n % 2 else "1012") for n in range(1, 16)}

    def report(numbers, advice: str) -> bytes:
        return arudd([returned(f"CMPDD{n:04d}", codes[n], SECOND_DAY, f"{(1000 + n * 37) / 100:.2f}", trans="01")
                      for n in numbers], number=advice, day="2026-12-18")

    first = drop_report(pg, "arudd", "ARUDD-A.xml", report(range(1, 11), "000001"))
    second = drop_report(pg, "arudd", "ARUDD-B.xml", report(range(6, 16), "000002"))  # 6-10 returned in both
    day = SECOND_DAY.isoformat()

    results = _workers(pg, [["collect", day], ["collect", day], ["auddis", day], ["arudd", first, day],
                            ["arudd", second, day]], tmp_path)

    for proc, _out, err in results:
        assert proc.returncode == 0, err
        assert "deadlock" not in err.lower()
    collect_a, collect_b, auddis, returns_a, returns_b = [json.loads(out) for _, out, _ in results]
    assert sorted([collect_a["status"], collect_b["status"]]) == ["ALREADY_SELECTED", "SELECTED"]
    assert collect_a["total_minor"] == collect_b["total_minor"] and collect_a["posted_now"] + collect_b[
        "posted_now"] == sum(collect_a["by_code"].values()), "one selection, posted once"
    assert auddis["by_code"] == {"0C": 5}
    handled = [sum(n for o, n in r["outcomes"].items() if o != "REJECTED") for r in (returns_a, returns_b)]
    assert sorted(handled) == [5, 10], "the five debits both reports return are handled by one of them only"
    assert returns_a["outcomes"].get("REJECTED", 0) + returns_b["outcomes"].get("REJECTED", 0) == 5
    _consistent(pg)
    returned_total = sum(1000 + n * 37 for n in range(1, 16))
    assert pg.query("SELECT count(*), sum(amount_minor) FROM ledger_postings WHERE kind = 'DD_REVERSAL'") == [
        (15, returned_total)]
    # the 18 Dec debits took the second invoice of every mandate still active when the selection ran, and no other
    taken = {a for (a,) in pg.query("SELECT account_number FROM dd_collections WHERE batch_id = 'DDX-20261218'")}
    assert taken <= {f"ACCDD{n:04d}" for n in range(1, 26)} and {f"ACCDD{n:04d}" for n in range(16, 26)} <= taken
    assert pg.query("SELECT batch_id, input_day, file_number FROM bacs_submissions WHERE input_day = ? "
                    "ORDER BY batch_id", [SECOND_DAY]) in (
        [("AUD-20261218", SECOND_DAY, 1), ("DDX-20261218", SECOND_DAY, 2)],
        [("AUD-20261218", SECOND_DAY, 2), ("DDX-20261218", SECOND_DAY, 1)])
    assert sorted(s for (s,) in pg.query("SELECT serial FROM bacs_submissions WHERE service_user_number = ?", [SUN])
                  ) == ["000001", "000002", "000003", "000004"]
    # and every account's balance is its invoices less what was collected plus what was returned, to the penny
    assert pg.query(
        "SELECT a.account_number FROM accounts a WHERE left(a.account_number, 5) = 'ACCDD' AND "
        "(SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings p WHERE p.account_number = a.account_number) <> "
        "(SELECT coalesce(sum(amount_minor), 0) FROM invoices i WHERE i.account_number = a.account_number) "
        "- (SELECT coalesce(sum(i.amount_minor), 0) FROM dd_collection_items i JOIN dd_collections c "
        "   USING (collection_id) WHERE c.account_number = a.account_number AND c.rejection_batch_id IS NULL)") == []


def _points(pg, job: list[str], tmp_path: Path) -> list[int]:
    """The crash points before each commit a job passes, counted from a probe run of the same shape."""
    log = tmp_path / f"points-{job[0]}-{time.monotonic_ns()}.log"
    [(proc, _, err)] = _workers(pg, [job], tmp_path, {"CMP_CRASHPOINT": "0", "CMP_CRASHPOINT_LOG": str(log)})
    assert proc.returncode == 0, err
    return [int(line.split()[0]) for line in log.read_text().splitlines() if line.endswith("before commit")]


def _kill_then_rerun(pg, job: list[str], points: list[int], tmp_path: Path) -> dict:
    """The job killed (kill -9) before each of its first two commits in turn (its decision, then the next: the
    posting, the serial, the reversal, the mandate changes), the store checked whole after each, then run to the
    end; returns the finishing run's summary."""
    for point in points[:2]:
        [(proc, _, err)] = _workers(pg, [job], tmp_path, {"CMP_CRASHPOINT": str(point)})
        assert proc.returncode == -signal.SIGKILL, (job, point, err)
        _consistent(pg)
    [(proc, out, err)] = _workers(pg, [job], tmp_path)
    assert proc.returncode == 0, (job, err)
    _consistent(pg)
    return json.loads(out)


def test_each_job_killed_before_its_commits_leaves_nothing_half_written_and_a_rerun_completes_it(dd_pg, tmp_path):
    """Each job's crash points are counted on a probe run of the same shape (a day with nothing due, another
    report), then the real run is killed before its first two commits and run again."""
    from tests.support.direct_debit import addacs

    pg = dd_pg
    day = SECOND_DAY.isoformat()
    before = pg.query("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings")[0][0]

    # collections: probed on 16 Dec (nothing left due); the 18 Dec day killed in its selection, then its posting
    done = _kill_then_rerun(pg, ["collect", day], _points(pg, ["collect", "2026-12-16"], tmp_path), tmp_path)
    assert done["by_code"] == {"17": N} and done["total_minor"] == N * 500
    assert pg.query("SELECT sum(amount_minor) FROM ledger_postings WHERE batch_id = 'DDP-20261218'") == [(-N * 500,)]

    # AUDDIS: probed on a day with nothing pending; 18 Dec (two cancellations pending) killed in its selection, then
    # before its serial is committed
    probe = _points(pg, ["auddis", "2026-12-16"], tmp_path)
    pg.execute("UPDATE mandates SET status = 'CANCELLED', pending_instruction = 'CANCEL', cancelled_on = ? "
               "WHERE reference >= 'CMPDD0029'", [SECOND_DAY])
    assert _kill_then_rerun(pg, ["auddis", day], probe, tmp_path)["by_code"] == {"0C": 2}

    # ARUDD: probed on a report returning debit 3; the report returning debits 1 and 2 killed at its load, then at
    # its reversal
    def report(numbers, advice):
        return arudd([returned(f"CMPDD{n:04d}", "1012", SECOND_DAY, f"{(1000 + n * 37) / 100:.2f}", trans="01")
                      for n in numbers], number=advice, day="2026-12-18")

    probe_key = drop_report(pg, "arudd", "ARUDD-P.xml", report([3], "000004"))
    probe = _points(pg, ["arudd", probe_key, day], tmp_path)
    key = drop_report(pg, "arudd", "ARUDD-K.xml", report([1, 2], "000005"))
    assert _kill_then_rerun(pg, ["arudd", key, day], probe, tmp_path)["outcomes"] == {"HARD_DECLINE": 2}
    reversed_minor = sum(1000 + n * 37 for n in (1, 2, 3))
    assert pg.query("SELECT count(*), sum(amount_minor) FROM ledger_postings WHERE kind = 'DD_REVERSAL'") == [
        (3, reversed_minor)]
    assert pg.query("SELECT coalesce(sum(amount_minor), 0) FROM ledger_postings")[0][0] == (
        before - N * 500 + reversed_minor), "to the penny"

    # ADDACS: probed on an advice cancelling mandate 20; the report cancelling 21 killed at its load, then its apply
    def advices(n: int) -> bytes:
        return addacs([{"reference": f"CMPDD{n:04d}", "payer-name": "Payer", "payer-sort-code": "201575",
                        "payer-account-number": "87654321", "reason-code": "1", "effective-date": "2026-12-18"}],
                      number=f"0000{n}", day="2026-12-18")

    probe = _points(pg, ["addacs", drop_report(pg, "addacs", "ADDACS-P.xml", advices(20)), day], tmp_path)
    key = drop_report(pg, "addacs", "ADDACS-K.xml", advices(21))
    assert _kill_then_rerun(pg, ["addacs", key, day], probe, tmp_path)["outcomes"] == {"MANDATE_CANCELLED": 1}
    assert pg.query("SELECT count(*) FROM mandate_history h JOIN mandates m USING (mandate_id) "
                    "WHERE m.reference = 'CMPDD0021' AND h.new_status = 'CANCELLED'") == [(1,)]
    assert pg.query("SELECT count(*) FROM workflow_events WHERE event_code = 'MANDATE_CANCELLED'") == [(2,)]


def test_a_return_applied_while_another_writer_holds_its_account_waits_instead_of_deadlocking(dd_pg):
    """The API's set-up requests lock an account row and then change what hangs on it (a mandate); a return report's
    application must take the account before the mandate too, or the two wait on each other in a cycle and
    PostgreSQL aborts one (mandates first, as the apply did: a deadlock here, checked)."""
    import threading

    import psycopg

    from tests.support.direct_debit_pg import arudd_step

    pg = dd_pg
    key = drop_report(pg, "arudd", "ARUDD-L.xml", arudd(
        [returned("CMPDD0001", "0128", SECOND_DAY, "10.37", trans="01")], number="000009", day="2026-12-18"))
    arudd_step(pg, key, SECOND_DAY, "load")
    failures: list[BaseException] = []

    def apply() -> None:
        try:
            arudd_step(pg, key, SECOND_DAY, "apply")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    # the other writer: the account, then its mandate; a third connection watches (pg_stat_activity is read once per
    # transaction)
    with psycopg.connect(pg.url) as writer, psycopg.connect(pg.url, autocommit=True) as watcher:
        writer.execute("SELECT 1 FROM accounts WHERE account_number = 'ACCDD0001' FOR UPDATE")
        applying = threading.Thread(target=apply)
        applying.start()
        deadline = time.monotonic() + 60
        while not watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
                                  "datname = current_database()").fetchone()[0]:
            assert time.monotonic() < deadline and applying.is_alive(), failures
            time.sleep(0.05)
        writer.execute("UPDATE mandates SET pending_instruction = pending_instruction "
                       "WHERE account_number = 'ACCDD0001'")
    applying.join(120)
    assert not applying.is_alive() and failures == []
    assert pg.query("SELECT count(*), sum(amount_minor) FROM ledger_postings WHERE kind = 'DD_REVERSAL'") == [
        (1, 1037)]
    _consistent(pg)
