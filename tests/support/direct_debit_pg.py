"""The direct debit days on either store (issue 19, phase 3b): the same calls on the embedded DuckDB file or, with
PostgreSQL as the system of record, on a scratch DuckDB linked to it (core/db/mirror.py). Each call is one step run
as the Dagster asset runs it, in a store session of its own (a new process would do the same)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import orjson

from cmp_pipelines.core.db.connection import connect
from cmp_pipelines.core.db.mirror import mirrored
from cmp_pipelines.defs.direct_debit.auddis import AuddisExtract
from cmp_pipelines.defs.direct_debit.collections import DirectDebitCollections
from tests.support.direct_debit import BUREAU, DD_CONFIG

# Three direct-debit payers: account -> (mandate reference, invoice, amount in pence). Issued 5 Dec, due 19 Dec.
PAYERS = {"ACCDD0001": ("CMPDD0001", "INVDD0001", 4567), "ACCDD0002": ("CMPDD0002", "INVDD0002", 1000),
          "ACCDD0003": ("CMPDD0003", "INVDD0003", 1)}
ISSUED, DUE = date(2026, 12, 5), date(2026, 12, 19)


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def seed_payers(platform, payers: dict = PAYERS, day: date = date(2026, 12, 1), issued: date = ISSUED,
                due: date = DUE) -> None:
    """On the embedded store (before it is moved): each payer's invoice (charged to the ledger) and a NEW mandate,
    the account paying by direct debit. Nothing is submitted or noticed yet: the days under test do that."""
    from cmp_pipelines.core.mandates import create_mandate
    from cmp_pipelines.core.payment_setup import set_payment_type
    from tests.support.direct_debit import PARTNERS, add_invoice

    platform.keyring.init_keys(BUREAU)
    for account, (_, invoice, amount) in payers.items():
        add_invoice(platform, account, invoice, amount, issued, due)
    with platform.connect() as con:
        for account, (reference, _, _) in payers.items():
            create_mandate(con, account, config=DD_CONFIG, now=at(day, 3), reference=reference, sort_code="201575",
                           bank_account="87654321", account_name=f"Payer {account}")
            set_payment_type(con, account, "DIRECT_DEBIT", partners=PARTNERS, now=at(day, 3), cause="customer asked")


@contextmanager
def store(platform) -> Iterator[tuple]:
    """(con, mirror): the DuckDB file and None, or a scratch linked to the platform's PostgreSQL database."""
    url = getattr(platform, "url", "")
    if url:
        with mirrored(url) as mirror:
            yield mirror.con, mirror
    else:
        with connect(platform.database) as con:
            yield con, None


def plaintext(platform, path: str | None) -> str | None:
    return None if path is None else platform.keyring.decrypt(BUREAU, platform.files.read_bytes(path)).decode("ascii")


def auddis_day(platform, day: date):
    """The AUDDIS job's two steps, each in a session of its own; (batch, plaintext Standard 18 or None)."""
    with store(platform) as (con, mirror):
        batch = AuddisExtract(con, platform.files, platform.keyring, DD_CONFIG, at(day, 1), mirror).select(day)
    with store(platform) as (con, mirror):
        extract = AuddisExtract(con, platform.files, platform.keyring, DD_CONFIG, at(day, 1), mirror)
        path = extract.write_file(extract.selected(day))
    return batch, plaintext(platform, path)


def notices_day(platform, day: date):
    with store(platform) as (con, mirror):
        return DirectDebitCollections(con, platform.files, platform.keyring, DD_CONFIG, at(day, 1), mirror
                                      ).raise_notices(day)


def send_notices(platform, sent: datetime) -> None:
    """The dispatcher's outcome, as the store records it: every raised notice SENT at `sent` (the dispatcher on
    PostgreSQL is the service sensors' part of issue 19, not this flow's)."""
    platform_execute(platform, "UPDATE collection_notices SET status = 'SENT', sent_at = ? WHERE status = 'RAISED'",
                     [sent])


def collection_day(platform, day: date):
    """The DD-mode job's selection, posting, file and posting file, each step in a session of its own;
    (batch, plaintext Standard 18 or None, posting result, posting file document)."""
    def flow(con, mirror):
        return DirectDebitCollections(con, platform.files, platform.keyring, DD_CONFIG, at(day, 2), mirror)

    with store(platform) as (con, mirror):
        batch = flow(con, mirror).select(day)
    with store(platform) as (con, mirror):
        f = flow(con, mirror)
        posted = f.post(f.selected(day))
    with store(platform) as (con, mirror):
        path = flow(con, mirror).write_file(flow(con, mirror).selected(day))
    with store(platform) as (con, mirror):
        f = flow(con, mirror)
        posting_file = f.write_posting_file(f.posted(f.selected(day)))
    return batch, plaintext(platform, path), posted, orjson.loads(platform.files.read_bytes(posting_file))


def platform_execute(platform, sql: str, params=None) -> None:
    if getattr(platform, "url", ""):
        platform.execute(sql, params)
    else:
        with connect(platform.database) as con:
            con.execute(sql, params or [])


def outcomes(platform) -> dict:
    """What a test compares between the stores: the store of record's rows, in a stable order."""
    q = platform.query
    return {
        "balances": q("SELECT account_number, sum(amount_minor) FROM ledger_postings "
                      "WHERE left(account_number, 5) = 'ACCDD' GROUP BY 1 ORDER BY 1"),
        "postings": q("SELECT idempotency_key, account_number, invoice_number, kind, amount_minor, batch_id "
                      "FROM ledger_postings WHERE kind <> 'INVOICE' ORDER BY idempotency_key"),
        "mandates": q("SELECT reference, status, pending_instruction, submitted_on, activated_on FROM mandates "
                      "ORDER BY reference"),
        "history": q("SELECT m.reference, h.old_status, h.new_status, h.cause FROM mandate_history h "
                     "JOIN mandates m USING (mandate_id) ORDER BY m.reference, h.changed_at, h.new_status"),
        "batches": q("SELECT batch_id, kind, status, record_count, total_minor, accepted_count FROM batches "
                     "ORDER BY batch_id"),
        "serials": q("SELECT service_user_number, serial, input_day, file_number, batch_id FROM bacs_submissions "
                     "ORDER BY serial"),
        "collections": q("SELECT collection_id, batch_id, transaction_code, amount_minor, status FROM dd_collections "
                         "ORDER BY collection_id"),
        "items": q("SELECT collection_id, invoice_number, amount_minor FROM dd_collection_items ORDER BY 1, 2"),
        "notices": q("SELECT n.notice_id, n.status, n.amount_minor, n.collection_on, e.event_code "
                     "FROM collection_notices n LEFT JOIN workflow_events e ON e.event_id = n.event_id "
                     "ORDER BY n.notice_id"),
        "events": q("SELECT event_type, event_code, account_number, source_ref FROM workflow_events "
                    "ORDER BY event_type, source_ref, account_number"),
        "deliveries": q("SELECT document_kind, partner, remote_name, status FROM delivery_register "
                        "ORDER BY remote_name"),
    }


def arudd_step(platform, key: str, day: date, step: str):
    """One step of the ARUDD Rejections job for one report (load, apply, posting_file, reports), in a session of its
    own."""
    from cmp_pipelines.core.config import load_rejection_codes
    from cmp_pipelines.defs.direct_debit.returns import DirectDebitReturns
    from tests.support.direct_debit import CONFIG_DIR, PARTNERS

    with store(platform) as (con, mirror):
        f = DirectDebitReturns(con, platform.files, platform.keyring, PARTNERS, load_rejection_codes(CONFIG_DIR),
                               DD_CONFIG, now=at(day, 6), mirror=mirror)
        if step == "load":
            return f.load(key)
        if step == "apply":
            return f.apply(f.loaded(key))
        if step == "posting_file":
            return f.write_posting_file(f.reversal(f.loaded(key)))
        return f.write_reports(f.loaded(key))[0]


def arudd_day(platform, key: str, day: date):
    """The ARUDD Rejections job's steps for one report, each in a session of its own; (load, reversal, report)."""
    load = arudd_step(platform, key, day, "load")
    posted = arudd_step(platform, key, day, "apply")
    arudd_step(platform, key, day, "posting_file")
    report = arudd_step(platform, key, day, "reports")
    return load, posted, orjson.loads(platform.files.read_bytes(report))


def addacs_day(platform, key: str, day: date):
    """The ADDACS job's steps for one report, each in a session of its own; (load, applied, report)."""
    from cmp_pipelines.core.config import load_mandate_revision_codes
    from cmp_pipelines.defs.direct_debit.addacs import AddacsReports
    from tests.support.direct_debit import CONFIG_DIR, PARTNERS

    def flow(con, mirror):
        return AddacsReports(con, platform.files, platform.keyring, PARTNERS, load_mandate_revision_codes(CONFIG_DIR),
                             DD_CONFIG, now=at(day, 6), mirror=mirror)

    with store(platform) as (con, mirror):
        load = flow(con, mirror).load(key)
    with store(platform) as (con, mirror):
        f = flow(con, mirror)
        applied = f.apply(f.loaded(key))
    with store(platform) as (con, mirror):
        f = flow(con, mirror)
        report = f.write_report(f.loaded(key))
    return load, applied, orjson.loads(platform.files.read_bytes(report))
