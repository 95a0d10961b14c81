"""Record rules every partner file shares: field patterns, the suspense account, what an invoice still owes,
and the first-problem-wins CASE that names a bad record's fault."""

from __future__ import annotations

SUSPENSE_ACCOUNT = "SUSPENSE"
DATETIME_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
AMOUNT_RE = r"(0|[1-9][0-9]{0,11})\.[0-9]{2}"
RECORD_ID_RE = "[A-Za-z0-9._-]{1,64}"
ACCOUNT_RE = "[A-Z0-9]{1,20}"
REASON_CODE_RE = "[A-Za-z0-9]{1,8}"

def settled_sql(invoices: str | None = None) -> str:
    """Each invoice's settlements: every non-invoice posting against it summed (payments and card payments are
    negative, reversals positive). `invoices` (a table or CTE): only those invoices' sums, so a step that needs few
    balances (the notices on a day when all are noticed) reads no more of the ledger."""
    among = f"invoice_number IN (SELECT invoice_number FROM {invoices})" if invoices else "invoice_number IS NOT NULL"
    return f"""
        SELECT invoice_number, sum(amount_minor) AS settled_minor FROM ledger_postings
        WHERE {among} AND kind <> 'INVOICE' GROUP BY 1"""


# What is still owed on each invoice: its amount plus its settlements.
OUTSTANDING_SQL = f"""
    SELECT i.invoice_number, i.account_number, i.currency, i.issued_on, i.due_on,
           i.amount_minor + coalesce(s.settled_minor, 0) AS outstanding_minor
    FROM invoices i LEFT JOIN ({settled_sql()}) s USING (invoice_number)
"""


def first_problem(problems: list[tuple[str, str, str]], part: int) -> str:
    """SQL CASE over (condition, code, message expression) rules: the first that applies, its code (part 1) or
    its message (part 2)."""
    return "CASE " + " ".join(f"WHEN {p[0]} THEN {p[part] if part == 2 else repr(p[1])}" for p in problems) + " END"
