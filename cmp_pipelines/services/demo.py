"""Deterministic demo data: accounts with open invoices, and sample encrypted partner files."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import orjson

from cmp_pipelines.domain.money import format_minor
from cmp_pipelines.formats.encryption import PartnerKeyring
from cmp_pipelines.services.files import FileStoreLike
from cmp_pipelines.store.connection import transaction

METHODS = ("CASH", "CHEQUE", "POSTAL_ORDER", "BANK_TRANSFER")
TWO_PLACES = re.compile(r"^-?[0-9]+\.[0-9]{2}$")


def account_number(i: int) -> str:
    return f"ACC{i:08d}"


def invoice_number(i: int, k: int) -> str:
    return f"INV{i:08d}{k}"


def seed_accounts(con: duckdb.DuckDBPyConnection, accounts: int, seed: int, today: datetime) -> int:
    """Accounts ACC00000001..N, each with one open invoice and every third with a second; charges posted."""
    params = {"n": accounts, "seed": seed, "issued": today.date() - timedelta(days=20),
              "due": today.date() + timedelta(days=10)}
    with transaction(con):
        con.execute(
            "INSERT INTO accounts (account_number, name, currency) "
            "SELECT 'ACC' || lpad(i::VARCHAR, 8, '0'), 'Demo customer ' || i, 'GBP' FROM range(1, $n + 1) t(i) "
            "ON CONFLICT DO NOTHING",
            {"n": accounts},
        )
        con.execute(
            """
            INSERT INTO invoices
            SELECT 'INV' || lpad(i::VARCHAR, 8, '0') || k, 'ACC' || lpad(i::VARCHAR, 8, '0'), $issued, $due,
                   1000 + ((i * 7919 + k * 15485863 + $seed * 104729) % 9000), 'GBP'
            FROM range(1, $n + 1) t(i), range(1, 3) u(k)
            WHERE k = 1 OR (i + $seed) % 3 = 0
            ON CONFLICT DO NOTHING
            """,
            params,
        )
        con.execute(
            """
            INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor,
                                         currency, batch_id, source_ref, effective_at)
            SELECT 'invoice:' || invoice_number || ':CHARGE', account_number, invoice_number, 'INVOICE',
                   amount_minor, currency, 'INVOICES-' || strftime(issued_on, '%Y%m%d'), invoice_number, issued_on
            FROM invoices
            ON CONFLICT DO NOTHING
            """
        )
    return con.execute("SELECT count(*) FROM invoices").fetchone()[0]


def nrp_document(
    sender: str, file_id: str, payments: list[dict], created_at: datetime, currency: str = "GBP"
) -> dict:
    total = sum((Decimal(p["amount"]) for p in payments
                 if isinstance(p, dict) and TWO_PLACES.match(str(p.get("amount")))), Decimal("0.00"))
    return {
        "header": {"file_id": file_id, "sender": sender, "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "currency": currency, "record_count": len(payments), "total_amount": f"{total:.2f}"},
        "payments": payments,
    }


def random_payments(count: int, accounts: int, seed: int, when: datetime, prefix: str = "") -> list[dict]:
    rng = random.Random(seed)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    payments = []
    for index in range(1, count + 1):
        i = rng.randint(1, accounts)
        with_invoice = rng.random() < 0.6
        payments.append({
            "record_id": f"{prefix}{index}",
            "account_number": account_number(i),
            "invoice_number": invoice_number(i, 1) if with_invoice else None,
            "amount": format_minor(rng.randint(100, 20000)),
            "payment_date": stamp if rng.random() < 0.97 else None,
            "payment_method": METHODS[rng.randrange(4)],
            "reference": f"PP {rng.randint(1000, 9999)}" if rng.random() < 0.5 else None,
        })
    return payments


def demo_files(
    files: FileStoreLike, keyring: PartnerKeyring, accounts: int, seed: int, now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Four sample files: two clean, one with bad records of several kinds, one with no payments."""
    now = now or datetime.now(UTC)
    day = now.strftime("%Y%m%d")
    clean = random_payments(25, accounts, seed, now - timedelta(hours=3))
    second = random_payments(12, accounts, seed + 1, now - timedelta(hours=2))
    bad = random_payments(6, accounts, seed + 2, now - timedelta(hours=1))
    bad += [
        {**bad[0], "record_id": "7", "amount": "-5.00"},
        {**bad[0], "record_id": "8", "amount": "12.345"},
        {**bad[0], "record_id": "9", "reference": "card 4111 1111 1111 1111"},
        {**bad[1], "record_id": "10", "account_number": "ACC99999999", "invoice_number": None},
        {**bad[1], "record_id": "11", "invoice_number": invoice_number(min(accounts, 2), 1),
         "account_number": account_number(1)},
        {**bad[2], "record_id": "3"},
        {**bad[2], "record_id": "13", "payment_method": "CRYPTO"},
    ]
    samples = [
        ("PAYPOINT", f"PAYPOINT-{day}-001", clean),
        ("PAYPOINT", f"PAYPOINT-{day}-002", bad),
        ("LOCKBOX", f"LOCKBOX-{day}-001", second),
        ("PAYPOINT", f"PAYPOINT-{day}-003", []),
    ]
    written = []
    for index, (partner, file_id, payments) in enumerate(samples):
        document = nrp_document(partner, file_id, payments, now)
        keyring.init_keys(partner)
        path = f"inbound/nrp/{partner}/{file_id}.json.enc"
        written.append(files.write_bytes(path, keyring.encrypt(partner, orjson.dumps(document))))
        if progress:
            progress(index + 1)
    return written
