"""Deterministic demo data: accounts with open invoices, and sample encrypted partner files."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import orjson

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.db.connection import sql_literal, transaction
from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.ledger import BATCH_PREFIXES, lit, post
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.notices import KINDS

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
            "INSERT INTO accounts (account_number, name, currency, email) "
            "SELECT 'ACC' || lpad(i::VARCHAR, 8, '0'), 'Demo customer ' || i, 'GBP', "
            "'customer' || i || '@example.com' FROM range(1, $n + 1) t(i) "
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
        post_invoice_charges(con, "")
    return con.execute("SELECT count(*) FROM invoices").fetchone()[0]


def post_invoice_charges(con: duckdb.DuckDBPyConnection, where: str = "") -> int:
    """Each invoice's charge, once, in the day's invoicing batch (INVOICES-<issued yyyymmdd>)."""
    return post(
        con,
        f"""
        SELECT invoice_number, account_number, 'INVOICE' AS kind, amount_minor, currency,
               {sql_literal(BATCH_PREFIXES["INVOICES"] + "-")} || strftime(issued_on, '%Y%m%d') AS batch_id,
               invoice_number AS source_ref, issued_on AS effective_at
        FROM invoices {where}
        """,
        source="invoice", key=("invoice_number", lit("CHARGE")), batch_id=None, now=None,
    )


def nrp_document(
    sender: str, file_id: str, payments: list[dict], created_at: datetime, currency: str = "GBP"
) -> dict:
    total = sum((Decimal(p["amount"]) for p in payments
                 if isinstance(p, dict) and TWO_PLACES.fullmatch(str(p.get("amount")))), Decimal("0.00"))
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


def seed_card_accounts(con: duckdb.DuckDBPyConnection, provider: str, today: datetime, every: int = 10) -> int:
    """Every `every`-th demo account pays by recurring card, with last month's invoice due yesterday (so
    today's CARD-mode run has work) and one approved refund due today. Idempotent."""
    params = {"every": every, "provider": provider, "now": today, "issued": today.date() - timedelta(days=31),
              "due": today.date() - timedelta(days=1)}
    with transaction(con):
        con.execute(
            """
            INSERT INTO payment_cards
            SELECT account_number, $provider, 'tok_demo_' || right(account_number, 8),
                   lpad(((hash(account_number) % 10000))::VARCHAR, 4, '0'), '2029-12', $now
            FROM accounts WHERE NOT is_suspense AND right(account_number, 8)::BIGINT % $every = 0
            ON CONFLICT DO NOTHING
            """,
            {k: params[k] for k in ("every", "provider", "now")},
        )
        con.execute(
            """
            INSERT INTO payment_type_changes
            SELECT account_number, payment_type, 'RECURRING_CARD', 'demo seed', $now FROM accounts
            WHERE account_number IN (SELECT account_number FROM payment_cards) AND payment_type = 'MANUAL'
              AND NOT EXISTS (SELECT 1 FROM payment_type_changes c WHERE c.account_number = accounts.account_number)
            """,
            {"now": today},
        )
        con.execute(
            "UPDATE accounts SET payment_type = 'RECURRING_CARD' WHERE account_number IN "
            "(SELECT account_number FROM payment_type_changes WHERE cause = 'demo seed') "
            "AND payment_type = 'MANUAL' AND suspended_until IS NULL",
        )
        con.execute(
            """
            INSERT INTO invoices
            SELECT 'INV' || right(account_number, 8) || '0', account_number, $issued, $due,
                   2000 + hash(account_number) % 5000, 'GBP'
            FROM payment_cards ON CONFLICT DO NOTHING
            """,
            {k: params[k] for k in ("issued", "due")},
        )
        post_invoice_charges(con, "WHERE account_number IN (SELECT account_number FROM payment_cards)")
        seed_sent_notices(con, "RECURRING_CARD", "account_number IN (SELECT account_number FROM payment_cards)")
        first = con.execute("SELECT min(account_number) FROM payment_cards").fetchone()[0]
        if first and not con.execute("SELECT count(*) FROM card_refunds").fetchone()[0]:
            con.execute("INSERT INTO card_refunds VALUES (?, ?, 1250, 'GBP', ?, 'demo: goodwill credit', ?)",
                        [f"RF{first}-001", first, today.date(), today])
    return con.execute("SELECT count(*) FROM payment_cards").fetchone()[0]


def card_rejection_file(
    con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring, provider: str, now: datetime,
) -> str | None:
    """A sample provider rejection file for today's extract: a soft decline, a hard decline and an unknown code."""
    rows = con.execute(
        "SELECT transaction_id, account_number, minor_to_decimal(amount_minor) FROM card_transactions "
        "WHERE provider = ? AND status = 'EXTRACTED' AND kind = 'PAYMENT' ORDER BY transaction_id LIMIT 3",
        [provider],
    ).fetchall()
    if not rows:
        return None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    codes = ("51", "54", "99")
    records = [{"record_id": str(i + 1), "transaction_id": t, "account_number": a, "amount": m,
                "reason_code": codes[i], "reason_text": None, "rejected_at": stamp}
               for i, (t, a, m) in enumerate(rows)]
    total = sum((Decimal(r["amount"]) for r in records), Decimal("0.00"))
    file_id = f"{provider}-REJ-{now:%Y%m%dT%H%M%S}"
    document = {"header": {"file_id": file_id, "sender": provider, "created_at": stamp, "currency": "GBP",
                           "record_count": len(records), "total_amount": f"{total:.2f}"},
                "rejections": records}
    return files.write_bytes(f"inbound/card_rejections/{provider}/{file_id}.json.enc",
                             keyring.encrypt(provider, orjson.dumps(document)))


def seed_sent_notices(con: duckdb.DuckDBPyConnection, payment_type: str, where: str) -> int:
    """The demo's history: each invoice `where` selects had its advance notice sent the day it was issued, dated
    its due date, so today's run may collect it (core/notices.py). No workflow event: the message is history."""
    prefix = KINDS[payment_type][0]
    return con.execute(
        f"""
        INSERT INTO collection_notices (notice_id, payment_type, account_number, invoice_number, mandate_id,
            amount_minor, currency, collection_on, raised_on, status, sent_at, created_at)
        SELECT 'AN-{prefix}-' || invoice_number, {sql_literal(payment_type)}, account_number, invoice_number,
               (SELECT min(m.mandate_id) FROM mandates m WHERE m.account_number = i.account_number), amount_minor,
               currency, due_on, issued_on, 'SENT', issued_on + INTERVAL 9 HOUR, issued_on + INTERVAL 9 HOUR
        FROM invoices i WHERE {where} ON CONFLICT DO NOTHING
        """
    ).fetchone()[0]


def seed_direct_debit_accounts(con: duckdb.DuckDBPyConnection, service_user_number: str, today: datetime,
                               every: int = 10, offset: int = 5) -> tuple[int, int]:
    """Demo accounts numbered offset mod `every` pay by direct debit under an active mandate lodged weeks ago, with
    an invoice issued last month and due yesterday (today's DD run collects it); every fifth of them has a new
    mandate still to be lodged (today's AUDDIS sends its 0N). Idempotent; returns (active, pending)."""
    params = {"every": every, "offset": offset, "sun": service_user_number, "now": today,
              "lodged": today.date() - timedelta(days=40), "active": today.date() - timedelta(days=30),
              "issued": today.date() - timedelta(days=31), "due": today.date() - timedelta(days=1)}
    with transaction(con):
        con.execute(
            """
            INSERT INTO mandates (mandate_id, account_number, service_user_number, reference, sort_code, bank_account,
                                  account_name, status, pending_instruction, submitted_on, activated_on, created_at)
            SELECT 'DDI-' || $sun || '-CMP' || account_number, account_number, $sun, 'CMP' || account_number,
                   lpad((200000 + hash(account_number) % 700000)::VARCHAR, 6, '0'),
                   lpad((hash(account_number || 'acct') % 100000000)::VARCHAR, 8, '0'), name,
                   CASE WHEN n % ($every * 5) = $offset THEN 'PENDING_SUBMISSION' ELSE 'ACTIVE' END,
                   CASE WHEN n % ($every * 5) = $offset THEN 'NEW' END,
                   CASE WHEN n % ($every * 5) = $offset THEN NULL ELSE $lodged END,
                   CASE WHEN n % ($every * 5) = $offset THEN NULL ELSE $active END, $now
            FROM (SELECT *, right(account_number, 8)::BIGINT AS n FROM accounts WHERE NOT is_suspense)
            WHERE n % $every = $offset
            ON CONFLICT DO NOTHING
            """,
            {k: params[k] for k in ("every", "offset", "sun", "now", "lodged", "active")},
        )
        con.execute(
            """
            INSERT INTO payment_type_changes
            SELECT a.account_number, a.payment_type, 'DIRECT_DEBIT', 'demo seed (direct debit)', $now
            FROM accounts a JOIN mandates m USING (account_number)
            WHERE m.status = 'ACTIVE' AND a.payment_type = 'MANUAL' AND NOT EXISTS
                  (SELECT 1 FROM payment_type_changes c WHERE c.account_number = a.account_number)
            """,
            {"now": today},
        )
        con.execute(
            "UPDATE accounts SET payment_type = 'DIRECT_DEBIT' WHERE account_number IN (SELECT account_number "
            "FROM payment_type_changes WHERE cause = 'demo seed (direct debit)') AND payment_type = 'MANUAL'"
        )
        con.execute(
            """
            INSERT INTO invoices
            SELECT 'INV' || right(account_number, 8) || 'D', account_number, $issued, $due,
                   1500 + hash(account_number) % 4000, 'GBP'
            FROM mandates WHERE status = 'ACTIVE' ON CONFLICT DO NOTHING
            """,
            {k: params[k] for k in ("issued", "due")},
        )
        post_invoice_charges(con, "WHERE invoice_number LIKE 'INV%D'")
        seed_sent_notices(con, "DIRECT_DEBIT", "invoice_number LIKE 'INV%D'")
        return con.execute("SELECT count(*) FILTER (status = 'ACTIVE'), count(*) FILTER (status = "
                           "'PENDING_SUBMISSION') FROM mandates").fetchone()


def bacs_report_files(con: duckdb.DuckDBPyConnection, files: FileStoreLike, keyring: PartnerKeyring, bureau: str,
                      service_user_number: str, now: datetime) -> list[str]:
    """Sample bureau reports (ISO-8859-1 Bacs XML, encrypted): an ADDACS with a code 3 amendment, a code 1
    cancellation and an unknown reference; an ARUDD returning two of today's debits (0128 refer to payer, soft;
    1012 instruction cancelled, the mandate cancelled)."""
    from cmp_pipelines.defs.direct_debit import bacs_xml

    mandates = con.execute("SELECT reference FROM mandates WHERE status = 'ACTIVE' AND service_user_number = ? "
                           "ORDER BY reference DESC LIMIT 2", [service_user_number]).fetchall()
    debits = con.execute("SELECT reference, transaction_code, coalesce(processing_date, business_date)::VARCHAR, "
                         "minor_to_decimal(amount_minor) "
                         "FROM dd_collections WHERE status = 'EXTRACTED' ORDER BY collection_id LIMIT 2").fetchall()
    day, stamp = now.date().isoformat(), now.strftime("%Y%m%dT%H%M%S")
    written = []
    if len(mandates) == 2:
        advices = [
            {"reference": mandates[0][0], "payer-name": "Zoë Müller", "reason-code": "3", "effective-date": day,
             "payer-new-sort-code": "309634", "payer-new-account-number": "11112222"},
            {"reference": mandates[1][0], "payer-name": "Renée O'Brien", "reason-code": "1", "effective-date": day},
            {"reference": "UNKNOWNREF01", "payer-name": "Nobody", "reason-code": "B", "effective-date": day},
        ]
        data = bacs_xml.write_addacs(advices, service_user_number, now.strftime("%H:%M:%S"), day)
        written.append(files.write_bytes(f"inbound/addacs/{bureau}/ADDACS-{stamp}.xml.enc",
                                         keyring.encrypt(bureau, data)))
    if debits:
        codes = ("0128", "1012")  # REFER TO PAYER and INSTRUCTION CANCELLED, as public ARUDD samples carry them
        items = [{"ref": ref, "transCode": code, "returnCode": codes[i],
                  "returnDescription": ("REFER TO PAYER", "INSTRUCTION CANCELLED")[i],
                  "originalProcessingDate": processed, "valueOf": amount, "currency": "GBP"}
                 for i, (ref, code, processed, amount) in enumerate(debits)]
        data = bacs_xml.write_arudd(items, service_user_number, stamp, day)
        written.append(files.write_bytes(f"inbound/arudd/{bureau}/ARUDD-{stamp}.xml.enc",
                                         keyring.encrypt(bureau, data)))
    return written
