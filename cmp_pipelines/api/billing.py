"""The billing system's calls, the single-record twins of the billing run file: create or change an account, issue
an invoice (due after the account's payment term, with the hardware charges waiting for its next invoice).

Both write the main store at once, through the same core code as the billing run (`core/invoicing.py`). When a
pipeline run holds the store past the short wait the call is refused with 503 and Retry-After, never half done:
the billing system retries (an invoice with the same Idempotency-Key, so a retry cannot issue it twice).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from cmp_pipelines.api.context import Client, Ctx
from cmp_pipelines.api.models import CURRENCY, Strict, _no_pan
from cmp_pipelines.api.payments import ERRORS, AccountPath, IdempotencyKey, holds_card_number, valid_account
from cmp_pipelines.api.problems import Problem
from cmp_pipelines.api.setup import _problem
from cmp_pipelines.core.cards import mask_pans_in
from cmp_pipelines.core.config import load_payment_terms
from cmp_pipelines.core.db.connection import StoreBusyError
from cmp_pipelines.core.invoicing import issue_invoice, issue_invoice_postgres, put_account
from cmp_pipelines.core.payment_setup import SetupError
from cmp_pipelines.core.settings import paths, store

router = APIRouter()
RETRY_SECONDS = "2"


class PutAccount(Strict):
    name: str = Field(min_length=1, max_length=100, description="The account holder's name.")
    email: str | None = Field(None, max_length=254, description="Where customer communications go; null keeps it.")
    phone: str | None = Field(None, description="7-15 digits, an optional leading +; null keeps it.")
    payment_term: str | None = Field(None, description="A payment term code of config/payment_terms.yaml; null "
                                                       "keeps it (a new account: the MANUAL default).")
    currency: str | None = Field(None, description="ISO 4217; a new account's currency (default GBP), never changed.",
                                 json_schema_extra={"pattern": CURRENCY.pattern})

    _name = field_validator("name")(_no_pan)
    _email = field_validator("email")(_no_pan)


class IssueInvoice(Strict):
    invoice_number: str = Field(description="Unique: 1-30 characters of A-Z 0-9 -.", examples=["BIL-20261201-0001"])
    amount: str = Field(description="Decimal string with two places, 0.00 or more.", examples=["45.00"])
    issue_date: str = Field(description="YYYY-MM-DD; the due date is this plus the payment term's days to pay.",
                            examples=["2026-12-01"])


def _on_postgres(work):
    """Run `work(mirror)` on a scratch DuckDB linked to the PostgreSQL store (core/db/mirror.py): for work whose
    rules are DuckDB SQL (an invoice posts to the ledger set-based)."""
    from cmp_pipelines.core.db.mirror import mirrored

    try:
        with mirrored() as mirror:
            return work(mirror)
    except SetupError as exc:
        raise _problem(exc) from None


def _write(ctx, work):
    """Run `work(con)` on the main store through the backend (embedded: cmp.duckdb, refused with 503 when a
    pipeline run keeps it past the short wait; PostgreSQL: one transaction)."""
    try:
        return ctx.backend.on_main_store(work)
    except StoreBusyError:
        raise Problem(503, "a pipeline run holds the store; retry shortly (an invoice with the same "
                           "Idempotency-Key)", slug="store-busy", headers={"Retry-After": RETRY_SECONDS}) from None
    except SetupError as exc:
        raise _problem(exc) from None


@router.put("/v1/accounts/{account_number}", tags=["billing"], responses={201: {"description": "created"}, **ERRORS,
                                                                         403: ERRORS[401]},
            summary="Create the account, or change its name, contact details and payment term (billing system)")
def put_account_call(account_number: AccountPath, body: PutAccount, who: Client, ctx: Ctx) -> JSONResponse:
    number = valid_account(account_number)
    terms = load_payment_terms(paths().config_dir)

    def work(con):
        exists = con.execute("SELECT 1 FROM accounts WHERE account_number = ?", [number]).fetchone() is not None
        ctx.authorize(who, "UPDATE_ACCOUNT" if exists else "CREATE_ACCOUNT")
        return put_account(con, number, body.model_dump(), terms=terms, security_level=who.security_level,
                           now=ctx.now())

    created, view = _write(ctx, work)
    return JSONResponse(view, status_code=201 if created else 200,
                        headers={"Location": f"/v1/accounts/{number}"} if created else {})


@router.post("/v1/accounts/{account_number}/invoices", status_code=201, tags=["billing"],
             responses={**ERRORS, 403: ERRORS[401]},
             summary="Issue an invoice: due after the account's payment term, posted to the ledger with the "
                     "hardware charges waiting for the account's next invoice; Idempotency-Key required")
def post_invoice(account_number: AccountPath, body: IssueInvoice, idempotency_key: IdempotencyKey, who: Client,
                 ctx: Ctx) -> JSONResponse:
    ctx.authorize(who, "ISSUE_INVOICE")
    number = valid_account(account_number)
    if holds_card_number(idempotency_key):
        raise Problem(422, f"Idempotency-Key {mask_pans_in(idempotency_key)!r} contains a card number; use "
                           "another random key", field="Idempotency-Key")
    terms = load_payment_terms(paths().config_dir)
    if store().backend == "postgres":  # the same rules on a scratch DuckDB, pushed in one transaction
        replayed, view = _on_postgres(lambda mirror: issue_invoice_postgres(
            mirror, number, body.model_dump(), terms=terms, client_id=who.client_id,
            idempotency_key=idempotency_key, now=ctx.now()))
    else:
        replayed, view = _write(ctx, lambda con: issue_invoice(
            con, number, body.model_dump(), terms=terms, client_id=who.client_id, idempotency_key=idempotency_key,
            now=ctx.now()))
    return JSONResponse(view, status_code=200 if replayed else 201,
                        headers={"Idempotent-Replayed": "true"} if replayed else {})
