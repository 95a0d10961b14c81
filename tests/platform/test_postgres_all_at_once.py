"""Issue 19's concurrency scenario on PostgreSQL, everything at once over the same accounts: four partner files from
two partners, a card day and a card rejection file, each run in a process of its own (as a pool of several run
workers runs them), while 50 API clients create payments. Then the Ledger Monitor posts the API's payments, and the
ledger must be every input applied exactly once, to the penny; the same runs again post nothing.

The accounts are shared on purpose: every partner file and every API client pays the twenty seeded accounts and the
twenty card customers, whose card day posts and whose rejection file reverses at the same moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

import httpx
import pytest

from cmp_pipelines.core.db.copy_store import copy_to_postgres
from tests.support.api import KEYS, monitor, pay, register, running_api
from tests.support.pg_card import card_day, send_notices
from tests.support.pg_platform import PgPlatform
from tests.support.platform import add_customer, document, payment, rejection, rejections_document

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[2]
CARD_CUSTOMERS = 20  # ACC00000300 .. ACC00000319
ACCOUNTS = [f"ACC{n:08d}" for n in range(1, 21)] + [f"ACC{300 + n:08d}" for n in range(CARD_CUSTOMERS)]
RECORDS = 600  # per partner file
CLIENTS, PAYMENTS = 50, 4  # API clients, payments each
DEC1, DEC3 = date(2026, 12, 1), date(2026, 12, 3)


def _nrp_files() -> dict[tuple[str, str], list[dict]]:
    """Four files; every 50th record names an account nobody holds (suspense)."""
    return {(p, f"{p}-2026120{n}-00{n}"): [
        payment(f"{p}{n}-{i}", ACCOUNTS[(i + n) % len(ACCOUNTS)] if i % 50 else "ACC99999999",
                f"{i % 97 + 1}.{(i * 7) % 100:02d}") for i in range(RECORDS)]
        for p in ("PAYPOINT", "LOCKBOX") for n in (1, 2)}


def _api_plan() -> list[list[tuple[str, str, str]]]:
    return [[(f"all-at-once-{t}-{j}", ACCOUNTS[(t * PAYMENTS + j) % len(ACCOUNTS)], f"{t + 1}.{j + 10:02d}")
             for j in range(PAYMENTS)] for t in range(CLIENTS)]


def _minor(amount: str) -> int:
    return int(amount.replace(".", ""))


def _start(store: PgPlatform, jobs: list[tuple[str, ...]], start: Path) -> list[subprocess.Popen]:
    """Each job in its own process, waiting at the start line."""
    workers = {"nrp": "tests.flows.nrp.pg_nrp_worker", "card": "tests.flows.card_rejections.pg_card_worker"}
    return [subprocess.Popen([sys.executable, "-m", workers[kind], store.url, str(store.root), *args, str(start)],
                             cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for kind, *args in jobs]


def _all_at_once(store: PgPlatform, jobs: list[tuple[str, ...]], api_base: str, plan, tmp_path: Path):
    """The processes and the API clients released together; returns the processes' (returncode, out, err) and the
    API's answers."""
    start = tmp_path / f"start-{time.monotonic_ns()}"
    procs = _start(store, jobs, start)
    deadline = time.monotonic() + 180
    while len(list(tmp_path.glob(f"{start.name}.ready.*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    answers: list[list[tuple]] = [[] for _ in plan]
    line = threading.Barrier(len(plan) + 1)

    def client(t: int) -> None:
        with httpx.Client(base_url=api_base, headers={"X-API-Key": KEYS["IVR"]}, timeout=120) as http:
            line.wait()
            for key, account, amount in plan[t]:
                answer = pay(http, account=account, amount=amount, key=key)
                answers[t].append((key, answer.status_code, account, amount))

    threads = [threading.Thread(target=client, args=(t,)) for t in range(len(plan))]
    for thread in threads:
        thread.start()
    start.touch()
    line.wait()
    for thread in threads:
        thread.join()
    outputs = [p.communicate(timeout=600) for p in procs]
    return [(p.returncode, *out) for p, out in zip(procs, outputs, strict=True)], [a for per in answers for a in per]


def _balances(store: PgPlatform) -> dict[str, int]:
    return dict(store.query("SELECT account_number, sum(amount_minor) FROM ledger_postings GROUP BY 1"))


def test_partner_files_a_card_day_a_rejection_file_and_fifty_api_clients_at_once(platform, pg_url, monkeypatch,
                                                                                 api_instance, tmp_path):
    for n in range(CARD_CUSTOMERS):
        add_customer(platform, 300 + n, [(f"X{n}A", 1000 + n, DEC1), (f"X{n}C", 500 + n, DEC3)])
    copy_to_postgres(platform.database, pg_url)
    monkeypatch.setenv("CMP_DATABASE_URL", pg_url)
    monkeypatch.setenv("CMP_PROVIDER_SECRET", "test-provider-secret")
    store = PgPlatform(platform.root, platform.files, platform.keyring)
    store.url = pg_url
    card_day(store, DEC1)  # the transactions the rejection file declines
    send_notices(store, DEC3)

    nrp = _nrp_files()
    keys = [store.drop(f"{name}.json.enc", document(records, sender=partner, file_id=name), partner=partner)
            for (partner, name), records in nrp.items()]
    declined = store.drop_rejections("REJ-ALL.json.enc", rejections_document(
        [rejection(str(n), f"PX{n}A-1", f"ACC{300 + n:08d}", f"{(1000 + n) / 100:.2f}", "51")
         for n in range(CARD_CUSTOMERS)], file_id="REJ-ALL"))
    jobs = [("nrp", key) for key in keys] + [("card", "day", DEC3.isoformat()), ("card", "rejections", declined)]
    plan = _api_plan()

    with running_api(platform) as api:
        with api.client("IVR") as http:
            for account in ACCOUNTS:
                register(http, account, "tok_ivr_success_3")
        before = _balances(store)
        results, answers = _all_at_once(store, jobs, api.base_url, plan, tmp_path)
        monitor(api_instance)  # the Ledger Monitor posts the API's outcomes

        for (code, _out, err), job in zip(results, jobs, strict=True):
            assert code == 0, (job, err[-3000:])
            assert "deadlock" not in err.lower(), job
        outs = [json.loads(out) for _, out, _ in results]
        assert [o["status"] for o in outs[:4]] == ["LOADED"] * 4, outs[:4]
        assert sum(o["posted_now"] for o in outs[:4]) == 4 * RECORDS
        assert outs[5]["reversed"] == CARD_CUSTOMERS, outs[5]
        assert Counter(code for _, code, _, _ in answers) == Counter({201: CLIENTS * PAYMENTS}), \
            Counter(code for _, code, _, _ in answers)

        # every input once, to the penny: the partner files' payments, the API's, the card day's payments (whatever
        # it selected while the rejection file suspended accounts) and the declined payments' reversals
        expected = Counter(before)
        for records in nrp.values():
            for r in records:
                account = r["account_number"] if r["account_number"] != "ACC99999999" else "SUSPENSE"
                expected[account] -= _minor(r["amount"])
        for _key, _code, account, amount in answers:
            expected[account] -= _minor(amount)
        for account, amount in store.query(
                "SELECT account_number, amount_minor FROM card_transactions WHERE right(invoice_number, 1) = 'C'"):
            expected[account] -= amount
        for n in range(CARD_CUSTOMERS):
            expected[f"ACC{300 + n:08d}"] += 1000 + n
        assert _balances(store) == {a: v for a, v in expected.items() if a in before or v}
        assert store.query("SELECT count(*) = count(DISTINCT idempotency_key) FROM ledger_postings") == [(True,)]
        assert store.query("SELECT count(*) FROM api_payments WHERE ledger_state <> 'RECORDED'") == [(0,)]
        assert store.query("SELECT count(*) FROM ledger_postings WHERE kind = 'CARD_REVERSAL'") == [(CARD_CUSTOMERS,)]

        # the same runs and requests again, all at once: nothing is posted twice
        ledger = store.query("SELECT count(*), sum(amount_minor) FROM ledger_postings")
        results, answers = _all_at_once(store, jobs, api.base_url, plan, tmp_path)
        monitor(api_instance)
        assert [code for code, _, _ in results] == [0] * len(jobs), [err[-2000:] for _, _, err in results]
        assert Counter(code for _, code, _, _ in answers) == Counter({200: CLIENTS * PAYMENTS})
        assert store.query("SELECT count(*), sum(amount_minor) FROM ledger_postings") == ledger
    assert os.environ["CMP_DATABASE_URL"] == pg_url
