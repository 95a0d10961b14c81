"""The card flows on PostgreSQL under real concurrency (issue 19): a card day and two rejection files over the same
accounts and (partly) the same transactions in three processes at once; and runs killed (kill -9) at every commit,
leaving nothing half-written, the re-run completing them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.support.pg_card import card_day, process_rejections, send_notices
from tests.support.pg_platform import moved_to_postgres
from tests.support.platform import add_customer, rejection, rejections_document

pytestmark = pytest.mark.postgres

PROJECT = Path(__file__).resolve().parents[3]
ACCOUNTS = 40
OVERLAP = 15  # the second file also rejects the first file's transactions of this many accounts
DEC1, DEC3 = date(2026, 12, 1), date(2026, 12, 3)


def _account(n: int) -> str:
    return f"ACC{300 + n:08d}"


@pytest.fixture
def card_accounts(platform, pg_url, monkeypatch):
    """ACCOUNTS card customers with two invoices due on 1 December and one on the 3rd, the 1st's card day done."""
    for n in range(ACCOUNTS):
        add_customer(platform, 300 + n, [(f"X{n}A", 1000 + n, DEC1), (f"X{n}B", 2000 + n, DEC1),
                                         (f"X{n}C", 500 + n, DEC3)])
    store = moved_to_postgres(platform, pg_url, monkeypatch)
    card_day(store, DEC1)
    send_notices(store, DEC3)
    return store


def _drop(platform, name: str, items: list[tuple[str, int, int]]) -> str:
    records = [rejection(str(i), f"PX{n}{letter}-1", _account(n), f"{amount / 100:.2f}", "51")
               for i, (letter, n, amount) in enumerate(items)]
    return platform.drop_rejections(f"{name}.json.enc", rejections_document(records, file_id=name))


def _workers(platform, jobs: list[tuple[str, str]], tmp_path: Path, env: dict | None = None) -> list[tuple]:
    start = tmp_path / f"start-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.flows.card_rejections.pg_card_worker", platform.url,
                               str(platform.root), mode, arg, str(start)], cwd=PROJECT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
             for mode, arg in jobs]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob(f"{start.name}.ready.*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    start.touch()
    return [(p, *p.communicate(timeout=300)) for p in procs]


def _consistent(platform, all_posted: bool = True) -> None:
    """Every account's balance is its invoices, less every card payment posted, plus every declined one reversed,
    each once: the ledger agrees with the card transactions to the penny. With `all_posted`, every selected
    transaction is posted (a run killed between its selection and its posting leaves some to post)."""
    posted = ("EXISTS (SELECT 1 FROM ledger_postings p WHERE p.idempotency_key = "
              "'card:' || t.transaction_id || ':' || t.kind)")
    ledger = dict(platform.query(
        "SELECT account_number, sum(amount_minor) FROM ledger_postings WHERE left(account_number, 6) = 'ACC000' "
        "AND account_number >= 'ACC00000300' GROUP BY 1"))
    expected = dict(platform.query(
        "SELECT i.account_number, i.total - coalesce(t.paid, 0) + coalesce(t.declined, 0) FROM "
        "(SELECT account_number, sum(amount_minor) AS total FROM invoices GROUP BY 1) i LEFT JOIN "
        "(SELECT account_number, sum(amount_minor) AS paid, sum(amount_minor) FILTER (WHERE status IN "
        f"('SOFT_DECLINED', 'CANCELLED', 'HARD_DECLINED')) AS declined FROM card_transactions t WHERE {posted} "
        "GROUP BY 1) t USING (account_number) WHERE i.account_number >= 'ACC00000300'"))
    assert ledger == expected
    assert platform.query("SELECT count(*) = count(DISTINCT idempotency_key) FROM ledger_postings") == [(True,)]
    if all_posted:
        assert platform.query(f"SELECT transaction_id FROM card_transactions t WHERE NOT {posted}") == []


@pytest.mark.slow
def test_a_card_day_and_two_rejection_files_over_the_same_accounts_at_once(card_accounts, tmp_path):
    platform = card_accounts
    first = _drop(platform, "REJ-1", [("A", n, 1000 + n) for n in range(ACCOUNTS)])
    second = _drop(platform, "REJ-2", [("B", n, 2000 + n) for n in range(ACCOUNTS)]
                   + [("A", n, 1000 + n) for n in range(OVERLAP)])
    jobs = [("rejections", first), ("day", DEC3.isoformat()), ("rejections", second)]

    results = _workers(platform, jobs, tmp_path)

    for proc, _out, err in results:
        assert proc.returncode == 0, err
        assert "deadlock" not in err.lower()
    files = [json.loads(out) for (proc, out, _), (mode, _) in zip(results, jobs, strict=True) if mode == "rejections"]
    assert sum(f["reversed"] for f in files) == 2 * ACCOUNTS, "each declined payment reversed once"
    assert sum(f["outcomes"].get("REJECTED", 0) for f in files) == OVERLAP, "the overlap is ALREADY_REJECTED once"
    assert platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings WHERE kind = 'CARD_REVERSAL'") == [
        (2 * ACCOUNTS, sum(3000 + 2 * n for n in range(ACCOUNTS)))]
    assert platform.query("SELECT problem_code, count(*) FROM card_rejections WHERE outcome = 'REJECTED' "
                          "GROUP BY 1") == [("ALREADY_REJECTED", OVERLAP)]
    assert platform.query("SELECT count(*) FROM workflow_events WHERE event_code = 'CARD_SOFT_DECLINE'") == [
        (2 * ACCOUNTS,)]
    assert platform.query("SELECT DISTINCT suspended_until::VARCHAR FROM accounts "
                          "WHERE account_number BETWEEN 'ACC00000300' AND 'ACC00000399'") == [("2026-12-06",)]
    assert platform.query("SELECT count(*), count(DISTINCT invoice_number) FROM card_transactions "
                          "WHERE right(invoice_number, 1) = 'C'")[0][0] <= ACCOUNTS
    _consistent(platform)

    # the three again at once (re-runs): nothing is selected, reversed or raised twice
    ledger = platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings")
    again = _workers(platform, jobs, tmp_path)
    assert [json.loads(out)["status"] for _, out, _ in again] == ["ALREADY_LOADED", "ALREADY_SELECTED",
                                                                  "ALREADY_LOADED"], [e for *_, e in again]
    assert platform.query("SELECT count(*), sum(amount_minor) FROM ledger_postings") == ledger
    assert platform.query("SELECT count(*) FROM workflow_events WHERE event_code = 'CARD_SOFT_DECLINE'") == [
        (2 * ACCOUNTS,)]


def _crash_points(platform, job: tuple[str, str], tmp_path: Path) -> list[int]:
    log = tmp_path / f"points-{job[0]}.log"
    [(proc, _, err)] = _workers(platform, [job], tmp_path, {"CMP_CRASHPOINT": "0", "CMP_CRASHPOINT_LOG": str(log)})
    assert proc.returncode == 0, err
    return [int(line.split()[0]) for line in log.read_text().splitlines() if line.endswith("before commit")]


def _nothing_half_written(platform, point: int) -> None:
    """Whatever committed is whole: batch rows agree with their rows, every notice has its event, every declined
    payment its reversal and no other has one."""
    assert platform.query(
        "SELECT b.batch_id FROM batches b WHERE b.kind IN ('CARD_POSTING', 'CARD_REVERSAL') AND b.record_count <> "
        "(SELECT count(*) FROM ledger_postings p WHERE p.batch_id = b.batch_id)") == [], point
    assert platform.query(
        "SELECT count(*) FROM ledger_postings p WHERE left(p.batch_id, 2) = 'RC' AND NOT EXISTS "
        "(SELECT 1 FROM batches b WHERE b.batch_id = p.batch_id)") == [(0,)], point
    assert platform.query(
        "SELECT b.batch_id FROM batches b WHERE b.kind = 'CARD_EXTRACT' AND b.status = 'SELECTED' AND b.record_count "
        "<> (SELECT count(*) FROM card_transactions t WHERE t.batch_id = b.batch_id)") == [], point
    assert platform.query(
        "SELECT b.batch_id FROM batches b WHERE b.kind = 'CARD_REJECTIONS' AND b.record_count <> "
        "(SELECT count(*) FROM card_rejections r WHERE r.batch_id = b.batch_id)") == [], point
    assert platform.query(
        "SELECT count(*) FROM collection_notices n WHERE NOT EXISTS (SELECT 1 FROM workflow_events e "
        "WHERE e.event_id = n.event_id AND e.source_ref = n.notice_id)") == [(0,)], point
    assert platform.query(
        "SELECT t.transaction_id FROM card_transactions t WHERE (t.status = 'EXTRACTED') = EXISTS (SELECT 1 FROM "
        "ledger_postings p WHERE p.idempotency_key = 'card:' || t.transaction_id || ':REVERSAL')") == [], point
    _consistent(platform, all_posted=False)


@pytest.mark.slow
def test_card_runs_killed_at_any_commit_leave_nothing_half_written_and_a_rerun_completes_them(platform, pg_url,
                                                                                              monkeypatch, tmp_path):
    days = [date(2026, 12, d) for d in range(1, 16)]
    for n in range(4):
        add_customer(platform, 300 + n, [(f"X{n}D{d.day}", 1000 + 100 * n + d.day, d) for d in days])
    platform = moved_to_postgres(platform, pg_url, monkeypatch)
    send_notices(platform, days[-1])

    points = _crash_points(platform, ("day", days[0].isoformat()), tmp_path)  # a first day whole, listing commits
    assert 6 <= len(points) < len(days)
    for day, point in zip(days[1:], points, strict=False):
        [(proc, _, err)] = _workers(platform, [("day", day.isoformat())], tmp_path, {"CMP_CRASHPOINT": str(point)})
        assert proc.returncode == -signal.SIGKILL, (point, err)
        _nothing_half_written(platform, point)
        card_day(platform, day)  # the re-run (in this process: a spawned worker costs seconds of imports) completes it
        assert platform.query("SELECT status, record_count FROM batches WHERE batch_id = ?",
                              [f"RCX-{day:%Y%m%d}"]) == [("EXTRACTED", 4)], point
        assert platform.files.exists(f"outbound/card_payments/CARDPAY/RCX-{day:%Y%m%d}-CARDPAY-GBP.json.enc")
        _nothing_half_written(platform, point)
        _consistent(platform)

    def rejection_file(k: int) -> str:  # the k-th day's payments of two of the accounts, declined
        day = days[k]
        return _drop(platform, f"REJ-K{k}", [(f"D{day.day}", n, 1000 + 100 * n + day.day)
                                             for n in (k % 4, (k + 1) % 4)])

    for day in days[len(points) + 1:]:  # the remaining days extracted, so each file declines extracted payments
        card_day(platform, day)
    points = _crash_points(platform, ("rejections", rejection_file(0)), tmp_path)
    assert 4 <= len(points) < len(days)
    for k, point in enumerate(points, start=1):
        key = rejection_file(k)
        [(proc, _, err)] = _workers(platform, [("rejections", key)], tmp_path, {"CMP_CRASHPOINT": str(point)})
        assert proc.returncode == -signal.SIGKILL, (point, err)
        _nothing_half_written(platform, point)
        _, applied = process_rejections(platform, key, datetime(2026, 12, 1, 10, tzinfo=UTC))
        assert applied.posting_count == 2, point
        _nothing_half_written(platform, point)
        _consistent(platform)
    assert platform.query("SELECT count(*) FROM batches WHERE kind = 'CARD_REJECTIONS' AND status = 'APPLIED'") == [
        (len(points) + 1,)]
    assert platform.query("SELECT count(*) FROM ledger_postings WHERE kind = 'CARD_REVERSAL'") == [
        (2 * (len(points) + 1),)]


@pytest.mark.slow
def test_a_rejection_file_waits_for_its_accounts_row_lock_while_the_card_day_runs_on(card_accounts, tmp_path):
    """Deterministic, no timing: the test holds one account's row lock (as an API set-up of that account would). The
    rejection file touching the account loads, then waits at the lock (seen in pg_locks) without applying anything;
    the card day over the same accounts runs to the end meanwhile (the selection takes no row lock); released, the
    file applies once."""
    import psycopg

    platform = card_accounts
    key = _drop(platform, "REJ-HELD", [("A", 0, 1000), ("A", 1, 1001)])
    spawn = [sys.executable, "-m", "tests.flows.card_rejections.pg_card_worker", platform.url, str(platform.root)]
    start = tmp_path / "start"
    start.touch()
    with psycopg.connect(platform.url) as holder:
        holder.execute("SELECT 1 FROM accounts WHERE account_number = %s FOR UPDATE", [_account(0)])
        waiting = subprocess.Popen([*spawn, "rejections", key, str(start)], cwd=PROJECT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        out, err = subprocess.Popen([*spawn, "day", DEC3.isoformat(), str(start)], cwd=PROJECT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).communicate(timeout=300)
        assert json.loads(out) == {"status": "SELECTED", "selected": ACCOUNTS, "posted_now": ACCOUNTS}, err
        blocked, deadline = 0, time.monotonic() + 300
        while not blocked and time.monotonic() < deadline and waiting.poll() is None:
            blocked = holder.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]
            time.sleep(0.05)
        assert blocked, "the rejection file must wait at the account's row lock"
        assert platform.query("SELECT status FROM batches WHERE kind = 'CARD_REJECTIONS'") == [("LOADED",)]
        assert platform.query("SELECT count(*) FROM ledger_postings WHERE kind = 'CARD_REVERSAL'") == [(0,)]
        holder.rollback()
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert json.loads(out)["reversed"] == 2
    assert platform.query("SELECT status FROM batches WHERE kind = 'CARD_REJECTIONS'") == [("APPLIED",)]
    _consistent(platform)
