"""Driving the direct debit flows in tests: mandates, the daily jobs, and the bureau's encrypted reports."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import orjson

from cmp_pipelines.core.config import (
    load_direct_debit,
    load_mandate_revision_codes,
    load_partners,
    load_rejection_codes,
)
from cmp_pipelines.core.intake import partition_key, sha256_hex
from cmp_pipelines.core.mandates import create_mandate
from cmp_pipelines.core.payment_setup import set_payment_type
from cmp_pipelines.core.settings import PROJECT_ROOT
from cmp_pipelines.defs.direct_debit import bacs_xml
from cmp_pipelines.defs.direct_debit import standard18 as std18
from cmp_pipelines.defs.direct_debit.addacs import AddacsReports
from cmp_pipelines.defs.direct_debit.auddis import AuddisExtract
from cmp_pipelines.defs.direct_debit.collections import DirectDebitCollections
from cmp_pipelines.defs.direct_debit.returns import DirectDebitReturns
from tests.support.notices import give_notices

CONFIG_DIR = PROJECT_ROOT / "config"
PARTNERS = load_partners(CONFIG_DIR)
DD_CONFIG = load_direct_debit(CONFIG_DIR, PARTNERS)
BUREAU = DD_CONFIG.bureau
SUN = DD_CONFIG.service_user_number


def at(day: date, hour: int = 3) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def add_invoice(platform, account: str, invoice: str, amount_minor: int, issued: date, due: date) -> None:
    with platform.connect() as con:
        con.execute("INSERT INTO accounts (account_number, name, email) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    [account, f"Customer {account}", f"{account.lower()}@example.com"])
        con.execute("INSERT INTO invoices VALUES (?, ?, ?, ?, ?, 'GBP')", [invoice, account, issued, due, amount_minor])
        con.execute(
            "INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, "
            "currency, batch_id, source_ref, effective_at) VALUES (?, ?, ?, 'INVOICE', ?, 'GBP', 'INVOICES', ?, ?)",
            [f"invoice:{invoice}:CHARGE", account, invoice, amount_minor, invoice, at(issued)],
        )


def auddis_day(platform, day: date):
    with platform.connect() as con:
        extract = AuddisExtract(con, platform.files, platform.keyring, DD_CONFIG, at(day, 1))
        batch = extract.select(day)
        path = extract.write_file(batch)
    if path is None:  # nothing pending: no file
        return batch, None
    return batch, std18.read(platform.keyring.decrypt(BUREAU, platform.files.read_bytes(path)).decode("ascii"))


def active_dd_accounts(platform, references: dict[str, str], day: date) -> None:
    """Mandates ({account: reference}) created and lodged on `day`, active after the quiet period; the accounts
    paying by direct debit."""
    with platform.connect() as con:
        for account, reference in references.items():
            create_mandate(con, account, config=DD_CONFIG, now=at(day), reference=reference, sort_code="201575",
                           bank_account="87654321", account_name=f"Payer {account}")
            set_payment_type(con, account, "DIRECT_DEBIT", partners=PARTNERS, now=at(day), cause="customer asked")
    auddis_day(platform, day)
    auddis_day(platform, day + timedelta(days=DD_CONFIG.activation_days))


def collection_day(platform, day: date, notices: bool = True):
    """The DD-mode job for one business day; returns (batch, parsed Standard 18 file, posting result). First
    (unless `notices` is False) the advance notices every invoice issued by then would have had."""
    if notices:
        give_notices(platform, "DIRECT_DEBIT", day)
    with platform.connect() as con:
        flow = DirectDebitCollections(con, platform.files, platform.keyring, DD_CONFIG, at(day, 2))
        batch = flow.select(day)
        path = flow.write_file(batch)
        posted = flow.post(batch)
        flow.write_posting_file(posted)
    if path is None:
        return batch, None, posted
    text = platform.keyring.decrypt(BUREAU, platform.files.read_bytes(path)).decode("ascii")
    return batch, std18.read(text), posted


def drop_report(platform, feed: str, name: str, data: bytes, encrypt: bool = True) -> str:
    payload = platform.keyring.encrypt(BUREAU, data) if encrypt else data
    path = platform.files.write_bytes(f"inbound/{feed}/{BUREAU}/{name}", payload)
    return partition_key(BUREAU, name, sha256_hex(platform.files.read_bytes(path)))


def addacs(advices: list[dict], number: str = "000001", day: str = "2026-12-20") -> bytes:
    return bacs_xml.write_addacs(advices, SUN, f"06:00:{int(number) % 60:02d}", day)


def arudd(items: list[dict], number: str = "000001", day: str = "2026-12-21", **kwargs) -> bytes:
    return bacs_xml.write_arudd(items, SUN, number, day, **kwargs)


def returned(ref: str, code: str, processed: date, amount: str, trans: str = "17", **extra) -> dict:
    item = {"ref": ref, "transCode": trans, "returnCode": code, "returnDescription": "RETURNED",
            "originalProcessingDate": processed.isoformat(), "valueOf": amount, "currency": "GBP",
            "PayerAccount": {"number": "87654321", "sortCode": "201575", "name": "Payer"}}
    item.update(extra)
    return item


def process_addacs(platform, key: str, day: date):
    with platform.connect() as con:
        flow = AddacsReports(con, platform.files, platform.keyring, PARTNERS, load_mandate_revision_codes(CONFIG_DIR),
                             DD_CONFIG, now=at(day, 6))
        load = flow.apply(flow.load(key))
        flow.write_report(load)
        return load


def process_arudd(platform, key: str, day: date):
    with platform.connect() as con:
        flow = DirectDebitReturns(con, platform.files, platform.keyring, PARTNERS, load_rejection_codes(CONFIG_DIR),
                                  DD_CONFIG, now=at(day, 6))
        load = flow.load(key)
        posted = flow.apply(load)
        flow.write_posting_file(posted)
        report, _ = flow.write_reports(flow.loaded(key))
        return load, posted, orjson.loads(platform.files.read_bytes(report))
