"""Read-side queries: an account's balance and open invoices, and the platform summary."""

from __future__ import annotations

import duckdb

CARD_FIELDS = ("provider", "card_token", "last_four", "expiry")


def account_view(con: duckdb.DuckDBPyConnection, account_number: str) -> dict | None:
    row = con.execute(
        "SELECT account_number, name, currency, status, payment_type, suspended_until::VARCHAR, payment_term "
        "FROM accounts "
        "WHERE account_number = ?",
        [account_number],
    ).fetchone()
    if row is None:
        return None
    balance = con.execute(
        "SELECT minor_to_decimal(coalesce(sum(amount_minor), 0)) FROM ledger_postings WHERE account_number = ?",
        [account_number],
    ).fetchone()[0]
    invoices = con.execute(
        """
        WITH paid AS (
            SELECT invoice_number, sum(amount_minor) AS paid_minor FROM ledger_postings
            WHERE account_number = $account AND invoice_number IS NOT NULL AND kind <> 'INVOICE' GROUP BY 1
        )
        SELECT i.invoice_number, i.issued_on::VARCHAR, i.due_on::VARCHAR, minor_to_decimal(i.amount_minor),
               minor_to_decimal(i.amount_minor + coalesce(p.paid_minor, 0))
        FROM invoices i LEFT JOIN paid p USING (invoice_number)
        WHERE i.account_number = $account AND i.amount_minor + coalesce(p.paid_minor, 0) > 0
        ORDER BY i.due_on, i.invoice_number
        """,
        {"account": account_number},
    ).fetchall()
    # Hardware orders billed "on the next invoice" (seed: hardware-orders) wait here until the billing feed's next
    # invoice for the account takes them; the customer owes them, but not yet on any invoice.
    pending = con.execute(
        "SELECT order_id, description, minor_to_decimal(amount_minor), currency, created_at FROM hw_pending_charges "
        "WHERE account_number = ? AND invoice_number IS NULL ORDER BY created_at, order_id",
        [account_number],
    ).fetchall()
    card = con.execute(
        "SELECT provider, card_token, last_four, expiry FROM payment_cards WHERE account_number = ?", [account_number]
    ).fetchone()
    return {
        "account_number": row[0],
        "name": row[1],
        "currency": row[2],
        "status": row[3],
        "payment_type": row[4],
        "suspended_until": row[5],
        "payment_term": row[6],
        "card": None if card is None else dict(zip(CARD_FIELDS, card, strict=True)),
        "balance": balance,
        "open_invoices": [
            {"invoice_number": i[0], "issued_on": i[1], "due_on": i[2], "amount": i[3], "outstanding": i[4]}
            for i in invoices
        ],
        "pending_charges": [
            {"order_id": p[0], "description": p[1], "amount": p[2], "currency": p[3], "since": p[4].isoformat()}
            for p in pending
        ],
    }


def platform_summary(con: duckdb.DuckDBPyConnection) -> str:
    lines = ["Batches:"]
    for kind, status, count, records, total in con.execute(
        "SELECT kind, status, count(*), sum(record_count)::BIGINT, minor_to_decimal(sum(total_minor)::BIGINT) "
        "FROM batches GROUP BY kind, status ORDER BY kind, status"  # words both stores accept
    ).fetchall():
        lines.append(f"  {kind:16} {status:13} {count:>5} batch(es) {records:>9} records  total {total}")
    postings, total = con.execute(
        "SELECT count(*), minor_to_decimal(coalesce(sum(amount_minor), 0)::BIGINT) FROM ledger_postings "
        "WHERE kind <> 'INVOICE'"
    ).fetchone()
    lines.append(f"Ledger: {postings} payment posting(s), net {total}")
    quarantined = con.execute(
        "SELECT partner, file_name, error_code, error FROM inbound_files WHERE status = 'QUARANTINED' "
        "ORDER BY partner, file_name, error_code, error"
    ).fetchall()
    lines.append(f"Quarantined files: {len(quarantined)}")
    lines += [f"  {p}/{name}: {code} - {error}" for p, name, code, error in quarantined]
    return "\n".join(lines)
