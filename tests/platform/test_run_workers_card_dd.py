"""The card and direct-debit days on the distributed set-up (issue 20): a real daemon hands every run to Celery run
workers through Redis; daemon and workers share only PostgreSQL (store and Dagster instance), the S3 bucket (moto)
and the broker, each with a data folder and a copy of the keys of its own.

The scheduled runs (CARD extract, AUDDIS, DD collections) are queued as `dagster job launch` or a schedule's tick
queues them, tagged for the queue only worker w1 takes; the files the bank and the provider send back (card
rejections, ARUDD) are dropped into the bucket and their sensors' runs go to the default queue, which only w2
takes. So every document read on w2 was written on w1: nothing may pass through a machine's own disk."""

from __future__ import annotations

import os
from datetime import date

import dagster as dg
import orjson
import pytest

from cmp_pipelines.defs.direct_debit import standard18 as std18
from cmp_pipelines.lib.resources.s3_store import S3FileStore
from cmp_pipelines.lib.run_workers import BROKER_SETTING
from tests.support.direct_debit import BUREAU, arudd, drop_report, returned
from tests.support.direct_debit_pg import at, auddis_day, notices_day, seed_payers
from tests.support.direct_debit_pg import send_notices as send_dd_notices
from tests.support.pg_card import send_notices as send_card_notices
from tests.support.pg_platform import moved_to_postgres
from tests.support.platform import add_customer, rejection, rejections_document
from tests.support.run_workers import QUEUE_TAG, TASK_TAG, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

CARD_JOB, CARD_REJECTIONS_JOB = "recurring_payments_card_job", "recurring_payments_rejections_card_job"
AUDDIS_JOB, DD_JOB = "auddis_extract_job", "recurring_payments_dd_job"
ARUDD_JOB = "recurring_payments_rejections_dd_job"
FLOW_JOBS = [CARD_JOB, CARD_REJECTIONS_JOB, AUDDIS_JOB, DD_JOB, ARUDD_JOB]
SCHEDULED = "scheduled"  # the queue of w1

CARD_DAY = date(2026, 12, 2)  # a partition that exists whenever the test runs (the partitions end tomorrow)
# the direct-debit month of tests/flows/direct_debit/test_dd_postgres.py's Dagster test
LODGED, ACTIVE_ON, ISSUED, DUE, COLLECT_ON = (date(2026, 11, 2), date(2026, 11, 12), date(2026, 11, 4),
                                              date(2026, 11, 18), date(2026, 11, 25))
DD_TOTAL = 4567 + 1000 + 1  # tests/support/direct_debit_pg.PAYERS
CARD_ACCOUNTS = ("ACC00000101", "ACC00000102")


def _ok(cluster: Cluster, jobs: list[str], count: int) -> list[dg.DagsterRun]:
    cluster.wait(lambda: cluster.finished(jobs, count), 240, f"{count} run(s) of {jobs}")
    runs = [r for r in cluster.runs() if r.job_name in jobs]
    assert len(runs) == count and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), \
        cluster.failures(runs) + cluster.logs()
    return runs


def test_a_card_day_and_a_direct_debit_day_run_on_two_workers_sharing_only_postgres_and_a_bucket(
        platform, pg_url, s3_bucket, redis_url, smtp_server, tmp_path, monkeypatch):
    # two card customers (invoices due on the card day, cards on file) and three direct-debit payers with new
    # mandates, seeded on the embedded store, then moved into PostgreSQL; every file from now on in the bucket
    add_customer(platform, 101, [("INVA1", 10000, CARD_DAY)])
    add_customer(platform, 102, [("INVB1", 5000, CARD_DAY)])
    seed_payers(platform, day=LODGED, issued=ISSUED, due=DUE)
    pg = moved_to_postgres(platform, pg_url, monkeypatch)
    monkeypatch.setenv("CMP_FILES_URL", s3_bucket.url)
    pg.files = S3FileStore(url=s3_bucket.url)
    send_card_notices(pg, CARD_DAY)  # the advance notices the dispatcher sent in the days before
    env = {**os.environ, BROKER_SETTING: redis_url, "GX_ANALYTICS_ENABLED": "false"}
    scheduled = {QUEUE_TAG: SCHEDULED}

    with Cluster(tmp_path, pg.root / "keys", env) as cluster:
        cluster.init()
        cluster.start_worker("w1", queues=(SCHEDULED,))
        cluster.start_worker("w2")
        cluster.start_daemon()

        # 02:00 and 01:30: the card day's extract and the AUDDIS lodging the three mandates, queued by their schedules
        cluster.launch(CARD_JOB, CARD_DAY.isoformat(), scheduled)
        cluster.launch(AUDDIS_JOB, LODGED.isoformat(), scheduled)
        _ok(cluster, [CARD_JOB, AUDDIS_JOB], 2)
        # the days between, as the store records them: the mandates activated, the collection notices sent
        assert auddis_day(pg, ACTIVE_ON)[0].activated == 3
        assert notices_day(pg, ISSUED).count == 3
        send_dd_notices(pg, at(ISSUED, 9))

        # the provider declines one card payment (expired card: hard) while the collections day runs
        pg.drop_rejections("CARDPAY-REJ-1.json.enc", rejections_document(
            [rejection("1", "PINVB1-1", "ACC00000102", "50.00", "54", rejected_at="2026-12-02T09:00:00Z")],
            file_id="CARDPAY-REJ-1"))
        cluster.launch(DD_JOB, COLLECT_ON.isoformat(), scheduled)
        _ok(cluster, [CARD_JOB, AUDDIS_JOB, CARD_REJECTIONS_JOB, DD_JOB], 4)
        # the bank returns one debit (instruction cancelled: hard)
        drop_report(pg, "arudd", "ARUDD-001.xml", arudd(
            [returned("CMPDD0001", "1012", date(2026, 11, 26), "45.67", trans="01",
                      returnDescription="INSTRUCTION CANCELLED")], day="2026-11-30"))
        runs = _ok(cluster, FLOW_JOBS, 5)
        # the delivery sensor's run (on w2) sends every registered document to its partner
        cluster.wait(lambda: pg.query("SELECT count(*) FROM delivery_register WHERE status <> 'SENT'") == [(0,)],
                     120, "every document delivered")

        # every run went through the broker; the scheduled ones on w1, the files' on w2
        for run in runs:
            assert run.tags.get(TASK_TAG), run.tags
        assert {r.job_name: cluster.executed_by(r) for r in runs} == {
            CARD_JOB: "w1", AUDDIS_JOB: "w1", DD_JOB: "w1", CARD_REJECTIONS_JOB: "w2", ARUDD_JOB: "w2"}
        assert all(r.tags.get(QUEUE_TAG) is None for r in runs if r.job_name in (CARD_REJECTIONS_JOB, ARUDD_JOB))
        assert [r.tags["dagster/partition"] for r in runs if r.job_name in (CARD_JOB, AUDDIS_JOB, DD_JOB)] == [
            COLLECT_ON.isoformat(), LODGED.isoformat(), CARD_DAY.isoformat()]  # newest first

    # the documents, published into the bucket and read back decrypted
    bucket = s3_bucket.keys("cmp/outbound/")
    extract = orjson.loads(pg.keyring.decrypt("CARDPAY", pg.files.read_bytes(
        "outbound/card_payments/CARDPAY/RCX-20261202-CARDPAY-GBP.json.enc")))
    assert [(t["transaction_id"], t["type"], t["account_number"], t["amount"]) for t in extract["transactions"]] == [
        ("PINVA1-1", "PAYMENT", "ACC00000101", "100.00"), ("PINVB1-1", "PAYMENT", "ACC00000102", "50.00")]
    assert (extract["header"]["record_count"], extract["header"]["total_amount"]) == (2, "150.00")

    def standard18(folder: str, batch_id: str) -> list[tuple]:
        text = pg.keyring.decrypt(BUREAU, pg.files.read_bytes(f"outbound/{folder}/{BUREAU}/{batch_id}.std18.enc"))
        return [(r.transaction_code, r.reference, r.amount_pence) for r in std18.read(text.decode("ascii")).records]

    assert standard18("auddis", "AUD-20261102") == [("0N", "CMPDD0001", 0), ("0N", "CMPDD0002", 0),
                                                    ("0N", "CMPDD0003", 0)]
    assert standard18("dd_collections", "DDX-20261125") == [
        ("01", "CMPDD0001", 4567), ("01", "CMPDD0002", 1000), ("01", "CMPDD0003", 1), ("99", "CONTRA", DD_TOTAL)]
    assert [k for k in bucket if "/auddis/" in k or "/dd_collections/" in k or "/card_payments/" in k] == [
        f"cmp/outbound/auddis/{BUREAU}/AUD-20261102.std18.enc",
        "cmp/outbound/card_payments/CARDPAY/RCX-20261202-CARDPAY-GBP.json.enc",
        f"cmp/outbound/dd_collections/{BUREAU}/DDX-20261125.std18.enc"]
    card_report = orjson.loads(pg.files.read_bytes("outbound/reports/card_rejections/CARDPAY/CARDPAY-REJ-1."
                                                   "outcomes.json"))
    assert [(r["transaction_id"], r["outcome"], r["new_payment_type"]) for r in card_report["records"]] == [
        ("PINVB1-1", "HARD_DECLINE", "MANUAL")]
    arudd_report = orjson.loads(pg.files.read_bytes(f"outbound/reports/arudd/{BUREAU}/ARUDD-001.xml.outcomes.json"))
    assert [(r["outcome"], r["new_payment_type"]) for r in arudd_report["returns"]] == [("HARD_DECLINE", "MANUAL")]
    ledger_files = {k.rsplit("/", 1)[1].split("-")[0]: orjson.loads(pg.files.read_bytes(k.removeprefix("cmp/")))
                    for k in bucket if k.startswith("cmp/outbound/ledger/")}
    assert sorted(ledger_files) == ["ARV", "DDP", "RCP", "RCRV"]
    assert [(p["idempotency_key"], p["amount"]) for p in ledger_files["RCRV"]["postings"]] == [
        ("card:PINVB1-1:REVERSAL", "50.00")]
    assert ledger_files["RCP"]["header"]["total_amount"] == "-150.00"
    assert ledger_files["DDP"]["header"]["total_amount"] == "-55.68"
    assert [p["amount"] for p in ledger_files["ARV"]["postings"]] == ["45.67"]

    # the ledger in PostgreSQL, to the penny: A's card payment stands, B's reversed; ACCDD0001's debit returned
    balances = dict(pg.query("SELECT account_number, sum(amount_minor) FROM ledger_postings WHERE account_number IN "
                             "(?, ?, 'ACCDD0001', 'ACCDD0002', 'ACCDD0003') GROUP BY 1", list(CARD_ACCOUNTS)))
    assert balances == {"ACC00000101": 0, "ACC00000102": 5000, "ACCDD0001": 4567, "ACCDD0002": 0, "ACCDD0003": 0}
    assert pg.query("SELECT kind, count(*), sum(amount_minor) FROM ledger_postings WHERE kind <> 'INVOICE' "
                    "AND kind <> 'PAYMENT' GROUP BY 1 ORDER BY 1") == [
        ("CARD_PAYMENT", 2, -15000), ("CARD_REVERSAL", 1, 5000), ("DD_COLLECTION", 3, -DD_TOTAL),
        ("DD_REVERSAL", 1, 4567)]
    assert pg.query("SELECT count(*) = count(DISTINCT idempotency_key) FROM ledger_postings") == [(True,)]
    assert pg.query("SELECT account_number, payment_type FROM accounts WHERE account_number IN "
                    "(?, ?, 'ACCDD0001', 'ACCDD0002') ORDER BY 1", list(CARD_ACCOUNTS)) == [
        ("ACC00000101", "RECURRING_CARD"), ("ACC00000102", "MANUAL"), ("ACCDD0001", "MANUAL"),
        ("ACCDD0002", "DIRECT_DEBIT")]
    assert pg.query("SELECT reference, status FROM mandates ORDER BY 1") == [
        ("CMPDD0001", "CANCELLED"), ("CMPDD0002", "ACTIVE"), ("CMPDD0003", "ACTIVE")]

    # each file processed once: one intake row each, archived, nothing left in inbound/
    assert sorted(pg.query("SELECT feed, status FROM inbound_files")) == [("arudd", "LOADED"),
                                                                          ("card_rejections", "LOADED")]
    assert s3_bucket.keys("cmp/inbound/") == []
    assert [k.rsplit("/", 1)[1] for k in s3_bucket.keys("cmp/archive/")] == ["ARUDD-001.xml", "CARDPAY-REJ-1.json.enc"]
    assert [k.split("/")[2] for k in s3_bucket.keys("cmp/claims/")] == ["arudd", "card_rejections"]  # one claim each

    # no machine kept a document, a partner file or a store on its own disk: the partners have no transport, and
    # their default folders, delivered/<partner>, are prefixes of the bucket; every document delivered there once
    for name in ("daemon", "w1", "w2"):
        data = tmp_path / name / "data"
        kept = [f.relative_to(data) for f in data.rglob("*") if f.is_file()
                and f.relative_to(data).parts[0] != "dagster_home"]
        assert kept == [], (name, kept)
    sent = {f"cmp/delivered/{'SALES_LEDGER' if '/ledger/' in k else k.split('/')[3]}/{k.rsplit('/', 1)[1]}": k
            for k in bucket if k.split("/")[2] in ("auddis", "dd_collections", "card_payments", "ledger")}
    assert len(sent) == 7 and s3_bucket.keys("cmp/delivered/") == sorted(sent)
    for delivered, published in sent.items():
        assert pg.files.read_bytes(delivered[4:]) == pg.files.read_bytes(published[4:])  # without "cmp/"
