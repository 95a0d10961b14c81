"""The direct debit flows with PostgreSQL as the system of record (issue 19, phase 3b): AUDDIS, the advance notices
and the collections day give the same files byte for byte, the same ledger to the penny and the same mandate and
batch states as on the embedded store; a re-run writes and posts nothing twice and a serial is never reused."""

from __future__ import annotations

import shutil
from datetime import date

import pytest

from cmp_pipelines.defs.direct_debit import standard18 as std18
from cmp_pipelines.lib.resources.file_store import LocalFileStore
from tests.support.direct_debit import BUREAU, SUN, addacs, arudd, drop_report, returned
from tests.support.direct_debit_pg import (
    ISSUED,
    PAYERS,
    addacs_day,
    arudd_day,
    at,
    auddis_day,
    collection_day,
    notices_day,
    outcomes,
    platform_execute,
    seed_payers,
    send_notices,
)
from tests.support.pg_platform import moved_to_postgres
from tests.support.platform import Platform

pytestmark = pytest.mark.postgres

D0, ACTIVE_ON, COLLECT_ON = date(2026, 12, 1), date(2026, 12, 11), date(2026, 12, 17)
TOTAL = sum(amount for _, _, amount in PAYERS.values())
RETURNED_ON = date(2026, 12, 21)


def _days(platform) -> dict:
    """AUDDIS (lodging the three mandates, then activating them), the notices, then the collections day, each
    twice: what the files said and what the store holds after."""
    first, auddis_text = auddis_day(platform, D0)
    again, auddis_again = auddis_day(platform, D0)
    quiet, quiet_text = auddis_day(platform, ACTIVE_ON)
    raised = notices_day(platform, ISSUED)
    raised_again = notices_day(platform, ISSUED)
    send_notices(platform, at(ISSUED, 9))
    batch, collection_text, posted, posting_file = collection_day(platform, COLLECT_ON)
    rerun, collection_again, reposted, _ = collection_day(platform, COLLECT_ON)
    # the bank returns two debits: ACCDD0001's soft (refer to payer: re-presented), ACCDD0002's hard (instruction
    # cancelled: the mandate is cancelled, the account pays manually); the report processed twice
    report = arudd([returned("CMPDD0001", "0128", date(2026, 12, 18), "45.67", trans="01"),
                    returned("CMPDD0002", "1012", date(2026, 12, 18), "10.00", trans="01",
                             returnDescription="INSTRUCTION CANCELLED")])
    key = drop_report(platform, "arudd", "ARUDD-001.xml", report)
    returns, reversal, returns_report = arudd_day(platform, key, RETURNED_ON)
    returns_again, reversal_again, _ = arudd_day(platform, key, RETURNED_ON)
    represented, represented_text, represented_posted, _ = collection_day(platform, date(2026, 12, 26))
    return {
        "returns": (returns.status, returns.outcomes, reversal.posting_count, reversal.total_minor,
                    returns_again.status, reversal_again.posted_now),
        "returns_report": [(r["position"], r["outcome"], r["reason_code"], r["represent_on"], r["new_payment_type"])
                           for r in returns_report["returns"]],
        "represented": (represented.by_code, represented_posted.total_minor), "represented_text": represented_text,
        "auddis": (first.status, first.by_code, again.status, quiet.status, quiet.activated, quiet_text),
        "auddis_text": auddis_text, "auddis_again": auddis_again,
        "notices": (raised.count, raised.total_minor, raised_again.count),
        "collection": (batch.status, batch.by_code, batch.total_minor, rerun.status),
        "posted": (posted.posted_now, posted.posting_count, posted.total_minor, reposted.posted_now),
        "collection_text": collection_text, "collection_again": collection_again,
        "posting_file": [(p["idempotency_key"], p["account_number"], p["invoice_number"], p["amount"],
                          p["effective_at"]) for p in posting_file["postings"]],
        "posting_header": {k: posting_file["header"][k] for k in ("batch_id", "record_count", "total_amount")},
        "store": outcomes(platform),
    }


@pytest.mark.slow
def test_auddis_notices_and_collections_give_the_same_files_ledger_and_states_on_both_stores(
        platform, pg_url, monkeypatch, tmp_path):
    seed_payers(platform)
    embedded_root = tmp_path / "embedded"
    embedded_root.mkdir()
    shutil.copy(platform.database, embedded_root / "cmp.duckdb")  # the same seeded store, kept embedded
    embedded = Platform(embedded_root, LocalFileStore(base_dir=str(embedded_root)), platform.keyring)
    pg = moved_to_postgres(platform, pg_url, monkeypatch)

    on_pg = _days(pg)
    on_duckdb = _days(embedded)

    # what it should be, checked on PostgreSQL, then the embedded store must say exactly the same
    assert on_pg["auddis"][:5] == ("SELECTED", {"0N": 3}, "ALREADY_SELECTED", "SELECTED", 3)
    assert on_pg["auddis"][5] is None  # nothing pending on the activation day: no submission
    parsed = std18.read(on_pg["auddis_text"])
    assert [(r.transaction_code, r.reference, r.amount_pence) for r in parsed.records] == [
        ("0N", "CMPDD0001", 0), ("0N", "CMPDD0002", 0), ("0N", "CMPDD0003", 0)]
    assert on_pg["auddis_again"] == on_pg["auddis_text"], "a re-run writes the same submission, same serial"
    assert on_pg["notices"] == (3, TOTAL, 0)
    assert on_pg["collection"] == ("SELECTED", {"01": 3}, TOTAL, "ALREADY_SELECTED")
    assert on_pg["posted"] == (3, 3, -TOTAL, 0)
    collected = std18.read(on_pg["collection_text"])
    assert [(r.transaction_code, r.reference, r.amount_pence) for r in collected.records] == [
        ("01", "CMPDD0001", 4567), ("01", "CMPDD0002", 1000), ("01", "CMPDD0003", 1), ("99", "CONTRA", TOTAL)]
    assert on_pg["collection_again"] == on_pg["collection_text"]
    assert on_pg["returns"] == ("LOADED", {"HARD_DECLINE": 1, "RETRY_SCHEDULED": 1}, 2, 5567, "ALREADY_LOADED", 0)
    assert on_pg["returns_report"] == [(1, "RETRY_SCHEDULED", "ARUDD0", "2026-12-26", None),
                                       (2, "HARD_DECLINE", "ARUDD1", None, "MANUAL")]
    assert on_pg["represented"] == ({"18": 1}, -4567)
    assert [(r.transaction_code, r.reference, r.amount_pence) for r in std18.read(on_pg["represented_text"]).records
            ] == [("18", "CMPDD0001", 4567), ("99", "CONTRA", 4567)]
    store = on_pg["store"]
    # ACCDD0001 collected, returned, re-presented: paid; ACCDD0002's debit returned: owes it again; ACCDD0003 paid
    assert store["balances"] == [("ACCDD0001", 0), ("ACCDD0002", 1000), ("ACCDD0003", 0)], "to the penny"
    assert store["serials"] == [(SUN, "000001", D0, 1, "AUD-20261201"),
                                (SUN, "000002", date(2026, 12, 17), 1, "DDX-20261217"),
                                (SUN, "000003", date(2026, 12, 29), 1, "DDX-20261226")]
    assert [status for _, status, *_ in store["mandates"]] == ["ACTIVE", "CANCELLED", "ACTIVE"]
    assert [(n[1], n[4]) for n in store["notices"]] == [("SENT", "DD_COLLECTION")] * 3  # linked to their events
    assert sorted((e[0], e[1]) for e in store["events"] if e[0] != "PAYMENT_TYPE") == sorted(
        [("DIRECT_DEBIT", "MANDATE_SETUP_CONFIRMED")] * 3 + [("ADVANCE_NOTICE", "DD_COLLECTION")] * 3
        + [("RECURRING_PAYMENT", "DD_REPRESENTATION"), ("RECURRING_PAYMENT", "DD_HARD_RETURN")])
    assert sorted((kind, partner, name[:4]) for kind, partner, name, _ in store["deliveries"]) == [
        ("AUDDIS", BUREAU, "AUD-"), ("DD_COLLECTION", BUREAU, "DDX-"), ("DD_COLLECTION", BUREAU, "DDX-"),
        ("LEDGER_POSTING", "SALES_LEDGER", "ARV-"), ("LEDGER_POSTING", "SALES_LEDGER", "DDP-"),
        ("LEDGER_POSTING", "SALES_LEDGER", "DDP-")]
    assert on_pg["posting_header"] == {"batch_id": "DDP-20261217", "record_count": 3,
                                       "total_amount": f"-{TOTAL // 100}.{TOTAL % 100:02d}"}

    for key in on_pg:  # byte for byte, to the penny, row for row
        assert on_pg[key] == on_duckdb[key], key



@pytest.mark.e2e
def test_the_auddis_and_dd_jobs_under_dagster_keep_postgres_as_the_system_of_record(platform, pg_url, monkeypatch,
                                                                                     instance):
    import duckdb

    from cmp_pipelines.definitions import build_definitions
    from cmp_pipelines.lib.headless import run_partition
    from tests.support.dagster import materialization

    # the partitions end tomorrow: the same days as above, a month earlier
    d0, active_on, issued, collect_on = date(2026, 11, 2), date(2026, 11, 12), date(2026, 11, 4), date(2026, 11, 25)
    seed_payers(platform, day=d0, issued=issued, due=date(2026, 11, 18))
    pg = moved_to_postgres(platform, pg_url, monkeypatch)
    definitions = build_definitions()

    def run(job: str, day: date):
        result = run_partition(job, day.isoformat(), definitions, instance)
        assert result.success, result.error
        return result

    lodged = run("auddis_extract_job", d0)
    assert materialization(instance, lodged.run_id, "auddis_instructions_batch")["by_transaction_code"] == {"0N": 3}
    run("auddis_extract_job", active_on)
    noticed = run("recurring_payments_dd_job", issued)  # notices raised; nothing due yet
    assert materialization(instance, noticed.run_id, "dd_collection_notices")["notices_raised"] == 3
    send_notices(pg, at(issued, 9))
    collected = run("recurring_payments_dd_job", collect_on)
    due = materialization(instance, collected.run_id, "dd_collections_due")
    assert (due["collection_count"], due["by_transaction_code"]) == (3, {"01": 3})
    again = run("recurring_payments_dd_job", collect_on)  # the partition re-run: nothing twice
    assert materialization(instance, again.run_id, "dd_collection_posting_batch")["posted_now"] == 0

    assert pg.query("SELECT account_number, sum(amount_minor) FROM ledger_postings "
                    "WHERE left(account_number, 5) = 'ACCDD' GROUP BY 1 ORDER BY 1") == [
        (account, 0) for account in sorted(PAYERS)]
    assert pg.query("SELECT count(*), sum(amount_minor) FROM ledger_postings WHERE kind = 'DD_COLLECTION'") == [
        (3, -TOTAL)]
    assert pg.query("SELECT batch_id, status FROM batches ORDER BY batch_id") == [
        ("AUD-20261102", "EXTRACTED"), ("AUD-20261112", "NOTHING_PENDING"), ("DDP-20261104", "POSTED"),
        ("DDP-20261125", "POSTED"), ("DDX-20261104", "NOTHING_DUE"), ("DDX-20261125", "EXTRACTED")]
    assert pg.query("SELECT serial, batch_id FROM bacs_submissions ORDER BY serial") == [
        ("000001", "AUD-20261102"), ("000002", "DDX-20261125")]
    assert pg.query("SELECT DISTINCT status FROM mandates") == [("ACTIVE",)]
    # the bureau's reports, picked up by their sensors: ACCDD0001's debit returned (hard), ACCDD0002's mandate cancelled
    from cmp_pipelines.lib.headless import run_pending_sensors
    from tests.support.dagster import check_results, flow_runs

    drop_report(pg, "arudd", "ARUDD-001.xml", arudd(
        [returned("CMPDD0001", "1012", date(2026, 11, 26), "45.67", trans="01",
                  returnDescription="INSTRUCTION CANCELLED")], day="2026-11-30"))
    drop_report(pg, "addacs", "ADDACS-001.xml", addacs([_advice("CMPDD0002", "1")], day="2026-11-30"))
    runs = flow_runs(run_pending_sensors(definitions, instance, echo=lambda _: None))
    assert len(runs) == 2 and all(r.success for r in runs), [r.error for r in runs]
    by_job = {instance.get_run_by_id(r.run_id).job_name: r for r in runs}
    returns = materialization(instance, by_job["recurring_payments_rejections_dd_job"].run_id, "dd_returns_batch")
    assert returns["outcomes"] == {"HARD_DECLINE": 1}
    assert check_results(instance, by_job["recurring_payments_rejections_dd_job"].run_id)[
        "arudd_unmapped_return_codes_within_threshold"].passed
    updates = materialization(instance, by_job["addacs_job"].run_id, "addacs_mandate_updates")
    assert updates["outcomes"] == {"MANDATE_CANCELLED": 1}
    assert pg.query("SELECT account_number, sum(amount_minor) FROM ledger_postings "
                    "WHERE left(account_number, 5) = 'ACCDD' GROUP BY 1 ORDER BY 1") == [
        ("ACCDD0001", 4567), ("ACCDD0002", 0), ("ACCDD0003", 0)], "the returned debit reversed, to the penny"
    assert pg.query("SELECT reference, status FROM mandates ORDER BY reference") == [
        ("CMPDD0001", "CANCELLED"), ("CMPDD0002", "CANCELLED"), ("CMPDD0003", "ACTIVE")]
    assert pg.query("SELECT account_number, payment_type FROM accounts WHERE left(account_number, 5) = 'ACCDD' "
                    "ORDER BY 1") == [("ACCDD0001", "MANUAL"), ("ACCDD0002", "MANUAL"), ("ACCDD0003", "DIRECT_DEBIT")]
    embedded = pg.root / "cmp.duckdb"  # other parts of the code location may open it: it stays empty
    if embedded.exists():
        with duckdb.connect(str(embedded), read_only=True) as con:
            assert con.execute("SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM mandates)"
                               ).fetchall() == [(0, 0)]


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def dd_store(request, platform):
    """Three payers seeded on the embedded store, then (postgres) moved into PostgreSQL: the same test body on both."""
    seed_payers(platform)
    if request.param == "duckdb":
        return platform
    return moved_to_postgres(platform, request.getfixturevalue("pg_url"), request.getfixturevalue("monkeypatch"))


def _advice(reference: str, code: str, **extra) -> dict:
    return {"reference": reference, "payer-name": "Zoë Renée Müller", "payer-sort-code": "201575",
            "payer-account-number": "87654321", "reason-code": code, "effective-date": "2026-12-13", **extra}


def test_addacs_amends_and_cancels_mandates_once_and_the_next_auddis_lodges_the_amendment(dd_store):
    auddis_day(dd_store, D0)
    auddis_day(dd_store, ACTIVE_ON)
    report = addacs([_advice("CMPDD0001", "3", **{"payer-new-sort-code": "309634",
                                                  "payer-new-account-number": "11112222"}),
                     _advice("CMPDD0002", "1"), _advice("NOSUCHREF", "1")])
    key = drop_report(dd_store, "addacs", "ADDACS-001.xml", report)

    load, applied, written = addacs_day(dd_store, key, date(2026, 12, 14))
    again_load, again, _ = addacs_day(dd_store, key, date(2026, 12, 14))  # the partition re-run: nothing twice

    assert (load.status, load.outcomes) == ("LOADED", {"MANDATE_AMENDED": 1, "MANDATE_CANCELLED": 1, "REJECTED": 1})
    assert applied.applied and again_load.status == "ALREADY_LOADED" and again.outcomes == applied.outcomes
    assert [(a["reference"], a["outcome"], a["problem_code"]) for a in written["advices"]] == [
        ("CMPDD0001", "MANDATE_AMENDED", None), ("CMPDD0002", "MANDATE_CANCELLED", None),
        ("NOSUCHREF", "REJECTED", "UNKNOWN_REFERENCE")]
    assert dd_store.query("SELECT reference, status, pending_instruction, sort_code, bank_account FROM mandates "
                          "ORDER BY reference") == [
        ("CMPDD0001", "AMENDMENT_PENDING", "NEW", "309634", "11112222"),
        ("CMPDD0002", "CANCELLED", None, "201575", "87654321"), ("CMPDD0003", "ACTIVE", None, "201575", "87654321")]
    assert dd_store.query("SELECT account_number, payment_type FROM accounts WHERE account_number IN "
                          "('ACCDD0001', 'ACCDD0002') ORDER BY 1") == [("ACCDD0001", "DIRECT_DEBIT"),
                                                                       ("ACCDD0002", "MANUAL")]
    assert dd_store.query("SELECT event_code, count(*) FROM workflow_events WHERE event_code IN "
                          "('MANDATE_AMENDED', 'MANDATE_CANCELLED') GROUP BY 1 ORDER BY 1") == [
        ("MANDATE_AMENDED", 1), ("MANDATE_CANCELLED", 1)]
    assert dd_store.query("SELECT category, count(*) FROM job_errors WHERE job = 'addacs' GROUP BY 1") == [("DATA", 1)]
    # the amendment goes to the bank as 0N alone (no 0C to the old bank), with the new details, on the next AUDDIS
    batch, text = auddis_day(dd_store, date(2026, 12, 15))
    assert batch.by_code == {"0N": 1}
    [record] = std18.read(text).records
    assert (record.reference, record.destination_sort_code, record.destination_account) == (
        "CMPDD0001", "309634", "11112222")
    assert dd_store.query("SELECT serial, batch_id FROM bacs_submissions ORDER BY serial") == [
        ("000001", "AUD-20261201"), ("000002", "AUD-20261215")]


def test_a_final_collection_is_19_and_mandates_to_cancel_are_cancelled_with_0c_on_both_stores(dd_store):
    """Mandates flagged for cancellation after their final debit: one collected with 19 then cancelled, one whose
    account no longer pays by direct debit cancelled without a debit; both lodged as 0C on the next AUDDIS."""
    auddis_day(dd_store, D0)
    auddis_day(dd_store, ACTIVE_ON)
    notices_day(dd_store, ISSUED)
    send_notices(dd_store, at(ISSUED, 9))
    platform_execute(dd_store, "UPDATE mandates SET final_collection_requested = TRUE "
                               "WHERE reference IN ('CMPDD0002', 'CMPDD0003')")
    platform_execute(dd_store, "UPDATE accounts SET payment_type = 'MANUAL' WHERE account_number = 'ACCDD0003'")

    batch, text, posted, _ = collection_day(dd_store, COLLECT_ON)

    assert (batch.by_code, batch.mandates_cancelled, posted.total_minor) == ({"01": 1, "19": 1}, 2, -5567)
    assert [(r.transaction_code, r.reference) for r in std18.read(text).records] == [
        ("01", "CMPDD0001"), ("19", "CMPDD0002"), ("99", "CONTRA")]
    assert dd_store.query("SELECT reference, status, pending_instruction, final_collection_requested FROM mandates "
                          "ORDER BY reference") == [("CMPDD0001", "ACTIVE", None, False),
                                                    ("CMPDD0002", "CANCELLED", "CANCEL", False),
                                                    ("CMPDD0003", "CANCELLED", "CANCEL", False)]
    cancelled, text = auddis_day(dd_store, date(2026, 12, 18))
    assert cancelled.by_code == {"0C": 2}
    assert [r.reference for r in std18.read(text).records] == ["CMPDD0002", "CMPDD0003"]
    assert dd_store.query("SELECT count(DISTINCT mandate_id) FROM mandate_history WHERE new_status = 'CANCELLED' "
                          "AND position('after its final collection' IN cause) > 0") == [(2,)]
