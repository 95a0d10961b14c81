"""`GET /v1/accounts/{acc}/payments`: the account's history across every flow (the seed's Payments screen).

Embedded store: read from the Parquet copy the Ledger Monitor publishes with the read model (never cmp.duckdb on a
request); PostgreSQL: from the store's tables. Either way this API's own one-off payments are laid over it: they
are fresher than the main store's copy (a payment awaiting its card, or not yet taken by the Ledger Monitor, is
shown with its current status).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

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
)

router = APIRouter()
Method = Literal[METHODS]  # type: ignore[valid-type]
Status = Literal[STATUSES]  # type: ignore[valid-type]
Kind = Literal[KINDS]  # type: ignore[valid-type]
From = Annotated[date | None, Query(alias="from", description="From this day, YYYY-MM-DD (inclusive).")]
To = Annotated[date | None, Query(alias="to", description="To this day, YYYY-MM-DD (inclusive).")]
_SCHEMA = pa.schema([(c, pa.int64() if c == "amount_minor" else pa.date32() if c == "date" else pa.string())
                     for c in COLUMNS])


def account_payments(ctx: ApiContext, number: str, flt: HistoryFilter) -> dict:
    return ctx.backend.history(number, flt)


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
