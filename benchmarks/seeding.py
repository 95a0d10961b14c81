"""The seeded stores of the card and direct debit benchmarks: ONE function per store kind, used by the
function-level phases (run.py, direct_debit.py) and the orchestrated sections alike, for any business day (a
daemon's run can only take a partition that exists, i.e. a day up to today; the function-level benches use a
fixed day in the future).

Advance notice (migration 0016, `collection_notices`): once card and DD collections take only invoices whose
notice was SENT before the notice period, a store without notices collects nothing. `_sent_notices` inserts a
SENT notice for every seeded invoice if the store has that table, so the benches work before and after it.
Every statement is set-based (`range()`, INSERT..SELECT): a million accounts seed in seconds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

CARD_PROVIDER = "CARDPAY"
DD_BUREAU = "BACSBUREAU"


def _has_table(con, name: str) -> bool:
    return con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0] > 0


def _sent_notices(con, payment_type: str) -> int:
    """=== ADVANCE NOTICE === The demo's notice history for every seeded invoice of `payment_type` (sent the day the
    invoice was issued, dated its due date: demo.data.seed_sent_notices), so the day's run may collect it; only if
    the store has a `collection_notices` table (migration 0016). Returns the notices inserted."""
    if not _has_table(con, "collection_notices"):
        return 0
    from cmp_pipelines.demo.data import seed_sent_notices

    return seed_sent_notices(con, payment_type, "account_number IN (SELECT account_number FROM accounts "
                                                f"WHERE payment_type = '{payment_type}')")


def seed_card_store(con, accounts: int, seed: int, day: date) -> dict:
    """Accounts paying by recurring card, one CARDPAY card each, one open invoice each due on one of the 7 days up to
    `day` (issued 20 days before it) with its charge in the ledger, and (after 0016) its SENT notice."""
    from cmp_pipelines.core.db.connection import transaction

    params = {"n": accounts, "seed": seed, "day": day}
    with transaction(con):
        con.execute(
            "INSERT INTO accounts (account_number, name, currency, payment_type) "
            "SELECT 'ACC' || lpad(i::VARCHAR, 8, '0'), 'Card customer ' || i, 'GBP', 'RECURRING_CARD' "
            "FROM range(1, $n + 1) t(i)",
            {"n": accounts},
        )
        con.execute(
            "INSERT INTO payment_cards (account_number, provider, card_token, last_four, expiry, registered_at) "
            f"SELECT 'ACC' || lpad(i::VARCHAR, 8, '0'), '{CARD_PROVIDER}', 'tok_' || lpad(i::VARCHAR, 8, '0'), "
            "'4242', '2029-01', TIMESTAMPTZ '2026-01-15 12:00:00+00' FROM range(1, $n + 1) t(i)",
            {"n": accounts},
        )
        con.execute(
            """
            INSERT INTO invoices (invoice_number, account_number, issued_on, due_on, amount_minor, currency)
            SELECT 'INV' || lpad(i::VARCHAR, 8, '0') || '1', 'ACC' || lpad(i::VARCHAR, 8, '0'), $day - 20,
                   $day - (i % 7)::INTEGER, 1000 + ((i * 7919 + 15485863 + $seed * 104729) % 9000), 'GBP'
            FROM range(1, $n + 1) t(i)
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
            """
        )
        notices = _sent_notices(con, "RECURRING_CARD")
    con.execute("CHECKPOINT")
    return {"due": accounts, "notices": notices}


def seed_dd_store(con, mandates: int, kind: str, day: date) -> dict:
    """`kind` "auddis": N mandates pending submission (0N each), accounts paying manually. "collections": N ACTIVE
    mandates of direct-debit accounts (lodged 64 days and active 54 days before `day`), each with one invoice
    issued 33 days before `day` and due 3 days before it, its charge in the ledger and (after 0016) its SENT
    notice."""
    active = kind == "collections"
    con.execute(
        "INSERT INTO accounts (account_number, name, payment_type) SELECT 'ACC' || lpad(i::VARCHAR, 8, '0'), "
        "'Customer ' || i, $type FROM range(1, $n + 1) t(i)",
        {"n": mandates, "type": "DIRECT_DEBIT" if active else "MANUAL"})
    now = datetime.combine(day, time(2, 0), UTC)
    con.execute(
        """
        INSERT INTO mandates (mandate_id, account_number, service_user_number, reference, sort_code,
            bank_account, account_name, status, pending_instruction, submitted_on, activated_on, created_at)
        SELECT 'DDI-123456-CMP' || account_number, account_number, '123456', 'CMP' || account_number,
               lpad((200000 + i % 700000)::VARCHAR, 6, '0'), lpad((i * 7919 % 100000000)::VARCHAR, 8, '0'),
               'Payer Renée ' || i, $status, $pending, $lodged, $active_on, $now
        FROM (SELECT 'ACC' || lpad(i::VARCHAR, 8, '0') AS account_number, i FROM range(1, $n + 1) t(i))
        """,
        {"n": mandates, "status": "ACTIVE" if active else "PENDING_SUBMISSION", "pending": None if active else "NEW",
         "lodged": day - timedelta(days=64) if active else None,
         "active_on": day - timedelta(days=54) if active else None, "now": now},
    )
    notices = 0
    if active:
        con.execute(
            "INSERT INTO invoices SELECT 'INV' || right(account_number, 8) || '1', account_number, "
            "$day - 33, $day - 3, 1000 + hash(account_number) % 9000, 'GBP' FROM mandates", {"day": day})
        con.execute(
            "INSERT INTO ledger_postings (idempotency_key, account_number, invoice_number, kind, amount_minor, "
            "currency, batch_id, source_ref, effective_at) SELECT 'invoice:' || invoice_number || ':CHARGE', "
            "account_number, invoice_number, 'INVOICE', amount_minor, currency, 'INVOICES', invoice_number, "
            "issued_on FROM invoices")
        notices = _sent_notices(con, "DIRECT_DEBIT")
    con.execute("CHECKPOINT")
    return {"due": mandates, "notices": notices}
