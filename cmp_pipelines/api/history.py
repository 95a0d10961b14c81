"""`GET /v1/accounts/{acc}/payments`: the account's history across every flow (the seed's Payments screen).

Read from the Parquet copy the Ledger Monitor publishes with the read model (never cmp.duckdb on a request),
with this API's own one-off payments laid over it: they are fresher than the main store's copy (a payment
awaiting its card, or not yet taken by the Ledger Monitor, is shown with its current status).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Query

from cmp_pipelines.api.context import ApiContext, Client, Ctx
from cmp_pipelines.api.models import PaymentHistory
from cmp_pipelines.api.payments import ERRORS, AccountPath, account, valid_account
from cmp_pipelines.api.problems import Problem
from cmp_pipelines.core.payment_history import (
    COLUMNS,
    KINDS,
    METHODS,
    STATUSES,
    HistoryFilter,
    HistoryFilterError,
    page,
    published_history_path,
)

router = APIRouter()
Method = Literal[METHODS]  # type: ignore[valid-type]
Status = Literal[STATUSES]  # type: ignore[valid-type]
Kind = Literal[KINDS]  # type: ignore[valid-type]
From = Annotated[date | None, Query(alias="from", description="From this day, YYYY-MM-DD (inclusive).")]
To = Annotated[date | None, Query(alias="to", description="To this day, YYYY-MM-DD (inclusive).")]
_SCHEMA = pa.schema([(c, pa.int64() if c == "amount_minor" else pa.date32() if c == "date" else pa.string())
                     for c in COLUMNS])


def _one_off_rows(ctx: ApiContext, number: str) -> pa.Table:
    rows = ctx.store.query(
        "SELECT payment_id, created_at, completed_at, method, amount_minor, currency, status, reason_code, reason, "
        "reference, ledger_batch_id FROM payments WHERE account_number = ?", [number])
    return pa.Table.from_pylist([
        {"payment_ref": r["payment_id"], "account_number": number,
         "date": date.fromisoformat((r["completed_at"] or r["created_at"])[:10]), "source": "ONE_OFF",
         "method": r["method"], "kind": "PAYMENT", "amount_minor": r["amount_minor"], "currency": r["currency"],
         "status": r["status"], "reason_code": r["reason_code"], "reason": r["reason"], "invoice_number": None,
         "reference": r["reference"], "batch_id": r["ledger_batch_id"]} for r in rows], schema=_SCHEMA)


def account_payments(ctx: ApiContext, number: str, flt: HistoryFilter) -> dict:
    one_off = _one_off_rows(ctx, number)
    published = published_history_path()
    con = duckdb.connect()  # in memory: this request's own engine over the published file
    try:
        con.register("api_one_off", one_off)
        if published.exists():
            relation = ("SELECT * FROM read_parquet($path) WHERE source <> 'ONE_OFF' "
                        "UNION ALL BY NAME SELECT * FROM api_one_off")
            return page(con, relation, number, flt, {"path": str(published)}).as_dict()
        return page(con, "SELECT * FROM api_one_off", number, flt).as_dict()
    finally:
        con.close()


@router.get("/v1/accounts/{account_number}/payments", response_model=PaymentHistory, tags=["payments"],
            responses=ERRORS, summary="The account's payments across every flow, newest first (the Payments "
                                      "screen): NRP, recurring card, direct debit, one-off; refunds, reversals, "
                                      "returns; with status and reason")
def list_payments(account_number: AccountPath, who: Client, ctx: Ctx,
                  method: Method | None = None, status: Status | None = None, kind: Kind | None = None,
                  date_from: From = None, date_to: To = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict:
    number = valid_account(account_number)
    account(ctx, number)
    flt = HistoryFilter(method=method, status=status, kind=kind, date_from=date_from, date_to=date_to, limit=limit,
                        offset=offset)
    try:
        flt.check()
    except HistoryFilterError as exc:
        raise Problem(422, f"{exc.field}: {exc.message}", field=exc.field) from None
    return account_payments(ctx, number, flt)
