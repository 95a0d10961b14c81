"""Invoices issued to accounts, whichever way they come (a billing run file, the billing API): the due date from
the account's payment term, the ledger charge, and the hardware charges waiting for the account's next invoice.

The billing run (defs/billing) and the API (api/billing.py) share the SQL here, so an invoice and a next-invoice
charge are posted once under the same keys however they arrive.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime

import duckdb

from cmp_pipelines.core.config import PaymentTermsConfig
from cmp_pipelines.core.db.connection import transaction
from cmp_pipelines.core.ledger import batch_id_of, lit, post, record_posting_batch
from cmp_pipelines.core.money import format_minor
from cmp_pipelines.core.payment_setup import SetupError, check_contact, create_account
from cmp_pipelines.core.rules import AMOUNT_RE, SUSPENSE_ACCOUNT

INVOICE_NUMBER = re.compile(r"[A-Z0-9-]{1,30}")
_AMOUNT = re.compile(AMOUNT_RE)


def attach_pending_charges_sql(issued_sql: str) -> str:
    """Hardware orders billed "on the next invoice of their regular billing cycle" (seed: hardware-orders): each
    pending charge not yet invoiced goes on the first invoice (by issue date, then `position`) of `issued_sql`
    (invoice_number, account_number, issue_date, currency, position) for its account in the same currency.
    `invoice_number IS NULL` makes it once: a later invoice finds it attached."""
    return f"""
        UPDATE hw_pending_charges AS h
        SET invoice_number = n.invoice_number, invoiced_at = $now
        FROM (
            SELECT account_number, currency, first(invoice_number ORDER BY issue_date, position) AS invoice_number
            FROM ({issued_sql}) issued GROUP BY ALL
        ) AS n
        WHERE h.invoice_number IS NULL AND h.account_number = n.account_number AND h.currency = n.currency
          AND h.created_at <= $now
    """


def post_attached_charges(con: duckdb.DuckDBPyConnection, issued_sql: str, *, batch_id: str, now: datetime,
                          params: dict) -> int:
    """The charges attached to the invoices of `issued_sql`, posted against their invoice under the hardware
    flow's own key (`hw:<order>:CHARGE`, the key an immediate charge has): an order is charged once either way."""
    return post(con, f"""
        SELECT h.order_id, h.account_number, h.invoice_number, 'HARDWARE_CHARGE' AS kind, h.amount_minor,
               h.currency, h.order_id AS source_ref, CAST(i.issue_date AS TIMESTAMPTZ) AS effective_at
        FROM hw_pending_charges h JOIN ({issued_sql}) i USING (invoice_number)
        """, source="hw", key=("order_id", lit("CHARGE")), batch_id=batch_id, now=now, params=params,
        order_by="order_id")


def post_invoices(con: duckdb.DuckDBPyConnection, issued_sql: str, *, batch_id: str, now: datetime,
                  params: dict) -> int:
    """Each invoice's charge, once (`invoice:<number>:CHARGE`), as the demo's invoicing batches post them."""
    return post(con, f"""
        SELECT invoice_number, account_number, 'INVOICE' AS kind, amount_minor, currency,
               invoice_number AS source_ref, CAST(issue_date AS TIMESTAMPTZ) AS effective_at
        FROM ({issued_sql}) issued ORDER BY position
        """, source="invoice", key=("invoice_number", lit("CHARGE")), batch_id=batch_id, now=now, params=params)


# ---- the billing API: one account, one invoice ----------------------------------------------------------------

def put_account(con: duckdb.DuckDBPyConnection, number: str, body: dict, *, terms: PaymentTermsConfig,
                security_level: str, now: datetime) -> tuple[bool, dict]:
    """Create the account (the payment term default of MANUAL, if the caller's level may use it) or change its
    name, contact details and payment term; (created, the account)."""
    term = body.get("payment_term")
    if term is not None and term not in terms.terms:
        raise SetupError("payment_term", f"{term!r} is not a payment term of the Payments module (known: "
                                         f"{', '.join(sorted(terms.terms))})")
    if number == SUSPENSE_ACCOUNT:
        raise SetupError("account_number", "the suspense account cannot be changed", status=409)
    check_contact(body.get("email"), body.get("phone"))
    with transaction(con):
        row = con.execute("SELECT currency, is_suspense FROM accounts WHERE account_number = ?", [number]).fetchone()
    if row is None:
        create_account(con, number, body["name"], terms=terms, now=now, security_level=security_level,
                       currency=body.get("currency") or "GBP", email=body.get("email"), phone=body.get("phone"))
        created = True
    else:
        if row[1]:
            raise SetupError("account_number", "the suspense account cannot be changed", status=409)
        if body.get("currency") not in (None, row[0]):
            raise SetupError("currency", f"account {number} is in {row[0]}; its currency cannot change")
        if not (body.get("name") or "").strip() or len(body["name"]) > 100:
            raise SetupError("name", "must be 1-100 characters")
        created = False
        with transaction(con):
            con.execute("UPDATE accounts SET name = ?, email = coalesce(?, email), phone = coalesce(?, phone) "
                        "WHERE account_number = ?", [body["name"].strip(), body.get("email"), body.get("phone"),
                                                     number])
    if term is not None:
        with transaction(con):
            con.execute("UPDATE accounts SET payment_term = ? WHERE account_number = ?", [term, number])
    return created, account_details(con, number)


def account_details(con: duckdb.DuckDBPyConnection, number: str) -> dict:
    row = con.execute("SELECT account_number, name, currency, status, payment_type, payment_term, email, phone "
                      "FROM accounts WHERE account_number = ?", [number]).fetchone()
    keys = ("account_number", "name", "currency", "status", "payment_type", "payment_term", "email", "phone")
    return dict(zip(keys, row, strict=True))


def request_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def issue_invoice(con: duckdb.DuckDBPyConnection, number: str, body: dict, *, terms: PaymentTermsConfig,
                  client_id: str, idempotency_key: str, now: datetime) -> tuple[bool, dict]:
    """Issue one invoice to the account: due after its payment term, posted once, with the hardware charges waiting
    for its next invoice. The same key and body again replay it (True); another body under the key, or the
    invoice number already issued otherwise, is refused (409)."""
    invoice_number, amount = body.get("invoice_number") or "", body.get("amount") or ""
    if not INVOICE_NUMBER.fullmatch(invoice_number):
        raise SetupError("invoice_number", f"{invoice_number!r} must be 1-30 characters of A-Z 0-9 -")
    if not _AMOUNT.fullmatch(amount):
        raise SetupError("amount", f"{amount!r} is not an amount such as 12.34 (0.00 or more, two places)")
    try:
        issued_on = date.fromisoformat(body.get("issue_date") or "")
    except ValueError:
        raise SetupError("issue_date", f"{body.get('issue_date')!r} is not a date (YYYY-MM-DD)") from None
    digest = request_hash({"account_number": number, **body})
    with transaction(con):
        earlier = con.execute("SELECT request_hash, invoice_number FROM invoice_requests WHERE client_id = ? "
                              "AND idempotency_key = ?", [client_id, idempotency_key]).fetchone()
        if earlier is not None:
            if earlier[0] != digest:
                raise SetupError("Idempotency-Key", f"Idempotency-Key was already used for invoice {earlier[1]} "
                                                    "with a different body; use a new key for a new invoice",
                                 status=409)
            return True, invoice_details(con, earlier[1])
        account = con.execute("SELECT currency, payment_term, payment_type, is_suspense FROM accounts "
                              "WHERE account_number = ?", [number]).fetchone()
        if account is None or account[3]:
            raise SetupError("account_number", f"account {number} does not exist", status=404)
        owner = con.execute("SELECT account_number FROM invoices WHERE invoice_number = ?",
                            [invoice_number]).fetchone()
        if owner is not None:
            raise SetupError("invoice_number", f"invoice {invoice_number} was already issued (to account "
                                               f"{owner[0]}); an invoice is issued once", status=409)
        term = terms.terms.get(account[1]) if account[1] else terms.default_for(account[2])
        if term is None:
            raise SetupError("payment_term", f"account {number} has no payment term and its payment type "
                                             f"{account[2]} has no default; the due date cannot be set", status=409)
        due_on = date.fromordinal(issued_on.toordinal() + term.days_to_pay)
        con.execute("INSERT INTO invoices (invoice_number, account_number, issued_on, due_on, amount_minor, currency) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [invoice_number, number, issued_on, due_on, int(amount.replace(".", "")), account[0]])
        batch = batch_id_of("INVOICES", f"API-{now:%Y%m%d}")
        issued = ("SELECT invoice_number, account_number, issued_on AS issue_date, currency, amount_minor, "
                  "1 AS position FROM invoices WHERE invoice_number = $invoice")
        params = {"invoice": invoice_number, "now": now}
        post_invoices(con, issued, batch_id=batch, now=now, params=params)
        con.execute(attach_pending_charges_sql(issued), params)
        post_attached_charges(con, issued, batch_id=batch, now=now, params=params)
        record_posting_batch(con, batch_id=batch, kind="INVOICES", feed="billing", now=now, posted_before=0)
        con.execute("INSERT INTO invoice_requests VALUES (?, ?, ?, ?, ?)",
                    [client_id, idempotency_key, digest, invoice_number, now])
    return False, invoice_details(con, invoice_number)


def issue_invoice_postgres(mirror, number: str, body: dict, *, terms: PaymentTermsConfig, client_id: str,
                           idempotency_key: str, now: datetime) -> tuple[bool, dict]:
    """`issue_invoice` on PostgreSQL (`mirror`, core/db/mirror.Mirror): the same rules on the scratch DuckDB, fed
    with what they read, and what they wrote pushed in ONE transaction.

    The day's API invoices share one posting batch (`INVOICES` `API-<day>`), so issuing holds an advisory lock on
    that batch from the first pull to the commit: two calls at once run one after the other, each pulling after
    the other committed, so neither can issue an invoice number or replay a key the other just used, attach a
    pending hardware charge twice, or count the batch without the other's postings. The invoice UNIQUE key and
    the ledger's idempotency keys would refuse a double anyway; the lock turns that into the embedded store's
    answers (409, a replay) instead of an error. Billing calls are few: the lock is never a bottleneck."""
    invoice_number = body.get("invoice_number") or ""
    batch = batch_id_of("INVOICES", f"API-{now:%Y%m%d}")
    with mirror.transaction():
        mirror.lock(f"invoices:{batch}")
        mirror.pull("invoice_requests", "client_id = $1 AND idempotency_key = $2", [client_id, idempotency_key],
                    key=["client_id", "idempotency_key"])
        mirror.pull("accounts", "account_number = $1", [number], key=["account_number"])
        earlier = mirror.query("SELECT invoice_number FROM invoice_requests WHERE client_id = $1 "
                               "AND idempotency_key = $2", [client_id, idempotency_key]).column(0).to_pylist()
        for wanted in {invoice_number, *earlier}:
            mirror.pull("invoices", "invoice_number = $1", [wanted], key=["invoice_number"])
            mirror.pull("hw_pending_charges", "invoice_number = $1", [wanted], key=["order_id"])
        mirror.pull("hw_pending_charges", "account_number = $1 AND invoice_number IS NULL ORDER BY order_id FOR UPDATE",
                [number],
                    key=["order_id"])
        mirror.pull("ledger_postings", "invoice_number = $1", [invoice_number], key=["idempotency_key"])
        replayed, view = issue_invoice(mirror.con, number, body, terms=terms, client_id=client_id,
                                       idempotency_key=idempotency_key, now=now)
        if replayed:
            return replayed, view
        invoice, posted = {"invoice": invoice_number}, {"batch": batch, "now": now}
        mirror.push("invoices", "invoice_number = $invoice", invoice)
        mirror.push("invoice_requests", "client_id = $client AND idempotency_key = $key",
                    {"client": client_id, "key": idempotency_key})
        mirror.push_update("hw_pending_charges", ["order_id"], ["invoice_number", "invoiced_at"],
                           "invoice_number = $invoice", invoice)
        mirror.push_new("ledger_postings", "posting_id", "batch_id = $batch AND posted_at = $now", posted,
                        unique="idempotency_key")
        mirror.upsert("batches", ["batch_id"], "batch_id = $batch", {"batch": batch})
        mirror.execute(  # the scratch counted only this call's postings: the day's batch counted in PostgreSQL
            "UPDATE batches b SET record_count = x.n, accepted_count = x.n, total_minor = x.total "
            "FROM (SELECT count(*) AS n, coalesce(sum(amount_minor), 0)::BIGINT AS total FROM ledger_postings "
            "WHERE batch_id = $1) x WHERE b.batch_id = $1", [batch])
        mirror.push("job_runs", "batch_id = $batch AND started_at = $now", posted)
    return replayed, view


def invoice_details(con: duckdb.DuckDBPyConnection, invoice_number: str) -> dict:
    row = con.execute("SELECT invoice_number, account_number, issued_on, due_on, amount_minor, currency "
                      "FROM invoices WHERE invoice_number = ?", [invoice_number]).fetchone()
    charges = con.execute("SELECT order_id, amount_minor FROM hw_pending_charges WHERE invoice_number = ? "
                          "ORDER BY order_id", [invoice_number]).fetchall()
    return {"invoice_number": row[0], "account_number": row[1], "issue_date": row[2].isoformat(),
            "due_date": row[3].isoformat(), "amount": format_minor(row[4]), "currency": row[5],
            "hardware_charges": [{"order_id": o, "amount": format_minor(a)} for o, a in charges],
            "total_due": format_minor(row[4] + sum(a for _, a in charges))}


__all__ = ["attach_pending_charges_sql", "issue_invoice", "post_attached_charges", "post_invoices", "put_account"]
